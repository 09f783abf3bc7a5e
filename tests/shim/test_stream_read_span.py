"""A server-streaming read (a watch) at the primary and at BK: how long it is in flight, and how long it holds
its key's place in the order of mirrored calls.

A small counter service of its own (`tests/shim/_counters.py`): `Add(key)` counts one more on a key and
answers the count; `Watch(key)`, a read, streams the key's count, and again later.
Bank's watch sends its first count, then its second once the test lets it; BK's sends both at once. An
`Add` on the key between Bank's two counts is in Bank's second count and not in BK's (BK was sent the
watch first, as the shim received it): a difference of order alone, `tainted`, naming the `Add`. On
Envoy the watch's span used to end at Bank's first answer (the headers of the answer), so the `Add`
after it was not counted, and the difference was a real mismatch blamed on BK.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from comparators import Verdict
from tests.helpers import PLANES, until
from tests.shim._counters import ADD, WATCH, Counters, count, counting


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_write_between_a_streamed_read_s_answers_at_bank_taints_its_difference(
    tmp_path: Path, dataplane: str
) -> None:
    bank_later, bk_later = asyncio.Event(), asyncio.Event()
    bk_later.set()
    bank, bk = Counters(bank_later), Counters(bk_later)
    async with counting(tmp_path, dataplane, bank, bk) as (shim, sink, channel):
        add = channel.unary_unary(ADD)
        watch = channel.unary_stream(WATCH)(b"\x0a\x01k")
        first = await watch.read()
        await until(lambda: bank.watching == 1, "Bank's watch sent its first count")
        assert await add(b"\x0a\x01k") == count(1)
        bank_later.set()
        second = await watch.read()
        assert (first, second) == (count(0), count(1)), "Bank counted the add between its two counts"
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
    async with counting(tmp_path, dataplane, bank, bk, shadow_timeout=10.0) as (shim, sink, channel):
        watch = channel.unary_stream(WATCH)(b"\x0a\x01w")
        assert await watch.read() == count(0)
        await until(lambda: bk.watching == 1, "BK's watch sent its first count")
        assert await channel.unary_unary(ADD)(b"\x0a\x01w") == count(1)
        await until(lambda: bk.counts.get("w") == 1, "BK sent the add while the watch is open", within=5)
        assert not watch.done()
        bank_later.set()
        bk_later.set()
        assert await watch.read() == count(1)
        await until(lambda: any(c.method == WATCH for c in sink.comparisons), "the watch compared")
        await shim.drain()
        (compared,) = [c for c in sink.comparisons if c.method == WATCH]
        assert shim.steps is not None
        assert not shim.steps.keys
    assert (compared.verdict, compared.differences) == (Verdict.MATCH, ()), (compared.reason, compared)
