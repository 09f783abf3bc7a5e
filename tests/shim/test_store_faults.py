"""The store failing under a running `shim serve`: its SQLite file deleted, its PostgreSQL blackholed.

Real servers only: the sample Bank and BK in the test process on port 0, the shim
as a `python -m shim serve` process. The PostgreSQL test runs when
SHIM_TEST_POSTGRES_DSN names a database, through a TCP relay in the test process
that can stop answering (accepting connections and never replying).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from tests.helpers import postgres_schema_url
from tests.processes import shim_process
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


# -- a blackholed PostgreSQL ---------------------------------------------------------------------------


class Relay:
    """A TCP relay to `upstream` on a free port that can turn into a black hole: from `blackhole()` on,
    nothing more is passed either way and new connections are accepted and never answered."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._holed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def blackhole(self) -> None:
        self._holed.set()

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if self._holed.is_set():
            return  # held open, never answered
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers.append(up_writer)
        loop = asyncio.get_running_loop()
        self._keep(loop.create_task(self._pipe(reader, up_writer)))
        self._keep(loop.create_task(self._pipe(up_reader, writer)))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self._holed.is_set():
                await asyncio.Event().wait()  # swallow this and everything after: the socket stays open
            writer.write(data)
            await writer.drain()


def _through(url: str, port: int) -> str:
    """`url` with its host and port replaced by 127.0.0.1:`port`."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return parts._replace(netloc=f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}").geturl()


@contextlib.asynccontextmanager
async def _relayed_postgres() -> AsyncIterator[tuple[str, str, Relay]]:
    """A schema of its own in the test database: its url, the same through a relay, and the relay."""
    with postgres_schema_url() as url:
        parts = urlsplit(url)
        async with Relay((parts.hostname or "127.0.0.1", parts.port or 5432)) as relay:
            yield url, _through(url, relay.port), relay


async def test_sigterm_with_postgres_blackholed_stops_within_the_grace_period_and_counts_the_lost(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """With its PostgreSQL blackholed, a shim on SIGTERM exits 0 within grace_period (plus a second), and
    logs the comparisons it could not write as lost."""
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
        slack = 1.5  # the interpreter's own exit, on 2 busy cores
        assert took < grace + 1.0 + slack, f"SIGTERM took {took:.1f}s with grace_period {grace}s"
        (lost,) = _events(shim.stderr, "store did not answer in time: what it had not written is lost")
        assert lost["comparisons"] == 5
