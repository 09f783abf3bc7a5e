"""Through Envoy, a switch does not pause the clients while the comparison plane catches up.

A switch must wait until the mirrored calls of the copies Envoy sent straight to Bank are over. When the
comparison plane is behind, or BK is slow, that takes as long as it takes; the clients' calls of the
scopes that change go through the shim meanwhile, in their old mode, ordered after those copies, and are
paused only at the end, for the calls still in the shim.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpc import aio

from shim.admin import set_mode
from shim.dataplane import envoy as envoy_process
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests._proto.grpc.testing import interop_pb2 as pb
from tests.backends import scripted_server
from tests.helpers import registry_of, until

pytestmark = pytest.mark.skipif(envoy_process.binary() is None, reason="no Envoy binary on this platform")
METHOD = "/grpc.testing.TestService/UnaryCall"


def _ledger(name: bytes, applied: dict[int, list[bytes]], gate: asyncio.Event | None = None) -> Any:
    """Applies each write to its key (`response_size`) once `gate` is open, and answers with its name."""

    async def apply(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        request = pb.SimpleRequest.FromString(b"".join([r async for r in requests]))
        if gate is not None:
            await gate.wait()
        applied[request.response_size].append(request.payload.body)
        return [
            pb.SimpleResponse(payload=pb.Payload(body=name + b":" + request.payload.body)).SerializeToString()
        ]

    return apply


def _write(key: int, body: bytes) -> bytes:
    return pb.SimpleRequest(response_size=key, payload=pb.Payload(body=body)).SerializeToString()


def _answered_by(raw: bytes) -> bytes:
    return pb.SimpleResponse.FromString(raw).payload.body.split(b":")[0]


async def test_calls_during_a_switch_go_on_while_the_mirrored_calls_before_it_finish() -> None:
    """BK holds the mirrored writes: the switch cannot finish, yet a write sent meanwhile is answered by
    Bank at once, reaches BK after the earlier write on its key, and the switch then applies."""
    bank_log: dict[int, list[bytes]] = defaultdict(list)
    bk_log: dict[int, list[bytes]] = defaultdict(list)
    release = asyncio.Event()
    bank = await scripted_server(_ledger(b"bank", bank_log))
    bk = await scripted_server(_ledger(b"bk", bk_log, release))
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                dataplane="envoy",
                registry=registry_of(pb.DESCRIPTOR),
                methods={METHOD.lstrip("/"): MethodSettings(key=("response_size",))},
                shadow_timeout=30.0,
                grace_period=30.0,
            ) as (shim, _),
            aio.insecure_channel(shim.address) as channel,
        ):
            call = channel.unary_unary(METHOD)
            assert _answered_by(await call(_write(1, b"before"), timeout=5)) == b"bank"
            plane = shim.modes.hooks
            assert plane is not None
            switch = asyncio.get_running_loop().create_task(
                set_mode(shim, "bk-primary", [], "test", "ops", force=True)
            )
            # the write's copy is in, its mirrored call held by BK: the switch waits for it
            await until(lambda: "mirrored calls of the copies" in plane.waiting(), "the switch waiting", 10)
            during = await call(_write(1, b"during"), timeout=5)  # not paused until the switch is over
            assert not switch.done()
            release.set()
            await switch
            after = await call(_write(1, b"after"), timeout=5)
            await shim.drain()
            pauses = len(shim.modes.pauses)
    finally:
        await bank.stop()
        await bk.stop()
    assert _answered_by(during) == b"bank"
    assert _answered_by(after) == b"bk"
    assert bank_log[1] == bk_log[1] == [b"before", b"during", b"after"]
    assert pauses == 1
