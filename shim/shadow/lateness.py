"""How late the mirrored writes on each key went to the shadow, remembered, so that a time one of them
stamped is compared with that allowance when a later call reads it back, however late that call is itself
(`Exchange.shadow_late`, docs/rules.md#time-and-a-late-mirror).

A write that went to the shadow 3 s after the primary got it is stamped 3 s later there: its own answer
allows for that, and so must every later answer holding that time, but only for the times stamped while
such a write was under way: each band of lateness (`FLOORS`: from 1 s, from 0.1 s, from 10 ms) keeps when
its last write was over (`Exchange.late_steps`). Only writes from `FLOOR` late are remembered (below it,
the tolerance of any timestamp rule worth having covers them), for the last `KEYS` keys they wrote, by the
time of their last late write: the memory is bounded, and each replica's own, across switches. A call
with no routing key (a listing of every key) may read any key's times: it is allowed the same of every
write, whatever its keys, by band. Each side's
lateness is kept apart (`Late`: BK's, Bank's): while Bank is primary, BK is late and stamps later; once BK
is primary (`bk-primary`), Bank does (`Exchange.primary_late`).

Where the replicas (or the workers of one machine) order writes through their store, each key's most
lateness is also kept there, with its order (`FleetPlace.late`): it holds for every replica, and across
restarts.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable

from shim.store.key_order import FLOORS, NOT_LATE, Late, late_of, most

FLOOR = FLOORS[-1]  # seconds
KEYS = 100_000


def went(late: float, bk_is_shadow: bool) -> Late:
    """A call that went `late` to the shadow, over now: BK's times may be that much later, or Bank's (FLOOR
    and up), for the times stamped until now."""
    return late_of(late, bk_is_shadow, time.time()) if late >= FLOOR else NOT_LATE


class KeyLateness:
    __slots__ = ("_any", "_keys", "_late")

    def __init__(self, keys: int = KEYS) -> None:
        # key -> its writes' most lateness (BK's, Bank's) and when the last was over, oldest first
        self._late: OrderedDict[str, Late] = OrderedDict()
        self._keys = keys
        self._any: Late = NOT_LATE  # the same of every write, whatever its keys: for calls with none

    def allowance(
        self, keys: Iterable[str], late: float, write: bool, bk_is_shadow: bool = True, known: Late = NOT_LATE
    ) -> Late:
        """How much later BK, and Bank, may have stamped a time on `keys` held in the answer of a call on
        them, by the writes on them before it that went late (remembered here, or `known` from the order
        across replicas), and when the last of those was over: a time stamped after that is allowed only the
        call's own lateness. A write's own, `late` to the shadow (BK, or Bank when it is not `bk_is_shadow`),
        is remembered for its keys, as over now."""
        keys = tuple(keys)
        remembered = self._late
        allowed = known if keys else most(known, self._any)  # with no key, it may read any key's times
        for key in keys:
            allowed = most(allowed, remembered.get(key, NOT_LATE))
        if write and late >= FLOOR:
            own = went(late, bk_is_shadow)
            self._any = most(own, self._any)
            for key in keys:
                remembered[key] = most(own, remembered.get(key, NOT_LATE))
                remembered.move_to_end(key)
            while len(remembered) > self._keys:
                remembered.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._late)
