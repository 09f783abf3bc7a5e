"""The comparison pipeline is bounded: beyond max_pending waiting exchanges, further ones are dropped and
counted, and memory does not grow with a backlog."""

from __future__ import annotations

import asyncio
import threading

from comparators import Comparison, Exchange, Outcome
from shim.metrics import Counters
from shim.pipeline import ComparisonPipeline


async def test_exchanges_beyond_max_pending_are_dropped_and_counted() -> None:
    """A sink that does not keep up: at most max_pending exchanges wait; the rest are dropped and counted
    by method; once the sink goes on, exactly the kept ones reach it."""
    release, entered = threading.Event(), threading.Event()
    seen: list[Comparison] = []

    def slow_sink(comparison: Comparison) -> None:
        entered.set()
        release.wait(timeout=30)
        seen.append(comparison)

    counters = Counters()
    pipeline = ComparisonPipeline(None, [slow_sink], counters, max_pending=3, executor="thread")
    try:
        exchange = Exchange("/s.S/M", (b"",), Outcome(0, messages=(b"a",)), Outcome(0, messages=(b"b",)))
        pipeline.submit(exchange)
        await asyncio.to_thread(entered.wait, 10)  # the first is in the sink, held
        for _ in range(9):
            pipeline.submit(exchange)
        assert pipeline.pending == 3
        assert counters.get("comparisons_dropped", "/s.S/M") == 7
        release.set()
        await asyncio.wait_for(pipeline.drain(), timeout=10)
    finally:
        release.set()
        pipeline.close()
    assert len(seen) == 3
    assert pipeline.pending == 0
