"""How late the mirrored writes on each key went to the shadow, remembered, so that a time one of them
stamped is compared with that allowance when a later call reads it back, however late that call is itself
(`Exchange.shadow_late`, docs/rules.md#time-and-a-late-mirror).

A write that went to the shadow 3 s after the primary got it is stamped 3 s later there: its own answer
allows for that, and so must every later answer holding that time. Only writes from `FLOOR` late are
remembered (below it, the tolerance of any timestamp rule worth having covers them), for the last `KEYS`
keys they wrote, by the time of their last late write: the memory is bounded, and each replica's own,
across switches. Each side's lateness is kept apart (`Late`: BK's, Bank's): while Bank is primary, BK is
late and stamps later; once BK is primary (`bk-primary`), Bank does (`Exchange.primary_late`).

Where the replicas (or the workers of one machine) order writes through their store, each key's most
lateness is also kept there, with its order (`FleetPlace.late`): it holds for every replica, and across
restarts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from shim.store.key_order import NOT_LATE, Late, most

FLOOR = 0.01  # seconds
KEYS = 100_000


def went(late: float, bk_is_shadow: bool) -> Late:
    """A call that went `late` to the shadow: BK's times may be that much later, or Bank's (FLOOR and up)."""
    if late < FLOOR:
        return NOT_LATE
    return (late, 0.0) if bk_is_shadow else (0.0, late)


class KeyLateness:
    __slots__ = ("_keys", "_late")

    def __init__(self, keys: int = KEYS) -> None:
        # key -> its writes' most lateness (BK's, Bank's), oldest first
        self._late: OrderedDict[str, Late] = OrderedDict()
        self._keys = keys

    def allowance(
        self, keys: Iterable[str], late: float, write: bool, bk_is_shadow: bool = True, known: Late = NOT_LATE
    ) -> Late:
        """How much later BK, and Bank, may have stamped a time in the answer of a call on `keys` that went
        `late` to the shadow (BK, or Bank when it is not `bk_is_shadow`): the most of its own and of the
        writes on its keys (remembered here, or `known` from the order across replicas). A write's own is
        remembered for its keys."""
        keys = tuple(keys)
        remembered = self._late
        allowed = known
        for key in keys:
            allowed = most(allowed, remembered.get(key, NOT_LATE))
        own = (late, 0.0) if bk_is_shadow else (0.0, late)
        if write and late >= FLOOR:
            for key in keys:
                remembered[key] = most(own, remembered.get(key, NOT_LATE))
                remembered.move_to_end(key)
            while len(remembered) > self._keys:
                remembered.popitem(last=False)
        return most(allowed, own)

    def __len__(self) -> int:
        return len(self._late)
