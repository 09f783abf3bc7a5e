"""Counts of what was counted but not stored (comparisons dropped, lost ...), flushed now and then."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from shim.store._jobs import Write
from shim.store.engine import Engine

_INSERT_COUNT = "INSERT INTO counts (at, replica, method, name, value) VALUES (?, ?, ?, ?, ?)"


class StoredCounts:
    """The counts of a store (`store.counts`); reports read them (`shim.evidence`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put(
        self,
        at: float,
        replica: str,
        counts: Sequence[tuple[str, str, int]],
        lost: Callable[[], None] | None = None,
    ) -> None:
        """Record counts (method, name, value) taken at `at` by `replica` (enqueued). `lost` is called (on
        the store's thread) if their write fails for good, for the caller to write them again later."""
        rows = [(at, replica, m, n, v) for m, n, v in counts]
        self._engine.put(Write(_INSERT_COUNT, rows, replicas=frozenset((replica,)), lost=lost))
