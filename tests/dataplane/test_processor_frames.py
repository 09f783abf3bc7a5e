"""The processor cuts gRPC messages out of body pieces as Envoy sends them, and inflates compressed ones."""

from __future__ import annotations

import gzip
import itertools
import zlib

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from comparators import Verdict
from shim.dataplane import envoy as envoy_process
from shim.dataplane.processor import Frames, UnreadableCopy, grpc_timeout
from shim.testing import running_shim
from tests.backends import Running


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
