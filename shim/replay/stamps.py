"""How much later than live a replay sent the calls of each moment of the recording: for the times an
answer holds that an earlier call stamped.

An answer holds times its own call stamped (a listing's `as_of`) and times earlier calls stamped (an
account's opening time, read back by a later read). BK stamped each when the replay sent the call that
stamped it, so Bank's time is moved on by that call's offset (when it went to BK, less when it came live),
not by the reading call's own. Replayed as fast as order allows, a read that came 10 s after the opening
live may go 50 ms after it: by the read's own offset, the opening time would be 10 s off, a false
difference in every read of an older time.

`StampOffsets` keeps, by recorded time, the offsets the calls of each moment went with (from when a call
came to when Bank answered it, so that a write's time is found whichever moment of its call Bank stamped
it at), as at most `SEGMENTS` segments: a segment's offsets from lowest to highest. A new call joins the
segments it overlaps when their offsets stay within `QUANTUM` of each other; beyond `SEGMENTS`, the two
neighbours whose offsets are closest are joined. So memory is bounded whatever the recording's length, and
a segment's offsets spread only where the replay's pace changed much within it (a recording of hours
replayed in minutes): a time stamped then is allowed that spread, never less than its call's offset.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from comparators import StampSegment as Segment  # (from, to) recorded, seconds since the epoch; (low, high)

SEGMENTS = 64  # segments kept at most, whatever the recording's length
QUANTUM = 0.05  # seconds: calls whose offsets lie this close share a segment


class StampOffsets:
    """The offsets of the calls replayed so far, by the recorded time they span (see the module)."""

    def __init__(self, limit: int = SEGMENTS, quantum: float = QUANTUM) -> None:
        if limit < 1:
            raise ValueError("StampOffsets needs room for one segment at least")
        self._limit = limit
        self._quantum = quantum
        self._starts: list[float] = []
        self._segments: list[Segment] = []
        self._view: tuple[Segment, ...] | None = ()

    def add(self, start: float, end: float, offsets: Sequence[float]) -> None:
        """A call that came live from `start` to `end` (recorded) went to BK with `offsets` (its own, or one
        per answer of a session's)."""
        if not offsets:
            return
        segment: Segment = (start, max(start, end), min(offsets), max(offsets))
        at = bisect.bisect_left(self._starts, segment[0])
        self._starts.insert(at, segment[0])
        self._segments.insert(at, segment)
        self._view = None
        for neighbour in (at, at - 1):  # the one after the new segment, then the new one with the one before
            if 0 <= neighbour < len(self._segments) - 1 and self._close(neighbour):
                self._join(neighbour)
        if len(self._segments) > self._limit:
            self._join(min(range(len(self._segments) - 1), key=self._spread))

    def segments(self) -> tuple[Segment, ...]:
        """The segments, from the earliest recorded time (one tuple, the same until the next `add`)."""
        if self._view is None:
            self._view = tuple(self._segments)
        return self._view

    def _spread(self, at: int) -> float:
        (_, _, low, high), (_, _, low2, high2) = self._segments[at], self._segments[at + 1]
        return max(high, high2) - min(low, low2)

    def _close(self, at: int) -> bool:
        """Whether segment `at` and the next overlap in time and their offsets lie within the quantum."""
        return self._segments[at + 1][0] <= self._segments[at][1] and self._spread(at) <= self._quantum

    def _join(self, at: int) -> None:
        (start, end, low, high), (start2, end2, low2, high2) = self._segments[at], self._segments[at + 1]
        self._segments[at] = (min(start, start2), max(end, end2), min(low, low2), max(high, high2))
        self._starts[at] = self._segments[at][0]
        del self._segments[at + 1], self._starts[at + 1]
