"""A small counter service of its own, for the tests of a server-streaming read (a watch).

`watch.v1.Counters`, described here, no codegen: `Add(key)` counts one more on a key and answers the
count; `Watch(key)`, a read, streams the key's count, and again once `later` is set. A watch ends after
its second count, or (`forever`) stays open until its client cancels it, as a real watch does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc import aio

from shim.app import Shim
from shim.routing import MethodSettings
from shim.testing import CapturingSink, running_shim

F = descriptor_pb2.FieldDescriptorProto
ADD, WATCH = "/watch.v1.Counters/Add", "/watch.v1.Counters/Watch"


def descriptors() -> descriptor_pb2.FileDescriptorSet:
    file = descriptor_pb2.FileDescriptorProto(
        name="watch/v1/counters.proto", package="watch.v1", syntax="proto3"
    )
    file.message_type.add(name="Key").field.add(
        name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL
    )
    file.message_type.add(name="Count").field.add(
        name="n", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL
    )
    service = file.service.add(name="Counters")
    service.method.add(name="Add", input_type=".watch.v1.Key", output_type=".watch.v1.Count")
    watch = service.method.add(
        name="Watch", input_type=".watch.v1.Key", output_type=".watch.v1.Count", server_streaming=True
    )
    watch.options.idempotency_level = descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    return descriptor_pb2.FileDescriptorSet(file=[file])


def key_of(raw: bytes) -> str:
    # Key{key = 1}: tag 0x0a, a one-byte length, the text (the keys here are short)
    return raw[2 : 2 + raw[1]].decode() if raw[:1] == b"\x0a" else ""


def count(n: int) -> bytes:
    return b"\x08" + bytes([n]) if n else b""  # Count{n = 1}, n < 128


class Counters(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type stubs
    """One side: counts per key; its watches send their second count once `later` is set (at once if so),
    then end, or (`forever`) wait for their client to cancel them."""

    def __init__(self, later: asyncio.Event, *, forever: bool = False) -> None:
        self.counts: dict[str, int] = {}
        self.later = later
        self.forever = forever
        self.watching = 0  # watches that sent their first count
        self.cancelled = 0  # watches their client (the shim, for BK) cancelled

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method == ADD:

            async def add(raw: bytes, context: Any) -> bytes:
                key = key_of(raw)
                self.counts[key] = self.counts.get(key, 0) + 1
                return count(self.counts[key])

            return grpc.unary_unary_rpc_method_handler(add)
        if details.method == WATCH:

            async def watch(raw: bytes, context: Any) -> AsyncIterator[bytes]:
                key = key_of(raw)
                try:
                    yield count(self.counts.get(key, 0))
                    self.watching += 1
                    await self.later.wait()
                    yield count(self.counts.get(key, 0))
                    if self.forever:
                        await asyncio.Event().wait()
                except asyncio.CancelledError:
                    self.cancelled += 1
                    raise

            return grpc.unary_stream_rpc_method_handler(watch)
        return None


async def _serve(counters: Counters) -> tuple[aio.Server, str]:
    server = aio.server()
    server.add_generic_rpc_handlers([counters])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def counting(
    tmp_path: Path, dataplane: str, bank: Counters, bk: Counters, **more: Any
) -> AsyncIterator[tuple[Shim, CapturingSink, aio.Channel]]:
    """Bank's and BK's counters served, and a shim in front of them keying both methods by the key."""
    (tmp_path / "counters.binpb").write_bytes(descriptors().SerializeToString())
    (bank_server, bank_address), (bk_server, bk_address) = await _serve(bank), await _serve(bk)
    settings: dict[str, Any] = {
        "descriptor_sets": [str(tmp_path / "counters.binpb")],
        "methods": {name.lstrip("/"): MethodSettings(key=("key",)) for name in (ADD, WATCH)},
    }
    try:
        async with (
            running_shim(bank_address, bk_address, dataplane=dataplane, **settings, **more) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            yield shim, sink, channel
    finally:
        bank.later.set()
        bk.later.set()
        await bank_server.stop(None)
        await bk_server.stop(None)
