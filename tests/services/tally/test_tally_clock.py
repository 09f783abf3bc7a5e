"""Timestamps on the tally (a second service): a mirrored write that reaches BK late, because it waited for
an earlier write on its key, is stamped by BK that much later than by Bank. A timestamp rule lets BK's time
run up to that delay later than Bank's, so the shim's own lateness is never called a difference: neither in
the write's answer, nor in a read as late that holds a time stamped before, when nothing was late. A BK
whose clock is really off is still a difference."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from comparators import LATE_MARGIN, Verdict
from shim.admin import set_mode
from shim.routing import MethodSettings
from shim.testing import CapturingSink, running_shim
from tests.helpers import PLANES
from tests.services.tally.server import APPEND, LIST, REGISTRY, ListReply, ListRequest, Reply, Request, serve

RULES = (
    {
        "regex": r"tally\.v1\.\w+\.(at|first_at|last_at)",
        "rule": "timestamp",
        "tolerance": "500ms",
        "name": "clock",
    },
)


def _settings(dataplane: str) -> dict[str, Any]:
    return {
        "registry": REGISTRY,
        "dataplane": dataplane,
        "shadow_timeout": 5.0,
        "rules": RULES,
        "methods": {
            "tally.v1.Tally/Append": MethodSettings(key=("key",)),
            "tally.v1.Tally/List": MethodSettings(key=("key",), read=True),
        },
    }


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_write_mirrored_late_behind_its_key_is_compared_from_when_it_reached_bk(
    dataplane: str,
) -> None:
    bank, bk = (
        await serve(clock=0.0),
        await serve(slow=True, clock=0.0),
    )  # BK answers writes after their delay
    try:
        async with (
            running_shim(bank.address, bk.address, **_settings(dataplane)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            append = channel.unary_unary(APPEND)
            answers = [
                Reply.FromString(
                    await append(Request(key="k", entry=e, delay_ms=d).SerializeToString(), timeout=5)
                )
                for e, d in (("first", 1500), ("second", 0))
            ]
            # mirrored behind both writes: as late as the second
            listed = ListReply.FromString(
                await channel.unary_unary(LIST)(ListRequest(key="k").SerializeToString())
            )
            compared = await sink.wait_for(3, within=15)
    finally:
        await bank.stop()
        await bk.stop()
    assert [a.place for a in answers] == [1, 2]  # Bank answered both at once
    assert list(listed.entries) == ["first", "second"]
    assert bk.received == {"k": ["first", "second"]}
    by_method = {c.exchange.method: c for c in compared if c.exchange.method.endswith("List")}
    by_entry = {
        Request.FromString(c.exchange.requests[0]).entry: c for c in compared if c not in by_method.values()
    }
    second, read = by_entry["second"], by_method[LIST]
    assert second.exchange.bk is not None
    bk_at = Reply.FromString(second.exchange.bk.messages[0]).at
    late = (bk_at.ToNanoseconds() - answers[1].at.ToNanoseconds()) / 1e9
    assert late > 1.0  # the second waited for the first's mirror, which BK answered 1.5 s after it
    assert [(d.path, d.rule) for d in second.differences] == [("at", "clock")]  # tolerated, not real
    assert read.exchange.shadow_late > 1.0  # the read waited as long
    # the first entry's time, stamped by both sides at once, read back late: a difference within the
    # tolerance, however late the read (present only when the clocks' nanoseconds differ, as they do)
    assert {d.path: d.rule for d in read.differences} == {"first_at": "clock", "last_at": "clock"}
    assert [c.verdict for c in compared] == [Verdict.MATCH] * 3, [c.differences for c in compared]


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_time_bk_stamped_once_it_was_done_with_a_slow_write_is_no_difference(dataplane: str) -> None:
    """BK busy for 1.5 s before it records a write stamps it that much after Bank did (tolerance 500 ms):
    its clock is right, it was slow, and a time it stamped by its answer may be that much later. So is the
    same time read back. A BK whose clock is off beyond that is a difference still (the next test)."""
    bank, bk = await serve(clock=0.0), await serve(slow=True, clock=0.0)
    bk.stamp_late()
    try:
        async with (
            running_shim(bank.address, bk.address, **_settings(dataplane)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            await channel.unary_unary(APPEND)(
                Request(key="k", entry="e", delay_ms=1500).SerializeToString(), timeout=5
            )
            (write,) = await sink.wait_for(1, within=15)
            await channel.unary_unary(LIST)(ListRequest(key="k").SerializeToString(), timeout=5)
            compared = await sink.wait_for(2, within=15)
    finally:
        await bank.stop()
        await bk.stop()
    assert write.exchange.bk is not None
    bk_at = Reply.FromString(write.exchange.bk.messages[0]).at.ToNanoseconds()
    bank_at = Reply.FromString(write.exchange.bank.messages[0]).at.ToNanoseconds()  # type: ignore[union-attr]
    assert (bk_at - bank_at) / 1e9 > 1.4  # BK's time is its answer's
    assert [(d.path, d.rule) for d in write.differences] == [("at", "clock")], write.differences
    (read,) = (c for c in compared if c.exchange.method == LIST)
    assert {d.path: d.rule for d in read.differences} == {"first_at": "clock", "last_at": "clock"}
    assert [c.verdict for c in compared] == [Verdict.MATCH] * 2, [c.differences for c in compared]


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_bk_clock_really_off_is_a_difference_still(dataplane: str) -> None:
    bank, bk = await serve(clock=0.0), await serve(clock=1.0)  # BK's clock runs a second ahead
    try:
        async with (
            running_shim(bank.address, bk.address, **_settings(dataplane)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            await channel.unary_unary(APPEND)(Request(key="k", entry="e").SerializeToString(), timeout=5)
            (compared,) = await sink.wait_for(1, within=15)
    finally:
        await bank.stop()
        await bk.stop()
    assert compared.verdict is Verdict.MISMATCH
    assert [(d.path, d.rule) for d in compared.differences] == [("at", "")]


async def _late_writes_then_a_read(channel: aio.Channel, sink: CapturingSink) -> None:
    """Two writes on "k", the first mirrored 1.5 s late (BK answers after its delay), the second behind it;
    once both are over on both sides (nothing waits then), "k" listed."""
    append = channel.unary_unary(APPEND)
    for entry, delay in (("first", 1500), ("second", 0)):
        await append(Request(key="k", entry=entry, delay_ms=delay).SerializeToString(), timeout=5)
    await sink.wait_for(2, within=15)
    await channel.unary_unary(LIST)(ListRequest(key="k").SerializeToString(), timeout=5)


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_time_a_late_write_stamped_read_back_when_nothing_is_late_is_no_difference(
    dataplane: str,
) -> None:
    """The read is not late itself: its key remembers how late its writes went."""
    bank, bk = await serve(clock=0.0), await serve(slow=True, clock=0.0)
    try:
        async with (
            running_shim(bank.address, bk.address, **_settings(dataplane)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            await _late_writes_then_a_read(channel, sink)
            await channel.unary_unary(LIST)(ListRequest(key="other").SerializeToString(), timeout=5)
            compared = await sink.wait_for(4, within=15)
    finally:
        await bank.stop()
        await bk.stop()
    read, other = (c for c in compared if c.exchange.method == LIST)
    assert read.exchange.shadow_late > 1.0 > other.exchange.shadow_late  # the key's writes', not its own
    last = [(d.path, d.rule) for d in read.differences if d.path == "last_at"]
    assert last == [("last_at", "clock")], read.differences  # stamped 1.5 s later by BK: tolerated
    assert [c.verdict for c in compared] == [Verdict.MATCH] * 4, [c.differences for c in compared]


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_time_a_late_write_stamped_read_back_by_a_call_with_no_key_is_no_difference(
    dataplane: str,
) -> None:
    """A listing with no routing key (here List, configured without one) reads every key's times: it is
    allowed the lateness of the writes on any key, for the times stamped while they were under way. Once
    they are over (the tolerance and the margin after), a BK whose clock is off is a difference again in
    such a listing too."""
    settings = _settings(dataplane)
    settings["methods"] = {**settings["methods"], "tally.v1.Tally/List": MethodSettings(read=True)}
    bank, bk = await serve(clock=0.0), await serve(slow=True, clock=0.0)
    try:
        async with (
            running_shim(bank.address, bk.address, **settings) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            await _late_writes_then_a_read(channel, sink)
            compared = await sink.wait_for(3, within=15)
            # a time stamped from here on is past the tolerance (500 ms) and the margin after the late writes
            await asyncio.sleep(0.5 + LATE_MARGIN + 0.1)
            bk.set_clock(1.8)
            await channel.unary_unary(APPEND)(Request(key="j", entry="third").SerializeToString(), timeout=5)
            await channel.unary_unary(LIST)(ListRequest(key="j").SerializeToString(), timeout=5)
            after = await sink.wait_for(5, within=15)
    finally:
        await bank.stop()
        await bk.stop()
    (read,) = (c for c in compared if c.exchange.method == LIST)
    assert read.exchange.routing_key == ""  # no key: its allowance is every key's
    assert read.exchange.own_late < 1.0 < read.exchange.shadow_late
    assert [(d.path, d.rule) for d in read.differences if d.path == "last_at"] == [("last_at", "clock")]
    assert [c.verdict for c in compared] == [Verdict.MATCH] * 3, [c.differences for c in compared]
    (later,) = (c for c in after if c.exchange.method == LIST and c is not read)
    assert later.verdict is Verdict.MISMATCH, later.differences
    assert {d.path: d.rule for d in later.differences} == {"first_at": "", "last_at": ""}


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_bk_clock_off_once_the_late_writes_on_its_key_are_over_is_a_difference(
    dataplane: str,
) -> None:
    """A write mirrored 1.5 s late allows for the times stamped on its key while it was under way, not for
    those stamped once it is over, even after writes a little late (0.1 s) since: BK's clock then 1.8 s
    ahead (within the first lateness and the tolerance of 500 ms, beyond the second's) is a difference, in
    the next write's answer and in a read of that write's time."""
    bank, bk = await serve(clock=0.0), await serve(slow=True, clock=0.0)
    try:
        async with (
            running_shim(bank.address, bk.address, **_settings(dataplane)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            append = channel.unary_unary(APPEND)

            async def write(entry: str, delay_ms: int = 0) -> None:
                await append(Request(key="k", entry=entry, delay_ms=delay_ms).SerializeToString(), timeout=5)

            await write("first", 1500)
            await write("second")
            await sink.wait_for(2, within=15)  # the late write is over: its lateness is remembered by now
            # a time stamped from here on is past the tolerance (500 ms) and the margin after it: a condition
            # of the clock alone, which this wait meets
            await asyncio.sleep(0.5 + LATE_MARGIN + 0.1)
            await write("third", 100)
            await write("fourth")  # mirrored behind the third: 0.1 s late
            await sink.wait_for(4, within=15)
            bk.set_clock(1.8)
            await write("fifth")
            await channel.unary_unary(LIST)(ListRequest(key="k").SerializeToString(), timeout=5)
            compared = await sink.wait_for(6, within=15)
    finally:
        await bank.stop()
        await bk.stop()
    entries = {
        Request.FromString(c.exchange.requests[0]).entry: c for c in compared if c.exchange.method == APPEND
    }
    (read,) = (c for c in compared if c.exchange.method == LIST)
    assert 0.1 <= entries["fourth"].exchange.own_late < 1.0, entries["fourth"].exchange
    # (a read 1.3 s late itself would be allowed BK's 1.8 s: the test needs the machine to keep up that much)
    assert read.exchange.own_late < 1.3
    assert read.exchange.shadow_late > 1.0  # the key's very late write is still remembered
    before = [entries[e] for e in ("first", "second", "third", "fourth")]
    assert [c.verdict for c in before] == [Verdict.MATCH] * 4, [c.differences for c in before]
    fifth = entries["fifth"]
    assert [(d.path, d.rule) for d in fifth.differences] == [("at", "")], fifth.differences
    assert fifth.verdict is Verdict.MISMATCH
    # the first entry's time, stamped while nothing was late yet, still within the tolerance; the fifth's not
    assert {d.path: d.rule for d in read.differences} == {"first_at": "clock", "last_at": ""}, (
        read.differences
    )


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_time_bk_stamped_late_read_back_once_bk_is_primary_is_no_difference(
    dataplane: str, tmp_path: Path
) -> None:
    """A write mirrored 1.5 s late in `shadow` is stamped that much later by BK. Once BK is primary, the
    read of that time is answered by BK and mirrored to Bank: BK's time is still the later one, by as
    much, and that comes of the write's lateness then, not of the read's now."""
    bank, bk = await serve(clock=0.0), await serve(slow=True, clock=0.0)
    try:
        async with (
            running_shim(
                bank.address, bk.address, **_settings(dataplane), store={"url": str(tmp_path / "shim.db")}
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            append = channel.unary_unary(APPEND)
            for entry, delay in (("first", 1500), ("second", 0)):
                await append(Request(key="k", entry=entry, delay_ms=delay).SerializeToString(), timeout=5)
            await sink.wait_for(2, within=15)
            await set_mode(shim, "bk-primary", [], "test", "ops", force=True)
            await channel.unary_unary(LIST)(ListRequest(key="k").SerializeToString(), timeout=5)
            compared = await sink.wait_for(3, within=15)
    finally:
        await bank.stop()
        await bk.stop()
    (read,) = (c for c in compared if c.exchange.method == LIST)
    assert not read.exchange.primary_is_bank
    last = [(d.path, d.rule) for d in read.differences if d.path == "last_at"]
    assert last == [("last_at", "clock")], read.differences  # BK's, 1.5 s later: tolerated
    assert [c.verdict for c in compared] == [Verdict.MATCH] * 3, [c.differences for c in compared]
