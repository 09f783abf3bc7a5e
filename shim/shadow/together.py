"""Writes on one key that were in flight at the primary together: which it applied first is not known.

Each write's keys keep when it started at the primary (from when it takes its place) and when the primary
answered it (Envoy's times on a copy; until then it is in flight), for the last `PER_KEY` writes on each of
the last `KEYS` keys, for `KEEP` seconds. BK is sent a key's writes in the order they came to the shim,
one after the other; the primary may have applied two that overlapped (each started before the other was
answered) in either order, and a difference that order made is no fault of BK's. So a write that
overlapped another on one of its keys is `tainted` when its answers differ, never a real mismatch
(docs/ordering.md); so is a read the primary answered while a write on one of its keys was in flight
there, which its answer may or may not have seen. Each replica knows its own writes only.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

KEYS = 100_000
PER_KEY = 8
KEEP = 60.0  # seconds
LATEST = 1_000  # the spans of the latest writes on any key, for a read with no key


class Span(NamedTuple):
    start: float
    end: float
    method: str
    token: object  # the write's own (its admission), to tell it from the others


class Together:
    __slots__ = ("_keys", "_latest", "_spans")

    def __init__(self, keys: int = KEYS) -> None:
        self._spans: OrderedDict[str, list[Span]] = OrderedDict()  # by key, the most recently written last
        self._keys = keys
        # the latest writes' spans on any key (a read with no key reads them all), by their token
        self._latest: OrderedDict[object, tuple[str, Span]] = OrderedDict()

    def started(self, keys: tuple[str, ...], method: str, start: float, token: object) -> None:
        """A write on `keys` took its place, started at `start` (time.time()): in flight until answered."""
        self.answered(keys, method, start, math.inf, token)

    def answered(self, keys: tuple[str, ...], method: str, start: float, end: float, token: object) -> None:
        """The primary answered a write on `keys`, started at `start` and answered at `end` (time.time())."""
        spans, old, span = self._spans, time.time() - KEEP, Span(start, end, method, token)
        for key in keys:
            kept = [s for s in spans.pop(key, ()) if s.end >= old and s.token is not token][-(PER_KEY - 1) :]
            spans[key] = [*kept, span]
        while len(spans) > self._keys:
            spans.popitem(last=False)
        if keys:
            self._latest.pop(token, None)
            self._latest[token] = (keys[0], span)
            while len(self._latest) > LATEST:
                self._latest.popitem(last=False)

    def over(self, keys: tuple[str, ...], token: object) -> None:
        """The write `token` is over with no answer of the primary's (its client cancelled, its copy was
        lost): in flight no more from now."""
        now = time.time()
        for key in keys:
            spans = self._spans.get(key)
            if spans is not None:
                spans[:] = [
                    s._replace(end=now) if s.token is token and s.end == math.inf else s for s in spans
                ]
        latest = self._latest.get(token)
        if latest is not None and latest[1].end == math.inf:
            self._latest[token] = (latest[0], latest[1]._replace(end=now))

    def reason(self, keys: tuple[str, ...], token: object) -> str:
        """Why a difference the write `token` shows may come of the order its keys' writes went in: it was in
        flight at the primary together with another write on one of them ("" when it was not, or when its own
        span is not known)."""
        for key in keys:
            spans = self._spans.get(key, ())
            mine = next((s for s in spans if s.token is token), None)
            if mine is not None and (other := _overlapping(spans, mine.start, mine.end, token)) is not None:
                return (
                    f"in flight at the primary together with {other.method.lstrip('/')} on its key {key!r}:"
                    " which of the two it applied first is not known (the shadow was sent them in the order"
                    " they came)"
                )
        return ""

    def read_reason(self, keys: tuple[str, ...], start: float, end: float) -> str:
        """Why a difference a read shows may come of the order it went in with its keys' writes: the primary
        answered it, asked at `start` and answered at `end`, while a write on one of them was in flight there
        ("" when none was)."""
        for key in keys:
            if (other := _overlapping(self._spans.get(key, ()), start, end, None)) is not None:
                return (
                    f"answered while {other.method.lstrip('/')} was in flight at the primary on its key"
                    f" {key!r}: whether its answer saw that write is not known (the shadow was sent them in"
                    " the order they came)"
                )
        if not keys:  # a read of every key (a listing with no key): any write in flight
            for key, span in reversed(self._latest.values()):
                if span.start < end and start < span.end:
                    return (
                        f"answered while {span.method.lstrip('/')} was in flight at the primary on key"
                        f" {key!r} (the read has no key: it reads them all): whether its answer saw that"
                        " write is not known (the shadow was sent them in the order they came)"
                    )
        return ""

    def __len__(self) -> int:
        return len(self._spans)


def _overlapping(spans: Iterable[Span], start: float, end: float, token: object) -> Span | None:
    """The first of `spans`, not `token`'s own, in flight at some time between `start` and `end`."""
    return next((s for s in spans if s.token is not token and s.start < end and start < s.end), None)
