"""A switch's bounded pause on the tally (a second service): a switch asked for beside a write BK takes a
second over catches up with it, holding no call, then applies; a write sent while it catches up keeps it
from holding within the default switch_pause, so it is refused, nothing changed; the same switch with a
pause of its own applies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from grpc import aio

from shim.admin import Refused, set_mode
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.helpers import NEEDS_ENVOY, until
from tests.services.tally.server import APPEND, REGISTRY, Reply, Request, serve


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_switch_catches_up_with_a_slow_write_and_is_refused_for_one_sent_meanwhile(
    tmp_path: Path, dataplane: str
) -> None:
    bank, bk = await serve(), await serve(slow=True)  # BK answers each write after the delay it names
    try:
        async with (
            running_shim(
                bank.address, bk.address, registry=REGISTRY, dataplane=dataplane, shadow_timeout=5.0,
                store={"url": str(tmp_path / "shim.db")},
                methods={"tally.v1.Tally/Append": MethodSettings(key=("key",))},
            ) as (shim, _),
            aio.insecure_channel(shim.address) as channel,
        ):  # fmt: skip
            append = channel.unary_unary(APPEND)
            mirrors = shim.dispatchers.values()

            async def slow_write(key: str, place: int = 1) -> None:
                request = Request(key=key, entry="slow", delay_ms=1000)
                answer = Reply.FromString(await append(request.SerializeToString(), timeout=10))
                assert answer.place == place  # Bank answered at once

            async def switch(key: str, mode: str, pause: float, meanwhile: bool = False) -> str:
                """The switch beside a slow write on `key`; `meanwhile`: another on that key, sent as the
                switch catches up, whose mirrored call waits for the first's (and then BK's second)."""
                await slow_write(key)
                await until(lambda: any(d.in_flight for d in mirrors), "the mirrored write in flight")
                switching = asyncio.ensure_future(
                    set_mode(shim, mode, [], "test", "ops", force=True, pause=pause)
                )
                if meanwhile:
                    await until(lambda: shim.modes.catching_up, "the switch catching up with the write")
                    await slow_write(key, place=2)
                try:
                    await switching
                except Refused as refused:
                    return refused.message
                finally:
                    await shim.drain()
                return "applied"

            caught_up = await switch("k1", "bk-primary", 0.0)  # the write before it waited for, none held
            await set_mode(shim, "shadow", [], "test", "ops", force=True)  # back, nothing in flight
            back = "applied"
            refused = await switch("k3", "bk-primary", 0.0, meanwhile=True)  # the default pause: refused
            applied = await switch("k4", "bk-primary", 3.0, meanwhile=True)  # its own pause: applied
            mode = shim.modes.default
            switches = dict(shim.modes.switches)
    finally:
        await bank.stop()
        await bk.stop()
    assert (caught_up, back, applied) == ("applied", "applied", "applied")
    assert "calls in flight did not finish within the switch's pause (0.1s) here" in refused, refused
    assert "1 mirrored call waiting for the shadow's answer" in refused, refused
    assert mode == "bk-primary"
    assert switches == {"applied": 3, "refused": 1}
    # every write reached both sides (mirrored to BK, or to Bank while BK was primary), switched or not
    written = {"k1": ["slow"], "k3": ["slow", "slow"], "k4": ["slow", "slow"]}
    assert (bank.received, bk.received) == (written, written)
