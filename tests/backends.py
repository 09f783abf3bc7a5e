"""Real gRPC servers for tests: they do what each request asks.

- `InteropService`: gRPC's interop TestService (echo metadata, answer with a
  status, stream N answers with pauses, sleep).
- `scripted_server`: a server whose every method runs a coroutine the test
  gives, for behaviours the interop service has no request for.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from shim import _grpc_compat
from tests._proto.grpc.testing import interop_pb2 as pb
from tests._proto.grpc.testing import interop_pb2_grpc as pb_grpc

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
MAX = 64 * 1024 * 1024
OPTIONS = [
    ("grpc.max_receive_message_length", MAX),
    ("grpc.max_send_message_length", MAX),
    ("grpc.so_reuseport", 0),
    # every call that arrives is taken up at once: beyond grpc's default of 1,000 not yet taken up, a test
    # server would hold the rest back itself, and a test of many calls in flight would test only that
    ("grpc.server.max_pending_requests", 1_000_000),
    ("grpc.server.max_pending_requests_hard_limit", 1_000_000),
    # headers beyond grpc's default (8 KiB, 16 KiB at most): limits a Bank may well have, not the shim's
    ("grpc.max_metadata_size", 1 << 20),
    ("grpc.absolute_max_metadata_size", 1 << 20),
]


async def echo_metadata(context: aio.ServicerContext[Any, Any]) -> None:
    """Echo the interop test's metadata back, as its servers do (the headers and the trailers asked for)."""
    md = dict(context.invocation_metadata() or ())
    if ECHO_INITIAL in md:
        await context.send_initial_metadata(((ECHO_INITIAL, md[ECHO_INITIAL]),))
    if ECHO_TRAILING in md:
        context.set_trailing_metadata(((ECHO_TRAILING, md[ECHO_TRAILING]),))


async def _maybe_abort(status: pb.EchoStatus, context: aio.ServicerContext[Any, Any]) -> None:
    if status.code:
        await context.abort(grpc.StatusCode(_code(status.code)), status.message)


def _code(number: int) -> tuple[int, str]:
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code.value
    raise ValueError(number)


class InteropService(pb_grpc.TestServiceServicer):
    async def EmptyCall(self, request: pb.Empty, context: aio.ServicerContext[Any, Any]) -> pb.Empty:
        await echo_metadata(context)
        return pb.Empty()

    async def UnaryCall(
        self, request: pb.SimpleRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.SimpleResponse:
        await echo_metadata(context)
        await _maybe_abort(request.response_status, context)
        return pb.SimpleResponse(payload=pb.Payload(body=b"\0" * request.response_size))

    async def StreamingOutputCall(
        self, request: pb.StreamingOutputCallRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.StreamingOutputCallResponse]:
        await echo_metadata(context)
        for params in request.response_parameters:
            if params.interval_us:
                await asyncio.sleep(params.interval_us / 1e6)
            yield pb.StreamingOutputCallResponse(payload=pb.Payload(body=b"\0" * params.size))
        await _maybe_abort(request.response_status, context)

    async def StreamingInputCall(
        self,
        request_iterator: AsyncIterator[pb.StreamingInputCallRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> pb.StreamingInputCallResponse:
        await echo_metadata(context)
        total = 0
        async for request in request_iterator:
            total += len(request.payload.body)
        return pb.StreamingInputCallResponse(aggregated_payload_size=total)

    async def FullDuplexCall(
        self,
        request_iterator: AsyncIterator[pb.StreamingOutputCallRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.StreamingOutputCallResponse]:
        await echo_metadata(context)
        async for request in request_iterator:
            await _maybe_abort(request.response_status, context)
            for params in request.response_parameters:
                if params.interval_us:
                    await asyncio.sleep(params.interval_us / 1e6)
                yield pb.StreamingOutputCallResponse(payload=pb.Payload(body=b"\0" * params.size))


@dataclass
class Running:
    server: aio.Server
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self.server.stop(None)


async def interop_server() -> Running:
    server = aio.server(options=OPTIONS)
    pb_grpc.add_TestServiceServicer_to_server(InteropService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return Running(server, port)


# A scripted behaviour gets the request stream (raw bytes) and the context, and
# returns the answers to send (raw bytes); it may abort through the context.
# `called_method()` tells it which method was called.
_METHOD: contextvars.ContextVar[str] = contextvars.ContextVar("scripted method", default="")


def called_method() -> str:
    """The "/package.Service/Method" a scripted behaviour is answering."""
    return _METHOD.get()


Behaviour = Callable[[AsyncIterator[bytes], aio.ServicerContext[bytes, bytes]], Awaitable[list[bytes]]]


class _Scripted(grpc.GenericRpcHandler):
    def __init__(self, behaviour: Behaviour) -> None:
        self._behaviour = behaviour
        self.calls = 0

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method

        async def handle(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> None:
            self.calls += 1
            _METHOD.set(method)
            for answer in await self._behaviour(requests, context):
                await context.write(answer)

        return grpc.stream_stream_rpc_method_handler(handle)


async def scripted_server(
    behaviour: Behaviour,
    port: int = 0,
    credentials: grpc.ServerCredentials | None = None,
    max_message: int = MAX,
) -> Running:
    """A scripted server on loopback (port 0: a free one), over TLS with `credentials`, taking messages of
    at most `max_message` bytes."""
    options = [(name, max_message if name.startswith("grpc.max_") else value) for name, value in OPTIONS]
    server = aio.server(options=options)
    server.add_generic_rpc_handlers([_Scripted(behaviour)])
    address = f"127.0.0.1:{port}"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    return Running(server, port)


class Forwarder(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type stubs
    """A real server in front of another that forwards every call, with faults a test switches on:

    - `failing`: every call is answered UNAVAILABLE ("BK is down"), not forwarded;
    - `held`: methods (by name suffix, "/Deposit") held at arrival and never forwarded, until the caller
      goes away (`arrived` counts them);
    - `gated`: methods held at arrival until their event is set, then forwarded (`arrived` counts them);
    - `late`: methods forwarded at once but answered that many seconds late.
    """

    def __init__(self, target: str) -> None:
        self.channel = aio.insecure_channel(target)
        self.failing = False
        self.held: set[str] = set()
        self.gated: dict[str, asyncio.Event] = {}
        self.late: dict[str, float] = {}
        self.arrived = 0

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method

        async def forward(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> None:
            if self.failing:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "BK is down")
            if any(method.endswith(name) for name in self.held):
                self.arrived += 1
                await asyncio.Event().wait()  # until the call is cancelled: the server behind never gets it
            gate = next((g for name, g in self.gated.items() if method.endswith(name)), None)
            if gate is not None:
                self.arrived += 1
                await gate.wait()
            call = self.channel.stream_stream(method)()
            async for request in requests:
                await _grpc_compat.send(call, request)
            await _grpc_compat.close_sending(call)
            try:
                answers = [answer async for answer in call]
            except aio.AioRpcError as refused:  # passed on as the server behind said it, details and all
                await context.abort(
                    refused.code(), refused.details() or "", tuple(refused.trailing_metadata() or ())
                )
            delay = next((d for name, d in self.late.items() if method.endswith(name)), 0.0)
            if delay:
                await asyncio.sleep(delay)  # the call was applied; its answer comes late
            for answer in answers:
                await context.write(answer)
            if await call.code() is not grpc.StatusCode.OK:
                await context.abort(await call.code(), await call.details() or "")

        return grpc.stream_stream_rpc_method_handler(forward)


@contextlib.asynccontextmanager
async def forwarding(target: str) -> AsyncIterator[tuple[Forwarder, Running]]:
    """A Forwarder in front of `target`, served on a free loopback port, stopped on exit."""
    forwarder = Forwarder(target)
    server = aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers([forwarder])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield forwarder, Running(server, port)
    finally:
        await server.stop(None)
        await forwarder.channel.close()
