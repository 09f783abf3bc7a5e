"""Either side of the venue on a real gRPC server, through a generic handler (no generated code).

served = await serve("bank")          # or "bk"; on 127.0.0.1, a free port
served.address, served.book           # where to call; the side's book, for direct assertions
gate = served.hold("CancelOrder")     # the next CancelOrder waits at arrival...
await gate.arrived.wait(); gate.release.set()   # ...until released
await served.stop()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message
from grpc import aio

from tests.services.venue.bank import BankVenue
from tests.services.venue.bk import BkVenue
from tests.services.venue.messages import REGISTRY, SERVICE, Refused

SIDES = ("bank", "bk")
OPTIONS = [("grpc.so_reuseport", 0)]


class Book(Protocol):
    """What each side implements: one function per method, on decoded messages."""

    @property
    def order_ids(self) -> list[str]: ...  # minted, oldest first

    @property
    def exec_ids(self) -> list[str]: ...

    def open_account(self, request: Any) -> Any: ...
    def trade(self, request: Any) -> Any: ...  # one message of a session -> its ack
    def submit_batch(self, requests: Sequence[Any]) -> Any: ...
    def cancel_order(self, request: Any) -> Any: ...
    def get_order(self, request: Any) -> Any: ...
    def list_open_orders(self, request: Any) -> Any: ...
    def stream_fills(self, request: Any) -> list[Any]: ...
    def get_account(self, request: Any) -> Any: ...
    def list_accounts(self, request: Any) -> Any: ...


def _always(_: Any) -> bool:
    return True


@dataclass
class Gate:
    """The first call of `method` whose first request matches `when` waits at arrival until released."""

    method: str
    when: Callable[[Any], bool] = _always
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class Arrival:
    method: str  # "Trade", ...
    request: Any  # the first request message (None: the call sent none)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


class _Handler(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type stubs
    """Serves `venue.v1.Venue` from a book; every other method is UNIMPLEMENTED."""

    def __init__(self, book: Book, stamped: bool = False) -> None:
        self.book = book
        self.stamped = stamped  # a session's acks say when this side handled their requests (`acked_at`)
        self.gates: list[Gate] = []
        self.arrivals: list[Arrival] = []
        self.changed = asyncio.Condition()

    async def _arrive(self, method: str, request: Any) -> None:
        self.arrivals.append(Arrival(method, request))
        async with self.changed:
            self.changed.notify_all()
        for gate in self.gates:
            if gate.method == method and not gate.arrived.is_set() and gate.when(request):
                gate.arrived.set()
                await gate.release.wait()
                return

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        info = REGISTRY.method(handler_call_details.method)
        if info is None or not info.path.startswith(f"/{SERVICE}/"):
            return None
        name = info.path.rpartition("/")[2]
        answer: Callable[..., Any] = getattr(self.book, _snake(name))
        decode = REGISTRY.message_class(info.input_type).FromString
        codec = {"request_deserializer": decode, "response_serializer": _serialize}

        if info.unary:

            async def unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
                await self._arrive(name, request)
                try:
                    return answer(request)
                except Refused as refused:
                    await context.abort(refused.code, refused.details)

            return grpc.unary_unary_rpc_method_handler(unary, **codec)
        if info.client_streaming and info.server_streaming:  # a session: one answer per request

            async def session(requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]) -> Any:
                first = True
                async for request in requests:
                    if first:
                        await self._arrive(name, request)
                        first = False
                    ack = answer(request)
                    if self.stamped:
                        ack.acked_at.FromNanoseconds(time.time_ns())
                    yield ack

            return grpc.stream_stream_rpc_method_handler(session, **codec)
        if info.client_streaming:

            async def batch(requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]) -> Any:
                received = [request async for request in requests]
                await self._arrive(name, received[0] if received else None)
                try:
                    return answer(received)
                except Refused as refused:
                    await context.abort(refused.code, refused.details)

            return grpc.stream_unary_rpc_method_handler(batch, **codec)

        async def listing(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            await self._arrive(name, request)
            try:
                answers = answer(request)
            except Refused as refused:
                await context.abort(refused.code, refused.details)
            for one in answers:
                yield one

        return grpc.unary_stream_rpc_method_handler(listing, **codec)


@dataclass
class Served:
    """One side of the venue and the real gRPC server running it."""

    side: str
    server: aio.Server
    port: int
    _handler: _Handler

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def book(self) -> Book:
        return self._handler.book

    @property
    def arrivals(self) -> list[Arrival]:
        """Every call received so far, in arrival order."""
        return list(self._handler.arrivals)

    def hold(self, method: str, when: Callable[[Any], bool] = _always) -> Gate:
        """Hold the next call of `method` ("Trade", ...) whose first request matches `when`."""
        gate = Gate(method, when)
        self._handler.gates.append(gate)
        return gate

    async def wait_until(self, check: Callable[[], bool], within: float = 10.0) -> None:
        """Until `check()` holds, checked at every arrival; TimeoutError after `within` seconds."""
        async with self._handler.changed:
            await asyncio.wait_for(self._handler.changed.wait_for(check), timeout=within)

    async def stop(self) -> None:
        for gate in self._handler.gates:
            gate.release.set()
        await self.server.stop(None)


async def serve(side: str, stamped: bool = False) -> Served:
    """`side` ("bank" or "bk") on a real gRPC server on 127.0.0.1, on a free port. `stamped`: its
    session acks say when it handled their requests, by its clock (`TradeAck.acked_at`)."""
    books: dict[str, Callable[[], Book]] = {"bank": BankVenue, "bk": BkVenue}
    if side not in books:
        raise ValueError(f"side {side!r} is not one of {', '.join(SIDES)}")
    handler = _Handler(books[side](), stamped)
    server = aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return Served(side, server, port, handler)
