"""Retention (`[store] retain`) of much evidence: in batches, never in the way of the store's other work."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

import sample_ledger
import shim.books
from comparators import DescriptorRegistry, Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.config import load_file, load_rules_file
from shim.routing import MethodSettings
from shim.store import Store
from shim.store.comparisons import INSERT, INSERT_PATH
from shim.testing import running_shim
from tests.helpers import postgres_schema_url

HERE = Path(sample_ledger.__file__).parent
REGISTRY = DescriptorRegistry.from_files([HERE / "bank.binpb"])
RULES, RULE_LOCATIONS = load_rules_file(HERE / "rules.toml")
IDS = load_file(HERE / "shim.toml")["ids"]
BY_ACCOUNT = MethodSettings(key=("account_id",))
METHODS = {f"bank.v1.Ledger/{n}": BY_ACCOUNT for n in ("OpenAccount", "Deposit", "GetBalance")}
OLD_ROWS = 300_000  # an hour of comparisons at ~80 calls/s; deleted in one transaction, 10 s on SQLite


def _rows(count: int, old: float) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    comparisons = [
        (f"{n:032x}", old + n * 0.001, "old:1", "/bank.v1.Ledger/GetBalance", f"A{n % 5000}", "",
         "match", "", 0, 0, 0, 1.0, 1.0, 0, 2, 0, "[]", None)
        for n in range(count)
    ]  # fmt: skip
    paths = [
        (f"{n:032x}", old + n * 0.001, "/bank.v1.Ledger/GetBalance", "bk", f"field{p}", "changed",
         "a rule", '"a"', '"b"')
        for n in range(count)
        for p in range(2)
    ]  # fmt: skip
    return comparisons, paths


async def _fill_old(path: Path, count: int, old: float) -> None:
    """A shim store at `path` with `count` comparisons (two paths each) from `old` on, 1 ms apart."""
    store = Store.open(str(path))
    await store.start()
    await store.close()
    comparisons, paths = _rows(count, old)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    db.executemany(INSERT, comparisons)
    db.executemany(INSERT_PATH, paths)
    db.execute("COMMIT")
    db.close()


async def test_hourly_retention_does_not_hold_back_the_intents_of_mirrored_writes(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path, monkeypatch: Any
) -> None:
    """Each mirrored write waits for its intent to commit on the store's one thread. The hourly retention of
    an hour's comparisons (300,000) ran there as one DELETE of 10 s: the writes made meanwhile waited past
    `ordering.max_wait`, were never sent to BK, and their keys went out of step. Deleted in batches, each
    its own transaction, the intents go between them: every write is mirrored and matches."""
    bank, bk = ledgers
    path = tmp_path / "shim.db"
    retain = 7 * 86400.0
    await _fill_old(path, OLD_ROWS, time.time() - retain + 1800)  # expired at the next hourly retention
    clock = [0.0]  # the hour that passes, for shim.books' clock only
    monkeypatch.setattr(shim.books, "time", types.SimpleNamespace(time=lambda: time.time() + clock[0]))
    settings: dict[str, Any] = {
        "registry": REGISTRY,
        "rules": RULES,
        "rule_locations": RULE_LOCATIONS,
        "ids": IDS,
        "methods": METHODS,
        "store": {"url": str(path), "refresh": 0.05, "retain": retain},
        "ordering": {"max_wait": 4.0},  # shorter than the one DELETE, as 30 s is for millions of rows
    }
    async with (
        running_shim(bank.address, bk.address, **settings) as (shim_, sink),
        aio.insecure_channel(shim_.address) as channel,
    ):
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="N0", initial_deposit="100"))
        await asyncio.wait_for(shim_.drain(), timeout=30)
        clock[0] = 3601.0  # an hour later: the hourly retention begins within 0.25 s
        await asyncio.sleep(1.0)
        for n in range(1, 8):
            await stub.OpenAccount(pb.OpenAccountRequest(account_id=f"N{n}", initial_deposit="100"))
            await asyncio.sleep(0.25)
        await asyncio.wait_for(shim_.drain(), timeout=120)
        writes = [c for c in sink.comparisons if c.method.endswith("OpenAccount")]
        verdicts = [(c.exchange.routing_key, c.verdict.value, c.reason[:100]) for c in writes]
        assert shim_.steps is not None
        out_of_step = sorted(shim_.steps.keys)
        for _ in range(600):  # the retention ends before the shim stops
            left = sqlite3.connect(path).execute("SELECT count(*) FROM comparisons WHERE replica = 'old:1'")
            if left.fetchone()[0] == 0:
                break
            await asyncio.sleep(0.2)
    assert len(writes) == 8
    assert all(c.verdict is Verdict.MATCH for c in writes), verdicts
    assert out_of_step == [], out_of_step
    assert (
        sqlite3.connect(path)
        .execute("SELECT count(*) FROM comparison_paths WHERE method LIKE '%GetBalance'")
        .fetchone()[0]
        == 0
    )


async def test_a_shim_serves_without_waiting_for_the_retention_of_old_evidence(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A shim started with much evidence past `retain` (restarted, or `retain` lowered to free disk) waited,
    behind the one DELETE, before serving: the clients' calls were refused for 11 s here (300,000 rows),
    beyond a startupProbe's minute for millions. Its reads at start now wait for one batch at most."""
    bank, bk = ledgers
    path = tmp_path / "shim.db"
    await _fill_old(path, OLD_ROWS, time.time() - 20 * 86400)
    started = time.perf_counter()
    async with running_shim(
        bank.address, bk.address, store={"url": str(path), "refresh": 0.05, "retain": 7 * 86400.0}
    ) as (shim_, _):
        took = time.perf_counter() - started
        async with aio.insecure_channel(shim_.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="S1", initial_deposit="1"))
    assert took < 3.0, f"the shim served clients only after {took:.1f} s"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "shim.db")
    else:
        with postgres_schema_url() as found:
            yield found


async def test_retention_deletes_in_batches_each_committed_with_other_work_between(url: str) -> None:
    """`delete_before` deletes the oldest comparisons `batch` at a time, their paths with them, then the
    counts, and answers how many comparisons went; a read enqueued meanwhile is answered between batches."""
    store = Store.open(url)
    await store.start()
    try:
        now = time.time()
        comparisons, paths = _rows(23, now - 7200)
        new, new_paths = _rows(1, now - 5)

        def fill(db: Any) -> None:
            db.run_many(INSERT, comparisons)
            db.run_many(INSERT_PATH, paths)
            db.run_many(INSERT, [("new", *new[0][1:])])
            db.run_many(INSERT_PATH, [("new", *new_paths[0][1:])])

        await store.transaction(fill, write=True)
        for n in range(11):
            store.counts.put(now - 7200 + n, "test:1", [("/bank.v1.Ledger/GetBalance", "store_dropped", 1)])
        store.counts.put(now, "test:1", [("/bank.v1.Ledger/GetBalance", "store_dropped", 4)])
        await store.flush()
        seen: list[int] = []

        async def reads() -> None:  # a read now and then while the retention runs
            for _ in range(50):
                seen.append((await store.select("SELECT count(*) FROM comparisons"))[0][0])

        reading = asyncio.ensure_future(reads())
        gone = await store.comparisons.delete_before(now - 3600, batch=5)
        await reading
        left = await store.select("SELECT id FROM comparisons")
        left_paths = await store.select("SELECT DISTINCT comparison_id FROM comparison_paths")
        counts = await store.select("SELECT value FROM counts")
    finally:
        await store.close()
    assert (gone, left, left_paths, counts) == (23, [("new",)], [("new",)], [(4,)])
    assert set(seen) - {24, 1}, f"no read answered between two batches: {sorted(set(seen))}"
