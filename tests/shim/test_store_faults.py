"""The store failing under a running shim: its SQLite file deleted, full or refusing writes, its PostgreSQL
blackholed.

Real servers only: the sample Bank and BK (or the payments service) in the test process on port 0, the
shim as a `python -m shim serve` process or in-process (`running_shim`, where the test can fill its
SQLite database: `PRAGMA max_page_count` on the shim's own connection makes it full, as a full disk
does). The PostgreSQL test runs when SHIM_TEST_POSTGRES_DSN names a database, through a TCP relay in
the test process that can stop answering (accepting connections and never replying).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.store import Store
from shim.testing import running_shim
from tests.helpers import postgres_schema_url, shim_command, until
from tests.pg_relay import PgRelay, relayed
from tests.processes import shim_process
from tests.services.tally.server import APPEND, DESCRIPTOR_SET, Request
from tests.services.tally.server import serve as serve_tally
from tests.shim import _payments as pay
from tests.shim.test_evidence_store import (
    BANK_BINPB,
    CALL_TIMEOUT,
    Rows,
    _postgres_sql,
    _shadow_args,
    _sqlite_sql,
    _until,
)

DELETED = (  # what the shim logs, once, when its SQLite file was deleted under it
    "store file deleted while in use: a new one is made;"
    " the comparisons in the deleted one are counted as lost"
)


def _at(entry: dict[str, object]) -> float:
    """When a log line was written, in seconds (its ISO timestamp)."""
    return datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


def _timeline(lines: list[str], since: float) -> str:
    """The log lines from `since` on, each with its time after it: where a stop spent its time."""
    shown = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and "timestamp" in entry and _at(entry) >= since:
                shown.append(f"+{_at(entry) - since:6.3f}s {entry.get('event')} {entry.get('logger', '')}")
    return "\n".join(shown)


def _events(lines: list[str], event: str) -> list[dict[str, object]]:
    """The JSON log lines of `lines` whose event is `event`."""
    found = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == event:
                found.append(entry)
    return found


async def _open_accounts(address: str, prefix: str, count: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        for n in range(count):
            await stub.OpenAccount(
                pb.OpenAccountRequest(account_id=f"{prefix}{n}", owner_name="Ada"),
                timeout=CALL_TIMEOUT,
                metadata=(("x-request-id", f"{prefix}{n}"),),
            )


# -- a deleted SQLite file -----------------------------------------------------------------------------


async def test_a_sqlite_file_deleted_under_the_shim_is_made_again_and_its_comparisons_counted_as_lost(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A store file deleted while the shim runs is made again at its path (migrated, keys out of step
    copied): later comparisons are stored in it, the deleted ones counted as `store_failed`, logged once."""
    bank, bk = ledgers
    path = tmp_path / "shim.db"
    config = tmp_path / "shim.toml"
    config.write_text('[store]\nrefresh = "100ms"\ncorrelation_header = "x-request-id"\n')
    sql = _sqlite_sql(path)
    args = _shadow_args(bank, bk, path, "--descriptor-set", BANK_BINPB, "--config", config)
    async with shim_process(*args) as shim:
        address = shim.ready["listen"]
        await _open_accounts(address, "before-", 5)

        async def stored() -> Rows:
            return await asyncio.to_thread(sql, "SELECT count(*) FROM comparisons")

        await _until(stored, lambda rows: rows[0][0] == 5, "the first comparisons stored")
        sql("INSERT INTO out_of_step (key, since, method, reason) VALUES ('K1', 1.0, '/m', 'a test')")
        path.unlink()  # as `rm shim.db` does: its -wal and -shm stay

        async def remade() -> bool:  # made and migrated: the file appears before its tables do
            if not path.exists():
                return False
            found = await asyncio.to_thread(sql, "SELECT name FROM sqlite_master WHERE name = 'comparisons'")
            return bool(found)

        await _until(remade, bool, "a new store file at the path, migrated")

        async def evidence() -> tuple[Rows, Rows]:
            comparisons = await asyncio.to_thread(sql, "SELECT correlation_id FROM comparisons")
            counts = await asyncio.to_thread(
                sql, "SELECT method, sum(value) FROM counts WHERE name = 'store_failed' GROUP BY method"
            )
            return comparisons, counts

        await _open_accounts(address, "after-", 5)
        comparisons, counts = await _until(
            evidence, lambda found: len(found[0]) == 5 and bool(found[1]), "the later comparisons stored"
        )
        assert await shim.stop() == 0, shim.stderr[-5:]
    assert sorted(row[0] for row in comparisons) == [f"after-{n}" for n in range(5)]
    assert counts == [("/bank.v1.Ledger/OpenAccount", 5)]
    assert sql("SELECT key, reason FROM out_of_step") == [("K1", "a test")]
    assert sql("PRAGMA integrity_check") == [("ok",)]
    (logged,) = _events(shim.stderr, DELETED)
    assert (logged["comparisons_lost"], logged["level"]) == (5, "error")


# -- a full SQLite database, one that refuses writes -------------------------------------------------


async def _room(store: Store, pages: int | None) -> None:
    """Let the shim's SQLite database grow to `pages` pages at most (None: as it is now: full), on the
    shim's own connection, as a full disk would stop it growing."""

    def limit(db: Any) -> None:
        most = pages if pages is not None else db.run("PRAGMA page_count")[0][0]
        db.run(f"PRAGMA max_page_count = {most}")

    await store.transaction(limit, write=False)


async def _report(path: Path) -> dict[str, Any]:
    """`shim report --json` of the store at `path`: its one method."""
    code, out, err = await shim_command("report", "--json", "--store", path)
    assert code == 0, err
    (method,) = json.loads(out)["methods"]
    return dict(method)


@pytest.mark.parametrize("max_buffer", [1000, 30], ids=["within-the-buffer", "past-the-buffer"])
async def test_a_full_sqlite_database_keeps_the_comparisons_until_there_is_room_again(
    tmp_path: Path, max_buffer: int
) -> None:
    """While the database is full ("database or disk is full"), the comparisons that do not fit wait
    (up to the sink's `max_buffer`, those past it dropped and counted) and are tried again; once there is
    room, every one kept is stored and every one dropped is counted: the report accounts for every call."""
    path = tmp_path / "shim.db"
    sql = _sqlite_sql(path)
    bank, bk = await pay.serve("bank"), await pay.serve("bk")
    before, during = 10, 100
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                registry=pay.REGISTRY,
                ids=pay.IDS,
                methods=pay.METHODS,
                store={"url": str(path), "refresh": 0.05, "max_buffer": max_buffer},
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            store = shim.store
            assert store is not None
            client = pay.Client(channel)
            for n in range(before):
                await client.list_movements(f"A{n}")
            await sink.wait_for(before)
            await shim.drain()  # every comparison handed to the store too
            await store.flush()
            await _room(store, None)
            for n in range(during):
                await client.list_movements(f"B{n}")
            await sink.wait_for(before + during)
            await shim.drain()
            await store.flush()  # their batch was tried, and failed: the database is full
            kept = store.backlog
            (stored_while_full,) = sql("SELECT count(*) FROM comparisons")[0]
            await _room(store, 1_073_741_823)
            await store.flush()  # tried again, first, with this flush
            (stored,) = sql("SELECT count(*) FROM comparisons")[0]
            dropped = before + during - stored

            async def counted() -> Rows:
                return await asyncio.to_thread(sql, "SELECT name, sum(value) FROM counts GROUP BY name")

            if dropped:
                await _until(counted, lambda rows: rows == [("store_dropped", dropped)], "the drops counted")
            assert store.write_errors == 0
    finally:
        await bank.stop()
        await bk.stop()
    # the pages the database had still took a few; the rest waited for room, up to the buffer
    assert 0 < kept <= max_buffer
    assert stored == stored_while_full + kept
    assert dropped == (0 if max_buffer > during else before + during - stored)
    if max_buffer < during:
        assert (kept, dropped) == (max_buffer, during - max_buffer - (stored_while_full - before))
    method = await _report(path)
    assert (method["calls"], method["dropped"]) == (stored, dropped)
    assert method["calls"] + method["dropped"] == before + during


async def test_counts_of_comparisons_lost_survive_a_write_of_them_that_failed(tmp_path: Path) -> None:
    """A database that refuses writes for good (here a trigger: each comparison and count insert is
    aborted) loses the comparisons, counted as `store_failed`; the write of those counts fails too, and
    they are kept and written once the database takes writes again: the report says how much is missing."""
    path = tmp_path / "shim.db"
    sql = _sqlite_sql(path)
    bank, bk = await pay.serve("bank"), await pay.serve("bk")
    before, during = 5, 7
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                registry=pay.REGISTRY,
                ids=pay.IDS,
                methods=pay.METHODS,
                store={"url": str(path), "refresh": 0.05},
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            store = shim.store
            assert store is not None
            client = pay.Client(channel)
            for n in range(before):
                await client.list_movements(f"A{n}")
            await sink.wait_for(before)
            await shim.drain()  # every comparison handed to the store too
            await store.flush()
            for table in ("comparisons", "counts"):
                refuse = "BEGIN SELECT RAISE(ABORT, 'refused'); END"
                sql(f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} {refuse}")
            for n in range(during):
                await client.list_movements(f"B{n}")
            await sink.wait_for(before + during)
            await shim.drain()
            await store.flush()
            failed = store.write_errors  # the batches of the comparisons
            assert failed >= 1

            async def errors() -> int:
                return store.write_errors

            await _until(errors, lambda n: n > failed, "a write of the counts refused")
            sql("DROP TRIGGER refuse_comparisons")
            sql("DROP TRIGGER refuse_counts")

            async def counted() -> Rows:
                return await asyncio.to_thread(
                    sql, "SELECT method, name, sum(value) FROM counts GROUP BY method, name"
                )

            counts = await _until(counted, bool, "the counts written once the database takes writes")
    finally:
        await bank.stop()
        await bk.stop()
    assert counts == [(pay.LIST_MOVEMENTS, "store_failed", during)]
    method = await _report(path)
    assert (method["calls"], method["dropped"]) == (before, during)
    assert method["dropped_by_name"] == {"store_failed": during}


# -- a blackholed PostgreSQL ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _relayed_postgres() -> AsyncIterator[tuple[str, str, PgRelay]]:
    """A schema of its own in the test database: its url, the same through a relay, and the relay."""
    with postgres_schema_url() as url:
        async with relayed(url) as (through, relay):
            yield url, through, relay


async def test_sigterm_with_postgres_blackholed_stops_within_the_grace_period_and_counts_the_lost(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """With its PostgreSQL blackholed, a shim on SIGTERM exits 0 within grace_period and the store's second,
    and logs the comparisons it could not write as lost."""
    bank, bk = ledgers
    grace = 2.0
    config = tmp_path / "shim.toml"
    config.write_text(f'grace_period = "{grace}s"\n[store]\ncorrelation_header = "x-request-id"\n')
    async with _relayed_postgres() as (url, relayed, relay):
        sql = _postgres_sql(url)
        args = _shadow_args(bank, bk, relayed, "--descriptor-set", BANK_BINPB, "--config", config)
        async with shim_process(*args) as shim:
            address = shim.ready["listen"]
            await _open_accounts(address, "before-", 3)

            async def stored() -> Rows:
                return await asyncio.to_thread(sql, "SELECT count(*) FROM comparisons")

            await _until(stored, lambda rows: rows[0][0] >= 3, "the first comparisons stored")
            relay.blackhole()
            async with grpc.aio.insecure_channel(address) as channel:  # reads: nothing waits for the store
                stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                for _ in range(5):
                    await stub.GetAccount(pb.GetAccountRequest(account_id="before-0"), timeout=CALL_TIMEOUT)

            started = time.monotonic()
            code = await shim.stop()
            took = time.monotonic() - started
        assert code == 0, shim.stderr[-5:]
        # the shim's own stop, from its log's clock: what a busy machine adds to a process's start and exit
        # (up to seconds, with the suite on three workers) is not the shim's
        (stopping,), (stopped,) = _events(shim.stderr, "stopping"), _events(shim.stderr, "stopped")
        own = _at(stopped) - _at(stopping)
        # what serving.md promises: the steps before the store (the calls, Envoy's drain) within grace_period,
        # then the store's floor of a second and the heartbeat's quarter. Alone, and beside three busy loops
        # (`sh -c 'while :; do :; done'`): 2.3 s. Before, beside them: 3.6 to 3.9 s (6.5 s once in CI), the
        # fleet's view forgotten for a second before the drain, the comparison processes' exit awaited after
        # it
        assert own < grace + 1.25, (
            f"the shim took {own:.1f}s to stop with grace_period {grace}s:\n"
            + _timeline(shim.stderr, _at(stopping))
        )
        assert took < grace + 1.5 + 4.0, f"SIGTERM took {took:.1f}s to end the process"  # and then it ends
        (lost,) = _events(shim.stderr, "store did not answer in time: what it had not written is lost")
        assert lost["comparisons"] == 5


async def test_sigterm_with_postgres_blackholed_and_tickets_done_unwritten_stops_in_time(
    tmp_path: Path,
) -> None:
    """Writes ordered across replicas (`[ordering] across_replicas`) whose mirrors end after PostgreSQL
    stopped answering: their tickets done cannot be written. On SIGTERM the shim still stops within the
    grace period and the store's second, logs the tickets done it could not write (released with its
    heartbeat) and the comparisons it could not write as lost. Before, each ticket statement under way was
    cancelled in turn, each waiting out psycopg's cancellation (5 s + 5 s), then the tickets done were
    written on a new connection with no time limit: over 30 s beyond the bound."""
    grace = 2.0
    (tmp_path / "tally.binpb").write_bytes(DESCRIPTOR_SET)
    config = tmp_path / "shim.toml"
    config.write_text(
        f'grace_period = "{grace}s"\ndescriptor_sets = ["tally.binpb"]\n[upstreams.bk]\ntimeout = "10s"\n'
        '[methods."tally.v1.Tally/Append"]\nkey = ["key"]\n[ordering]\nacross_replicas = true\n'
    )
    bank, bk = await serve_tally(), await serve_tally(slow=True)
    try:
        async with _relayed_postgres() as (_, relayed, relay):
            args = ("--config", config, "--bank", bank.address, "--bk", bk.address, "--store", relayed)
            async with shim_process(
                *args, "--dataplane", "python", "--diff-log", "/dev/null", cwd=tmp_path
            ) as shim:
                async with grpc.aio.insecure_channel(shim.ready["listen"]) as channel:
                    append = channel.unary_unary(APPEND)
                    for key in ("k1", "k2"):  # BK answers each mirror 1.5 s after Bank
                        request = Request(key=key, entry=key, delay_ms=1500)
                        await append(request.SerializeToString(), timeout=CALL_TIMEOUT)
                await asyncio.sleep(0.3)  # their tickets are taken
                relay.blackhole()
                await until(lambda: bk.received == {"k1": ["k1"], "k2": ["k2"]}, "BK has both writes")
                await asyncio.sleep(1.5)  # both mirrors answered: their tickets done, not written
                started = time.monotonic()
                code = await shim.stop()
                took = time.monotonic() - started
    finally:
        await bank.stop()
        await bk.stop()
    assert code == 0, shim.stderr[-5:]
    (stopping,), (stopped,) = _events(shim.stderr, "stopping"), _events(shim.stderr, "stopped")
    own = _at(stopped) - _at(stopping)
    assert own < grace + 1.5, (
        f"the shim took {own:.1f}s to stop with grace_period {grace}s: {shim.stderr[-12:]}"
    )
    assert took < grace + 1.5 + 4.0, f"SIGTERM took {took:.1f}s to end the process"
    assert _events(shim.stderr, "store did not answer in time: what it had not written is lost")
    assert _events(
        shim.stderr,
        "tickets done not written: the store did not answer in time; they are released"
        " with this replica's heartbeat",
    )


async def test_a_postgresql_store_gone_read_only_keeps_the_writes_for_another_try() -> None:
    """A PostgreSQL that takes no writes for a while (a standby the store's name points at in a failover, a
    managed server gone read-only at a full disk) refuses them with SQLSTATE 25006, an InternalError. The
    batch is kept and tried again until it takes them; before, each write of it was refused once more, one
    at a time, and lost for good: marks, intents, id pairs and comparisons. The read-only server is this
    session's own (`SET SESSION CHARACTERISTICS`, on the store's connection), the database untouched."""
    from shim.store import OutOfStep

    with postgres_schema_url() as url:
        store = Store.open(url)
        await store.start()
        try:
            await store.transaction(
                lambda db: db.run("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"), write=True
            )
            store.marks.put([OutOfStep("A7", time.time(), "/bank.v1.Ledger/Deposit", "BK timed out", "r:1")])
            await store.flush()
            refused = store.write_errors
            await store.transaction(
                lambda db: db.run("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"), write=True
            )
            await store.flush()  # the kept batch goes first, with the next jobs
            marks = [m.key for m in await store.marks.out_of_step()]
            errors = store.write_errors
        finally:
            await store.close()
    assert (refused, marks, errors) == (0, ["A7"], 0)
