"""The shadow breaker stops mirroring to a failing BK, counts it, and probes its way back."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

from grpc import aio

from comparators import Verdict
from shim._breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from shim.metrics import Counters
from shim.testing import running_shim
from tests.backends import scripted_server


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_in_a_row_and_probes_once() -> None:
    """Three failures in a row open it; after open_for one probe goes through; its success closes it."""
    counters, clock = Counters(), Clock()
    breaker = Breaker(counters, failures=3, open_for=10.0, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record(ok=False)
    breaker.record(ok=True)  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.record(ok=False)
    assert breaker.state == OPEN
    assert not breaker.allow()
    clock.now = 9.9
    assert not breaker.allow()
    clock.now = 10.0
    assert breaker.allow()  # the probe
    assert breaker.state == HALF_OPEN
    assert not breaker.allow()  # one probe at a time
    breaker.record(ok=True)
    assert breaker.state == CLOSED
    assert breaker.allow()
    assert (
        counters.get("breaker_open"),
        counters.get("breaker_half_open"),
        counters.get("breaker_closed"),
    ) == (1, 1, 1)


def test_a_probe_released_without_a_verdict_lets_the_next_call_probe() -> None:
    """A probe that ends saying nothing of BK (cancelled, not sent) is released: the next call probes. A
    release of a probe that is no longer the one out changes nothing."""
    clock = Clock()
    breaker = Breaker(Counters(), failures=1, open_for=5.0, clock=clock)
    breaker.record(ok=False)
    assert breaker.probe == 0
    clock.now = 5.0
    assert breaker.allow()
    first = breaker.probe
    assert first
    assert not breaker.allow()
    breaker.release(first)
    assert (breaker.state, breaker.probe) == (HALF_OPEN, 0)
    assert breaker.allow()  # the next call is the probe now
    second = breaker.probe
    assert second != first
    breaker.release(first)  # the first probe's, late: the second is still out
    assert breaker.probe == second
    assert not breaker.allow()
    breaker.record(ok=True)
    breaker.release(second)  # after its verdict: nothing to release
    assert breaker.state == CLOSED
    assert breaker.allow()


def test_a_failed_probe_opens_the_breaker_again() -> None:
    """A probe BK does not answer reopens the breaker for another open_for."""
    clock = Clock()
    breaker = Breaker(Counters(), failures=1, open_for=5.0, clock=clock)
    breaker.record(ok=False)
    clock.now = 5.0
    assert breaker.allow()
    breaker.record(ok=False)
    assert breaker.state == OPEN
    clock.now = 9.0
    assert not breaker.allow()


async def test_a_down_bk_opens_the_breaker_answers_stay_unchanged_and_counts_are_exact() -> None:
    """BK down: after `failures` shadow errors the breaker opens; BK back: a probe closes it."""

    async def echo(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        return [b"re:" + r async for r in requests]

    bank = await scripted_server(echo)
    # BK is down: its port bound and never listened on (so no other server, the shim's own listener
    # on port 0 included, can be handed it), until BK comes back on it
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    revived = None
    try:
        async with (
            running_shim(
                bank.address,
                f"127.0.0.1:{port}",
                shadow={
                    "breaker_failures": 3,
                    "breaker_open_for": 0.0,
                },  # the call after an opening is a probe
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            say = channel.unary_unary("/echo.Echo/Say")
            for i in range(3):
                assert await say(f"{i}".encode()) == f"re:{i}".encode()
                await shim.drain()  # each failure is known before the next call
            failures = await sink.wait_for(3)
            assert [c.verdict for c in failures] == [Verdict.SHADOW_ERROR] * 3
            assert shim.dispatcher is not None
            assert shim.dispatcher.shared.breaker.state == OPEN
            holder.close()
            revived = await scripted_server(echo, port=port)  # BK is back
            await asyncio.wait_for(shim.dispatcher.shared.channel.channel_ready(), timeout=10)
            assert await say(b"probe") == b"re:probe"
            await shim.drain()
            comparisons = await sink.wait_for(4)
            assert comparisons[3].verdict is Verdict.MATCH
            assert shim.dispatcher.shared.breaker.state == CLOSED
            assert shim.counters.get("breaker_open") == 1
            assert shim.counters.get("breaker_closed") == 1
    finally:
        holder.close()
        await bank.stop()
        if revived is not None:
            await revived.stop()


async def test_calls_refused_by_an_open_breaker_are_recorded_as_not_mirrored() -> None:
    """While the breaker is open each call is answered and its exchange says why it was not mirrored."""

    async def echo(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        return [b"re:" + r async for r in requests]

    bank = await scripted_server(echo)
    holder = socket.socket()  # BK is down: a port bound and never listened on, which nobody else gets
    holder.bind(("127.0.0.1", 0))
    gone = f"127.0.0.1:{holder.getsockname()[1]}"
    try:
        async with (
            running_shim(
                bank.address,
                gone,
                shadow={"breaker_failures": 1, "breaker_open_for": 3600.0},
            ) as (
                shim,
                sink,
            ),
            aio.insecure_channel(shim.address) as channel,
        ):
            say = channel.unary_unary("/echo.Echo/Say")
            assert await say(b"first") == b"re:first"
            await shim.drain()
            for i in range(4):
                assert await say(f"{i}".encode()) == f"re:{i}".encode()
            comparisons = await sink.wait_for(5)
            assert shim.counters.get("shadow_breaker_skipped") == 4
    finally:
        holder.close()
        await bank.stop()
    refused = [c for c in comparisons if c.verdict is Verdict.SKIPPED]
    assert len(refused) == 4
    assert all("breaker is open" in c.reason for c in refused)
