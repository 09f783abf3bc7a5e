"""What the report's queries count for one method (`_Tally`) and the `MethodReport` made from it; a listed
call from its row; a stored request, decoded."""

from __future__ import annotations

import base64
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from comparators import DescriptorRegistry, Difference, DiffKind, status_name
from shim.evidence.model import (
    COMPARED,
    LOST,
    Bucket,
    CallRecord,
    CodePair,
    Latency,
    MethodReport,
    PathStat,
    ReplicaShare,
    TaintedPath,
    method_name,
    rfc3339,
)
from shim.evidence.noise import _mismatch_class

ANSWERED = "OK"  # Bank's status in an answered call: the method did its work (a refusal did not)


class _Share:
    """Counts of one method by one replica: its verdicts and what it counted but did not store."""

    def __init__(self) -> None:
        self.verdicts: dict[str, int] = defaultdict(int)
        self.counted: dict[str, int] = defaultdict(int)  # by name (table counts)

    def share(self, replica: str) -> ReplicaShare:
        v = self.verdicts
        return ReplicaShare(
            replica=replica,
            calls=sum(v.values()),
            compared=sum(v[verdict] for verdict in COMPARED),
            tainted=v["tainted"],
            skipped=v["skipped"],
            shadow_errors=v["shadow-error"],
            errors=v["error"],
            dropped_by_name=_named(self.counted, lost=False),
            lost_by_name=_named(self.counted, lost=True),
        )


def _named(counted: dict[str, int], *, lost: bool) -> tuple[tuple[str, int], ...]:
    """The counts that are of something else lost (`LOST`), or those of comparisons not stored."""
    return tuple(sorted((name, n) for name, n in counted.items() if (name in LOST) == lost))


class _Tally:
    """Counts of one method, filled from the queries."""

    def __init__(self, buckets: int) -> None:
        self.verdicts: dict[str, int] = defaultdict(int)
        self.noise_sampled = 0
        self.tolerated = 0
        self.codes: dict[tuple[str | None, str | None], int] = defaultdict(int)
        self.clean_codes: dict[tuple[str | None, str | None], int] = defaultdict(int)  # of clean comparisons
        self.compared_by_bucket = [0] * buckets
        self.mismatches_by_bucket = [0] * buckets
        self.noise_by_bucket = [0] * buckets
        self.dropped: dict[str, int] = defaultdict(int)  # every name counted (`LOST` ones too)
        self.replicas: dict[str, _Share] = defaultdict(_Share)
        self.tolerated_by_rule: list[tuple[str, int]] = []
        self.bank_ms: list[float] = []
        self.bk_ms: list[float] = []
        self.paths: list[PathStat] = []
        self.tainted_paths: list[TaintedPath] = []

    @property
    def compared(self) -> int:
        return sum(self.compared_by_bucket)


def method_report(method: str, t: _Tally, edges: Sequence[float], fleet: bool = False) -> MethodReport:
    """A method's figures from its tally; `edges` bound the buckets of its series. In a `fleet`'s report
    (more than one replica wrote in the window), each replica's share too."""
    noise_total = sum(t.noise_by_bucket)
    mismatches = t.verdicts["mismatch"]
    _consistent(method, t)
    series = tuple(
        Bucket(
            start=edges[i],
            end=edges[i + 1],
            compared=t.compared_by_bucket[i],
            real_mismatches=t.mismatches_by_bucket[i] - t.noise_by_bucket[i],
        )
        for i in range(len(edges) - 1)
    )
    t.bank_ms.sort()
    t.bk_ms.sort()
    codes = _most_first(t.codes)
    unanswered = _most_first({pair: n for pair, n in t.clean_codes.items() if pair[0] != ANSWERED})
    return MethodReport(
        method=method_name(method),
        calls=sum(t.verdicts.values()),
        compared=t.compared,
        answered=sum(n for (bank, _), n in t.clean_codes.items() if bank == ANSWERED),
        matched=t.verdicts["match"],
        mismatches=mismatches,
        real_mismatches=mismatches - noise_total,
        noise_mismatches=noise_total,
        tainted=t.verdicts["tainted"],
        shadow_errors=t.verdicts["shadow-error"],
        skipped=t.verdicts["skipped"],
        errors=t.verdicts["error"],
        tolerated=t.tolerated,
        tolerated_by_rule=tuple(t.tolerated_by_rule),
        noise_sampled=t.noise_sampled,
        dropped=sum(n for name, n in t.dropped.items() if name not in LOST),
        dropped_by_name=_named(t.dropped, lost=False),
        bank_latency=Latency(len(t.bank_ms), percentile(t.bank_ms, 0.5), percentile(t.bank_ms, 0.99)),
        bk_latency=Latency(len(t.bk_ms), percentile(t.bk_ms, 0.5), percentile(t.bk_ms, 0.99)),
        codes=codes,
        unanswered=unanswered,
        paths=tuple(t.paths),
        tainted_paths=tuple(t.tainted_paths),
        series=series,
        lost_by_name=_named(t.dropped, lost=True),
        by_replica=_shares(t) if fleet else (),
    )


def _most_first(counts: dict[tuple[str | None, str | None], int]) -> tuple[CodePair, ...]:
    """Status pairs (Bank, BK) with their counts, most first (then by name)."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0][0] or "", item[0][1] or ""))
    return tuple(CodePair(bank, bk, n) for (bank, bk), n in ordered)


def _consistent(method: str, t: _Tally) -> None:
    """Raise when the counts contradict each other: more noise mismatches than mismatches (in all, or in
    a bucket) would make a negative count of real ones, and a gate could pass on it. The report's queries
    read one snapshot, so this is a bug, never a passing state of the store."""
    buckets = zip(t.mismatches_by_bucket, t.noise_by_bucket, strict=True)
    if sum(t.noise_by_bucket) > t.verdicts["mismatch"] or any(noise > n for n, noise in buckets):
        raise AssertionError(
            f"the report's counts of {method} disagree: {sum(t.noise_by_bucket):,} mismatches of noise alone"
            f" (by bucket {t.noise_by_bucket}) of {t.verdicts['mismatch']:,} (by bucket"
            f" {t.mismatches_by_bucket}); no figure of it is shown, and no gate judges it"
        )


def _shares(t: _Tally) -> tuple[ReplicaShare, ...]:
    """Each replica's share of a method, most calls not compared first (then by name)."""
    shares = [share.share(replica) for replica, share in t.replicas.items()]
    return tuple(sorted(shares, key=lambda s: (-s.not_compared, -s.lost, s.replica)))


def percentile(ordered: Sequence[float], share: float) -> float | None:
    """Nearest rank: the smallest value with at least `share` of the values at or below it."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _code(code: int | None) -> str | None:
    return None if code is None else status_name(int(code))


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _differences(text: str) -> tuple[Difference, ...]:
    """A call's stored differences; a text that is not their JSON form reads as one `undecodable`
    difference holding the text, so that nothing stored is hidden."""
    try:
        parsed = json.loads(text)
        if not isinstance(parsed, list):
            raise ValueError("not a list")
        return tuple(Difference.from_json(d) for d in parsed)
    except (ValueError, AttributeError):
        return (Difference("", DiffKind.UNDECODABLE, text, None),)


def call_record(row: Sequence[Any], noise: set[tuple[str, str]]) -> CallRecord:
    """A listed call from its row (id, at, method, verdict, reason, routing_key, correlation_id, bank_code,
    bk_code, bank_ms, bk_ms, differences, how many BK's differences were); `noise` holds its method's (path,
    kind class) classified noise."""
    id_, at, method, verdict, reason, key, correlation, bank_code, bk_code, bank_ms, bk_ms, diffs, count = row
    differences = _differences(diffs)
    kept = sum(1 for d in differences if not d.noise)
    return CallRecord(
        id=id_,
        at=rfc3339(at),
        method=method_name(method),
        verdict=verdict,
        mismatch=_mismatch_class(differences, noise) if verdict == "mismatch" else None,
        reason=reason,
        routing_key=key,
        correlation_id=correlation,
        bank_code=_code(bank_code),
        bk_code=_code(bk_code),
        bank_ms=bank_ms,
        bk_ms=bk_ms,
        differences=differences,
        omitted=max(int(count or 0) - kept, 0),
    )


def first_request(registry: DescriptorRegistry | None, method: str, payloads: str | None) -> Any:
    """A call's first request as JSON values, when the store kept it and the descriptors decode it."""
    if not payloads or registry is None:
        return None
    try:
        first = json.loads(payloads)["requests"][0]
        info = registry.method(method)
        if first is None or info is None:
            return None
        message = registry.message_class(info.input_type).FromString(base64.b64decode(first))
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    except (ValueError, KeyError, IndexError, TypeError, DecodeError):
        return None
