"""A long-lived stream neither blocks a switch nor moves: it finishes where it started (on either data
plane)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from shim.admin import Refused, set_mode
from shim.testing import running_shim
from tests._proto.grpc.testing import interop_pb2 as pb
from tests.backends import scripted_server
from tests.helpers import NEEDS_ENVOY, registry_of, until

PLANES = pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
SESSION = "/grpc.testing.TestService/FullDuplexCall"
UNARY = "/grpc.testing.TestService/UnaryCall"


def _side(name: bytes) -> Any:
    """A server that answers each request message with its own name and the request's body."""

    async def answer(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        out = []
        async for raw in requests:
            body = pb.StreamingOutputCallRequest.FromString(raw).payload.body
            reply = pb.StreamingOutputCallResponse(payload=pb.Payload(body=name + b":" + body))
            await context.write(reply.SerializeToString())  # at once: a session answers as it goes
            out.append(reply)
        return []

    return answer


def _body(raw: bytes) -> bytes:
    return pb.StreamingOutputCallResponse.FromString(raw).payload.body


@PLANES
async def test_a_session_open_across_a_switch_neither_blocks_it_nor_moves(
    tmp_path: Path, dataplane: str
) -> None:
    bank, bk = await scripted_server(_side(b"bank")), await scripted_server(_side(b"bk"))
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                dataplane=dataplane,
                registry=registry_of(pb.DESCRIPTOR),
                store={"url": str(tmp_path / "shim.db")},
                grace_period=5.0,
                switch_pause=2.0,  # a loaded machine: Envoy may take a while to apply the routes
            ) as (shim, _),
            aio.insecure_channel(shim.address) as channel,
        ):
            session = channel.stream_stream(SESSION)()

            async def say(text: bytes) -> bytes:
                message = pb.StreamingOutputCallRequest(payload=pb.Payload(body=text))
                await session.write(message.SerializeToString())
                return _body(await session.read())

            assert await say(b"one") == b"bank:one"
            started = time.monotonic()
            await set_mode(shim, "bk-primary", [], "test", "ops", force=True)
            took = time.monotonic() - started
            # new calls go to BK, which now answers; the open session stays with Bank
            fresh = channel.stream_stream(SESSION)()
            await fresh.write(
                pb.StreamingOutputCallRequest(payload=pb.Payload(body=b"new")).SerializeToString()
            )
            assert _body(await fresh.read()) == b"bk:new"
            await fresh.done_writing()
            assert await say(b"two") == b"bank:two"
            await session.done_writing()
            await session.wait_for_connection()
    finally:
        await bank.stop()
        await bk.stop()
    assert took < 1.0  # a session waited for would hold the switch its pause (2 s), then refuse it


def _watch(name: bytes, release: asyncio.Event) -> Any:
    """A server stream that answers once at once, then waits for `release` before its last answer."""

    async def answer(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        async for _ in requests:
            pass
        first = pb.StreamingOutputCallResponse(payload=pb.Payload(body=name + b":first"))
        await context.write(first.SerializeToString())
        await release.wait()
        return [pb.StreamingOutputCallResponse(payload=pb.Payload(body=name + b":last")).SerializeToString()]

    return answer


@PLANES
async def test_a_server_stream_under_way_does_not_block_a_switch(tmp_path: Path, dataplane: str) -> None:
    """Once the shadow has begun to answer a server stream, it has the request: the switch goes on while
    both streams continue, and the client's stream ends on Bank's answers."""
    release = asyncio.Event()
    bank, bk = await scripted_server(_watch(b"bank", release)), await scripted_server(_watch(b"bk", release))
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                dataplane=dataplane,
                registry=registry_of(pb.DESCRIPTOR),
                store={"url": str(tmp_path / "shim.db")},
                grace_period=5.0,
                shadow_timeout=10.0,
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            request = pb.StreamingOutputCallRequest(payload=pb.Payload(body=b"watch"))
            watch = channel.unary_stream("/grpc.testing.TestService/StreamingOutputCall")(
                request.SerializeToString()
            )
            assert _body(await watch.read()) == b"bank:first"
            mirrors = shim.dispatchers["bk"]
            # the shadow has answered the mirrored watch once: it has the request
            await until(lambda: mirrors.in_flight == 1, "the mirrored watch under way")
            await _switch_past_slow_routes(shim, "bk-primary")
            assert shim.modes.default == "bk-primary"
            assert not watch.done(), "the switch applied while the watch was under way"
            release.set()
            assert _body(await watch.read()) == b"bank:last"
            await sink.wait_for(1)
    finally:
        await bank.stop()
        await bk.stop()


async def _switch_past_slow_routes(shim: Any, mode: str, tries: int = 3) -> None:
    """`set_mode(shim, mode, force=True)`, tried again when it was refused only because Envoy, on a loaded
    machine, took longer than the switch's pause to route the calls through the shim (nothing applied,
    nothing recorded). A refusal for the calls in flight themselves is not tried again."""
    for attempt in range(tries):
        try:
            await set_mode(shim, mode, [], "test", "ops", force=True)
            return
        except Refused as refused:
            if "waiting for Envoy to route the calls through the shim" not in refused.message:
                raise
            if attempt == tries - 1:
                raise
