"""A write its client gives up on (cancelled, or its deadline passed) while Bank has it leaves both outcomes
unknown: its key goes out of step, and the calls on the key after it go on to BK at once. On Envoy, the copy
of such a call never gets the primary's status, and Envoy closes it only once it has held it as long as the
shadow's timeout: the plane learns that the call ended from Envoy's record of it instead
(`shim.dataplane.ended`). Before, the write held its key's lane until Envoy closed the copy.

The tally (a second service) is the service, on both data planes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from grpc import aio

from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.helpers import NEEDS_ENVOY, until
from tests.services.tally.server import APPEND, REGISTRY, Request, serve

TIMEOUT = 6.0  # the shadow's: what Envoy holds a copy for, and what a write given up on must not cost


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
@pytest.mark.parametrize("ended", ["deadline", "cancel"])
async def test_a_write_its_client_gave_up_on_holds_its_key_no_longer_than_the_call(
    tmp_path: Path, dataplane: str, ended: str
) -> None:
    bank, bk = await serve(slow=True), await serve()  # Bank records each write, then answers after its delay
    try:
        async with (
            running_shim(
                bank.address, bk.address, registry=REGISTRY, dataplane=dataplane, shadow_timeout=TIMEOUT,
                store={"url": str(tmp_path / "shim.db")},
                methods={"tally.v1.Tally/Append": MethodSettings(key=("key",))},
            ) as (shim, _),
            aio.insecure_channel(shim.address) as channel,
        ):  # fmt: skip
            append = channel.unary_unary(APPEND)
            given_up = Request(key="k", entry="given up", delay_ms=3000).SerializeToString()
            if ended == "deadline":
                with pytest.raises(aio.AioRpcError) as failed:
                    await append(given_up, timeout=0.3)
                assert failed.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            else:
                call = append(given_up, timeout=10)
                await until(lambda: "given up" in bank.received.get("k", []), "Bank has the write")
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
            await append(Request(key="k", entry="next").SerializeToString(), timeout=10)
            answered = time.monotonic()
            await until(
                lambda: "next" in bk.received.get("k", []), "BK got the next write", within=TIMEOUT * 2
            )
            waited = time.monotonic() - answered
            await shim.drain()
            assert shim.steps is not None
            marked = dict(shim.steps.keys)
    finally:
        await bank.stop()
        await bk.stop()
    assert waited < TIMEOUT / 3, (
        f"the next write on the key waited {waited:.1f}s for one its client gave up on"
    )
    assert "k" in marked, "the write given up on left both outcomes unknown"
