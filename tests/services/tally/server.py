"""One side of the tally on a real gRPC server on a free port, through a generic handler (no generated
code): `served = await serve(slow=False)`; `served.received[key]` lists the entries in the order this
side received them (`List` answers the same); `await served.stop()`."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from tests.services._protoc import descriptor_set, registry_of

PROTO = Path(__file__).parent / "tally.proto"
DESCRIPTOR_SET: bytes = descriptor_set(PROTO)
REGISTRY = registry_of(PROTO)
APPEND = "/tally.v1.Tally/Append"
LIST = "/tally.v1.Tally/List"
Request = REGISTRY.message_class("tally.v1.AppendRequest")
Reply = REGISTRY.message_class("tally.v1.AppendReply")
ListRequest = REGISTRY.message_class("tally.v1.ListRequest")
ListReply = REGISTRY.message_class("tally.v1.ListReply")


@dataclass
class Tally:
    """A running side: where to call it, and what it received."""

    server: aio.Server
    address: str
    received: dict[str, list[str]] = field(default_factory=dict)
    handler: _Handler | None = None

    def stamp_late(self) -> None:
        """From now on, this side stamps a write once its delay is over (as a side busy before it records)."""
        assert self.handler is not None
        self.handler.stamps_late = True

    def refuse(self, code: grpc.StatusCode | None) -> None:
        """From now on, this side refuses every call with `code` (as one whose clients' credentials broke
        would: UNAUTHENTICATED), recording nothing; None: it answers again."""
        assert self.handler is not None
        self.handler.refusing = code

    def set_clock(self, seconds: float) -> None:
        """From now on, this side's clock runs `seconds` ahead of the machine's."""
        assert self.handler is not None
        self.handler.clock = seconds

    async def stop(self) -> None:
        await self.server.stop(None)


class _Handler(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type stubs
    def __init__(
        self,
        tally: dict[str, list[str]],
        slow: bool,
        answer_after: float,
        side: str,
        clock: float | None,
        list_after: float = 0.0,
    ) -> None:
        self._received = tally
        self._slow = slow
        self._answer_after = answer_after
        self._list_after = list_after
        self.lists_started = 0  # List calls begun
        self._side = side
        self.clock = clock
        self.stamps_late = False
        self.refusing: grpc.StatusCode | None = None  # every call refused with this code
        self._first: dict[str, int] = {}  # key -> when its first entry was recorded (ns, this side's clock)
        self._last: dict[str, int] = {}  # key -> when its last entry was recorded

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method == LIST:

            async def entries(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
                if self.refusing is not None:
                    await context.abort(self.refusing, f"refused: {self.refusing.name}")
                self.lists_started += 1
                if self._list_after:  # the entries as they are when it answers
                    await asyncio.sleep(self._list_after)
                reply = ListReply(entries=self._received.get(request.key, []))
                if self.clock is not None and request.key in self._first:
                    reply.first_at.seconds, reply.first_at.nanos = divmod(self._first[request.key], 10**9)
                    reply.last_at.seconds, reply.last_at.nanos = divmod(self._last[request.key], 10**9)
                return reply

            return grpc.unary_unary_rpc_method_handler(
                entries,
                request_deserializer=ListRequest.FromString,
                response_serializer=ListReply.SerializeToString,
            )
        if details.method != APPEND:
            return None

        async def append(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            if self.refusing is not None:
                await context.abort(self.refusing, f"refused: {self.refusing.name}")
            entries = self._received.setdefault(request.key, [])
            entries.append(request.entry)
            place = len(entries)
            now = time.time_ns() + round((self.clock or 0.0) * 1e9)
            if self._slow and request.delay_ms:
                await asyncio.sleep(request.delay_ms / 1000)
            elif self._answer_after:
                await asyncio.sleep(self._answer_after)
            if self.stamps_late:  # busy before it records: its time is when it is done
                now = time.time_ns() + round((self.clock or 0.0) * 1e9)
            self._first.setdefault(request.key, now)
            self._last[request.key] = now
            reply = Reply(place=place, side=self._side)
            if self.clock is not None:
                reply.at.seconds, reply.at.nanos = divmod(now, 10**9)
            return reply

        return grpc.unary_unary_rpc_method_handler(
            append, request_deserializer=Request.FromString, response_serializer=Reply.SerializeToString
        )


async def serve(
    slow: bool = False,
    answer_after: float = 0.0,
    side: str = "",
    clock: float | None = None,
    list_after: float = 0.0,
) -> Tally:
    """A side on 127.0.0.1, a free port; `slow`: it answers each write after the delay it asks for;
    else after `answer_after` seconds. Its answers to writes name it as `side`. With a `clock`, its answers
    say when it recorded an entry (and a key's first) by its clock, `clock` seconds ahead of the machine's.
    `list_after`: it answers a List that many seconds after it began, with the entries it has by then."""
    server = aio.server(options=[("grpc.so_reuseport", 0)])
    received: dict[str, list[str]] = {}
    handler = _Handler(received, slow, answer_after, side, clock, list_after)
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return Tally(server, f"127.0.0.1:{port}", received, handler)
