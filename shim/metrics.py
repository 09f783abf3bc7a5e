"""In-process counters: what the shim did, per method. Cheap enough for the hot path."""

from __future__ import annotations

from collections import Counter


class Counters:
    """Counts keyed by (name, method). Only the event loop thread writes."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()

    def inc(self, name: str, method: str = "", by: int = 1) -> None:
        self._counts[(name, method)] += by

    def get(self, name: str, method: str | None = None) -> int:
        if method is not None:
            return self._counts[(name, method)]
        return sum(v for (n, _), v in self._counts.items() if n == name)

    def snapshot(self) -> dict[tuple[str, str], int]:
        return dict(self._counts)
