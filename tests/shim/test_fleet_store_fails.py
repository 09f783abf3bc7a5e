"""A fleet switch whose store connections break on a replica after it answered "held": the replica holds its
calls until it knows the fleet's decision, and applies it, rather than let them go on in the old modes.

Two replicas (`shim.fleet.Fleet` on `shim.modes.Modes`) share a PostgreSQL schema; one reaches it through a
relay (tests/pg_relay.py) that cuts its connections (the store's and the notifications') at the moment every
replica has held, just before the proposer commits, as a restart of PostgreSQL or a network would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shim.fleet import Fleet, Timing
from shim.modes import Modes
from shim.store import ModeChange, Store
from tests.helpers import postgres_schema_url, until
from tests.pg_relay import PgRelay, relayed

TIMING = Timing(refresh=5.0, lease=15.0, grace=5.0, pause=1.0)  # no look at the store would catch up


@asynccontextmanager
async def _replica(url: str, name: str) -> AsyncIterator[tuple[Modes, Fleet]]:
    store = Store.open(url)
    await store.start()
    await store.liveness.beat(name)
    modes = Modes("shadow")
    fleet = Fleet(name, modes, store, asyncio.Lock(), TIMING)
    await fleet.start()
    try:
        yield modes, fleet
    finally:
        await fleet.stop()
        await store.close()


@asynccontextmanager
async def _two(relay_proposer: bool = False) -> AsyncIterator[tuple[Modes, Fleet, Modes, PgRelay]]:
    """The proposer (its modes and fleet), the other replica's modes, and the relay one of them reaches the
    store through (the other replica, or `relay_proposer`)."""
    with postgres_schema_url() as url:
        async with relayed(url) as (through, relay):
            urls = (through, url) if relay_proposer else (url, through)
            async with (
                _replica(urls[0], "p:1:aaaaaa") as (proposer_modes, proposer),
                _replica(urls[1], "r:2:bbbbbb") as (modes, _),
            ):
                yield proposer_modes, proposer, modes, relay


def _promotion() -> list[ModeChange]:
    return [ModeChange(time.time(), "ops", "*", "shadow", "bk-primary", "CHG-1", False)]


async def test_a_replica_whose_store_breaks_after_it_held_applies_the_switch_the_fleet_committed() -> None:
    """Replica r answered "held", then lost its connections to the store before the proposer committed:
    r keeps its calls held, reads the decision over a new connection, and applies the switch within the
    hold; its calls never went on in the old modes (before, they did, until r's next look at the store,
    while the other replica answered in the new)."""
    async with _two() as (proposer_modes, proposer, modes, relay):

        async def cut() -> str:  # every replica holds: r's connections break, then the proposer commits
            relay.cut()
            return ""

        await proposer.switch(_promotion(), check=cut)
        assert proposer_modes.default == "bk-primary"
        await until(lambda: not modes.paused, "r's held calls go on", within=10.0)
        assert modes.default == "bk-primary"
        assert modes.switches == {"applied": 1}  # never let its calls go on in the old modes


async def test_a_commit_whose_answer_was_lost_is_reported_as_the_decision_read_since() -> None:
    """The proposer's commit is written, and its answer lost with the connection: the proposer reads the
    decision while it holds its calls, applies the switch, and `switch` returns as done (before, it said
    the switch was not made because the store failed, though it was recorded and applied everywhere)."""
    async with _two(relay_proposer=True) as (proposer_modes, proposer, modes, relay):

        async def lose_the_commit() -> str:
            relay.lose_answer(b"RETURNING id")  # the decision's conditional update
            return ""

        await proposer.switch(_promotion(), check=lose_the_commit)
        assert relay.lost == 1
        assert proposer_modes.default == "bk-primary"
        await until(lambda: modes.default == "bk-primary", "the other replica applied it", within=10.0)
