"""How long `shim report` takes to count a large store, against its 10 s target.

    python bench/report.py [--rows 1000000] [--store URL]

Fills a store (by default a new SQLite file in a temporary folder) with
`--rows` synthetic comparisons spread over the last 24 hours, written as the
shim writes them (`Store.put_comparisons` in batches, then `flush()`), then
times `build_report` over the whole window, once without and once with the
list of calls that did not match.

The mix is what a parallel run looks like: four methods; 86% matches (most
with differences a rule tolerated), 6% mismatches (a real `fee`, a
`request_id` that Bank's own answers differ at too, or both), 2% tainted,
3% shadow errors, 2% skipped, 1% errors (comparisons that could not be
made); one call in ten asked of Bank twice, for noise; about 2 differing
paths per call.

Prints the rows, the seconds to fill and to report, and the ratio of the
report time to the 10 s target (below 1 is within it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from shim.evidence import build_report
from shim.store import ComparisonRecord, PathRow, Store

TARGET = 10.0  # seconds, for a report over a million comparisons
METHODS = ("/bank.v1.Ledger/PostTrade", "/bank.v1.Ledger/GetPortfolio", "/bank.v1.Ledger/ListTrades")
METHODS += ("/bank.v1.Ledger/GetBalance",)
BATCH = 5000
TOLERATED = (
    PathRow("bk", "trade_id", "changed", "trade ids", '"T00000042"', '"trd_3f9a0c12be47"'),
    PathRow(
        "bk",
        "booked_at",
        "changed",
        "server clock",
        '"2026-11-27T12:00:00.001Z"',
        '"2026-11-27T12:00:00.004Z"',
    ),
    PathRow("bk", "trades[*].price", "changed", "decimal formatting", '"100.50"', '"100.5"'),
    PathRow("bk", "venue", "added", "venue (BK only)", "null", '"XNYS"'),
)
FEE = PathRow("bk", "fee", "changed", "", '"0.03"', '"0.02"')
REQUEST_ID = PathRow("bk", "request_id", "changed", "", '"r-1"', '"r-2"')
NOISE = PathRow("bank", "request_id", "changed", "", '"r-1"', '"r-3"')


def _record(n: int, rows: int, rng: random.Random, since: float, span: float) -> ComparisonRecord:
    method = METHODS[n % len(METHODS)]
    roll = rng.random()
    verdict = (
        "match"
        if roll < 0.86
        else "mismatch"
        if roll < 0.92
        else "tainted"
        if roll < 0.94
        else "shadow-error"
        if roll < 0.97
        else "skipped"
        if roll < 0.99
        else "error"
    )
    sampled = rng.random() < 0.1
    paths: list[PathRow] = []
    if verdict in ("match", "mismatch", "tainted") and rng.random() < 0.7:
        paths += rng.sample(TOLERATED, rng.randint(1, 3))
    if verdict in ("mismatch", "tainted"):
        real = rng.choice(((FEE,), (REQUEST_ID,), (FEE, REQUEST_ID)))
        paths += real
    if sampled:
        paths.append(NOISE)
    differences = [
        {"path": p.path, "kind": p.kind, "bank": json.loads(p.bank), "bk": json.loads(p.other)}
        | ({"rule": p.rule} if p.rule else {})
        | ({"noise": True} if p.source == "bank" else {})
        for p in paths
    ]
    bk_called = verdict != "skipped"
    return ComparisonRecord(
        id=f"{n:012x}",
        at=since + span * (n + rng.random()) / rows,
        replica="bench:1",
        method=method,
        routing_key=f"A{rng.randrange(5000):04d}",
        correlation_id=f"req-{n}",
        verdict=verdict,
        reason={
            "shadow-error": "shadow timeout after 2s",
            "error": "the comparison failed: ValueError()",
        }.get(verdict, ""),
        is_write=method.endswith("PostTrade"),
        bank_code=0,
        bk_code=(14 if verdict == "shadow-error" else 0) if bk_called else None,
        bank_ms=round(rng.lognormvariate(0.0, 0.5), 3),
        bk_ms=round(rng.lognormvariate(0.3, 0.6), 3) if bk_called else None,
        real_count=sum(1 for p in paths if p.source == "bk" and not p.rule),
        tolerated_count=sum(1 for p in paths if p.rule),
        noise_sampled=sampled,
        differences=json.dumps(differences, separators=(",", ":")),
        payloads=None,
        paths=tuple(paths),
    )


async def fill(store: Store, rows: int, since: float, until: float) -> None:
    rng = random.Random(7)
    span = until - since
    for start in range(0, rows, BATCH):
        batch = range(start, min(start + BATCH, rows))
        store.comparisons.put([_record(n, rows, rng, since, span) for n in batch])
        await store.flush()  # keeps the queue (and memory) small
        if start // BATCH % 20 == 19:
            print(f"  {start + BATCH:,} rows", file=sys.stderr, flush=True)
    store.counts.put(until - 60, "bench:1", [(METHODS[0], "comparisons_dropped", 12)])
    await store.flush()


async def run(rows: int, url: str) -> int:
    until = time.time()
    since = until - 86_400
    store = Store.open(url)
    await store.start()
    try:
        started = time.perf_counter()
        await fill(store, rows, since, until)
        filled = time.perf_counter() - started
        started = time.perf_counter()
        report = await build_report(
            store, since=since, until=until, relative=0.2, absolute=0.0003, min_sampled=20
        )
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        listed = await build_report(
            store,
            since=since,
            until=until,
            relative=0.2,
            absolute=0.0003,
            min_sampled=20,
            calls=True,
            limit=1000,
        )
        with_calls = time.perf_counter() - started
    finally:
        await store.close()
    counted = sum(m.calls for m in report.methods)
    assert counted == rows, f"the report counted {counted} comparisons, {rows} were stored"
    assert listed.calls is not None
    assert len(listed.calls) == min(1000, rows - sum(m.matched for m in report.methods))
    print(f"store: {url}")
    print(f"rows: {rows:,} comparisons (filled in {filled:.1f} s)")
    print(f"report: {seconds:.2f} s; with --calls (1,000 listed): {with_calls:.2f} s")
    verdict = "within" if seconds < TARGET else "OVER"
    print(f"ratio to the {TARGET:.0f} s target: {seconds / TARGET:.2f} ({verdict})")
    for m in report.methods:
        print(
            f"  {m.method}: {m.calls:,} calls, {m.compared:,} compared, {m.unproven:,} unproven,"
            f" {m.real_mismatches:,} real mismatches, {m.noise_mismatches:,} noise,"
            f" Bank p99 {m.bank_latency.p99} ms, BK p99 {m.bk_latency.p99} ms"
        )
    return 0 if seconds < TARGET else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="comparisons to store (default 1,000,000)"
    )
    parser.add_argument(
        "--store", metavar="URL", help="the store to fill (default: a new SQLite file in /tmp)"
    )
    args = parser.parse_args()
    if args.store:
        return asyncio.run(run(args.rows, args.store))
    with tempfile.TemporaryDirectory(prefix="shim-bench-report-") as folder:
        return asyncio.run(run(args.rows, str(Path(folder) / "report.db")))


if __name__ == "__main__":
    sys.exit(main())
