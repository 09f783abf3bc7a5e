"""What `shim.evidence.build_report` counts, on SQLite (a file) and on PostgreSQL.

Each test writes crafted comparison records with `Records` (the way the shim's
StoreSink writes them: a row per comparison, a row per folded path and rule)
and checks every figure the report derives from them. PostgreSQL runs when
SHIM_TEST_POSTGRES_DSN names a database (.ci/run sets it); each test gets a
schema of its own, dropped afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest

from comparators import Difference, DiffKind
from shim.evidence import BUCKETS, CodePair, Report, build_report, classify, percentile
from shim.report import to_json
from shim.sinks import path_pattern
from shim.store import ComparisonRecord, PathRow, Store

POSTGRES_DSN = os.environ.get("SHIM_TEST_POSTGRES_DSN", "")
NEEDS_POSTGRES = "PostgreSQL tests need SHIM_TEST_POSTGRES_DSN (set by .ci/run)"
T0 = 1_800_000_000.0  # the start of every test's window
SPAN = 3000.0  # ... and its length: 30 buckets of 100 s
GET = "/pay.v1.Payments/Get"
REFUND = "/pay.v1.Payments/Refund"


@dataclass
class Records:
    """Builds comparison records as the shim stores them; `write` hands them to a store."""

    records: list[ComparisonRecord] = field(default_factory=list)

    def add(
        self,
        verdict: str = "match",
        *,
        method: str = GET,
        at: float = T0 + 10,
        real: Sequence[tuple[str, Any, Any]] = (),
        tolerated: Sequence[tuple[str, str]] = (),
        noise: Sequence[str] = (),
        sampled: bool = False,
        bank_code: int | None = 0,
        bk_code: int | None = 0,
        bank_ms: float | None = 1.0,
        bk_ms: float | None = 2.0,
        reason: str = "",
        key: str = "A1",
        count: int = 1,
    ) -> None:
        """`count` records alike: `real` differences (path, Bank value, BK value), `tolerated` ones
        (path, rule), and `noise` paths (Bank against Bank)."""
        for _ in range(count):
            differences: list[dict[str, Any]] = [
                {"path": p, "kind": "changed", "bank": b, "bk": k} for p, b, k in real
            ]
            differences += [
                {"path": p, "kind": "changed", "bank": 1, "bk": 2, "rule": r} for p, r in tolerated
            ]
            differences += [
                {"path": p, "kind": "changed", "bank": "x", "bk": "y", "noise": True} for p in noise
            ]
            rows: dict[tuple[str, str, str], PathRow] = {}
            for d in differences:
                source = "bank" if d.get("noise") else "bk"
                pattern, rule = path_pattern(d["path"]), d.get("rule", "")
                rows.setdefault(
                    (source, pattern, rule),
                    PathRow(source, pattern, "changed", rule, json.dumps(d["bank"]), json.dumps(d["bk"])),
                )
            n = len(self.records)
            self.records.append(
                ComparisonRecord(
                    id=f"c{n:06d}",
                    at=at,
                    replica="test:1",
                    method=method,
                    routing_key=key,
                    correlation_id=f"req-{n}",
                    verdict=verdict,
                    reason=reason,
                    is_write=False,
                    bank_code=bank_code,
                    bk_code=bk_code,
                    bank_ms=bank_ms,
                    bk_ms=bk_ms,
                    real_count=len(real),
                    tolerated_count=len(tolerated),
                    noise_sampled=sampled or bool(noise),
                    differences=json.dumps(differences),
                    payloads=None,
                    paths=tuple(rows.values()),
                )
            )

    async def write(self, store: Store) -> None:
        store.comparisons.put(self.records)
        await store.flush()

    async def write_to(self, url: str) -> None:
        """Written into the store at `url`, opened for it and closed after."""
        store = Store.open(url)
        await store.start()
        try:
            await self.write(store)
        finally:
            await store.close()


def _postgres_url(schema: str) -> str:
    separator = "&" if "?" in POSTGRES_DSN else "?"
    return f"{POSTGRES_DSN}{separator}options={quote(f'-c search_path={schema}', safe='')}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file, or a PostgreSQL schema of the test's own."""
    if request.param == "sqlite":
        yield str(tmp_path / "shim.db")
        return
    if not POSTGRES_DSN:
        pytest.skip(NEEDS_POSTGRES)
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield _postgres_url(schema)
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = Store.open(store_url)
    await opened.start()
    yield opened
    await opened.close()


async def _report(store: Store, **overrides: Any) -> Report:
    settings: dict[str, Any] = {
        "since": T0,
        "until": T0 + SPAN,
        "relative": 0.2,
        "absolute": 0.0003,
        "min_sampled": 20,
    }
    settings.update(overrides)
    return await build_report(store, **settings)


async def test_verdicts_are_counted_per_method(store: Store) -> None:
    """Calls, compared (match and mismatch only), matched, mismatches, tainted, shadow errors, skipped,
    errors and unproven (every verdict but match and mismatch) are counted per method."""
    r = Records()
    r.add("match", count=6)
    r.add("match", tolerated=[("price", "decimal")], count=2)
    r.add("mismatch", real=[("fee", "0.03", "0.02")], count=3)
    r.add("tainted", real=[("fee", "1", "2")], reason="missed write")
    r.add("shadow-error", bk_code=None, bk_ms=None, reason="shadow timeout after 2s", count=2)
    r.add("skipped", bk_code=None, bk_ms=None, reason="not mirrored")
    r.add("error", reason="the comparison failed: ValueError()", count=3)
    r.add("mismatch", method=REFUND, real=[("amount", "1", "2")])
    await r.write(store)
    report = await _report(store)
    assert [m.method for m in report.methods] == ["pay.v1.Payments/Get", "pay.v1.Payments/Refund"]
    get = report.methods[0]
    assert (get.calls, get.compared, get.matched, get.mismatches) == (18, 11, 8, 3)
    assert (get.real_mismatches, get.noise_mismatches, get.tainted) == (3, 0, 1)
    assert (get.shadow_errors, get.skipped, get.errors, get.tolerated) == (2, 1, 3, 2)
    assert (get.unproven, get.unproven_rate) == (7, pytest.approx(7 / 18))
    assert get.matched_rate == pytest.approx(8 / 11)
    assert get.real_mismatch_rate == pytest.approx(3 / 11)
    assert sum(b.compared for b in get.series) == 11, "the series counts clean comparisons too"
    refund = report.methods[1]
    assert (refund.calls, refund.compared, refund.real_mismatches, refund.real_mismatch_rate) == (
        1,
        1,
        1,
        1.0,
    )
    assert (refund.unproven, refund.unproven_rate) == (0, 0.0)
    assert report.store == store.url
    assert report.calls is None, "calls are listed only when asked for"


async def test_the_clean_comparisons_bank_answered_are_counted_per_method(store: Store) -> None:
    """Per method: the clean comparisons (match or mismatch) Bank answered OK, and the others by status
    pair, most first; an unproven call is neither, whatever its status. Counted by the store's queries, on
    SQLite and PostgreSQL alike; the JSON report carries both."""
    unauthenticated, invalid, not_found, internal = 16, 3, 5, 13
    r = Records()
    r.add(count=7)  # answered, matched
    r.add("mismatch", real=[("fee", "1", "2")], count=2)  # answered, mismatched
    r.add(bank_code=unauthenticated, bk_code=unauthenticated, count=5)
    r.add(bank_code=invalid, bk_code=invalid, count=3)
    r.add("mismatch", bank_code=not_found, bk_code=0, real=[("status", "NOT_FOUND", "OK")])
    r.add("skipped", bank_code=internal, bk_code=internal, reason="both sides failed (INTERNAL)", count=4)
    r.add("tainted", real=[("fee", "1", "2")], reason="key 'A1' out of step", count=2)
    r.add(method=REFUND, bank_code=unauthenticated, bk_code=unauthenticated, count=6)
    await r.write(store)
    report = await _report(store)
    get, refund = report.methods
    assert (get.compared, get.answered) == (18, 9)
    assert get.unanswered == (
        CodePair("UNAUTHENTICATED", "UNAUTHENTICATED", 5),
        CodePair("INVALID_ARGUMENT", "INVALID_ARGUMENT", 3),
        CodePair("NOT_FOUND", "OK", 1),
    )
    assert (refund.compared, refund.answered) == (6, 0)
    assert refund.unanswered == (CodePair("UNAUTHENTICATED", "UNAUTHENTICATED", 6),)
    refund_json = to_json(report)["methods"][1]
    assert (refund_json["answered"], refund_json["unanswered_status_codes"]) == (
        0,
        [{"bank": "UNAUTHENTICATED", "bk": "UNAUTHENTICATED", "calls": 6}],
    )


async def test_tolerated_counts_distinct_calls_per_rule(store: Store) -> None:
    """A rule counts each call once, however many paths it tolerated in it; real paths are not rules."""
    r = Records()
    r.add(tolerated=[("price", "decimal"), ("trades[0].price", "decimal"), ("booked_at", "clock")])
    r.add(tolerated=[("price", "decimal")])
    r.add("mismatch", real=[("fee", 1, 2)], tolerated=[("booked_at", "clock")])
    await r.write(store)
    (get,) = (await _report(store)).methods
    assert get.tolerated_by_rule == (("clock", 2), ("decimal", 2))
    assert get.tolerated == 3


async def test_status_code_pairs_and_dropped_counts(store: Store) -> None:
    """Code pairs come by name, most first, None for a side not called; dropped sums the window's counts."""
    r = Records()
    r.add(count=3)
    r.add(
        "mismatch", real=[("status.code", "NOT_FOUND", "INVALID_ARGUMENT")], bank_code=5, bk_code=3, count=2
    )
    r.add("skipped", bk_code=None, bk_ms=None)
    await r.write(store)
    store.counts.put(T0 + 50, "test:1", [(GET, "comparisons_dropped", 4), (GET, "store_dropped", 1)])
    store.counts.put(T0 + 60, "test:2", [(GET, "comparisons_dropped", 2)])
    store.counts.put(T0 - 1, "test:1", [(GET, "comparisons_dropped", 100)])  # before the window
    store.counts.put(T0 + 70, "test:1", [(REFUND, "store_dropped", 7)])  # a method with nothing stored
    await store.flush()
    report = await _report(store)
    get = report.method("pay.v1.Payments/Get")
    assert get is not None
    assert [(c.bank, c.bk, c.count) for c in get.codes] == [
        ("OK", "OK", 3),
        ("NOT_FOUND", "INVALID_ARGUMENT", 2),
        ("OK", None, 1),
    ]
    assert get.dropped == 7
    assert get.dropped_by_name == (("comparisons_dropped", 6), ("store_dropped", 1))
    refund = report.method("/pay.v1.Payments/Refund")
    assert refund is not None
    assert (refund.calls, refund.dropped) == (0, 7), "a method only dropped is in the report, with no call"


async def test_latency_percentiles_are_nearest_rank_over_measured_calls(store: Store) -> None:
    """p50 and p99 of each side, over the calls where that side was measured (None: not called)."""
    r = Records()
    for ms in range(1, 101):
        r.add(bank_ms=float(ms), bk_ms=float(ms * 10) if ms <= 50 else None)
    r.add(method=REFUND, bank_ms=None, bk_ms=None)
    await r.write(store)
    get, refund = (await _report(store)).methods
    assert (get.bank_latency.count, get.bank_latency.p50, get.bank_latency.p99) == (100, 50.0, 99.0)
    assert (get.bk_latency.count, get.bk_latency.p50, get.bk_latency.p99) == (50, 250.0, 500.0)
    assert (refund.bank_latency.count, refund.bank_latency.p50, refund.bank_latency.p99) == (0, None, None)


def test_percentile_is_nearest_rank() -> None:
    """Nearest rank: an observed value, the smallest with at least the share at or below it."""
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0
    assert percentile([float(n) for n in range(1, 1001)], 0.99) == 990.0


async def test_window_and_method_filters(store: Store) -> None:
    """Only calls with since <= at <= until count; methods filter with or without the leading slash."""
    r = Records()
    r.add(at=T0 - 0.001)
    r.add(at=T0)
    r.add(at=T0 + SPAN)
    r.add(at=T0 + SPAN + 0.001)
    r.add(method=REFUND, at=T0 + 5)
    await r.write(store)
    everything = await _report(store)
    assert [(m.method, m.calls) for m in everything.methods] == [
        ("pay.v1.Payments/Get", 2),
        ("pay.v1.Payments/Refund", 1),
    ]
    for name in ("pay.v1.Payments/Refund", "/pay.v1.Payments/Refund"):
        only = await _report(store, methods=[name])
        assert [(m.method, m.calls) for m in only.methods] == [("pay.v1.Payments/Refund", 1)]
    asked = await _report(store, methods=["pay.v1.Payments/Nothing"])
    assert [(m.method, m.calls, m.compared) for m in asked.methods] == [("pay.v1.Payments/Nothing", 0, 0)]
    assert (await _report(store, since=T0 + 6, until=T0 + 7)).methods == ()


async def test_a_path_bank_differs_at_as_often_as_bk_is_noise_and_a_new_one_is_real(store: Store) -> None:
    """request_id differs in every answer, Bank-vs-BK and Bank-vs-Bank: noise; fee at 5%, not Bank: real."""
    r = Records()
    # 20 compared calls, all asked of Bank twice; request_id differs everywhere, fee in one call
    r.add("mismatch", real=[("request_id", "r1", "r2")], noise=["request_id"], count=19)
    r.add("mismatch", real=[("request_id", "r1", "r2"), ("fee", "0.03", "0.02")], noise=["request_id"])
    await r.write(store)
    (get,) = (await _report(store)).methods
    paths = {p.path: p for p in get.paths}
    assert (paths["request_id"].calls, paths["request_id"].bk_rate) == (20, 1.0)
    assert (paths["request_id"].noise_calls, paths["request_id"].noise_rate) == (20, 1.0)
    assert paths["request_id"].classification == "noise"
    assert (paths["fee"].calls, paths["fee"].bk_rate, paths["fee"].noise_rate) == (1, 0.05, 0.0)
    assert paths["fee"].classification == "real"
    assert (paths["fee"].example_bank, paths["fee"].example_bk) == ("0.03", "0.02")
    assert [p.path for p in get.paths] == ["request_id", "fee"], "most calls first"
    assert (get.mismatches, get.real_mismatches, get.noise_mismatches) == (20, 1, 19)
    assert get.real_mismatch_rate == pytest.approx(0.05)
    assert get.noise_sampled == 20


@pytest.mark.parametrize(
    ("bk_calls", "relative", "absolute", "expected"),
    [
        (13, 0.2, 0.01, "real"),  # 13% > 10% x 1.2 and 13% - 10% > 1%
        (12, 0.2, 0.01, "noise"),  # 12% is not above 10% x 1.2
        (13, 0.2, 0.05, "noise"),  # 13% - 10% is not above 5%
        (13, 0.5, 0.0, "noise"),  # 13% is not above 10% x 1.5
        (16, 0.5, 0.0, "real"),
    ],
)
async def test_noise_thresholds_on_both_sides(
    store: Store, bk_calls: int, relative: float, absolute: float, expected: str
) -> None:
    """Bank differs from itself in 10% of sampled calls: BK's rate must clear both thresholds to be real."""
    r = Records()
    # 100 calls, all compared and all asked of Bank twice: Bank's answers differ at balance in 10
    r.add("mismatch", real=[("balance", 1, 2)], noise=["balance"], count=10)
    r.add("mismatch", real=[("balance", 1, 2)], sampled=True, count=bk_calls - 10)
    r.add(sampled=True, count=100 - bk_calls)
    await r.write(store)
    (get,) = (await _report(store, relative=relative, absolute=absolute)).methods
    assert (get.compared, get.noise_sampled) == (100, 100)
    (path,) = get.paths
    assert (path.bk_rate, path.noise_rate) == (pytest.approx(bk_calls / 100), pytest.approx(0.1))
    assert path.classification == expected
    assert get.real_mismatches == (bk_calls if expected == "real" else 0)
    noise = {"relative": relative, "absolute": absolute, "sampled": 100, "min_sampled": 20}
    assert classify(path.bk_rate, path.noise_rate, **noise) == expected


@pytest.mark.parametrize(("asked_twice", "expected"), [(1, "real"), (19, "real"), (20, "noise")])
async def test_noise_excuses_bk_only_when_enough_reads_were_asked_twice(
    store: Store, asked_twice: int, expected: str
) -> None:
    """Bank differed from itself at balance in every read asked twice; BK differs there in 99 of 100
    calls. Measured on one read, that noise rate says nothing: it must not turn 99 of BK's differences
    into noise. From `min_sampled` reads asked twice (20 by default) it does."""
    r = Records()
    r.add("mismatch", real=[("balance", 1, 2)], noise=["balance"], count=asked_twice)
    r.add("mismatch", real=[("balance", 1, 2)], count=99 - asked_twice)
    r.add(count=1)
    await r.write(store)
    report = await _report(store)
    (get,) = report.methods
    assert (get.compared, get.noise_sampled) == (100, asked_twice)
    (path,) = get.paths
    assert path.noise_rate == pytest.approx(1.0)
    assert path.classification == expected
    assert get.real_mismatches == (99 if expected == "real" else 0)
    assert report.min_sampled == 20
    fewer = await _report(store, min_sampled=asked_twice)  # the threshold is a setting
    assert fewer.methods[0].paths[0].classification == "noise"


OTHER = "/orders.v1.Venue/Place"  # a method of another service on the same Bank


async def test_a_header_bank_varies_on_its_reads_is_noise_on_the_services_writes_too(store: Store) -> None:
    """Bank stamps every answer with a fresh `x-request-id` header (an interceptor's, service-wide).
    Writes are never asked twice, so a write's own noise rate is never measured: the header's noise
    rate over the service's methods asked twice stands in for it, for metadata alone. BK clearly worse
    at a header stays real; a message path, or another service's header, is not excused this way."""
    r = Records()
    # Get, a read: 20 calls asked twice, Bank varies x-request-id in each and x-trace in 2 of them
    r.add("mismatch", real=[("metadata.x-request-id", "a", "b")], noise=["metadata.x-request-id"], count=18)
    r.add(
        "mismatch",
        real=[("metadata.x-request-id", "a", "b")],
        noise=["metadata.x-request-id", "metadata.x-trace", "request_id"],
        count=2,
    )
    # Refund, a write of the same service: BK's header differs in all 30, x-trace too, and request_id
    headers = [("metadata.x-request-id", "c", "d"), ("metadata.x-trace", "t1", "t2")]
    r.add("mismatch", method=REFUND, real=headers, count=10)
    r.add("mismatch", method=REFUND, real=[*headers, ("request_id", "r1", "r2")], count=20)
    # another service's write: nothing of it was asked twice
    r.add("mismatch", method=OTHER, real=[("metadata.x-request-id", "e", "f")], count=5)
    await r.write(store)

    for methods in ((), [REFUND]):  # the report of one method reads the service's noise all the same
        report = await _report(store, methods=methods)
        refund = next(m for m in report.methods if m.method == REFUND.lstrip("/"))
        assert refund.noise_sampled == 0
        paths = {p.path: p for p in refund.paths}
        header = paths["metadata.x-request-id"]
        assert (header.bk_rate, header.noise_rate, header.noise_calls) == (1.0, 1.0, 20)
        assert (header.noise_sampled, header.noise_of, header.classification) == (
            20,
            "pay.v1.Payments",
            "noise",
        )
        trace = paths["metadata.x-trace"]  # Bank varies it in 10% of its reads, BK in every write: real
        assert (trace.noise_rate, trace.noise_of, trace.classification) == (0.1, "pay.v1.Payments", "real")
        assert (paths["request_id"].noise_rate, paths["request_id"].classification) == (0.0, "real")
        assert (paths["request_id"].noise_sampled, paths["request_id"].noise_of) == (0, "")
        assert (refund.real_mismatches, refund.noise_mismatches) == (30, 0)

    report = await _report(store)
    get = next(m for m in report.methods if m.method == GET.lstrip("/"))
    (header,) = (p for p in get.paths if p.path == "metadata.x-request-id")
    assert (header.noise_sampled, header.noise_of, header.classification) == (20, "", "noise")
    other = next(m for m in report.methods if m.method == OTHER.lstrip("/"))
    (header,) = other.paths
    assert (header.noise_rate, header.noise_sampled, header.classification) == (0.0, 0, "real")
    assert other.real_mismatches == 5


async def test_a_header_bank_varies_on_writes_alone_is_not_noise_from_too_few_reads(store: Store) -> None:
    """The service's rate counts only once `min_sampled` of its calls were asked twice, as a method's."""
    r = Records()
    r.add("mismatch", real=[("metadata.x-request-id", "a", "b")], noise=["metadata.x-request-id"], count=19)
    r.add("mismatch", method=REFUND, real=[("metadata.x-request-id", "c", "d")], count=30)
    await r.write(store)
    report = await _report(store)
    refund = next(m for m in report.methods if m.method == REFUND.lstrip("/"))
    (header,) = refund.paths
    assert (header.noise_rate, header.noise_sampled, header.classification) == (1.0, 19, "real")
    assert refund.real_mismatches == 30


def test_classify_without_noise_is_always_real() -> None:
    """A path Bank never differs at is real, whatever its rate; so is one Bank's rate was measured on too
    few calls for."""
    enough = {"sampled": 20, "min_sampled": 20}
    assert classify(0.0001, 0.0, relative=0.2, absolute=0.0003, **enough) == "real"
    assert classify(1.0, 0.0, relative=10.0, absolute=1.0, **enough) == "real"
    assert classify(0.5, 0.5, relative=0.2, absolute=0.0, **enough) == "noise"
    assert classify(0.5, 0.5, relative=0.2, absolute=0.0, sampled=19, min_sampled=20) == "real"


async def test_only_mismatches_count_at_a_path(store: Store) -> None:
    """Real differences of tainted and skipped calls are explained elsewhere: they make no path's rate;
    a tainted call's are listed apart, with the tainted example."""
    r = Records()
    r.add("mismatch", real=[("fee", "0.03", "0.02")], at=T0 + 20)
    r.add("mismatch", real=[("fee", "0.05", "0.04")], at=T0 + 30)
    r.add("tainted", real=[("fee", "9", "8")], at=T0 + 5, reason="missed write")
    r.add("skipped", real=[("trade_id", "T1", None)], bk_code=None, at=T0 + 1, reason="unmapped id")
    r.add(count=2)
    await r.write(store)
    (get,) = (await _report(store)).methods
    (fee,) = get.paths
    assert (fee.path, fee.calls, fee.bk_rate) == ("fee", 2, 0.5), "2 of 4 compared (the tainted call is not)"
    assert (fee.example_bank, fee.example_bk) == ("0.03", "0.02"), "the earliest mismatch gives the example"
    (tainted,) = get.tainted_paths
    assert (tainted.path, tainted.kind, tainted.calls) == ("fee", "changed", 1)
    assert (tainted.example_bank, tainted.example_bk) == ("9", "8")


async def test_tainted_calls_have_paths_of_their_own(store: Store) -> None:
    """The real differences of tainted calls are counted by path (lists folded), most calls first, each with
    an example from a tainted call, even when a mismatch differs at the same path at the same moment."""
    r = Records()
    r.add("tainted", real=[("fee", "9", "8")], at=T0 + 5, reason="missed write")
    r.add("mismatch", real=[("fee", "0.03", "0.02"), ("cash", "10", "11")], at=T0 + 5)
    r.add("tainted", real=[("cash", "7", "0")], at=T0 + 5, reason="missed write")
    r.add("tainted", real=[("trades[0].qty", "1", "2"), ("trades[4].qty", "3", "4")], at=T0 + 6, count=2)
    r.add("tainted", real=[("fee", "5", "4")], tolerated=[("price", "decimal")], at=T0 + 7)
    r.add("skipped", real=[("trade_id", "T1", None)], bk_code=None, reason="unmapped id")
    await r.write(store)
    (get,) = (await _report(store)).methods
    assert [(t.path, t.calls, t.example_bank, t.example_bk) for t in get.tainted_paths] == [
        ("fee", 2, "9", "8"),
        ("trades[*].qty", 2, "1", "2"),
        ("cash", 1, "7", "0"),
    ]
    assert [(p.path, p.calls, p.example_bank, p.example_bk) for p in get.paths] == [
        ("cash", 1, "10", "11"),
        ("fee", 1, "0.03", "0.02"),
    ], "a mismatch's example is a mismatch's"
    assert (get.compared, get.tainted, get.mismatches) == (1, 5, 1)


async def test_lists_fold_into_one_path(store: Store) -> None:
    """trades[0].fee and trades[3].fee are one path, trades[*].fee, counted once per call."""
    r = Records()
    r.add("mismatch", real=[("trades[0].fee", 1, 2), ("trades[3].fee", 3, 4)])
    r.add("mismatch", real=[("trades[1].fee", 5, 6)])
    await r.write(store)
    (get,) = (await _report(store)).methods
    assert [(p.path, p.calls) for p in get.paths] == [("trades[*].fee", 2)]


async def test_the_series_buckets_compared_and_real_mismatches(store: Store) -> None:
    """30 buckets across the window; each counts its compared calls and its real (not noise) mismatches."""
    r = Records()
    r.add(at=T0, count=2)
    r.add("mismatch", real=[("fee", 1, 2)], at=T0 + 99.999)
    r.add("mismatch", real=[("fee", 1, 2)], at=T0 + 100)
    r.add("mismatch", real=[("request_id", 1, 2)], noise=["request_id"], at=T0 + 150, count=3)
    r.add(sampled=True, noise=["request_id"], at=T0 + 160)
    r.add("shadow-error", at=T0 + 170, bk_code=None)
    r.add(at=T0 + SPAN)
    await r.write(store)
    (get,) = (await _report(store, min_sampled=1)).methods  # a few calls asked twice are enough here
    assert len(get.series) == BUCKETS
    assert get.series[0].start == T0
    assert get.series[-1].end == T0 + SPAN
    first, second, last = get.series[0], get.series[1], get.series[-1]
    assert (first.compared, first.real_mismatches, first.rate) == (3, 1, pytest.approx(1 / 3))
    assert (second.compared, second.real_mismatches) == (5, 1), "the noise mismatches are compared, not real"
    assert (last.compared, last.real_mismatches) == (1, 0)
    assert all(b.compared == 0 and b.rate is None for b in get.series[2:-1])
    assert sum(b.real_mismatches for b in get.series) == get.real_mismatches == 2


async def test_calls_lists_what_did_not_match_newest_first(store: Store) -> None:
    """With calls=True: every verdict but match (errors too), newest first, up to the limit, differences
    parsed."""
    r = Records()
    r.add(at=T0 + 1)
    r.add("mismatch", real=[("fee", "0.03", "<script>x</script>")], at=T0 + 2, key="A7", bank_ms=1.5)
    r.add("mismatch", real=[("request_id", 1, 2)], noise=["request_id"], at=T0 + 3, sampled=True)
    r.add("shadow-error", at=T0 + 4, bk_code=None, bk_ms=None, reason="shadow timeout after 2s")
    r.add("error", at=T0 + 5, reason="the comparison failed: ValueError('bad')")
    await r.write(store)
    report = await _report(store, calls=True, min_sampled=1)  # one call asked twice is enough here
    assert report.calls is not None
    assert [c.verdict for c in report.calls] == ["error", "shadow-error", "mismatch", "mismatch"]
    error, timeout, noise, fee = report.calls
    assert (error.reason, error.mismatch) == ("the comparison failed: ValueError('bad')", None)
    assert (timeout.reason, timeout.bk_code, timeout.bk_ms, timeout.mismatch) == (
        "shadow timeout after 2s",
        None,
        None,
        None,
    )
    assert noise.mismatch == "noise"
    assert fee.mismatch == "real"
    assert fee.at == "2027-01-15T08:00:02.000Z"
    assert (fee.method, fee.routing_key, fee.correlation_id, fee.bank_code, fee.bk_code, fee.bank_ms) == (
        "pay.v1.Payments/Get",
        "A7",
        "req-1",
        "OK",
        "OK",
        1.5,
    )
    assert fee.differences == (Difference("fee", DiffKind.CHANGED, "0.03", "<script>x</script>"),)
    limited = await _report(store, calls=True, limit=1)
    assert limited.calls is not None
    assert [c.verdict for c in limited.calls] == ["error"]


async def test_an_empty_store_gives_an_empty_report(store: Store) -> None:
    """No comparison: no method, and no error."""
    report = await _report(store, calls=True)
    assert report.methods == ()
    assert report.calls == ()


async def test_a_wide_window_reads_the_same_figures(store: Store) -> None:
    """The report reads whole tables when the window holds most of the store and through indexes
    otherwise: both ways give the same figures."""
    r = Records()
    r.add("mismatch", real=[("request_id", 1, 2)], noise=["request_id"], count=4)
    r.add("mismatch", real=[("fee", 1, 2)], tolerated=[("price", "decimal")], count=2)
    r.add(method=REFUND, tolerated=[("price", "decimal")], count=3)
    r.add(at=T0 + SPAN + 100, count=50)  # outside: the window holds a small share of the store
    await r.write(store)
    narrow = await _report(store, min_sampled=1)  # a few calls asked twice are enough here
    wide = await _report(store, until=T0 + SPAN + 100, min_sampled=1)
    get_narrow, get_wide = narrow.methods[0], wide.methods[0]
    assert (get_narrow.calls, get_wide.calls) == (6, 56)
    assert (get_narrow.noise_mismatches, get_wide.noise_mismatches) == (4, 4)
    assert (get_narrow.real_mismatches, get_wide.real_mismatches) == (2, 2)
    assert get_narrow.tolerated_by_rule == get_wide.tolerated_by_rule == (("decimal", 2),)
    assert [p.path for p in get_narrow.paths] == [p.path for p in get_wide.paths] == ["request_id", "fee"]
    assert narrow.methods[1] == wide.methods[1] or narrow.methods[1].tolerated_by_rule == (("decimal", 3),)
    assert wide.methods[1].tolerated_by_rule == (("decimal", 3),)
