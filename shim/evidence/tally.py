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
    Bucket,
    CallRecord,
    CodePair,
    Latency,
    MethodReport,
    PathStat,
    TaintedPath,
    method_name,
    rfc3339,
)
from shim.evidence.noise import _mismatch_class


class _Tally:
    """Counts of one method, filled from the queries."""

    def __init__(self, buckets: int) -> None:
        self.verdicts: dict[str, int] = defaultdict(int)
        self.noise_sampled = 0
        self.tolerated = 0
        self.codes: dict[tuple[str | None, str | None], int] = defaultdict(int)
        self.compared_by_bucket = [0] * buckets
        self.mismatches_by_bucket = [0] * buckets
        self.noise_by_bucket = [0] * buckets
        self.dropped: dict[str, int] = defaultdict(int)
        self.tolerated_by_rule: list[tuple[str, int]] = []
        self.bank_ms: list[float] = []
        self.bk_ms: list[float] = []
        self.paths: list[PathStat] = []
        self.tainted_paths: list[TaintedPath] = []

    @property
    def compared(self) -> int:
        return sum(self.compared_by_bucket)


def method_report(method: str, t: _Tally, edges: Sequence[float]) -> MethodReport:
    """A method's figures from its tally; `edges` bound the buckets of its series."""
    noise_total = sum(t.noise_by_bucket)
    mismatches = t.verdicts["mismatch"]
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
    codes = sorted(t.codes.items(), key=lambda item: (-item[1], item[0][0] or "", item[0][1] or ""))
    return MethodReport(
        method=method_name(method),
        calls=sum(t.verdicts.values()),
        compared=t.compared,
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
        dropped=sum(t.dropped.values()),
        dropped_by_name=tuple(sorted(t.dropped.items())),
        bank_latency=Latency(len(t.bank_ms), percentile(t.bank_ms, 0.5), percentile(t.bank_ms, 0.99)),
        bk_latency=Latency(len(t.bk_ms), percentile(t.bk_ms, 0.5), percentile(t.bk_ms, 0.99)),
        codes=tuple(CodePair(bank, bk, n) for (bank, bk), n in codes),
        paths=tuple(t.paths),
        tainted_paths=tuple(t.tainted_paths),
        series=series,
    )


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


def call_record(row: Sequence[Any], noise: set[str]) -> CallRecord:
    """A listed call from its row (id, at, method, verdict, reason, routing_key, correlation_id, bank_code,
    bk_code, bank_ms, bk_ms, differences); `noise` holds its method's paths classified noise."""
    id_, at, method, verdict, reason, key, correlation, bank_code, bk_code, bank_ms, bk_ms, diffs = row
    differences = _differences(diffs)
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
