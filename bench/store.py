"""Comparisons per second the store commits, against the target of 20,000 records/s.

Over 400 lines: one benchmark (its records, its runs on both engines, its profile and its table), read
top to bottom.

    python bench/store.py [--records 200000] [--postgres DSN] [--prefill N] [--paced] [--profile]

Builds realistic ComparisonRecords first (untimed), in a mix like the sample
ledger's: 60% matches with no differing path, 25% mismatches with 2 to 4
paths and a differences JSON of a few hundred bytes, 10% tainted (1 to 3
paths, a long reason), 5% skipped (BK not called). Then hands them to a
started `Store` the way a running shim does: one `put_comparisons([record])`
per comparison, from a coroutine on the event loop (which yields to the loop
every 100 records), while the store's worker thread commits what is queued in
batches; then awaits `flush()`. The rate is records / (first put to flush
done). Also shown: how long the puts alone held the event loop, and the
highest backlog seen (what StoreSink compares with store.max_buffer).

Engines: SQLite, a file in a temporary directory; PostgreSQL when --postgres
DSN (or the env SHIM_TEST_POSTGRES_DSN) names a database, in a schema of its
own that is dropped afterwards. The baseline, in the same run: the same rows
inserted with the engine's driver alone (one executemany per table, one
transaction, no Store), which is about what the engine can take from Python.

--prefill N first fills each store (baselines too; untimed, by SQL) with N
older comparisons: the store of a shim that has been running for a while.
Inserts slow down as the tables grow, because ids are random (uuid4, as
`record_of` makes them): every insert into the primary key and the
comparison_paths_comparison index lands on a random page.

--paced also offers the records at a steady 20,000/s (one put per record, the
loop sleeping between groups of 20) and reports the highest backlog and how far
behind the store was when the last record was put: whether it keeps up with
calls arriving evenly rather than in one burst.

--profile runs cProfile over the SQLite run (both threads) and prints the top
functions by own time.

Ends with one JSON line holding every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from shim.store import ComparisonRecord, PathRow, Store, comparison_rows
from shim.store import comparisons as stored
from shim.store.worker import Worker
from shim.testing import postgres_schema

TARGET = 20_000.0  # records/s the store must take
YIELD_EVERY = 100  # puts between two yields to the event loop
REPLICA = "bench-host:4242"  # the replica of the timed records (prefilled ones are "prefill:1")

METHODS = [  # (method, is_write, weight): the sample workload's mix
    ("/bank.v1.Ledger/PostTrade", True, 45),
    ("/bank.v1.Ledger/GetBalance", False, 7),
    ("/bank.v1.Ledger/GetAccount", False, 7),
    ("/bank.v1.Ledger/GetPosition", False, 7),
    ("/bank.v1.Ledger/GetPortfolio", False, 7),
    ("/bank.v1.Ledger/Deposit", True, 5),
    ("/bank.v1.Ledger/ListTrades", False, 5),
    ("/bank.v1.Ledger/CancelTrade", True, 3),
    ("/bank.v1.Ledger/SettleTrades", True, 2),
    ("/bank.v1.Ledger/StreamLedgerEntries", False, 2),
    ("/bank.v1.Ledger/BookTrades", True, 2),
    ("/bank.v1.Ledger/TradeSession", True, 2),
    ("/bank.v1.Ledger/OpenAccount", True, 1),
]
# differing paths as the sample's comparisons report them: (path, kind, rule, bank, bk)
PATHS = [
    ("fee", "changed", "", '"1.67"', '"1.66"'),
    ("booked_at", "changed", "server clock", '"2026-11-27T14:21:32.429564297Z"', '"2026-11-27T14:21:32.43Z"'),
    ("venue", "added", "venue (BK only)", "null", '"XNYS"'),
    ("notional", "changed", "decimal formatting", '"30700.50"', '"30700.5"'),
    ("trades[*].fee", "changed", "", '"0.97"', '"0.96"'),
    ("positions[*].average_price", "changed", "decimal formatting", '"413.0920"', '"413.092"'),
    ("status.code", "status", "", '"FAILED_PRECONDITION"', '"OK"'),
    ("status.details", "status", "error wording", '"insufficient position: holds 15 MSFT"', '""'),
]  # fmt: skip


def _difference(path: tuple[str, str, str, str, str], index: int) -> str:
    name, kind, rule, bank, bk = path
    concrete = name.replace("[*]", f"[{index}]")
    tail = f',"rule":"{rule}"' if rule else ""
    return f'{{"path":"{concrete}","kind":"{kind}","bank":{bank},"bk":{bk}{tail}}}'


def make_records(count: int, seed: int = 7) -> list[ComparisonRecord]:
    """`count` records in the sample's mix, with unique ids, `at` spread over the last hour."""
    rng = random.Random(seed)
    names = [m for m, _, _ in METHODS]
    writes = {m: w for m, w, _ in METHODS}
    weights = [w for _, _, w in METHODS]
    start = time.time() - 3600.0
    records = []
    for n in range(count):
        method = rng.choices(names, weights)[0]
        roll = rng.random()
        bank_ms = round(rng.uniform(2.0, 40.0), 3)
        bk_ms: float | None = round(bank_ms * rng.uniform(0.8, 1.6), 3)
        bank_code: int | None = 0
        bk_code: int | None = 0
        reason = ""
        if roll < 0.60:
            verdict, chosen = "match", []
        elif roll < 0.85:
            verdict, chosen = "mismatch", rng.sample(PATHS, rng.randint(2, 4))
        elif roll < 0.95:
            verdict, chosen = "tainted", rng.sample(PATHS, rng.randint(1, 3))
            reason = (
                f"key 'W7-{n % 997:05d}' out of step since 2026-11-27T14:21:33Z: bank.v1.Ledger/PostTrade"
                " Bank answered FAILED_PRECONDITION (insufficient position: holds 369 V, cannot sell 373),"
                " BK applied it (OK)"
            )
        else:
            verdict, chosen = "skipped", []
            reason = "not mirrored: shadow.max_in_flight calls already in flight"
            bk_code, bk_ms = None, None
        differences = "[" + ",".join(_difference(p, i) for i, p in enumerate(chosen)) + "]"
        records.append(
            ComparisonRecord(
                id=uuid.UUID(int=rng.getrandbits(128), version=4).hex,
                at=start + n * (3600.0 / max(count, 1)),
                replica=REPLICA,
                method=method,
                routing_key=f"W7-{rng.randrange(5000):05d}",
                correlation_id=f"req-{n:08d}" if rng.random() < 0.5 else "",
                verdict=verdict,
                reason=reason,
                is_write=writes[method],
                bank_code=bank_code,
                bk_code=bk_code,
                bank_ms=bank_ms,
                bk_ms=bk_ms,
                real_count=sum(1 for p in chosen if not p[2]),
                tolerated_count=sum(1 for p in chosen if p[2]),
                noise_sampled=rng.random() < 0.1,
                differences=differences,
                payloads=None,
                paths=tuple(PathRow("bk", p[0], p[1], p[2], p[3], p[4]) for p in chosen),
            )
        )
    return records


def describe(records: list[ComparisonRecord]) -> dict[str, Any]:
    verdicts: dict[str, int] = {}
    for r in records:
        verdicts[r.verdict] = verdicts.get(r.verdict, 0) + 1
    mismatches = [r for r in records if r.verdict == "mismatch"]
    return {
        "records": len(records),
        "paths": sum(len(r.paths) for r in records),
        "verdicts": {k: round(v / len(records), 3) for k, v in sorted(verdicts.items())},
        "mismatch_differences_bytes": round(sum(len(r.differences) for r in mismatches) / len(mismatches))
        if mismatches
        else 0,
    }


# -- a store that already holds rows -----------------------------------------------------------------------

_DIFFERENCES = "[" + ",".join(_difference(p, i) for i, p in enumerate(PATHS[:3])) + "]"
_PREFILL_SQLITE = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
    f" INSERT INTO comparisons ({stored.COLUMNS})"
    " SELECT lower(hex(randomblob(16))), ? + i * 0.001, 'prefill:1', '/bank.v1.Ledger/PostTrade',"
    " 'W7-' || (i % 5000), '', CASE WHEN i % 4 = 0 THEN 'mismatch' ELSE 'match' END, '', 1, 0, 0, 5.0, 6.0,"
    " 0, 0, 0, CASE WHEN i % 4 = 0 THEN ? ELSE '[]' END, NULL FROM n"
)
_PREFILL_POSTGRES = (
    f"INSERT INTO comparisons ({stored.COLUMNS})"
    " SELECT md5(random()::text || i), %s + i * 0.001, 'prefill:1', '/bank.v1.Ledger/PostTrade',"
    " 'W7-' || mod(i, 5000), '', CASE WHEN mod(i, 4) = 0 THEN 'mismatch' ELSE 'match' END, '',"
    " 1, 0, 0, 5.0, 6.0, 0, 0, 0, CASE WHEN mod(i, 4) = 0 THEN %s ELSE '[]' END, NULL"
    " FROM generate_series(1, %s) AS i"
)
# three path rows for each mismatch, as the timed records have
_PREFILL_PATHS = [
    "INSERT INTO comparison_paths (comparison_id, at, method, source, path, kind, rule, bank, other)"
    f" SELECT id, at, method, 'bk', '{path}', '{kind}', '{rule}', '{bank}', '{bk}'"
    " FROM comparisons WHERE verdict = 'mismatch'"
    for path, kind, rule, bank, bk in PATHS[:3]
]


def prefill(url: str, count: int) -> float:
    """Make the schema of a new store at `url`, and fill it with `count` older comparisons (and their
    paths), by SQL; the seconds it took."""
    started = time.perf_counter()
    asyncio.run(_migrated(url))
    if count <= 0:
        return 0.0
    at = time.time() - 86_400.0
    if url.startswith("postgres"):
        with psycopg.connect(url) as conn:
            conn.execute(_PREFILL_POSTGRES.encode(), (at, _DIFFERENCES, count))
            for statement in _PREFILL_PATHS:
                conn.execute(statement.encode())
            conn.execute(b"ANALYZE")
    else:
        with contextlib.closing(sqlite3.connect(url, isolation_level=None)) as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_PREFILL_SQLITE, (count, at, _DIFFERENCES))
            for statement in _PREFILL_PATHS:
                conn.execute(statement)
            conn.execute("COMMIT")
    return time.perf_counter() - started


async def _migrated(url: str) -> None:
    store = Store.open(url)
    await store.start()
    await store.close()


# -- through the Store -----------------------------------------------------------------------------------


async def through_store(url: str, records: list[ComparisonRecord]) -> dict[str, float]:
    """Put every record as the shim does, then flush; the figures of the run."""
    store = Store.open(url)
    await store.start()
    try:
        peak = 0
        busy = 0.0  # seconds the puts held the event loop
        started = time.perf_counter()
        for begin in range(0, len(records), YIELD_EVERY):
            slice_started = time.perf_counter()
            for record in records[begin : begin + YIELD_EVERY]:
                store.comparisons.put([record])
            busy += time.perf_counter() - slice_started
            peak = max(peak, store.backlog)
            await asyncio.sleep(0)
        put_done = time.perf_counter()
        await store.flush()
        elapsed = time.perf_counter() - started
        stored = (await store.select("SELECT count(*) FROM comparisons WHERE replica = ?", (REPLICA,)))[0][0]
        if stored != len(records) or store.write_errors:
            raise SystemExit(f"{url}: {stored} of {len(records)} stored, {store.write_errors} batches failed")
    finally:
        await store.close()
    return {
        "records_per_s": round(len(records) / elapsed),
        "seconds": round(elapsed, 3),
        "puts_seconds": round(put_done - started, 3),
        "loop_busy_seconds": round(busy, 3),
        "flush_wait_seconds": round(elapsed - (put_done - started), 3),
        "peak_backlog": peak,
    }


async def paced_through_store(url: str, records: list[ComparisonRecord], rate: float) -> dict[str, float]:
    """Put the records at a steady `rate` per second (as calls arrive), then flush; whether it kept up."""
    store = Store.open(url)
    await store.start()
    try:
        peak = 0
        started = time.perf_counter()
        for begin in range(0, len(records), 20):
            for record in records[begin : begin + 20]:
                store.comparisons.put([record])
            peak = max(peak, store.backlog)
            await asyncio.sleep(max(0.0, started + (begin + 20) / rate - time.perf_counter()))
        offered = time.perf_counter() - started
        await store.flush()
        elapsed = time.perf_counter() - started
        if store.write_errors:
            raise SystemExit(f"{url}: {store.write_errors} batches failed")
    finally:
        await store.close()
    return {
        "offered_per_s": round(len(records) / offered),
        "records_per_s": round(len(records) / elapsed),
        "peak_backlog": peak,
        "lag_at_end_seconds": round(elapsed - offered, 3),
    }


# -- the baseline: the driver alone ----------------------------------------------------------------------


def _rows(records: list[ComparisonRecord]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    return comparison_rows(records)


def sqlite_baseline(path: str, records: list[ComparisonRecord]) -> dict[str, float]:
    """The same rows through sqlite3 alone, with the store's pragmas, in one transaction."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        started = time.perf_counter()
        rows, paths = _rows(records)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(stored.INSERT, rows)
        conn.executemany(stored.INSERT_PATH, paths)
        conn.execute("COMMIT")
        elapsed = time.perf_counter() - started
    return {"records_per_s": round(len(records) / elapsed), "seconds": round(elapsed, 3)}


def postgres_baseline(url: str, records: list[ComparisonRecord]) -> dict[str, float]:
    """The same rows through psycopg alone (executemany, one transaction)."""
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        rows, paths = _rows(records)
        with conn.cursor() as cursor:
            cursor.executemany(stored.INSERT.replace("?", "%s"), rows)
            cursor.executemany(stored.INSERT_PATH.replace("?", "%s"), paths)
        conn.commit()
        elapsed = time.perf_counter() - started
    return {"records_per_s": round(len(records) / elapsed), "seconds": round(elapsed, 3)}


# -- profiling -------------------------------------------------------------------------------------------


def profiled_sqlite_run(path: str, records: list[ComparisonRecord]) -> str:
    """cProfile over one SQLite run, the worker thread included; the top of it by own time."""
    profile = cProfile.Profile()
    worker_profiles: list[cProfile.Profile] = []
    original = Worker.run

    def work(self: Worker) -> None:
        mine = cProfile.Profile()
        worker_profiles.append(mine)
        mine.enable()
        try:
            original(self)
        finally:
            mine.disable()

    Worker.run = work  # type: ignore[method-assign]
    try:
        profile.enable()
        asyncio.run(through_store(path, records))
        profile.disable()
    finally:
        Worker.run = original  # type: ignore[method-assign]
    out = io.StringIO()
    for title, prof in [
        ("event loop thread (puts)", profile),
        *(("worker thread", p) for p in worker_profiles),
    ]:
        out.write(f"--- {title} ---\n")
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(12)
    return out.getvalue()


# -- main ------------------------------------------------------------------------------------------------


def _line(name: str, figures: dict[str, float], baseline: dict[str, float]) -> str:
    rate = figures["records_per_s"]
    return (
        f"{name:<11} {rate:>10,.0f} {rate / TARGET:>8.2f}x {figures['seconds']:>8.2f}"
        f" {figures['loop_busy_seconds']:>9.2f} {figures['peak_backlog']:>9,}"
        f" {baseline['records_per_s']:>12,.0f} {rate / baseline['records_per_s']:>8.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=200_000, help="comparisons to store (200000)")
    parser.add_argument(
        "--postgres",
        metavar="DSN",
        default=os.environ.get("SHIM_TEST_POSTGRES_DSN", ""),
        help="also PostgreSQL at DSN (default: env SHIM_TEST_POSTGRES_DSN)",
    )
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        metavar="N",
        help="first fill each store with N older comparisons (untimed): a store running for a while",
    )
    parser.add_argument("--profile", action="store_true", help="profile a SQLite run and print the top")
    parser.add_argument(
        "--paced",
        action="store_true",
        help=f"also offer the records at a steady {TARGET:,.0f}/s and report whether each engine keeps up",
    )
    args = parser.parse_args()
    if args.records <= 0:
        parser.error("--records must be positive")

    records = make_records(args.records)
    mix = describe(records)
    print(
        f"python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, psycopg {psycopg.__version__};"
        f" {mix['records']:,} records, {mix['paths']:,} path rows, verdicts {mix['verdicts']},"
        f" mismatch differences ~{mix['mismatch_differences_bytes']} bytes"
    )
    if args.prefill:
        print(f"each store first holds {args.prefill:,} older comparisons (and 3 path rows per mismatch)")
    summary: dict[str, Any] = {
        "records": args.records,
        "prefill": args.prefill,
        "target_records_per_s": TARGET,
        "mix": mix,
    }
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        files = (str(Path(tmp) / f"store-{n}.db") for n in range(100))

        @contextlib.contextmanager
        def fresh(engine: str) -> Iterator[str]:
            """A new store of `engine`, prefilled."""
            with contextlib.ExitStack() as stack:
                url = (
                    next(files)
                    if engine == "sqlite"
                    else stack.enter_context(postgres_schema(args.postgres, "bench"))
                )
                prefill(url, args.prefill)
                yield url

        engines = ["sqlite", "postgres"] if args.postgres else ["sqlite"]
        results: dict[str, dict[str, float]] = {}
        baselines: dict[str, dict[str, float]] = {}
        paced: dict[str, dict[str, float]] = {}
        for engine in engines:
            with fresh(engine) as url:
                results[engine] = asyncio.run(through_store(url, records))
            with fresh(engine) as url:
                baseline = sqlite_baseline if engine == "sqlite" else postgres_baseline
                baselines[engine] = baseline(url, records)
            if args.paced:
                with fresh(engine) as url:
                    paced[engine] = asyncio.run(paced_through_store(url, records, TARGET))
        profile = ""
        if args.profile:
            with fresh("sqlite") as url:
                profile = profiled_sqlite_run(url, records)

    print()
    print(
        f"{'engine':<11} {'records/s':>10} {'/target':>9} {'seconds':>8} {'loop busy':>9}"
        f" {'peak wait':>9} {'driver alone':>12} {'/driver':>8}"
    )
    for name, figures in results.items():
        print(_line(name, figures, baselines[name]))
    print(
        f"/target: against {TARGET:,.0f} records/s. loop busy: seconds the puts held the event loop."
        " peak wait: the highest backlog (records queued, not committed)."
        " driver alone: the same rows by executemany in one transaction, without the Store."
    )
    if paced:
        print()
        print(f"paced: {TARGET:,.0f} records/s offered evenly, one put per record")
        for name, f in paced.items():
            print(
                f"{name:<11} offered {f['offered_per_s']:>7,.0f}/s, stored {f['records_per_s']:>7,.0f}/s,"
                f" peak backlog {f['peak_backlog']:>7,}, lag at the end {f['lag_at_end_seconds']:.2f} s"
            )
        summary["paced"] = paced
    if profile:
        print()
        print(profile)
    summary.update({name: {**figures, "driver_alone": baselines[name]} for name, figures in results.items()})
    summary.update(
        {f"{name}_vs_target": round(f["records_per_s"] / TARGET, 3) for name, f in results.items()}
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
