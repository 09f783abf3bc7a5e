"""A status the backend sends before reading the whole request stream reaches the client intact.

grpcio's asyncio client can replace such a status with INTERNAL (grpc/grpc#36066);
the shim must not pass that race on. The client here uses grpc's synchronous
API, which reports the server's status faithfully, so any INTERNAL it sees
would come from the shim.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from grpc import aio

from shim.testing import running_shim
from tests.backends import Running, scripted_server

REPEAT = 60
CHUNK = b"x" * 65536


async def _abort_at_once(
    requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
) -> list[bytes]:
    """Fail before reading anything."""
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not here")


async def _abort_after_first(
    requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
) -> list[bytes]:
    """Read one message, then fail."""
    async for _ in requests:
        break
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "batch too large")


async def _answer_after_first(
    requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
) -> list[bytes]:
    """Read one message, then answer OK without reading the rest."""
    async for request in requests:
        return [b"seen " + request[:4]]
    return []


def _many() -> Iterator[bytes]:
    for _ in range(64):
        yield CHUNK


def _call_sync(address: str, streaming_answer: bool) -> tuple[grpc.StatusCode, str | None]:
    with grpc.insecure_channel(address) as channel:
        method = "/test.Early/Upload"
        try:
            if streaming_answer:
                for _ in channel.stream_stream(method)(_many(), timeout=10):
                    pass
            else:
                channel.stream_unary(method)(_many(), timeout=10)
        except grpc.RpcError as error:
            return error.code(), error.details()
        return grpc.StatusCode.OK, None


@pytest.fixture
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    running = await scripted_server(request.param)
    yield running
    await running.stop()


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        (_abort_at_once, grpc.StatusCode.UNIMPLEMENTED),
        (_abort_after_first, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (_answer_after_first, grpc.StatusCode.OK),
    ],
    indirect=["backend"],
    ids=["abort-before-reading", "abort-after-first", "answer-after-first"],
)
@pytest.mark.parametrize("streaming_answer", [False, True], ids=["client-stream", "bidi"])
async def test_early_status_reaches_the_client_every_time(
    backend: Running, expected: grpc.StatusCode, streaming_answer: bool
) -> None:
    """Under repetition, a client streaming 4 MiB sees the backend's early status, never INTERNAL."""
    async with running_shim(backend.address, backend.address) as (shim, _sink):
        codes = []
        for _ in range(REPEAT):
            code, _details = await asyncio.to_thread(_call_sync, shim.address, streaming_answer)
            codes.append(code)
    assert codes == [expected] * REPEAT
