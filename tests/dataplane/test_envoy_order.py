"""Through Envoy, no mirrored write reaches BK out of its key's order.

Bank and BK keep, per key, the sequence of writes they applied, and take a random few milliseconds over
each (so that writes sent out of order would be applied out of order). Many clients, each on its own
connection, write to a few shared keys; a client sends a write on a key only after the previous write
on that key was answered (by whichever client), which is the order the shim promises to keep. At the end
each key's sequence on BK is Bank's.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpc import aio

from comparators import Verdict
from shim.dataplane import envoy as envoy_process
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests._proto.grpc.testing import interop_pb2 as pb
from tests.backends import scripted_server
from tests.helpers import registry_of

pytestmark = pytest.mark.skipif(envoy_process.binary() is None, reason="no Envoy binary on this platform")

KEYS = 6
CLIENTS = 24
WRITES = 40  # per client
METHOD = "/grpc.testing.TestService/UnaryCall"


def _ledger(applied: dict[int, list[bytes]], seed: int) -> Any:
    rng = random.Random(seed)

    async def apply(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        request = pb.SimpleRequest.FromString(b"".join([r async for r in requests]))
        await asyncio.sleep(rng.random() * 0.004)
        applied[request.response_size].append(request.payload.body)
        return [pb.SimpleResponse(payload=request.payload).SerializeToString()]

    return apply


async def test_each_keys_writes_reach_bk_in_the_order_bank_applied_them() -> None:
    bank_log: dict[int, list[bytes]] = defaultdict(list)
    bk_log: dict[int, list[bytes]] = defaultdict(list)
    bank, bk = await scripted_server(_ledger(bank_log, 1)), await scripted_server(_ledger(bk_log, 2))
    locks = [asyncio.Lock() for _ in range(KEYS)]
    try:
        async with running_shim(
            bank.address,
            bk.address,
            dataplane="envoy",
            registry=registry_of(pb.DESCRIPTOR),
            methods={METHOD.lstrip("/"): MethodSettings(key=("response_size",))},
            shadow_timeout=10.0,
        ) as (shim, sink):

            async def client(n: int) -> None:
                rng = random.Random(100 + n)
                async with aio.insecure_channel(shim.address, options=[("client", n)]) as channel:
                    call = channel.unary_unary(METHOD)
                    for w in range(WRITES):
                        key = rng.randrange(KEYS)
                        body = f"c{n}-w{w}".encode()
                        request = pb.SimpleRequest(response_size=key, payload=pb.Payload(body=body))
                        async with locks[key]:  # the next write on this key waits for this one's answer
                            await call(request.SerializeToString(), timeout=30)

            await asyncio.gather(*(client(n) for n in range(CLIENTS)))
            comparisons = await sink.wait_for(CLIENTS * WRITES, within=60)
    finally:
        await bank.stop()
        await bk.stop()
    assert {c.verdict for c in comparisons} == {Verdict.MATCH}
    assert sum(len(v) for v in bank_log.values()) == CLIENTS * WRITES
    assert dict(bk_log) == dict(bank_log)
