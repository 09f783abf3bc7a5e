"""A fleet switch against a data plane that does not confirm its routes at once: the switch is not
reported applied where it is not, and the replica goes on following the store until it is.

The data plane here is a stand-in for Envoy's route changes (`shim.modes.SwitchHooks`): what is tested
is the fleet's handling of its answers, on a real store. Envoy itself not answering is tested in
tests/shim/test_modes.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from shim.dataplane import RoutesNotApplied
from shim.fleet import Fleet, Timing, Unapplied
from shim.modes import Modes
from shim.store import ModeChange, Store
from tests.helpers import until


class _Routes:
    """Routes that are not confirmed while `failing` names the mode they would send the default to."""

    def __init__(self) -> None:
        self.failing = ""
        self.applied: list[dict[str, str]] = []
        self.refused = 0  # route tables not confirmed

    async def prepare(self, table: Mapping[str, str], changes: Mapping[str, str]) -> None:
        return None

    async def apply(self, table: Mapping[str, str]) -> None:
        if self.failing and table.get("*") == self.failing:
            self.refused += 1
            raise RoutesNotApplied("Envoy did not apply the shim's routes (version 7) within 2s")
        self.applied.append(dict(table))

    def waiting(self) -> str:
        return ""

    def routing(self) -> bool:
        return False


@asynccontextmanager
async def _replica(tmp_path: Path) -> AsyncIterator[tuple[Store, Modes, _Routes, Fleet]]:
    store = Store.open(str(tmp_path / "shim.db"))
    await store.start()
    modes = Modes("shadow")
    routes = _Routes()
    modes.hooks = routes
    fleet = Fleet("vm:1:aaaaaa", modes, store, asyncio.Lock(), Timing(0.05, 1.0, 5.0, 1.0))
    await fleet.start()
    try:
        yield store, modes, routes, fleet
    finally:
        await fleet.stop()
        await store.close()


def _promotion() -> list[ModeChange]:
    return [ModeChange(time.time(), "ops", "*", "shadow", "bk-primary", "CHG-1", False)]


async def test_a_switch_committed_but_not_applied_here_is_not_reported_done(tmp_path: Path) -> None:
    """The fleet committed the switch (it is recorded), then this replica's data plane did not confirm
    the new routes: the switch says so instead of returning as applied, and the replica applies the
    store's modes once its data plane answers again."""
    async with _replica(tmp_path) as (store, modes, routes, fleet):
        routes.failing = "bk-primary"
        with pytest.raises(Unapplied, match=r"recorded.*not applied.*version 7"):
            await fleet.switch(_promotion())
        assert (await store.modes.current())["*"] == "bk-primary"
        assert [(c.from_mode, c.to_mode) for c in await store.modes.history()] == [("shadow", "bk-primary")]
        assert modes.default == "shadow"
        routes.failing = ""
        await until(lambda: modes.default == "bk-primary", "the store's modes applied", within=5.0)
        assert routes.applied[-1]["*"] == "bk-primary"


async def test_a_replica_whose_data_plane_fails_while_following_keeps_following(tmp_path: Path) -> None:
    """Following the store's modes fails while the data plane does not confirm (several looks at the
    store); the looks go on, and the modes apply once it does."""
    async with _replica(tmp_path) as (_, modes, routes, fleet):
        routes.failing = "bk-primary"
        with pytest.raises(Unapplied):
            await fleet.switch(_promotion())
        refused = routes.refused
        await until(lambda: routes.refused >= refused + 3, "three more looks at the store", within=5.0)
        assert modes.default == "shadow"
        routes.failing = ""
        await until(lambda: modes.default == "bk-primary", "the store's modes applied", within=5.0)
        assert routes.applied[-1]["*"] == "bk-primary"
