"""The offsets a replay keeps by recorded time (`shim.replay.stamps`): bounded, and never narrower than a
call's own offset at the times it spans."""

from __future__ import annotations

import random

import pytest

from comparators._walk import offsets_at
from shim.replay.stamps import QUANTUM, SEGMENTS, StampOffsets


def _calls(count: int, drift: float, seed: int) -> list[tuple[float, float, float]]:
    """`count` calls a second apart live, overlapping at times, each replayed with an offset drifting by
    `drift` a call (a recording replayed faster than it came: negative), and now and then a call that
    waited in its key's lane (a second more)."""
    rng = random.Random(seed)
    calls = []
    for n in range(count):
        start = 1_000_000.0 + n + rng.uniform(0, 0.5)
        offset = 100.0 + n * drift + (1.0 if rng.random() < 0.05 else 0.0)
        calls.append((start, start + rng.uniform(0.001, 1.5), offset))
    return calls


@pytest.mark.parametrize(("drift", "seed"), [(0.0, 1), (-0.01, 2), (0.3, 3)])
def test_memory_is_bounded_and_each_call_s_offset_is_allowed_at_the_times_it_spans(
    drift: float, seed: int
) -> None:
    stamps = StampOffsets()
    calls = _calls(5_000, drift, seed)
    rng = random.Random(seed)
    rng.shuffle(calls)  # calls are done (and kept) in another order than they came
    for start, end, offset in calls:
        stamps.add(start, end, (offset,))
    segments = stamps.segments()
    assert len(segments) <= SEGMENTS
    assert [s[0] for s in segments] == sorted(s[0] for s in segments)
    for start, end, offset in calls:
        for stamped in (start, (start + end) / 2, end):
            window = offsets_at(segments, stamped, 0.0)
            assert window is not None
            assert window[0] <= offset <= window[1]


def test_a_steady_replay_keeps_each_moment_s_offset_within_the_quantum() -> None:
    """Replayed at a steady offset, but for one call that waited a second in its lane: the times of every
    other moment are allowed the offset alone (within the quantum), not the waiting call's second."""
    stamps = StampOffsets()
    for n in range(1_000):
        stamps.add(float(n), n + 0.8, (20.0 + (1.0 if n == 500 else 0.0),))
    segments = stamps.segments()
    for n in (10, 499 - 2, 503, 990):
        window = offsets_at(segments, n + 0.4, 0.0)
        assert window is not None
        assert window[1] - window[0] <= QUANTUM, (n, window)
    waited = offsets_at(segments, 500.4, 0.0)
    assert waited is not None
    assert waited[0] <= 21.0 <= waited[1]


def test_a_session_s_offsets_are_all_allowed_and_nothing_is_found_outside_the_recording() -> None:
    stamps = StampOffsets()
    stamps.add(10.0, 16.0, (3.0, 1.5, 0.2))  # a session's answers, each with its own offset
    assert offsets_at(stamps.segments(), 12.0, 0.0) == (0.2, 3.0)
    assert offsets_at(stamps.segments(), 5.0, 1.0) is None
    assert offsets_at(stamps.segments(), 9.5, 1.0) == (0.2, 3.0)
    stamps.add(20.0, 21.0, ())  # a call with no offset (never sent) is not kept
    assert offsets_at(stamps.segments(), 20.5, 0.0) is None
    with pytest.raises(ValueError, match="one segment at least"):
        StampOffsets(limit=0)
