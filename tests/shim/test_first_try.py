"""The first try, with no config: no descriptors and no keys. Every call then counts as a write on
every key, so its mirror waits for every earlier one: a burst of concurrent calls is mirrored one at
a time. It must still be mirrored completely (ordering.max_wait, not the shadow timeout, bounds the
wait), and the ready line says what the shim will serialize."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from grpc import aio

from shim.testing import running_shim
from tests.backends import scripted_server
from tests.helpers import NEEDS_ENVOY

CALLS = 200
BK_TIME = 0.015  # each call's own time on each side: 200 in a row take 3 s, beyond the 2 s shadow timeout


async def _slow_echo(
    requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
) -> list[bytes]:
    body = b"".join([request async for request in requests])
    await asyncio.sleep(BK_TIME)
    return [b"done: " + body]


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_with_no_config_a_burst_of_concurrent_calls_is_mirrored_and_compared_completely(
    dataplane: str,
) -> None:
    bank, bk = await scripted_server(_slow_echo), await scripted_server(_slow_echo)
    try:
        async with running_shim(bank.address, bk.address, dataplane=dataplane) as (shim, sink):
            async with aio.insecure_channel(shim.address) as channel:
                call = channel.unary_unary("/any.v1.Service/Do")
                answers = await asyncio.gather(*(call(f"request {n}".encode()) for n in range(CALLS)))
            assert answers == [f"done: request {n}".encode() for n in range(CALLS)]
            comparisons = await sink.wait_for(CALLS, within=60)
            await shim.drain()
    finally:
        await bank.stop()
        await bk.stop()
    verdicts = Counter(str(c.verdict) for c in comparisons)
    reasons = Counter(c.reason for c in comparisons if str(c.verdict) != "match")
    assert verdicts == {"match": CALLS}, reasons


async def test_a_call_waits_behind_earlier_calls_for_max_wait_then_is_given_up_and_says_so() -> None:
    """BK holds the first call past the test; the second (on every key too, with no config) waits behind
    it for ordering.max_wait after Bank answered, then is given up: a shadow error naming max_wait, long
    before the first call's own shadow timeout."""
    release = asyncio.Event()

    async def bank_side(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        return [b"".join([request async for request in requests])]

    async def bk_side(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        body = b"".join([request async for request in requests])
        if body == b"first":
            await release.wait()
        return [body]

    bank, bk = await scripted_server(bank_side), await scripted_server(bk_side)
    try:
        settings = {"shadow_timeout": 20.0, "ordering": {"max_wait": 0.5}}
        async with (
            running_shim(bank.address, bk.address, **settings) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            call = channel.unary_unary("/any.v1.Service/Do")
            assert await call(b"first") == b"first"
            started = asyncio.get_running_loop().time()
            assert await call(b"second") == b"second"
            (second,) = await sink.wait_for(1, within=10)
            waited = asyncio.get_running_loop().time() - started
            release.set()
            await sink.wait_for(2, within=10)
            await shim.drain()
    finally:
        release.set()
        await bank.stop()
        await bk.stop()
    assert str(second.verdict) == "shadow-error"
    assert second.reason == (
        "shadow given up while it waited behind earlier calls on its keys: "
        "not sent within ordering.max_wait (0.5s) after the primary"
    )
    assert 0.5 <= waited < 5  # given up after max_wait, not after the 20 s shadow timeout
