"""In-process counters: what the shim did, per method. Cheap enough for the hot path.

Clients choose the method names they call, so a name never costs more than a
bounded amount: `MethodLabels` says which methods get a metric label of their
own, and `Counters` keeps at most `_MAX_COUNTED` methods apart.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable

NOT_DESCRIBED = "(not described)"  # the label of every method the descriptors do not describe
OTHER = "(other)"  # without descriptors, the label of every method beyond the first MAX_METHODS
# the method the calls whose copies never reached the shim are recorded under: a label of its own
UNSEEN = "(calls the shim did not see)"
MAX_METHODS = 1_000  # method labels without descriptors
_MAX_COUNTED = 10_000  # methods Counters keeps apart; later ones count as OTHER


class MethodLabels:
    """The `method` label of a method's metrics, so that the series stay bounded.

    With descriptors (`described`), a method they describe is its own label and every other one is
    NOT_DESCRIBED. Without, the first `limit` methods seen are their own labels, and later ones
    OTHER. `also` are labels kept as they are (the id and alias kinds some events are counted by);
    "" stays "".
    """

    def __init__(
        self,
        described: Callable[[str], bool] | None = None,
        also: Iterable[str] = (),
        limit: int = MAX_METHODS,
    ) -> None:
        self._described = described
        self._limit = limit
        self._own: dict[str, str] = {name: name for name in ("", UNSEEN, *also)}  # the labels of their own
        self._named = 0  # methods admitted without descriptors
        self._lock = threading.Lock()  # the event loop, the comparisons' thread and a scrape all ask

    def __call__(self, method: str) -> str:
        label = self._own.get(method)
        if label is not None:
            return label
        if self._described is not None:
            if not self._described(method):
                return NOT_DESCRIBED
            with self._lock:  # at most once per described method
                self._own[method] = method
            return method
        with self._lock:
            if method in self._own:
                return method
            if self._named >= self._limit:
                return OTHER
            self._named += 1
            self._own[method] = method
        return method

    def own(self, method: str) -> bool:
        """Whether `method` has a label of its own."""
        return self(method) == method


class Counters:
    """Counts keyed by (name, method). Only the event loop thread writes.

    The first `limit` methods counted are kept apart, and so is any method `labels` gives a label of
    its own (a described one); any other method counts as OTHER.
    """

    def __init__(self, labels: MethodLabels | None = None, limit: int = _MAX_COUNTED) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self._labels = labels
        self._limit = limit
        self._methods: set[str] = {""}

    def inc(self, name: str, method: str = "", by: int = 1) -> None:
        key = (name, method)
        if key not in self._counts and method not in self._methods:
            key = (name, self._admit(method))
        self._counts[key] += by

    def _admit(self, method: str) -> str:
        if len(self._methods) <= self._limit or (self._labels is not None and self._labels.own(method)):
            self._methods.add(method)
            return method
        return OTHER

    def get(self, name: str, method: str | None = None) -> int:
        if method is not None:
            return self._counts[(name, method)]
        return sum(v for (n, _), v in self._counts.items() if n == name)

    def snapshot(self) -> dict[tuple[str, str], int]:
        return dict(self._counts)
