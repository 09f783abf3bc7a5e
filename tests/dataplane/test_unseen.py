"""The count of the calls whose copies never reached the shim: read from Envoy in an order that never
counts a copy the processor has, and recorded over several seconds without losing any."""

from __future__ import annotations

from pathlib import Path

from shim.dataplane.unseen import PER_TICK, STREAMS, Unseen, copy_streams


async def test_the_streams_are_read_in_an_order_that_never_counts_one_given_up_twice() -> None:
    """Each figure is read on its own, started first and those the processor ended last: a stream that
    moves on between two reads is found in both (counted given up later), never in neither."""
    figures = {STREAMS[0]: 100, STREAMS[1]: 3, STREAMS[2]: 10, STREAMS[3]: 80}
    asked: list[str] = []

    async def stats(pattern: str) -> dict[str, int]:
        asked.append(pattern)
        name = next(n for n in STREAMS if pattern == f"^{n.replace('.', chr(92) + '.')}$")
        if name == STREAMS[2]:  # between the reads, five open streams end, answered by the processor
            figures[STREAMS[3]] += 5
            figures[STREAMS[2]] -= 5
        return {name: figures[name]}

    assert await copy_streams(stats) == (100, 100 - 3 - 5 - 85)
    assert [a.strip("^$").replace("\\", "") for a in asked] == list(STREAMS)


async def test_a_long_gap_is_recorded_over_several_ticks_and_none_is_lost(tmp_path: Path) -> None:
    counted = tmp_path / "copies.json"
    unseen = Unseen(counted)
    assert unseen.update(given_up=PER_TICK * 2 + 7, taken=0) == PER_TICK * 2 + 7
    assert unseen.take() == PER_TICK
    # a comparison plane started again behind the same Envoy goes on with what is left to record
    again = Unseen(counted)
    assert (again.unsent, again.unrecorded) == (PER_TICK * 2 + 7, PER_TICK + 7)
    assert again.update(given_up=PER_TICK * 2 + 7, taken=0) == 0  # counted once
    assert again.take() == PER_TICK
    assert again.take(None) == 7
    assert again.take(None) == 0
    assert Unseen(counted).unrecorded == 0
