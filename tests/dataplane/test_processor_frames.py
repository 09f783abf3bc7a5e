"""The processor cuts gRPC messages out of body pieces as Envoy sends them, and inflates compressed ones."""

from __future__ import annotations

import gzip
import itertools
import re
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from comparators import Verdict
from shim.dataplane import envoy as envoy_process
from shim.dataplane.processor import Frames, UnreadableCopy, grpc_timeout
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests._proto.grpc.testing import interop_pb2 as ipb
from tests.backends import Running, scripted_server
from tests.helpers import registry_of, until


def _frame(payload: bytes, compressed: bool = False) -> bytes:
    return bytes([int(compressed)]) + len(payload).to_bytes(4, "big") + payload


@given(
    messages=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12),
)
def test_messages_come_out_whole_wherever_the_body_is_cut(messages: list[bytes], cuts: list[int]) -> None:
    body = b"".join(_frame(m) for m in messages)
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    frames = Frames(limit=-1)
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out += frames.feed(body[start:end])
    assert out == messages
    assert not frames.partial


def test_compressed_messages_are_inflated_and_unknown_encodings_refused() -> None:
    frames = Frames(limit=-1)
    frames.encoding = "gzip"
    assert frames.feed(_frame(gzip.compress(b"hello"), compressed=True) + _frame(b"plain")) == [
        b"hello",
        b"plain",
    ]
    frames.encoding = "deflate"
    assert frames.feed(_frame(zlib.compress(b"again"), compressed=True)) == [b"again"]
    frames.encoding = "snappy"
    with pytest.raises(UnreadableCopy, match="'snappy', which the shim cannot undo"):
        frames.feed(_frame(b"x", compressed=True))
    frames = Frames(limit=-1)
    frames.encoding = "gzip"
    with pytest.raises(UnreadableCopy, match="does not decompress"):
        frames.feed(_frame(b"not gzip", compressed=True))


@pytest.mark.parametrize(("encoding", "deflate"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_a_compressed_message_is_inflated_no_further_than_the_limit(
    encoding: str, deflate: Callable[[bytes], bytes]
) -> None:
    """The limit bounds a message as it is inflated, not only as it comes: 64 KiB that inflate to 64 MiB,
    against a limit of 1 MiB, are refused once 1 MiB and a byte are out, with the setting that bounds them.
    Before, the plane inflated every compressed message whole, whatever the limit: 200 KiB on the wire
    became 200 MiB with `max_message_size` 1 MiB."""
    frames = Frames(limit=1 << 20, setting="max_message_size")
    frames.encoding = encoding
    assert frames.feed(_frame(deflate(b"a" * (1 << 20)), compressed=True)) == [b"a" * (1 << 20)]
    bomb = deflate(b"\0" * (64 << 20))
    assert len(bomb) < 1 << 20
    with pytest.raises(
        UnreadableCopy,
        match=rf"a {encoding} message of {len(bomb)} bytes inflates to more than 1048576 bytes, larger than "
        r"max_message_size",
    ):
        frames.feed(_frame(bomb, compressed=True))
    frames = Frames(limit=-1)
    frames.encoding = encoding
    with pytest.raises(UnreadableCopy, match=f"a {encoding} message does not decompress: it is cut short"):
        frames.feed(_frame(deflate(b"hello" * 100)[:-10], compressed=True))


def test_a_message_larger_than_the_capture_limit_is_refused_before_it_is_buffered() -> None:
    frames = Frames(limit=1000)
    with pytest.raises(UnreadableCopy, match=r"1001 bytes is larger than shadow\.max_capture"):
        frames.feed(_frame(b"x" * 1001)[:10])


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("5S", 5.0),
        ("250m", 0.25),
        ("3M", 180.0),
        ("1H", 3600.0),
        ("7u", 7e-6),
        ("", None),
        ("5x", None),
        ("S", None),
    ],
)
def test_grpc_timeout_headers(header: str, seconds: float | None) -> None:
    assert grpc_timeout(header) == seconds


@pytest.mark.skipif(envoy_process.binary() is None, reason="no Envoy binary on this platform")
async def test_gzip_compressed_calls_through_envoy_are_compared(echo_pair: tuple[Running, Running]) -> None:
    """A client compressing its messages: Envoy passes the compressed frames on, the copy is inflated, and
    both sides' answers are compared as messages."""
    bank, bk = echo_pair
    async with running_shim(bank.address, bk.address, dataplane="envoy") as (shim, sink):
        async with grpc.aio.insecure_channel(shim.address, compression=grpc.Compression.Gzip) as channel:
            call = channel.stream_stream("/test.Echo/stream_stream")
            answers = [a async for a in call(iter([b"one" * 50, b"two" * 50]))]
        comparisons = await sink.wait_for(1)
    assert answers == [b"one" * 50 + b"!", b"two" * 50 + b"!", b"end"]
    assert comparisons[0].verdict is Verdict.MATCH
    assert comparisons[0].exchange.requests == (b"one" * 50, b"two" * 50)


@pytest.mark.skipif(envoy_process.binary() is None, reason="no Envoy binary on this platform")
async def test_a_compressed_write_that_inflates_beyond_the_limit_is_not_mirrored_and_out_of_step() -> None:
    """A client compressing a write of 4 MiB of zeros, a few KiB on the wire, with `max_message_size` 1 MiB:
    Bank serves it untouched; the copy is inflated no further than the limit, so it is unreadable: the
    write is recorded as not compared, naming why, and out of step (its key is in the message it could not
    read: it is counted `unkeyed_writes_out_of_step`, as any unreadable write is)."""

    async def echo(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        got = [ipb.SimpleRequest.FromString(r) async for r in requests]
        return [
            ipb.SimpleResponse(payload=ipb.Payload(body=b"%d" % len(r.payload.body))).SerializeToString()
            for r in got
        ]

    bank, bk = await scripted_server(echo), await scripted_server(echo)
    method = "/grpc.testing.TestService/UnaryCall"
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                dataplane="envoy",
                registry=registry_of(ipb.DESCRIPTOR),
                max_message_size=1 << 20,
                methods={method.lstrip("/"): MethodSettings(key=("response_size",))},
            ) as (shim, sink),
            grpc.aio.insecure_channel(shim.address, compression=grpc.Compression.Gzip) as channel,
        ):
            request = ipb.SimpleRequest(response_size=7, payload=ipb.Payload(body=b"\0" * (4 << 20)))
            answer = await channel.unary_unary(method)(request.SerializeToString(), timeout=30)
            (comparison,) = await sink.wait_for(1)
            await until(lambda: shim.counters.get("unkeyed_writes_out_of_step", method) == 1, "out of step")
            lost = shim.counters.get("copies_lost", method)
    finally:
        await bank.stop()
        await bk.stop()
    assert ipb.SimpleResponse.FromString(answer).payload.body == b"%d" % (4 << 20)
    assert comparison.verdict is not Verdict.MATCH
    assert re.search(
        r"a gzip message of \d+ bytes inflates to more than 1048576 bytes, larger than max_message_size\)",
        comparison.reason,
    ), comparison.reason
    assert lost == 1
