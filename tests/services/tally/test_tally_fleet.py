"""Two `shim serve` replicas (on each data plane) sharing one PostgreSQL store, in front of one Bank and
one BK (the tally), with `ordering.across_replicas`: writers share keys and alternate replicas, a fresh
channel for each write, each waiting for its answer before its next write. BK answers each write after
a delay of 0 to 20 ms, so one replica's writes on a key queue in its lanes while the next write on the
key goes through the other replica.

The promise checked: a write sent after another write on its key was answered reaches BK after it,
unless the shim marked the key out of step. With SHIM_TEST_ACROSS_REPLICAS=false the same test runs
with the setting off, and fails: BK receives writes out of their order, on keys nobody marked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from grpc import aio

from shim.config import load_file
from shim.shadow.fleet import LATE
from shim.testing import running_shim
from tests.helpers import NEEDS_ENVOY, NEEDS_POSTGRES, POSTGRES_DSN, postgres_schema_url, until
from tests.processes import shim_process
from tests.services.tally.server import APPEND, DESCRIPTOR_SET, REGISTRY, Reply, Request, Tally, serve

ACROSS = os.environ.get("SHIM_TEST_ACROSS_REPLICAS", "true")
# the workers of one `shim serve --workers 2` on a SQLite file, ordered across each other by default
# (ordering.across_workers); SHIM_TEST_ACROSS_WORKERS=false runs them unordered, and the test fails
ACROSS_WORKERS = os.environ.get("SHIM_TEST_ACROSS_WORKERS", "")
WRITERS, WRITES, KEYS = 6, 20, ("k0", "k1", "k2")
# Bank's time to answer, as across a network with a database behind it, so that a write's tickets come
# back before its answer goes to the client (a ticket later than that puts its key out of step: _check)
BANK_TIME = 0.02

CONFIG = """
mode = "shadow"
descriptor_sets = ["tally.binpb"]

[methods."tally.v1.Tally/Append"]
key = ["key"]

[envoy]
comparison_nice = 0  # the replicas' planes keep up beside the suite's other workers

{ordering}"""
ACROSS_REPLICAS = f"""
[ordering]
across_replicas = {ACROSS}
"""


@dataclass(frozen=True)
class Write:
    key: str
    entry: str
    sent: float  # the test's clock when the writer sent it
    answered: float  # ... and when the writer had its answer


async def _write(address: str, key: str, entry: str, delay_ms: int) -> Write:
    loop = asyncio.get_running_loop()
    sent = loop.time()
    # a fresh channel with a subchannel pool of its own: a new connection (grpc's global pool would share
    # one connection among the channels to an address that are open at once)
    async with aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        answer = await channel.unary_unary(APPEND)(
            Request(key=key, entry=entry, delay_ms=delay_ms).SerializeToString(), timeout=10
        )
    assert Reply.FromString(answer).place > 0
    return Write(key, entry, sent, loop.time())


async def _writer(number: int, addresses: list[str]) -> list[Write]:
    rng = random.Random(number)
    done = []
    for index in range(WRITES):
        address = addresses[(number + index) % len(addresses)]  # the next write: the other replica
        done.append(await _write(address, rng.choice(KEYS), f"w{number}-{index}", rng.randint(0, 20)))
    return done


def out_of_order(writes: list[Write], received: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    """(key, a, b) for each write b sent after write a on its key was answered, that `received` has
    before a."""
    found = []
    for key in KEYS:
        place = {entry: index for index, entry in enumerate(received.get(key, []))}
        on_key = [w for w in writes if w.key == key]
        found += [
            (key, a.entry, b.entry)
            for a in on_key
            for b in on_key
            if a.answered < b.sent and place[a.entry] > place[b.entry]
        ]
    return found


@pytest.mark.parametrize(
    "dataplane",
    [
        "python",
        pytest.param("envoy", marks=NEEDS_ENVOY),
        pytest.param("envoy-workers", marks=NEEDS_ENVOY),
        "python-workers-sqlite",
        pytest.param("envoy-workers-sqlite", marks=NEEDS_ENVOY),
    ],
)
async def test_writes_through_two_replicas_reach_bk_in_their_keys_order(
    tmp_path: Path, dataplane: str
) -> None:
    """On Envoy the writes take Python on their primary path (docs/dataplane.md), so that each takes its
    tickets while Bank has the call, as on the Python data plane. `envoy-workers`: one `shim serve
    --workers 2` instead of two replicas, its two workers (each its own Envoy on the port) taking the
    fresh connections as the kernel spreads them. `-sqlite`: those workers share a SQLite file, and order
    their writes across each other through it with no setting (ordering.across_workers)."""
    plane, _, workers = dataplane.partition("-")
    workers, _, engine = workers.partition("-")
    if engine != "sqlite" and not POSTGRES_DSN:
        pytest.skip(NEEDS_POSTGRES)
    (tmp_path / "tally.binpb").write_bytes(DESCRIPTOR_SET)
    config = tmp_path / "shim.toml"
    ordering = ACROSS_REPLICAS
    if engine == "sqlite":
        ordering = f"[ordering]\nacross_workers = {ACROSS_WORKERS}\n" if ACROSS_WORKERS else ""
    config.write_text(CONFIG.format(ordering=ordering), encoding="utf-8")
    bank, bk = await serve(answer_after=BANK_TIME), await serve(slow=True)
    try:
        with contextlib.ExitStack() as schema:
            url = f"sqlite://{tmp_path / 'shim.db'}"
            if engine != "sqlite":
                url = schema.enter_context(postgres_schema_url())
            flags = ["--config", config, "--dataplane", plane, "--listen", "127.0.0.1:0"]
            flags += ["--bank", bank.address, "--bk", bk.address, "--store", url]
            async with contextlib.AsyncExitStack() as stack:
                if workers:  # one shim: its supervisor's ready line says every worker serves
                    a = await stack.enter_async_context(shim_process(*flags, "--workers", "2"))
                    await a.until_event("ready", count=3)
                    b, ready_a, ready_b = None, a.ready, a.ready
                else:
                    a = await stack.enter_async_context(shim_process(*flags))
                    b = await stack.enter_async_context(shim_process(*flags))
                    ready_a, ready_b = a.ready, b.ready
                addresses = [ready_a["listen"], ready_b["listen"]]
                if plane == "envoy":
                    assert ready_a["through_python"] == {}  # the writes stay on Envoy
                done = await asyncio.gather(*(_writer(n, addresses) for n in range(WRITERS)))
                writes = [w for writer in done for w in writer]
                await until(
                    lambda: sum(map(len, bk.received.values())) >= len(writes), "every write mirrored", 60
                )
                for shim in (a, b):
                    if shim is not None:
                        assert await shim.stop() == 0, shim.stderr[-5:]
            marked, replicas = _stored(url)
    finally:
        await bank.stop()
        await bk.stop()
    assert replicas == (2,)  # both replicas (or workers) compared calls
    _check(writes, bank, bk, marked)


def _stored(url: str) -> tuple[dict[str, str], tuple[int]]:
    """The keys marked out of step (with their reasons), and how many replicas compared calls."""
    marks, count = "SELECT key, reason FROM out_of_step", "SELECT count(DISTINCT replica) FROM comparisons"
    if url.startswith("sqlite://"):
        with contextlib.closing(sqlite3.connect(url[len("sqlite://") :])) as db:
            return dict(db.execute(marks).fetchall()), db.execute(count).fetchone()
    with psycopg.connect(url) as conn:
        return dict(conn.execute(marks.encode()).fetchall()), conn.execute(count.encode()).fetchone()  # type: ignore[return-value]


def _check(writes: list[Write], bank: Tally, bk: Tally, marked: dict[str, str]) -> None:
    for key in KEYS:  # each side got each write once
        sent = sorted(w.entry for w in writes if w.key == key)
        assert sorted(bank.received.get(key, [])) == sent, key
        assert sorted(bk.received.get(key, [])) == sent, key
    assert out_of_order(writes, bank.received) == []  # Bank applied them in the writers' order
    misordered = out_of_order(writes, bk.received)
    silent = [m for m in misordered if m[0] not in marked]
    print(f"out of order on BK: {len(misordered)}, on keys not marked: {len(silent)}, marked: {marked}")
    assert silent == [], f"BK received writes out of their key's order, unmarked: {silent[:10]}"


async def test_a_ticket_not_back_when_the_client_has_its_answer_marks_the_key_and_the_write_waits_for_it(
    tmp_path: Path,
) -> None:
    """With the key's row locked in PostgreSQL, a write's ticket cannot be taken: the client still gets
    Bank's answer at once, the key is marked out of step (the ticket was late), and the write reaches BK
    only once its ticket is taken, after the lock goes."""
    if not POSTGRES_DSN:
        pytest.skip(NEEDS_POSTGRES)
    (tmp_path / "tally.binpb").write_bytes(DESCRIPTOR_SET)
    config = tmp_path / "shim.toml"
    config.write_text(CONFIG.format(ordering="[ordering]\nacross_replicas = true\n"), encoding="utf-8")
    settings = load_file(config)
    settings.pop("mode")
    bank, bk = await serve(), await serve()
    try:
        with postgres_schema_url() as url:
            async with running_shim(
                bank.address, bk.address, registry=REGISTRY, store={"url": url}, **settings
            ) as (shim, _):
                assert shim.steps is not None
                await _write(shim.address, "k", "first", 0)
                await until(lambda: bk.received.get("k") == ["first"], "the first write mirrored")
                with psycopg.connect(url) as lock:
                    lock.execute(b"SELECT 1 FROM shim_key_order WHERE key = 'k' FOR UPDATE")
                    await asyncio.wait_for(_write(shim.address, "k", "second", 0), 5)
                    await until(lambda: shim.steps.mark_of("k") is not None, "the key marked")  # type: ignore[union-attr]
                    assert bk.received["k"] == ["first"]  # its ticket is not taken: it waits
                    lock.rollback()
                await until(lambda: bk.received["k"] == ["first", "second"], "the second write mirrored")
                mark = shim.steps.mark_of("k")
                assert mark is not None
                assert mark.reason == LATE
    finally:
        await bank.stop()
        await bk.stop()
