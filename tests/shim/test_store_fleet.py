"""The store's side of fleet switches (`store.fleet`), on every engine: one switch pending at a time,
decided once, its modes and audit written with the commit and nothing with an abandonment; the
replicas' views; and, on PostgreSQL, every step announced."""

from __future__ import annotations

import asyncio
import contextlib
import time

from shim.store import ModeChange, ReplicaView, Store, Switch
from tests.helpers import postgres_schema_url, until
from tests.shim import test_store as engines
from tests.shim.test_store import Opener, Target

# the engines' fixtures (every engine; PostgreSQL alone; stores closed at the end)
target, postgres, open_store, store = engines.target, engines.postgres, engines.open_store, engines.store


def _switch(name: str, mode: str, deadline: float = 0.0, pause: float = 0.0) -> Switch:
    now = time.time()
    change = ModeChange(now, "ops", "*", "shadow", mode, "test", False)
    return Switch(name, now, "a:1", {"*": mode}, [change], deadline or now + 60, pause=pause)


async def test_one_switch_is_pending_at_a_time_and_decided_once(store: Store) -> None:
    """A second proposal while one is pending is refused with the pending one's id; the first decision
    wins (a later abandonment finds it committed); the commit sets the modes and records the change;
    then another switch may be proposed, and abandoned, which records nothing. A switch's own pause is kept
    with it."""
    first, second = _switch("s1", "bk-primary", pause=2.5), _switch("s2", "bank")
    assert await store.fleet.propose(first) == ""
    assert await store.fleet.propose(second) == "s1"
    assert (await store.fleet.pending()) == first
    assert first.pause == 2.5
    assert await store.fleet.decide(first, True, time.time()) == "committed"
    assert await store.fleet.decide(first, False, time.time()) == "committed"
    assert await store.fleet.pending() is None
    assert await store.modes.current() == {"*": "bk-primary"}
    assert await store.fleet.propose(second) == ""
    assert await store.fleet.decide(second, False, time.time()) == "abandoned"
    assert await store.fleet.state("s2") == "abandoned"
    assert await store.fleet.state("none") == ""
    assert await store.modes.current() == {"*": "bk-primary"}
    assert [c.to_mode for c in await store.modes.history()] == ["bk-primary"]


async def test_a_pending_switch_past_its_deadline_does_not_block_the_next(store: Store) -> None:
    """A switch whose proposer died leaves it pending: past its deadline, the next proposal abandons it."""
    assert await store.fleet.propose(_switch("old", "bk-primary", deadline=time.time() - 1)) == ""
    assert await store.fleet.propose(_switch("new", "bk-primary")) == ""
    assert await store.fleet.state("old") == "abandoned"


async def test_views_are_published_answered_and_forgotten(store: Store) -> None:
    """A replica's view is kept by name, written over by its next heartbeat (keeping its answer), and
    gone once it is forgotten (a replica stopping)."""
    await store.fleet.publish(ReplicaView("a:1", {"*": "shadow"}, 10.0, 11.0))
    await store.fleet.publish(ReplicaView("b:2", {"*": "shadow", "/p.S/M": "bank"}, 10.0, 11.0))
    await store.fleet.answer("a:1", "s1", held=True)
    await store.fleet.answer("b:2", "s1", held=False)
    await store.fleet.publish(ReplicaView("a:1", {"*": "bk-primary"}, 12.0, 13.0))
    assert await store.fleet.views() == [
        ReplicaView("a:1", {"*": "bk-primary"}, 12.0, 13.0, "s1"),
        ReplicaView("b:2", {"*": "shadow", "/p.S/M": "bank"}, 10.0, 11.0, "-s1"),
    ]
    await store.fleet.forget("b:2")
    assert [v.replica for v in await store.fleet.views()] == ["a:1"]


async def test_postgres_announces_each_step(postgres: Target, open_store: Opener) -> None:
    """On PostgreSQL an empty message says LISTEN is in place; then a proposal, an answer and a decision
    each come as a notification, in order."""
    opened = await open_store(postgres.url)
    heard: list[str] = []

    async def listen() -> None:
        async for message in opened.fleet.notifications():
            heard.append(message)

    listening = asyncio.get_running_loop().create_task(listen())
    try:
        switch = _switch("s1", "bk-primary", deadline=2e9)
        await until(lambda: heard, "listening", within=10)
        await opened.fleet.propose(switch)
        await opened.fleet.answer("a:1", "s1", held=True)
        await opened.fleet.decide(switch, True, time.time())
        await until(lambda: heard[-1] == "decided s1 committed", "the decision heard", within=10)
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
    assert heard == [
        "",
        'pending s1 2000000000.0 0.0 {"*": "bk-primary"}',
        "answered s1 a:1 1",
        "decided s1 committed",
    ]


async def test_postgres_stores_in_two_schemas_of_a_database_do_not_hear_each_other(
    postgres: Target, open_store: Opener
) -> None:
    """Two stores in two schemas of one database (two fleets): a switch through one is not announced to
    the other, which hears its own."""
    mine = await open_store(postgres.url)
    heard: list[str] = []

    async def listen() -> None:
        async for message in mine.fleet.notifications():
            heard.append(message)

    listening = asyncio.get_running_loop().create_task(listen())
    try:
        with postgres_schema_url() as url:
            other = await open_store(url)
            async with asyncio.timeout(10):
                while not heard:  # LISTEN is in place once a notification is heard
                    await mine.fleet.answer("a:1", "probe", held=True)
                    await asyncio.sleep(0.05)
            switch = _switch("theirs", "bk-primary", deadline=2e9)
            await other.fleet.propose(switch)
            await other.fleet.answer("b:1", "theirs", held=True)
            await other.fleet.decide(switch, True, time.time())
            await mine.fleet.answer("a:1", "mine", held=True)  # announced after theirs: heard after
            await until(lambda: heard[-1] == "answered mine a:1 1", "its own answer heard", within=10)
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
    assert [m for m in heard if "theirs" in m] == []
