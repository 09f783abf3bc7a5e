"""A switch's pause (`switch_pause`) against a data plane slow to route: the modes and a data plane's
switch hooks (`shim.modes.SwitchHooks`), with no server, so that the timing is the test's own."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from shim.modes import DEFAULT, NOTHING_LEFT, Modes, SwitchTimeout


class SlowRoutes:
    """A data plane whose routes take `delay` seconds before a switch may go on."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.applied: list[dict[str, str]] = []

    async def prepare(self, table: Mapping[str, str], changes: Mapping[str, str]) -> None:
        await asyncio.sleep(self.delay)

    async def apply(self, table: Mapping[str, str]) -> None:
        self.applied.append(dict(table))

    def waiting(self) -> str:
        return ""

    def routing(self) -> bool:
        return False


async def test_a_switch_refused_with_no_call_left_says_its_own_steps_took_the_pause() -> None:
    """The routes took longer than the pause and no call is in flight: the refusal does not send the
    operator looking for calls ("none left", it said); it says the switch's own steps outlasted the
    pause. The modes stay, and the routes are put back."""
    modes = Modes("shadow")
    modes.hooks = routes = SlowRoutes(0.5)
    with pytest.raises(SwitchTimeout) as refused:
        await modes.switch({DEFAULT: "bk-primary"}, within=0.05)
    assert refused.value.waiting == NOTHING_LEFT
    assert "the switch's own steps outlasted the pause" in str(refused.value)
    assert modes.default == "shadow"
    assert routes.applied == [{DEFAULT: "shadow"}]
    assert modes.switches["refused"] == 1


async def test_a_switch_refused_on_a_call_in_flight_names_the_call() -> None:
    modes = Modes("shadow")
    modes.hooks = SlowRoutes(0.0)
    call = await modes.enter("/svc.v1.S/Write", stream=False)
    try:
        with pytest.raises(SwitchTimeout) as refused:
            await modes.switch({DEFAULT: "bk-primary"}, within=0.05)
    finally:
        modes.leave(call)
    assert refused.value.waiting == "1 call in the shim's server"
    assert NOTHING_LEFT not in str(refused.value)
    assert modes.default == "shadow"
