"""The evidence store under stress: a store that stops, a shim killed mid-load, a fleet, retention.

Real servers only: the sample Bank and BK served in the test process on port 0,
shims in-process (`running_shim`) or as `python -m shim serve` processes.
PostgreSQL variants run when SHIM_TEST_POSTGRES_DSN names a database; each test
gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
import pytest
from structlog.testing import capture_logs

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from sample_ledger.workload import run_workload
from shim.app import Shim
from shim.store import ComparisonRecord, PathRow, Store
from shim.testing import running_shim
from tests.helpers import postgres_schema_url
from tests.processes import shim_process

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CONFIG = ROOT / "sample_ledger" / "shim.toml"
BANK_BINPB = ROOT / "sample_ledger" / "bank.binpb"
SAMPLE_RULES = ROOT / "sample_ledger" / "rules.toml"
TIMEOUT = 20.0  # seconds any awaited condition may take before the test fails
CALL_TIMEOUT = 5.0
SHADOW_TIMEOUT = 2.0
POLL = 0.02  # seconds between two looks at a condition; a deadline bounds every wait

T = TypeVar("T")
Rows = list[tuple[Any, ...]]


async def _until(
    look: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str, within: float = TIMEOUT
) -> T:
    """Look until `done(value)`, at most `within` seconds; the last value looked at."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await look()
        if done(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {within}s; last seen {value!r}")
        await asyncio.sleep(POLL)


# -- engines -----------------------------------------------------------------------------------------------


@dataclass
class Engine:
    """A store's url, how to read it from another connection, and how to stop it taking writes."""

    name: str
    url: str
    _sql: Callable[[str], Rows]
    _locked: Callable[[], contextlib.AbstractAsyncContextManager[None]]

    async def sql(self, text: str) -> Rows:
        """Rows of `text`, read on a connection of its own (off the event loop)."""
        return await asyncio.to_thread(self._sql, text)

    def locked(self) -> contextlib.AbstractAsyncContextManager[None]:
        """While inside, another connection holds the comparisons table: the shim's writes wait."""
        return self._locked()


def _sqlite_sql(path: Path) -> Callable[[str], Rows]:
    def sql(text: str) -> Rows:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            return conn.execute(text).fetchall()

    return sql


def _sqlite_locked(path: Path) -> Callable[[], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def locked() -> AsyncIterator[None]:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=TIMEOUT)
        try:
            await asyncio.to_thread(conn.execute, "BEGIN EXCLUSIVE")
            try:
                yield
            finally:
                await asyncio.to_thread(conn.execute, "ROLLBACK")
        finally:
            conn.close()

    return locked


def _postgres_sql(url: str) -> Callable[[str], Rows]:
    def sql(text: str) -> Rows:
        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cursor:
            cursor.execute(text.encode())
            return cursor.fetchall() if cursor.description is not None else []

    return sql


def _postgres_locked(url: str) -> Callable[[], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def locked() -> AsyncIterator[None]:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            await conn.execute(b"LOCK TABLE comparisons IN ACCESS EXCLUSIVE MODE")  # held until rollback
            try:
                yield
            finally:
                await conn.rollback()

    return locked


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A store on each engine: a SQLite file always, PostgreSQL when the DSN is set."""
    if request.param == "sqlite":
        path = tmp_path / "shim.db"
        yield Engine("sqlite", str(path), _sqlite_sql(path), _sqlite_locked(path))
    else:
        with postgres_schema_url() as url:
            yield Engine("postgres", url, _postgres_sql(url), _postgres_locked(url))


async def _started(url: str) -> Store:
    store = Store.open(url)
    await store.start()
    return store


# -- servers -----------------------------------------------------------------------------------------------


def _shadow_args(bank: RunningLedger, bk: RunningLedger, store: str | Path, *more: str | Path) -> list[Any]:
    return [
        "--listen", "127.0.0.1:0", "--bank", bank.address, "--bk", bk.address, "--mode", "shadow",
        "--store", store, "--diff-log", "/dev/null", *more,
    ]  # fmt: skip


# -- a store outage ----------------------------------------------------------------------------------------


async def _timed_get(stub: Any, request_id: str) -> tuple[float, pb.Account]:
    """GetAccount of A1 through `stub`, and how long it took."""
    started = time.perf_counter()
    answer = await stub.GetAccount(
        pb.GetAccountRequest(account_id="A1"), timeout=CALL_TIMEOUT, metadata=(("x-request-id", request_id),)
    )
    return time.perf_counter() - started, answer


@dataclass
class Outage:
    """What a stopped store did to a running shim: the answers, their latencies, the comparisons."""

    before: list[float]  # latencies of calls made while the store took writes
    during: list[float]  # latencies of calls made while it did not
    answers: list[pb.Account]  # the answers through the shim during the outage
    bank: pb.Account  # Bank's own answer, asked directly
    bk: pb.Account  # BK's own answer, asked directly
    stored_before: int  # comparisons in the store when the outage began


async def _outage(
    engine: Engine,
    shim: Shim,
    ledgers: tuple[RunningLedger, RunningLedger],
    calls: int,
    hold: Callable[[], Awaitable[None]],
) -> Outage:
    """Calls through `shim` before and while the comparisons table is locked; `hold()` runs with the lock
    still held after the calls were answered and compared, and decides when to release it."""
    bank, bk = ledgers
    async with (
        grpc.aio.insecure_channel(shim.address) as channel,
        grpc.aio.insecure_channel(bank.address) as to_bank,
        grpc.aio.insecure_channel(bk.address) as to_bk,
    ):
        stub = pb_grpc.LedgerStub(channel)
        await stub.OpenAccount(
            pb.OpenAccountRequest(account_id="A1", owner_name="Ada", initial_deposit="250"),
            timeout=CALL_TIMEOUT,
            metadata=(("x-request-id", "open"),),
        )
        before = [(await _timed_get(stub, f"before-{n}"))[0] for n in range(calls)]  # the baseline
        await shim.drain()
        assert shim.store is not None
        await shim.store.flush()
        stored_before = (await engine.sql("SELECT count(*) FROM comparisons"))[0][0]
        direct_bank = await pb_grpc.LedgerStub(to_bank).GetAccount(
            pb.GetAccountRequest(account_id="A1"), timeout=CALL_TIMEOUT
        )
        direct_bk = await pb_grpc.LedgerStub(to_bk).GetAccount(
            pb.GetAccountRequest(account_id="A1"), timeout=CALL_TIMEOUT
        )
        async with engine.locked():
            timed = [await _timed_get(stub, f"during-{n}") for n in range(calls)]
            await shim.drain()  # every call compared, and handed to the StoreSink
            await hold()
    during, answers = [t for t, _ in timed], [a for _, a in timed]
    return Outage(before, during, answers, direct_bank, direct_bk, stored_before)


def _counted(rows: Rows) -> int:
    return int(rows[0][0] or 0)


async def test_a_store_outage_never_delays_the_primary_and_drops_are_counted(
    engine: Engine, ledgers: tuple[RunningLedger, RunningLedger]
) -> None:
    """A locked store never slows Bank's answers; past store_max_buffer drops are counted, the rest kept."""
    bank, bk = ledgers
    calls, max_buffer = 20, 5
    async with running_shim(
        bank.address,
        bk.address,
        shadow_timeout=SHADOW_TIMEOUT,
        store={
            "url": engine.url,
            "max_buffer": max_buffer,
            "refresh": 0.05,  # counts are flushed every 0.25 s
            "correlation_header": "x-request-id",
        },
        descriptor_sets=(str(BANK_BINPB),),
    ) as (shim, _):

        async def hold() -> None:
            assert shim.store is not None
            assert shim.store.backlog == max_buffer, "the store was to hold max_buffer comparisons"

        with capture_logs() as logs:
            outage = await _outage(engine, shim, ledgers, calls, hold)
        # after the release: what was kept is committed, what was dropped is counted (the baseline may have
        # dropped a few too, when the store fell 5 behind), and nothing else is missing
        made = 1 + 2 * calls  # OpenAccount, then GetAccount before and during the outage

        async def stored_and_counted() -> tuple[int, int]:
            stored = await engine.sql("SELECT count(*) FROM comparisons")
            counted = await engine.sql("SELECT sum(value) FROM counts WHERE name = 'store_dropped'")
            return _counted(stored), _counted(counted)

        stored, counted = await _until(
            stored_and_counted, lambda sc: sum(sc) >= made, "every comparison stored or counted"
        )
        assert shim.store is not None
        write_errors = shim.store.write_errors
    kept = await engine.sql("SELECT correlation_id FROM comparisons WHERE correlation_id LIKE 'during-%'")
    assert (stored, counted) == (outage.stored_before + max_buffer, made - stored)
    assert len(kept) == max_buffer, "the store held max_buffer comparisons until the release"
    assert {row[0] for row in kept} <= {f"during-{n}" for n in range(calls)}
    assert counted >= calls - max_buffer
    assert write_errors == 0
    assert await engine.sql("SELECT DISTINCT method FROM counts WHERE name = 'store_dropped'") == [
        ("/bank.v1.Ledger/GetAccount",)
    ]
    assert any(e["event"].startswith("store is behind") and e["log_level"] == "warning" for e in logs)
    # the primary: Bank's answer every time, as fast as before the outage
    assert outage.bank != outage.bk, "Bank's and BK's answers differ (opened_at): the check below means it"
    assert all(answer == outage.bank for answer in outage.answers)
    assert max(outage.during) < SHADOW_TIMEOUT / 4, (outage.during, outage.before)
    assert statistics.median(outage.during) < 5 * statistics.median(outage.before) + 0.02, (
        outage.during,
        outage.before,
    )


async def test_comparisons_made_in_a_sqlite_outage_longer_than_busy_timeout_are_stored_or_counted(
    tmp_path: Path, ledgers: tuple[RunningLedger, RunningLedger]
) -> None:
    """A SQLite outage longer than busy_timeout: the waiting batch is kept and tried again, and every
    comparison made is either stored once the lock goes or counted as dropped."""
    bank, bk = ledgers
    path = tmp_path / "shim.db"
    engine = Engine("sqlite", str(path), _sqlite_sql(path), _sqlite_locked(path))
    calls, max_buffer = 20, 5
    async with running_shim(
        bank.address,
        bk.address,
        shadow_timeout=SHADOW_TIMEOUT,
        store={
            "url": engine.url,
            "max_buffer": max_buffer,
            "refresh": 0.05,
            "correlation_header": "x-request-id",
        },
        descriptor_sets=(str(BANK_BINPB),),
    ) as (shim, _):
        with capture_logs() as logged:

            async def hold() -> None:  # until the batch waiting for the lock has met busy_timeout
                async def said() -> bool:
                    return any(e["event"].startswith("store unavailable") for e in list(logged))

                await _until(said, lambda kept: kept, "the store says it is unavailable", within=TIMEOUT)

            await _outage(engine, shim, ledgers, calls, hold)
    # the shim has stopped: everything it had is committed, its last counts flushed
    made = 1 + 2 * calls  # OpenAccount, then GetAccount before and during the outage
    stored = _counted(await engine.sql("SELECT count(*) FROM comparisons"))
    counted = _counted(await engine.sql("SELECT sum(value) FROM counts"))
    assert stored + counted == made, f"{stored} stored + {counted} counted of {made} comparisons"


# -- kill -9 ----------------------------------------------------------------------------------------------


def _snapshot(path: Path) -> set[str]:
    """The ids of the comparisons committed in `path`, read in one transaction with count(*)."""
    if not path.exists():
        return set()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        try:
            [(count,)] = conn.execute("SELECT count(*) FROM comparisons").fetchall()
            ids = {row[0] for row in conn.execute("SELECT id FROM comparisons")}
        finally:
            conn.execute("COMMIT")
    assert count == len(ids)
    return ids


async def test_kill_9_during_load_leaves_the_sqlite_file_intact_with_every_acknowledged_record(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """SIGKILL mid-load leaves the SQLite file intact, with every comparison read as committed before it."""
    bank, bk = ledgers
    path = tmp_path / "shim.db"
    kill_at = 200  # comparisons committed before the kill
    args = _shadow_args(bank, bk, path, "--config", SAMPLE_CONFIG)
    async with shim_process(*args) as shim, grpc.aio.insecure_channel(shim.ready["listen"]) as channel:
        workload = asyncio.get_running_loop().create_task(
            run_workload(channel, 20_000, seed=11, concurrency=8)
        )
        try:

            async def look() -> set[str]:
                assert not workload.done(), f"the workload ended before {kill_at} comparisons were stored"
                return await asyncio.to_thread(_snapshot, path)

            seen = await _until(look, lambda ids: len(ids) >= kill_at, f"{kill_at} comparisons committed")
            await shim.kill_9()
            assert not workload.done(), "killed mid-load"
        finally:
            workload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await workload
    sql = _sqlite_sql(path)
    assert sql("PRAGMA integrity_check") == [("ok",)]
    after = {row[0] for row in sql("SELECT id FROM comparisons")}
    assert sql("SELECT count(*) FROM comparisons")[0][0] >= len(seen)
    assert seen <= after, f"{len(seen - after)} acknowledged comparisons lost"
    assert sql(
        "SELECT count(*) FROM comparison_paths WHERE comparison_id NOT IN (SELECT id FROM comparisons)"
    ) == [(0,)], "a comparison's paths are committed with it"


# -- two replicas, one PostgreSQL store --------------------------------------------------------------------


async def test_two_shim_processes_share_one_postgres_store(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Two shims on one PostgreSQL store: each one's calls are stored under its replica, by request id,
    and `shim report` on that store counts the calls of both."""
    bank, bk = ledgers
    config = tmp_path / "shim.toml"
    config.write_text(
        f'mode = "shadow"\ndescriptor_sets = ["{BANK_BINPB}"]\nrules_files = ["{SAMPLE_RULES}"]\n'
        '[store]\ncorrelation_header = "x-request-id"\n',
        encoding="utf-8",
    )
    per_shim = 10
    with postgres_schema_url() as url:
        sql = _postgres_sql(url)
        args = _shadow_args(bank, bk, url, "--config", config)
        async with shim_process(*args) as first, shim_process(*args) as second:
            sent: dict[str, set[str]] = {}
            for index, shim in enumerate((first, second)):
                async with grpc.aio.insecure_channel(shim.ready["listen"]) as channel:
                    stub = pb_grpc.LedgerStub(channel)
                    for n in range(per_shim):
                        request_id = f"req-{index}-{n}"
                        await stub.OpenAccount(
                            pb.OpenAccountRequest(account_id=f"R{index}-{n}", owner_name="Ada"),
                            timeout=CALL_TIMEOUT,
                            metadata=(("x-request-id", request_id),),
                        )
                        sent.setdefault(shim.replica, set()).add(request_id)

            async def look() -> Rows:
                return await asyncio.to_thread(sql, "SELECT replica, correlation_id FROM comparisons")

            rows = await _until(
                look, lambda rows: len(rows) >= 2 * per_shim, "the comparisons of both shims stored"
            )
            for shim in (first, second):
                assert await shim.stop() == 0, shim.stderr
        stored: dict[str, set[str]] = {}
        for replica, correlation_id in rows:
            stored.setdefault(replica, set()).add(correlation_id)
        assert stored == sent
        assert len(stored) == 2
        assert sql("SELECT count(*) FROM comparisons")[0][0] == 2 * per_shim
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "shim", "report", "--store", url, "--since", "1h", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        (method,) = json.loads(done.stdout)["methods"]
        assert (method["method"], method["calls"]) == ("bank.v1.Ledger/OpenAccount", 2 * per_shim)


# -- retention ---------------------------------------------------------------------------------------------


def _record(name: str, at: float, paths: int = 2) -> ComparisonRecord:
    return ComparisonRecord(
        id=name,
        at=at,
        replica="test:1",
        method="/bank.v1.Ledger/GetAccount",
        routing_key="A1",
        correlation_id="",
        verdict="mismatch" if paths else "match",
        reason="",
        is_write=False,
        bank_code=0,
        bk_code=0,
        bank_ms=1.0,
        bk_ms=1.5,
        real_count=paths,
        tolerated_count=0,
        noise_sampled=False,
        differences="[]",
        payloads=None,
        paths=tuple(PathRow("bk", f"field{p}", "changed", "", '"a"', '"b"') for p in range(paths)),
    )


async def test_retention_deletes_comparisons_older_than_store_retain(
    engine: Engine, ledgers: tuple[RunningLedger, RunningLedger]
) -> None:
    """A shim with store_retain deletes comparisons, paths and counts older than it, and keeps the newer."""
    bank, bk = ledgers
    now = time.time()
    old, new = now - 7200.0, now - 5.0
    store = await _started(engine.url)
    store.comparisons.put(
        [_record(f"old-{n}", old - n) for n in range(30)] + [_record(f"new-{n}", new) for n in range(7)]
    )
    store.counts.put(old, "test:1", [("/bank.v1.Ledger/GetAccount", "store_dropped", 3)])
    store.counts.put(new, "test:1", [("/bank.v1.Ledger/GetAccount", "store_dropped", 4)])
    await store.close()
    assert (await engine.sql("SELECT count(*) FROM comparisons"))[0][0] == 37

    async with running_shim(
        bank.address,
        bk.address,
        store={"url": engine.url, "retain": 3600.0, "refresh": 0.05},
    ) as _:
        await _until(
            lambda: engine.sql("SELECT count(*) FROM comparisons WHERE id LIKE 'old-%'"),
            lambda rows: rows[0][0] == 0,
            "the old comparisons deleted",
        )
    assert sorted(row[0] for row in await engine.sql("SELECT id FROM comparisons")) == [
        f"new-{n}" for n in range(7)
    ]
    assert sorted(
        row[0] for row in await engine.sql("SELECT DISTINCT comparison_id FROM comparison_paths")
    ) == [f"new-{n}" for n in range(7)]
    assert await engine.sql("SELECT value FROM counts WHERE replica = 'test:1'") == [(4,)]
