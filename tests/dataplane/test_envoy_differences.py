"""What a client sees differently through Envoy when Bank fails, as docs/transparency.md states it: the
same status code in Envoy's words when Bank cannot be reached; INTERNAL, not UNAVAILABLE, when Bank's
connection dies in the middle of a server stream (Envoy resets the client's stream, RST_STREAM code 2)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import grpc
from grpc import aio

from shim.testing import running_shim
from tests.backends import scripted_server
from tests.helpers import NEEDS_ENVOY
from tests.shim.test_transparency import _observe

pytestmark = NEEDS_ENVOY


def _unused_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


async def test_with_bank_down_the_client_gets_unavailable_in_envoys_words() -> None:
    """Nothing listens at Bank's address: directly and through Envoy the call ends UNAVAILABLE; the details
    are grpc's ("failed to connect to all addresses; ...") directly, Envoy's through it."""
    down = _unused_address()
    direct = await _observe(down, "unary_unary", [b"x"])
    async with running_shim(down, dataplane="envoy") as (shim, _):
        through = await _observe(shim.address, "unary_unary", [b"x"])
    assert direct[0] is through[0] is grpc.StatusCode.UNAVAILABLE
    assert str(direct[1]).startswith("failed to connect to all addresses")
    assert str(through[1]).startswith("upstream connect error or disconnect/reset before headers")


class _Cutter:
    """A TCP relay in front of Bank, whose connections `cut()` aborts (a connection that dies)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writers: list[asyncio.StreamWriter] = []
        self.relays: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def test_bank_connection_dying_mid_stream_reaches_the_client_as_internal() -> None:
    """Bank sends two messages of a server stream, then its connection dies: directly the client gets both
    and UNAVAILABLE; through Envoy both and INTERNAL (Envoy resets the client's stream with code 2)."""

    async def two_then_hang(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        _ = [r async for r in requests]
        await context.write(b"one")
        await context.write(b"two")
        await asyncio.Event().wait()  # until its connection dies under it
        return []

    bank = await scripted_server(two_then_hang)
    cutter = _Cutter(bank.port)
    relay = await cutter.start()

    async def observe(address: str) -> tuple[grpc.StatusCode, str, list[bytes]]:
        """The call's answers, its connection to Bank cut once the client has two."""
        async with aio.insecure_channel(address) as channel:
            call = channel.unary_stream("/t.Svc/Stream")(b"x", timeout=20)
            answers: list[bytes] = []
            with contextlib.suppress(aio.AioRpcError):
                async for answer in call:
                    answers.append(answer)
                    if len(answers) == 2:
                        cutter.cut()
            return await call.code(), await call.details(), answers

    try:
        direct = await observe(relay)
        async with running_shim(relay, dataplane="envoy") as (shim, _):
            through = await observe(shim.address)
    finally:
        await cutter.stop()
        await bank.stop()
    assert (direct[0], direct[2]) == (grpc.StatusCode.UNAVAILABLE, [b"one", b"two"])
    assert (through[0], through[2]) == (grpc.StatusCode.INTERNAL, [b"one", b"two"])
    assert "RST_STREAM with error code 2" in through[1]
