"""A watch (a server-streaming read that never ends by itself) its client ends by cancelling, after some
answers: compared on the answers Bank sent before the end, BK's watch cut once it sent as many.

The counter service of `tests/shim/_counters.py`, its watches open until cancelled. Before, every such
watch was `skipped` (cancelled by the client, or its copy lost on Envoy): a watch was never compared.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc import aio

from comparators import Comparison, Verdict
from shim.testing import CapturingSink
from tests.helpers import PLANES, until
from tests.shim._counters import WATCH, Counters, count, counting


async def _watched(
    sink: CapturingSink, bank: Counters, bk: Counters, channel: object, deadline: float | None = None
) -> Comparison:
    """Open a watch on key `k`, read Bank's two counts, cancel it (or let its `deadline` pass): the watch's
    comparison."""
    watch = channel.unary_stream(WATCH)(b"\x0a\x01k", timeout=deadline)  # type: ignore[attr-defined]
    assert [await watch.read(), await watch.read()] == [count(0), count(0)]
    if deadline is None:
        watch.cancel()
    else:
        with pytest.raises(aio.AioRpcError) as ended:
            await watch.read()
        assert ended.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await until(lambda: bank.cancelled == 1, "Bank's watch cancelled with the client's")
    await until(lambda: any(c.method == WATCH for c in sink.comparisons), "the watch compared")
    await until(lambda: bk.cancelled == 1, "BK's watch cut by the shim")
    (compared,) = [c for c in sink.comparisons if c.method == WATCH]
    return compared


def _sides(forever_bk_later: bool = True) -> tuple[Counters, Counters]:
    bank_later, bk_later = asyncio.Event(), asyncio.Event()
    bank_later.set()
    if forever_bk_later:
        bk_later.set()
    return Counters(bank_later, forever=True), Counters(bk_later, forever=True)


@pytest.mark.parametrize("deadline", [None, 1.0], ids=["cancelled", "deadline"])
@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_watch_the_client_cancels_is_compared_on_the_answers_bank_sent(
    tmp_path: Path, dataplane: str, deadline: float | None
) -> None:
    """BK's watch, the same as Bank's, is cut once it sent Bank's two counts: a match, its reason saying the
    client ended the stream and how many answers were compared. So too when the client's deadline ends it."""
    bank, bk = _sides()
    async with counting(tmp_path, dataplane, bank, bk) as (shim, sink, channel):
        compared = await _watched(sink, bank, bk, channel, deadline)
        await shim.drain()
    assert (compared.verdict, compared.differences) == (Verdict.MATCH, ()), (compared.reason, compared)
    assert "the client ended the stream" in compared.reason, compared.reason
    assert "the first 2 answers of each side compared" in compared.reason, compared.reason


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_watch_whose_bk_answers_differ_is_a_mismatch_once_the_client_cancels(
    tmp_path: Path, dataplane: str
) -> None:
    """A planted difference: BK's counter is off, so its watch's counts differ from Bank's. The cancelled
    watch is a real mismatch, by the answers each side sent before the end."""
    bank, bk = _sides()
    bk.counts["k"] = 3
    async with counting(tmp_path, dataplane, bank, bk) as (shim, sink, channel):
        compared = await _watched(sink, bank, bk, channel)
        await shim.drain()
    assert compared.verdict is Verdict.MISMATCH, (compared.reason, compared)
    assert {d.path for d in compared.real_differences} == {"[0].n", "[1].n"}, compared


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_watch_whose_bk_answers_less_within_the_shadow_timeout_is_a_shadow_timeout(
    tmp_path: Path, dataplane: str
) -> None:
    """BK's watch sends one count where Bank sent two, and nothing more: within the shadow timeout it did
    not answer as much as Bank, recorded as a shadow timeout (as a BK too slow to answer a call is), and its
    watch is cut then, never left open."""
    bank, bk = _sides(forever_bk_later=False)
    async with counting(tmp_path, dataplane, bank, bk, shadow_timeout=1.0) as (shim, sink, channel):
        compared = await _watched(sink, bank, bk, channel)
        await shim.drain()
    assert compared.verdict is Verdict.SHADOW_ERROR, (compared.reason, compared)
    assert "1 of the primary's 2 answers" in compared.reason, compared.reason
