"""Serve one side's book on a real grpc.aio server on loopback, through a generic handler."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from tests.services.custody._book import BUGS, Book, Refused
from tests.services.custody.messages import REGISTRY, SERVICE

OPTIONS = [("grpc.so_reuseport", 0)]  # a restarted server must be the only one on its port


def _serialize(message: Any) -> bytes:
    return bytes(message.SerializeToString())


async def _abort(context: aio.ServicerContext[Any, Any], refused: Refused) -> NoReturn:
    """End the call with the refusal: rich details (google.rpc.Status) when it has a violation."""
    if refused.violation is None:
        await context.abort(refused.code, refused.details)
    else:
        violation = refused.violation
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=violation.type, subject=violation.subject, description=violation.description
                )
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(failure)
        status = status_pb2.Status(code=refused.code.value[0], message=refused.details, details=[detail])
        await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort returns no more")


class _Custody(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type stubs
    """Every custody.v1.Custody method, answered by the book; any other method is UNIMPLEMENTED."""

    def __init__(
        self, book: Book, holds: dict[str, asyncio.Event], fails: dict[str, grpc.StatusCode]
    ) -> None:
        self.book = book
        self.holds = holds  # method name -> calls of it wait until the event is set
        self.fails = fails  # method name -> calls of it end with this status, the book untouched

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        info = REGISTRY.method(handler_call_details.method)
        if info is None or not info.path.startswith(f"/{SERVICE}/"):
            return None
        answer = getattr(self.book, info.path.rpartition("/")[2])
        decode = REGISTRY.message_class(info.input_type).FromString

        if info.server_streaming:

            async def stream(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                try:
                    answers: Iterable[Any] = answer(request)
                except Refused as refused:
                    await _abort(context, refused)
                for message in answers:
                    yield message

            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=decode, response_serializer=_serialize
            )

        name = info.path.rpartition("/")[2]

        async def unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            held = self.holds.get(name)
            if held is not None:
                await held.wait()
            failed = self.fails.get(name)
            if failed is not None:
                await context.abort(failed, f"{name} fails here")
            try:
                return answer(request)
            except Refused as refused:
                await _abort(context, refused)

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=decode, response_serializer=_serialize
        )


async def _start(
    book: Book, port: int, holds: dict[str, asyncio.Event], fails: dict[str, grpc.StatusCode]
) -> tuple[aio.Server, int]:
    server = aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers([_Custody(book, holds, fails)])
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if not bound:
        raise OSError(f"cannot listen on 127.0.0.1:{port}")
    await server.start()
    return server, bound


@dataclass
class Served:
    """One side's book and the real gRPC server answering from it."""

    side: str
    book: Book
    port: int
    _server: aio.Server | None
    holds: dict[str, asyncio.Event] = field(default_factory=dict)
    fails: dict[str, grpc.StatusCode] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def stop(self) -> None:
        """Stop serving (calls in flight are cancelled); the book stays. Calls made now find no server."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(None)

    async def restart(self) -> None:
        """Stop if serving, then serve the same book again on the same port."""
        await self.stop()
        self._server, _ = await _start(self.book, self.port, self.holds, self.fails)

    def hold(self, method: str) -> asyncio.Event:
        """Calls of `method` (a unary one, by name) wait, before the book answers, until the event returned
        is set."""
        event = self.holds[method] = asyncio.Event()
        return event

    def fail(self, method: str, code: grpc.StatusCode) -> None:
        """Calls of `method` (a unary one, by name) end with `code` from now on, the book untouched."""
        self.fails[method] = code


async def serve(side: str, bugs: Iterable[str] = BUGS) -> Served:
    """Serve `side` ("bank" or "bk") on a free loopback port; `bugs` are BK's planted bugs switched on
    (all by default; `set()` is BK fixed). Bank has none."""
    book = Book(side, frozenset(bugs))
    holds: dict[str, asyncio.Event] = {}
    fails: dict[str, grpc.StatusCode] = {}
    server, port = await _start(book, 0, holds, fails)
    return Served(side, book, port, server, holds, fails)
