"""A server-streaming read (a watch) at the primary and at BK: how long it is in flight, and how long it holds
its key's place in the order of mirrored calls.

A small counter service of its own (`watch.v1.Counters`, described here, no codegen): `Add(key)` counts
one more on a key and answers the count; `Watch(key)`, a read, streams the key's count, and again later.
Bank's watch sends its first count, then its second once the test lets it; BK's sends both at once. An
`Add` on the key between Bank's two counts is in Bank's second count and not in BK's (BK was sent the
watch first, as the shim received it): a difference of order alone, `tainted`, naming the `Add`. On
Envoy the watch's span used to end at Bank's first answer (the headers of the answer), so the `Add`
after it was not counted, and the difference was a real mismatch blamed on BK.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc import aio

from comparators import Verdict
from shim.app import Shim
from shim.routing import MethodSettings
from shim.testing import CapturingSink, running_shim
from tests.helpers import PLANES, until

F = descriptor_pb2.FieldDescriptorProto
ADD, WATCH = "/watch.v1.Counters/Add", "/watch.v1.Counters/Watch"


def _descriptors() -> descriptor_pb2.FileDescriptorSet:
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


def _key(raw: bytes) -> str:
    # Key{key = 1}: tag 0x0a, a one-byte length, the text (the keys here are short)
    return raw[2 : 2 + raw[1]].decode() if raw[:1] == b"\x0a" else ""


def _count(n: int) -> bytes:
    return b"\x08" + bytes([n]) if n else b""  # Count{n = 1}, n < 128


class Counters(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type stubs
    """One side: counts per key; its watches send their second count once `later` is set (at once if so)."""

    def __init__(self, later: asyncio.Event) -> None:
        self.counts: dict[str, int] = {}
        self.later = later
        self.watching = 0  # watches that sent their first count

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method == ADD:

            async def add(raw: bytes, context: Any) -> bytes:
                key = _key(raw)
                self.counts[key] = self.counts.get(key, 0) + 1
                return _count(self.counts[key])

            return grpc.unary_unary_rpc_method_handler(add)
        if details.method == WATCH:

            async def watch(raw: bytes, context: Any) -> AsyncIterator[bytes]:
                key = _key(raw)
                yield _count(self.counts.get(key, 0))
                self.watching += 1
                await self.later.wait()
                yield _count(self.counts.get(key, 0))

            return grpc.unary_stream_rpc_method_handler(watch)
        return None


async def _serve(counters: Counters) -> tuple[aio.Server, str]:
    server = aio.server()
    server.add_generic_rpc_handlers([counters])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def _counting(
    tmp_path: Path, dataplane: str, bank: Counters, bk: Counters, **more: Any
) -> AsyncIterator[tuple[Shim, CapturingSink, aio.Channel]]:
    """Bank's and BK's counters served, and a shim in front of them keying both methods by the key."""
    (tmp_path / "counters.binpb").write_bytes(_descriptors().SerializeToString())
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


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_write_between_a_streamed_read_s_answers_at_bank_taints_its_difference(
    tmp_path: Path, dataplane: str
) -> None:
    bank_later, bk_later = asyncio.Event(), asyncio.Event()
    bk_later.set()
    bank, bk = Counters(bank_later), Counters(bk_later)
    async with _counting(tmp_path, dataplane, bank, bk) as (shim, sink, channel):
        add = channel.unary_unary(ADD)
        watch = channel.unary_stream(WATCH)(b"\x0a\x01k")
        first = await watch.read()
        await until(lambda: bank.watching == 1, "Bank's watch sent its first count")
        assert await add(b"\x0a\x01k") == _count(1)
        bank_later.set()
        second = await watch.read()
        assert (first, second) == (_count(0), _count(1)), "Bank counted the add between its two counts"
        await until(lambda: any(c.method == WATCH for c in sink.comparisons), "the watch compared")
        await shim.drain()
        (compared,) = [c for c in sink.comparisons if c.method == WATCH]
    assert bk.counts == {"k": 1}
    assert compared.differences, "BK's watch, sent before the add, counts 0 twice"
    assert (compared.verdict, compared.reason.split(" on its key")[0]) == (
        Verdict.TAINTED,
        "answered while watch.v1.Counters/Add was in flight at the primary",
    ), (compared.verdict, compared.reason, compared.differences)


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_watch_left_open_does_not_hold_back_the_writes_on_its_key(
    tmp_path: Path, dataplane: str
) -> None:
    """A watch open on both sides, each having sent its first count, then an `Add` on its key: BK is sent
    the add while the watch is still open (once BK has answered as much as Bank and Bank has sent nothing
    more for `ordering.stream_hold`), so both sides count it in the watch's next answer, and the watch
    matches. Before, the add waited for the watch to end on BK: for as long as the client kept watching,
    and past `ordering.max_wait` it was given up, its key out of step."""
    bank_later, bk_later = asyncio.Event(), asyncio.Event()
    bank, bk = Counters(bank_later), Counters(bk_later)
    async with _counting(tmp_path, dataplane, bank, bk, shadow_timeout=10.0) as (shim, sink, channel):
        watch = channel.unary_stream(WATCH)(b"\x0a\x01w")
        assert await watch.read() == _count(0)
        await until(lambda: bk.watching == 1, "BK's watch sent its first count")
        assert await channel.unary_unary(ADD)(b"\x0a\x01w") == _count(1)
        await until(lambda: bk.counts.get("w") == 1, "BK sent the add while the watch is open", within=5)
        assert not watch.done()
        bank_later.set()
        bk_later.set()
        assert await watch.read() == _count(1)
        await until(lambda: any(c.method == WATCH for c in sink.comparisons), "the watch compared")
        await shim.drain()
        (compared,) = [c for c in sink.comparisons if c.method == WATCH]
        assert shim.steps is not None
        assert not shim.steps.keys
    assert (compared.verdict, compared.differences) == (Verdict.MATCH, ()), (compared.reason, compared)
