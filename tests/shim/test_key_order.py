"""The order of each key's mirrored writes across replicas (`shim.store.key_order`), in PostgreSQL and in
a SQLite file (the workers of one machine).

Each test gets a store of its own: a SQLite file, and a PostgreSQL schema when SHIM_TEST_POSTGRES_DSN
names a database.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest

from shim.liveness import Liveness
from shim.metrics import Counters as Counter
from shim.shadow.fleet import FleetPlace
from shim.store import Store, key_order
from shim.store.key_order import KeyOrder, Tickets, bands, late_of, most
from tests.helpers import NEEDS_POSTGRES, POSTGRES_DSN, postgres_schema_url, until
from tests.pg_relay import relayed

Open = Callable[..., Awaitable[KeyOrder]]


@pytest.fixture(params=["postgresql", "sqlite"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated store of its own."""
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path / 'shim.db'}"
        store = Store.open(url)
        await store.start()
        await store.close()
        yield url
        return
    if not POSTGRES_DSN:
        pytest.skip(NEEDS_POSTGRES)
    with postgres_schema_url() as url:
        store = Store.open(url)
        await store.start()
        await store.close()
        yield url


def age(url: str, replica: str, seconds: float) -> None:
    """Make `replica`'s last heartbeat `seconds` older."""
    sql = f"UPDATE shim_replicas SET seen = seen - {float(seconds)} WHERE replica = '{replica}'"
    if url.startswith("sqlite://"):
        with contextlib.closing(sqlite3.connect(url[len("sqlite://") :])) as conn, conn:
            conn.execute(sql)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.encode())


def held_unknown(url: str, replica: str, key: str) -> None:
    """Give `replica` the next ticket on `key` in the store, as a ticket statement whose answer was lost
    does: no write of the replica knows it."""
    sqls = (
        f"UPDATE shim_key_order SET issued = issued + 1, last_replica = '{replica}' WHERE key = '{key}'",
        f"INSERT INTO shim_key_tickets (key, ticket, replica, method) SELECT key, issued, '{replica}', '/M'"
        f" FROM shim_key_order WHERE key = '{key}'",
    )
    if url.startswith("sqlite://"):
        with contextlib.closing(sqlite3.connect(url[len("sqlite://") :])) as conn, conn:
            for sql in sqls:
                conn.execute(sql)
        return
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        for sql in sqls:
            conn.execute(sql.encode())


@pytest.fixture
async def replica(url: str) -> AsyncIterator[Open]:
    """Start replicas' key orders on the store, each with its heartbeat (every `beat` seconds); each is
    closed, its heartbeat stopped, at the end."""
    opened: list[tuple[KeyOrder, Liveness]] = []
    store = Store.open(url)
    await store.start()

    async def open_(name: str, lease: float = 10.0, beat: float = 2.5, **kwargs: object) -> KeyOrder:
        liveness = Liveness(store, name, beat)
        await liveness.start()
        order = KeyOrder(url, name, lease, **kwargs)  # type: ignore[arg-type]
        await order.start()
        opened.append((order, liveness))
        return order

    yield open_
    for order, liveness in opened:
        await order.close()
        await liveness.stop()
    await store.close()


async def taken(tickets: Tickets) -> Tickets:
    await asyncio.wait_for(tickets.taken.wait(), 10)
    assert not tickets.error, tickets.error
    return tickets


async def test_tickets_rise_per_key_and_only_another_replicas_predecessor_is_waited_for(
    replica: Open,
) -> None:
    """A key's tickets count up from 1, each key on its own; a ticket after the same replica's needs no
    wait in the store, one after another replica's (not yet done) does."""
    a, b = await replica("a"), await replica("b")
    first = await taken(a.take(["k1", "k2"], "/M"))
    second = await taken(a.take(["k1"], "/M"))
    third = await taken(b.take(["k1"], "/M"))
    assert [(h.key, h.ticket, h.wait) for h in first.held] == [("k1", 1, False), ("k2", 1, False)]
    assert [(h.key, h.ticket, h.wait) for h in second.held] == [("k1", 2, False)]
    assert [(h.key, h.ticket, h.wait) for h in third.held] == [("k1", 3, True)]
    first.release()
    second.release()
    third.release()
    after = await taken(a.take(["k1"], "/M"))
    await asyncio.wait_for(a.wait(after.held[0]), 10)  # the three are done by now, or soon
    assert after.held[0].ticket == 4


async def test_a_key_with_a_nul_in_it_takes_tickets_as_any_key(replica: Open) -> None:
    """A routing key is read from a client's message and may hold a NUL (PostgreSQL refuses one in text):
    its tickets count up, apart from the key without it."""
    a = await replica("a")
    first = await taken(a.take(["k\x00", "k"], "/M"))
    first.release()
    second = await taken(a.take(["k\x00"], "/M"))
    second.release()
    assert [(h.key, h.ticket) for h in (*first.held, *second.held)] == [("k\x00", 1), ("k", 1), ("k\x00", 2)]


async def test_concurrent_takers_on_several_connections_get_distinct_consecutive_tickets(
    replica: Open,
) -> None:
    """Four replicas asking at once for 50 tickets each on the same two keys: each key's tickets are
    1..200, every one given once."""
    orders = [await replica(f"r{i}") for i in range(4)]
    asked = [order.take(["x", "y"], "/M") for _ in range(50) for order in orders]
    await asyncio.gather(*(taken(t) for t in asked))
    for index, key in enumerate(["x", "y"]):
        tickets = sorted(t.held[index].ticket for t in asked)
        assert tickets == list(range(1, 201)), key


async def test_a_ticket_waits_until_its_predecessor_on_another_replica_is_done(replica: Open) -> None:
    """Replica b's ticket 2 on k waits while a's ticket 1 is in flight, and goes once a marks it done."""
    a, b = await replica("a"), await replica("b")
    first = await taken(a.take(["k"], "/M"))
    second = await taken(b.take(["k"], "/M"))
    waiting = asyncio.ensure_future(b.wait(second.held[0]))
    done, _ = await asyncio.wait([waiting], timeout=0.2)
    assert not done, "the second write went while the first was in flight"
    first.release()
    await asyncio.wait_for(waiting, 10)


@pytest.mark.parametrize("url", ["postgresql"], indirect=True)  # SQLite announces nothing: waiters look
async def test_a_wait_behind_another_replica_ends_with_its_done_not_with_the_next_poll(
    replica: Open, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With polls 60 s apart, b's write waiting behind a's ticket goes within seconds of a's done (not at
    b's next poll): the done wakes b's poll through PostgreSQL's notification."""
    monkeypatch.setattr(key_order, "_FIRST_POLL", 60.0)
    monkeypatch.setattr(key_order, "_LAST_POLL", 60.0)
    a, b = await replica("a"), await replica("b")
    first = await taken(a.take(["k"], "/M"))
    second = await taken(b.take(["k"], "/M"))
    assert second.held[0].wait
    waiting = asyncio.ensure_future(b.wait(second.held[0]))
    await until(lambda: b.polls >= 1, "b's first look at the key")
    await until(lambda: b.listening, "b listening to the keys' done")
    assert not waiting.done()
    first.release()
    await asyncio.wait_for(waiting, 10)


async def test_tickets_released_before_they_are_issued_are_done_once_issued(replica: Open) -> None:
    """A write given up before its ticket came back still marks it done: the next one does not wait."""
    a, b = await replica("a"), await replica("b")
    first = a.take(["k"], "/M")
    first.release()
    await taken(first)
    second = await taken(b.take(["k"], "/M"))
    await asyncio.wait_for(b.wait(second.held[0]), 10)


async def test_a_write_that_ends_before_its_turn_does_not_let_the_next_pass_the_one_before(
    replica: Open,
) -> None:
    """Replica b's write (ticket 2) ends while a's (ticket 1) is in flight: c's ticket 3 still waits for
    a's, and goes once a's is done."""
    a, b, c = await replica("a"), await replica("b"), await replica("c")
    first = await taken(a.take(["k"], "/M"))
    b.done_in_turn(await taken(b.take(["k"], "/M")))
    third = await taken(c.take(["k"], "/M"))
    waiting = asyncio.ensure_future(c.wait(third.held[0]))
    done, _ = await asyncio.wait([waiting], timeout=0.3)
    assert not done, "the third write went while the first was in flight"
    first.release()
    await asyncio.wait_for(waiting, 10)


async def test_a_replica_knows_its_own_write_before_ended_before_its_turn(replica: Open) -> None:
    """b's tickets 2 and 3 follow each other (3 needs no wait in the store), but once 2 ended before its
    turn b is behind on the key until 2 is done, after a's 1."""
    a, b = await replica("a"), await replica("b")
    first = await taken(a.take(["k"], "/M"))
    second, third = await taken(b.take(["k"], "/M")), await taken(b.take(["k"], "/M"))
    assert (second.held[0].wait, third.held[0].wait) == (True, False)
    b.done_in_turn(second)
    assert b.behind("k")
    waiting = asyncio.ensure_future(b.wait(third.held[0], always=True))
    done, _ = await asyncio.wait([waiting], timeout=0.3)
    assert not done, "the third write went while the first was in flight"
    first.release()
    await asyncio.wait_for(waiting, 10)
    await until(lambda: not b.behind("k"), "b's second write done")


async def test_the_ticket_of_a_replica_whose_lease_passed_is_released_and_its_key_reported(
    replica: Open, url: str
) -> None:
    """Replica a takes a ticket and stops beating; b, waiting behind it, releases it once a's heartbeat is
    older than the lease, and reports the key, the replica and the method."""
    reported: list[tuple[str, str, str]] = []
    a = await replica("a", beat=1000.0)  # not again during the test
    b = await replica("b", lease=0.5, on_released=lambda *r: reported.append(r))
    await taken(a.take(["k"], "/pkg.S/Write"))
    second = await taken(b.take(["k"], "/pkg.S/Other"))
    age(url, "a", 5)
    await asyncio.wait_for(b.wait(second.held[0]), 10)
    assert reported == [("k", "a", "/pkg.S/Write")]


async def test_a_live_replicas_ticket_is_never_released(replica: Open) -> None:
    """A ticket held by a replica that beats is waited for however long it takes (up to the caller): here
    two leases. (A lease of 1 s, 20 beats: a lease of a few beats let a loaded machine's late beat pass for
    a replica gone.)"""
    reported: list[tuple[str, str, str]] = []
    a = await replica("a", lease=1.0, beat=0.05)
    b = await replica("b", lease=1.0, beat=0.05, on_released=lambda *r: reported.append(r))
    await taken(a.take(["k"], "/M"))
    second = await taken(b.take(["k"], "/M"))
    waiting = asyncio.ensure_future(b.wait(second.held[0]))
    done, _ = await asyncio.wait([waiting], timeout=2.0)
    waiting.cancel()
    assert not done
    assert reported == []


async def test_a_ticket_a_replica_holds_that_no_write_of_its_knows_is_done_in_its_turn(
    replica: Open, url: str
) -> None:
    """The store says replica a holds ticket 2 on a key, and no write of a's knows it (its statement's
    answer was lost, and it committed after the error was seen): a finds it at its next look (every lease)
    and marks it done once ticket 1 is, not before; then ticket 3 goes."""
    a = await replica("a", lease=0.5, beat=0.05)
    b = await replica("b", lease=0.5, beat=0.05)
    first = await taken(b.take(["k"], "/M"))
    held_unknown(url, "a", "k")
    third = await taken(b.take(["k"], "/M"))
    assert third.held[0].ticket == 3
    assert third.held[0].wait
    waiting = asyncio.ensure_future(b.wait(third.held[0]))
    await until(lambda: a.behind("k"), "a found its ticket", within=5.0)
    assert not waiting.done()  # ticket 2 waits for ticket 1
    first.release()
    await asyncio.wait_for(waiting, 5.0)
    assert await b.position("k") == (3, 2)


async def test_multi_key_writes_on_many_replicas_never_deadlock(replica: Open) -> None:
    """Four replicas, 300 writes on random sets of five keys, each mirrored in its turn: every write gets
    its tickets (no deadlock error), waits its turn, and every key's tickets end done."""
    orders = [await replica(f"r{i}") for i in range(4)]
    keys = ["a", "b", "c", "d", "e"]
    rng = random.Random(7)

    async def write(order: KeyOrder) -> None:
        tickets = await taken(order.take(rng.sample(keys, rng.randint(1, 5)), "/M"))
        for held in tickets.held:
            await order.wait(held)
        tickets.release()

    await asyncio.wait_for(asyncio.gather(*(write(orders[i % 4]) for i in range(300))), 60)
    check = await taken(orders[0].take(keys, "/M"))
    for held in check.held:
        await asyncio.wait_for(orders[0].wait(held), 10)


async def test_a_read_waits_for_the_writes_issued_before_it_through_other_replicas_and_raises_nothing(
    replica: Open,
) -> None:
    """A read stands after the last ticket issued on each of its keys: it waits in the store for another
    replica's write not yet done, not for its own replica's (its lanes order those), nor on a key never
    written; it raises no counter, and its release marks nothing done."""
    a, b = await replica("a"), await replica("b")
    write = await taken(a.take(["k"], "/W"))
    mine_before = await taken(a.take(["k"], "/R", read=True))
    read = await taken(b.take(["k", "fresh"], "/R", read=True))
    assert [(h.key, h.ticket, h.wait) for h in mine_before.held] == [("k", 2, False)]
    assert [(h.key, h.ticket, h.wait) for h in read.held] == [("k", 2, True), ("fresh", 1, False)]
    waiting = asyncio.ensure_future(b.wait(read.held[0]))
    await asyncio.sleep(0.2)  # polls of the store come every 1 to 25 ms: it would have seen a wrong done
    assert not waiting.done()
    read.release()  # a read holds nothing: the next write's ticket is 2, and it waits for the first
    after = await taken(b.take(["k"], "/W"))
    assert [(h.key, h.ticket, h.wait) for h in after.held] == [("k", 2, True)]
    write.release()
    await asyncio.wait_for(waiting, 10)
    after.release()


async def test_a_read_behind_its_own_replicas_write_in_one_batch_waits_for_nothing_in_the_store(
    replica: Open,
) -> None:
    """Asked in one statement with a write before it on its key (same replica): the read stands after that
    write's ticket, which its lanes order; one asked before the write stands before it."""
    a, b = await replica("a"), await replica("b")
    await taken(b.take(["k"], "/W"))  # ticket 1, b's, not done
    before = a.take(["k"], "/R", read=True)
    write = a.take(["k"], "/W")
    after = a.take(["k"], "/R", read=True)
    await taken(after)
    assert [(h.ticket, h.wait) for h in (await taken(before)).held] == [(2, True)]
    assert [(h.ticket, h.wait) for h in (await taken(write)).held] == [(2, True)]
    assert [(h.ticket, h.wait) for h in after.held] == [(3, False)]


async def test_a_keys_position_says_whether_a_write_is_under_way_on_it_through_any_replica(
    replica: Open,
) -> None:
    """(issued, done) of a key: (0, 0) before any write; a ticket taken through another replica shows as
    issued and not done until that write is over there."""
    a, b = await replica("a"), await replica("b")
    assert await a.position("k") == (0, 0)
    first = await taken(b.take(["k"], "/M"))
    assert await a.position("k") == (1, 0)
    first.release()
    async with asyncio.timeout(10):  # done is written in the background
        while (position := await a.position("k")) != (1, 1):
            assert position == (1, 0)
            await asyncio.sleep(0.01)


async def test_a_look_at_a_keys_position_releases_the_tickets_of_a_replica_gone_and_reports_the_key(
    replica: Open, url: str
) -> None:
    """Replica a stops with two writes on k in flight, and no write on k follows them. A look at k's position
    (a check of a key out of step) leaves a's tickets while a beats, and releases both once a's heartbeat is
    older than the lease, reporting the key for each, as a write waiting behind them would: k is quiet.
    Before, only a waiting write released them, and k stayed under way for good."""
    reported: list[tuple[str, str, str]] = []
    a = await replica("a", beat=1000.0)  # not again during the test
    b = await replica("b", lease=10.0, on_released=lambda *r: reported.append(r))
    await taken(a.take(["k"], "/pkg.S/Write"))
    await taken(a.take(["k"], "/pkg.S/Again"))
    assert await b.position("k") == (2, 0)
    age(url, "a", 20)
    assert await b.position("k") == (2, 2)
    assert reported == [("k", "a", "/pkg.S/Write"), ("k", "a", "/pkg.S/Again")]


async def test_a_copy_is_late_when_a_call_started_after_its_answer_took_a_ticket_before_its_own(
    replica: Open,
) -> None:
    """On Envoy the primary's answer time comes with the copy (`answered(at)`): a write whose ticket on a
    key follows the ticket of a call that started after that time (beyond the clocks' skew) is late and
    its key is marked, however late its own ticket came back; one whose tickets follow only calls
    started before it is not. Judged when the tickets are back, if the answer came first; reads alike."""
    a, b = await replica("a"), await replica("b")
    counters = Counter()
    first = FleetPlace(a, ("k",), "/W", None, counters)
    await asyncio.wait_for(first._tickets.taken.wait(), 10)
    started = first._tickets.started
    passed = FleetPlace(b, ("k",), "/W", None, counters)  # its answer came before `first` started
    passed.answered(started - 0.5)  # before its tickets are back: judged once they are
    first.release()  # so that its turn comes
    assert await asyncio.wait_for(passed.ready(asyncio.Event()), 10)
    assert counters.get("tickets_late", "/W") == 1
    after = FleetPlace(b, ("k",), "/W", None, counters)
    await asyncio.wait_for(after._tickets.taken.wait(), 10)
    # every ticket before its own is of a call started before its answer (by more than the clocks' skew)
    after.answered(passed._tickets.started + 0.01)
    assert counters.get("tickets_late", "/W") == 1
    read = FleetPlace(b, ("k",), "/R", None, counters, read=True)
    await asyncio.wait_for(read._tickets.taken.wait(), 10)
    read.answered(started - 0.5)
    assert counters.get("read_places_late", "/R") == 1
    assert "started after the primary's answer" in read.unordered


async def test_a_call_sent_before_a_writes_answer_passes_no_one_however_late_its_copy_came(
    replica: Open,
) -> None:
    """A ticket carries its call's start as the data plane saw it (Envoy's, on a copy), not when the copy
    took its place: a call sent before a write's answer, whose copy reached the plane after it, was in
    flight with the write, and its ticket before the write's makes the write not late. Without the start
    (the copy's arrival taken for it) the same write is counted late."""
    a, b = await replica("a"), await replica("b")
    for given, late in ((True, 0), (False, 1)):
        counters = Counter()
        sent = time.time() - 1.0  # the call was sent a second ago; its copy comes now
        key = f"k{given}"
        concurrent = FleetPlace(a, (key,), "/W", None, counters, started=sent if given else None)
        await asyncio.wait_for(concurrent._tickets.taken.wait(), 10)
        write = FleetPlace(b, (key,), "/W", None, counters)
        write.answered(sent + 0.5)  # answered after `concurrent` was sent, before its copy came
        concurrent.release()
        assert await asyncio.wait_for(write.ready(asyncio.Event()), 10)
        assert counters.get("tickets_late", "/W") == late, given


async def test_how_late_a_write_went_reaches_the_calls_after_it_on_its_keys_through_any_replica(
    replica: Open,
) -> None:
    """A write released with how late it went to the shadow leaves that on its keys, the most of every
    write's on each side: a call after it through another replica learns it, whether it waited for the
    write's done (a read standing behind it) or took its place once it was done, and so does a replica
    started later. A key no late write touched has none."""
    a, b = await replica("a"), await replica("b")
    counters = Counter()
    write = FleetPlace(a, ("k", "j"), "/W", None, counters)
    assert await asyncio.wait_for(write.ready(asyncio.Event()), 10)
    behind = FleetPlace(b, ("k",), "/R", None, counters, read=True)
    waiting = asyncio.ensure_future(behind.ready(asyncio.Event()))
    await asyncio.wait_for(behind._tickets.taken.wait(), 10)
    assert behind._tickets.held[0].wait  # it stands behind the write, not yet done
    write.release(late=late_of(2.0, bk_is_shadow=True, until=100.0))
    assert await asyncio.wait_for(waiting, 10)
    assert bands(behind.late) == [(100.0, 2.0, 0.0)]
    after = FleetPlace(b, ("j",), "/W", None, counters)  # the write is done: its ticket says
    assert await asyncio.wait_for(after.ready(asyncio.Event()), 10)
    assert bands(after.late) == [(100.0, 2.0, 0.0)]
    # late on Bank (BK was primary) in the same band, over later; and a little late on BK, later still
    after.release(late=most(late_of(1.5, bk_is_shadow=False, until=200.0), late_of(0.05, True, 300.0)))
    c = await replica("c")
    for keys, late in (
        (("j",), [(200.0, 2.0, 1.5), (300.0, 0.05, 0.0)]),
        (("k", "x"), [(100.0, 2.0, 0.0)]),
        (("x",), []),
    ):
        read = FleetPlace(c, keys, "/R", None, counters, read=True)
        assert await asyncio.wait_for(read.ready(asyncio.Event()), 10)
        assert bands(read.late) == late, keys


async def test_tickets_taken_whose_answer_was_lost_are_done_in_turn_and_hold_no_key() -> None:
    """PostgreSQL commits the statement taking a write's ticket, then its answer is lost with the
    connection: the write is told its ticket was not taken (its keys are marked), and the ticket, held in
    the store by a replica that goes on beating, is done in its turn all the same: the next write on the key
    through another replica goes without waiting for a lease, or for ever. (Before, it waited as long as
    the replica lived.)"""
    with postgres_schema_url() as url:
        store = Store.open(url)
        await store.start()
        beats = [Liveness(store, name, 0.05) for name in ("a", "b")]
        for beat in beats:
            await beat.start()
        async with relayed(url) as (through, relay):
            a, b = KeyOrder(through, "a", lease=1.0), KeyOrder(url, "b", lease=1.0)
            await a.start()
            await b.start()
            try:
                relay.lose_answer(b"INSERT INTO shim_key_tickets")
                first = a.take(["k"], "/M")
                await asyncio.wait_for(first.taken.wait(), 10)
                assert first.error
                assert relay.lost == 1
                first.release()
                second = await taken(b.take(["k"], "/M"))
                assert second.held[0].ticket == 2  # ticket 1 is a's, taken
                # it waits for ticket 1, done in its turn by a, which may have found it first (a busy machine)
                await asyncio.wait_for(b.wait(second.held[0]), 2.0)  # two leases; a beats all along
                assert await b.position("k") == (2, 1)
            finally:
                await a.close()
                await b.close()
        for beat in beats:
            await beat.stop()
        await store.close()


async def test_a_close_with_postgresql_blackholed_ends_within_its_time() -> None:
    """PostgreSQL stops answering (blackholed) with a statement marking tickets done and a look at a key
    waited on both under way: the key order closes within the time it is given, and says which tickets done
    it could not write (they are released with the replica's heartbeat). Before, each statement under way
    was cancelled in turn, each waiting out psycopg's cancellation (5 s to reach the server, 5 s more for
    the statement to end), and the tickets done were written on a new connection, with no time limit:
    30 s and more."""
    with postgres_schema_url() as url:
        store = Store.open(url)
        await store.start()
        beats = [Liveness(store, name, 0.5) for name in ("a", "b")]
        for beat in beats:
            await beat.start()
        async with relayed(url) as (through, relay):
            a, b = KeyOrder(through, "a", lease=10.0), KeyOrder(url, "b", lease=10.0)
            await a.start()
            await b.start()
            try:
                before = await taken(b.take(["k1"], "/M"))  # b's, not done: a waits for it
                behind = await taken(a.take(["k1"], "/M"))
                assert behind.held[0].wait
                waiting = asyncio.ensure_future(a.wait(behind.held[0]))
                mine = await taken(a.take(["k2"], "/M"))
                await until(lambda: a.polls > 0, "a looks at the key it waits on")
                relay.blackhole()
                mine.release()  # its ticket done, written on a connection that no longer answers
                await asyncio.sleep(0.2)
                started = time.monotonic()
                await a.close(within=1.0)
                took = time.monotonic() - started
                waiting.cancel()
                before.release()
            finally:
                await b.close()
        for beat in beats:
            await beat.stop()
        await store.close()
    assert took < 1.5, f"the key order took {took:.1f}s to close, given 1s"
