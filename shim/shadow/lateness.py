"""How late the mirrored writes on each key went to the shadow, remembered, so that a time one of them
stamped is compared with that allowance when a later call reads it back, however late that call is itself
(`Exchange.shadow_late`, docs/rules.md#time-and-a-late-mirror).

A write that went to the shadow 3 s after the primary got it is stamped 3 s later there: its own answer
allows for that, and so must every later answer holding that time. Only writes from `FLOOR` late are
remembered (below it, the tolerance of any timestamp rule worth having covers them), for the last `KEYS`
keys they wrote, by the time of their last late write: the memory is bounded, and each replica's own.
Where the replicas (or the workers of one machine) order writes through their store, each key's most
lateness is also kept there, with its order (`FleetPlace.late`): it holds for every replica, and across
restarts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

FLOOR = 0.01  # seconds
KEYS = 100_000


class KeyLateness:
    __slots__ = ("_keys", "_late")

    def __init__(self, keys: int = KEYS) -> None:
        self._late: OrderedDict[str, float] = OrderedDict()  # key -> its writes' most lateness, oldest first
        self._keys = keys

    def allowance(self, keys: Iterable[str], late: float, write: bool, known: float = 0.0) -> float:
        """The lateness to allow for in the answer of a call on `keys` that went `late` to the shadow: the
        most of its own and of the writes on its keys (remembered here, or `known` from the order across
        replicas); a write's own is remembered for its keys."""
        keys = tuple(keys)
        remembered = self._late
        most = max(known, max((remembered.get(key, 0.0) for key in keys), default=0.0))
        if write and late >= FLOOR:
            for key in keys:
                remembered[key] = max(late, remembered.get(key, 0.0))
                remembered.move_to_end(key)
            while len(remembered) > self._keys:
                remembered.popitem(last=False)
        return max(most, late)

    def __len__(self) -> int:
        return len(self._late)
