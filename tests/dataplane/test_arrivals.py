"""Waiting until the first N copies have their place in the lanes: each waiter is released once its count
is within reach, and any number of waiters cost one look a tick."""

from __future__ import annotations

import asyncio
import time

from shim.dataplane.arrivals import TICK, Arrivals, FreshReads
from shim.dataplane.processor import Processor, _Copy
from shim.exporter import Latencies
from shim.metrics import Counters
from shim.plan import Plans


class Through:
    """A count that only grows, and how often it was looked at."""

    def __init__(self) -> None:
        self.value = 0
        self.looks = 0

    def __call__(self) -> int:
        self.looks += 1
        return self.value


async def _until(condition: object, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.001)


async def test_each_waiter_is_released_once_its_count_is_through_and_not_before() -> None:
    through = Through()
    arrivals = Arrivals(through)
    waiters = {n: asyncio.create_task(arrivals.through(n, within=10.0)) for n in (3, 5, 8)}
    for value, released in ((4, {3}), (6, {3, 5}), (8, {3, 5, 8})):
        through.value = value
        await _until(lambda released=released: all(waiters[n].done() for n in released))
        if arrivals.waiting:
            looks = through.looks
            await _until(lambda looks=looks: through.looks >= looks + 3)  # three more looks: no other goes
        assert {n for n, task in waiters.items() if task.done()} == released
    assert [waiters[n].result() for n in (3, 5, 8)] == [True, True, True]
    assert arrivals.waiting == 0


async def test_a_count_already_through_needs_no_wait() -> None:
    through = Through()
    through.value = 10
    arrivals = Arrivals(through)
    assert await arrivals.through(10, within=0.0)
    assert await arrivals.through(1, within=0.0)


async def test_a_waiter_not_released_in_time_is_answered_no_and_leaves_no_trace() -> None:
    through = Through()
    arrivals = Arrivals(through)
    late = asyncio.create_task(arrivals.through(100, within=0.05))
    kept = asyncio.create_task(arrivals.through(2, within=10.0))
    assert await late is False
    through.value = 2
    assert await kept is True
    await _until(lambda: arrivals.waiting == 0)


async def test_closing_answers_every_waiter_no() -> None:
    arrivals = Arrivals(Through())
    waiters = [asyncio.create_task(arrivals.through(n, within=10.0)) for n in (1, 2)]
    await _until(lambda: arrivals.waiting == 2)
    arrivals.close()
    assert [await w for w in waiters] == [False, False]


async def test_many_waiters_cost_one_look_a_tick() -> None:
    """200 reads waiting at once: the count is looked at once as each starts, then once a tick, not once
    a tick per waiter."""
    through = Through()
    arrivals = Arrivals(through)
    started = time.monotonic()
    waiters = [asyncio.create_task(arrivals.through(n, within=10.0)) for n in range(1, 201)]
    await _until(lambda: arrivals.waiting == 200)
    await _until(lambda: through.looks >= 220)  # a while of waiting: twenty looks or more
    through.value = 200
    assert all(await asyncio.gather(*waiters))
    ticks = (time.monotonic() - started) / TICK
    assert through.looks <= 200 + ticks + 2


def _processor() -> Processor:
    return Processor({}, Plans(None), Counters(), Latencies())


def _received(processor: Processor, method: str = "") -> _Copy:
    copy = _Copy(processor, None, None, "bank")
    processor.copies += 1
    copy.ordinal = processor.copies
    copy.method = method
    processor._open[copy.ordinal] = copy
    return copy


def test_the_copies_through_are_those_before_the_first_copy_received_without_its_place() -> None:
    processor = _processor()
    assert processor.admitted_prefix() == 0
    first = _received(processor, "/pkg.Svc/A")  # method known, nothing to mirror: placed
    second = _received(processor)  # its method not read yet
    _received(processor, "/pkg.Svc/B")
    assert processor.admitted_prefix() == 1
    second.method = "/pkg.Svc/C"
    assert processor.admitted_prefix() == 3
    processor._open.pop(first.ordinal)  # over and gone: it took its place before
    assert processor.admitted_prefix() == 3
    processor.copies += 1  # a copy Envoy opened that is not read at all yet is not through
    fourth = _Copy(processor, None, None, "bank")
    fourth.ordinal = processor.copies
    processor._open[fourth.ordinal] = fourth
    assert processor.admitted_prefix() == 3
    fourth.lost("cut off")  # lost: recorded, and it holds back no one
    assert processor.admitted_prefix() == 4


class Figure:
    """A figure that grows, read slowly: each read takes until `release` is set, and gives the value the
    figure had as it began."""

    def __init__(self) -> None:
        self.value = 0
        self.reads = 0
        self.release = asyncio.Event()
        self.began = asyncio.Event()

    async def read(self) -> int:
        self.reads += 1
        seen = self.value
        self.began.set()
        await self.release.wait()
        return seen


async def test_callers_share_reads_and_each_gets_one_that_began_after_it_asked() -> None:
    """Ten callers share one read; the figure then grows, and five callers asking while that read is under
    way share the next one, which sees the growth; nobody is answered by a read that began before it asked.
    Before, each read asked again of Bank read Envoy's figures on its own: dozens of admin reads at once."""
    figure = Figure()
    fresh = FreshReads(figure.read)
    first = [asyncio.create_task(fresh.get()) for _ in range(10)]
    await asyncio.wait_for(figure.began.wait(), 5)
    figure.value = 7  # grows after the first read began: callers from now on must see it
    figure.began.clear()
    later = [asyncio.create_task(fresh.get()) for _ in range(5)]
    await asyncio.sleep(0)
    assert figure.reads == 1, "the next read waits for the one under way"
    figure.release.set()
    assert await asyncio.gather(*first) == [0] * 10
    assert await asyncio.gather(*later) == [7] * 5
    assert figure.reads == 2


async def test_a_read_that_fails_fails_each_caller_and_the_next_reads_again() -> None:
    reads = 0

    async def failing() -> int:
        nonlocal reads
        reads += 1
        if reads == 1:
            raise OSError("Envoy is not running")
        return reads

    fresh = FreshReads(failing)
    results = await asyncio.gather(fresh.get(), fresh.get(), return_exceptions=True)
    assert [type(r) for r in results] == [OSError, OSError]
    assert await fresh.get() == 2


async def test_a_caller_given_up_on_leaves_the_read_to_the_others() -> None:
    figure = Figure()
    fresh = FreshReads(figure.read)
    gone, staying = asyncio.create_task(fresh.get()), asyncio.create_task(fresh.get())
    await asyncio.wait_for(figure.began.wait(), 5)
    gone.cancel()
    figure.release.set()
    assert await staying == 0
    assert gone.cancelled()
