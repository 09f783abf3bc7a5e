"""Comparisons waiting for a store that is behind are bounded by their bytes, not only by their number."""

from __future__ import annotations

import math
import time
from pathlib import Path

from comparators import Comparison, Difference, DiffKind, Exchange, Outcome, Verdict
from shim.evidence.record import StoreSink
from shim.store import Store

METHOD = "/blob.v1.Blobs/Get"


def _large(size: int) -> Comparison:
    exchange = Exchange(
        method=METHOD,
        requests=(b"",),
        primary=Outcome(0, messages=(b"",), latency=0.002),
        shadow=Outcome(0, messages=(b"",), latency=0.003),
        started_at=time.time(),
    )
    differences = (Difference("blob", DiffKind.CHANGED, "a" * size, "b" * size),)
    return Comparison(exchange, Verdict.MISMATCH, differences)


async def test_comparisons_waiting_for_the_store_are_bounded_by_their_bytes(tmp_path: Path) -> None:
    """A store that commits nothing (never started: every write waits) and comparisons of 400 KB each:
    the sink holds them up to `max_buffer_bytes`, far below `max_buffer` of them, and drops (and counts)
    the rest. Before, only their number was bounded: 100,000 comparisons of answers this size waited,
    20 GB."""
    store = Store.open(str(tmp_path / "shim.db"))
    bound = 1_000_000
    sink = StoreSink(store, replica="r1", max_buffer=100_000, max_buffer_bytes=bound)
    sink(_large(100_000))
    each = store.backlog_bytes
    assert 400_000 <= each < 410_000, each  # the differences, and the path's example
    for _ in range(19):
        sink(_large(100_000))
    held = math.ceil(bound / each)
    assert (store.backlog, store.backlog_bytes) == (held, held * each)
    assert sink.take_dropped() == {METHOD: 20 - held}


async def test_a_batch_of_comparisons_is_one_write_within_the_same_bounds(tmp_path: Path) -> None:
    """The pipeline hands the store a batch the comparison worker answered as one write; the bounds hold
    within it as they do one comparison at a time."""
    store = Store.open(str(tmp_path / "shim.db"))
    one = StoreSink(store, replica="r1", max_buffer=100_000, max_buffer_bytes=1_000_000)
    one(_large(100_000))
    each = store.backlog_bytes
    other = Store.open(str(tmp_path / "other.db"))
    sink = StoreSink(other, replica="r1", max_buffer=100_000, max_buffer_bytes=1_000_000)
    sink.batch([_large(100_000) for _ in range(20)])
    held = math.ceil(1_000_000 / each)
    assert (other.backlog, other.backlog_bytes) == (held, held * each)
    assert other._worker.queue.qsize() == 1, "one write"
    assert sink.take_dropped() == {METHOD: 20 - held}
    counted = StoreSink(other, replica="r1", max_buffer=held + 2)
    counted.batch([_large(10) for _ in range(5)])
    assert other.backlog == held + 2
    assert counted.take_dropped() == {METHOD: 3}
