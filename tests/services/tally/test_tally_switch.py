"""A switch's bounded pause on the tally (a second service): a write BK takes a second over keeps a switch
from holding within the default switch_pause, so it is refused, nothing changed; the same switch with a
pause of its own applies."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc import aio

from shim.admin import Refused, set_mode
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.helpers import NEEDS_ENVOY, until
from tests.services.tally.server import APPEND, REGISTRY, Reply, Request, serve


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_switch_beside_a_slow_mirrored_write_is_refused_unless_given_the_pause(
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
            outcomes: list[str] = []
            for n, pause in enumerate((0.0, 3.0)):
                request = Request(key=f"k{n}", entry="slow", delay_ms=1000)
                answer = Reply.FromString(await append(request.SerializeToString(), timeout=10))
                assert answer.place == 1  # Bank answered at once
                await until(lambda: any(d.in_flight for d in mirrors), "the mirrored write in flight")
                try:
                    await set_mode(shim, "bk-primary", [], "test", "ops", force=True, pause=pause)
                    outcomes.append("applied")
                except Refused as refused:
                    outcomes.append(refused.message)
                await shim.drain()
            mode = shim.modes.default
    finally:
        await bank.stop()
        await bk.stop()
    refused, applied = outcomes
    assert "calls in flight did not finish within the switch's pause (0.1s) here" in refused, refused
    assert "1 mirrored call waiting for the shadow's answer" in refused, refused
    assert applied == "applied"
    assert mode == "bk-primary"
    assert bk.received == {"k0": ["slow"], "k1": ["slow"]}  # both writes mirrored, switched or not
