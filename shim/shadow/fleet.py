"""A mirrored write's place in its keys' order across the replicas of a fleet (`ordering.across_replicas`,
`shim.store.key_order`, docs/fleet-order.md).

A write of one request message asks for its tickets when it takes its place in this replica's lanes,
while the primary has the call (on Envoy, when its copy arrives, and Envoy tells the copy when it had
the primary's answer: `answered(at)`). It is sent to the shadow once its local place has come, and once every
ticket before its own on each key is done, wherever it was taken. Its tickets are done when its place
in the lanes is released.

What cannot be ordered puts its keys out of step instead (`shim.steps`), never silently:

- tickets not yet taken when the primary's answer goes to the client: a write on the key the client
  sends next, through another replica, may take an earlier ticket;
- tickets the store did not give (it failed): the write follows this replica's lanes only;
- a streamed write (a batch or a session): its place is taken as the primary answers, or message by
  message, so it has no ticket;
- the ticket of a replica gone silent, released by the replica waiting behind it (`shim.books`).

A read with keys asks, in the same order as the writes, where it stands: the last ticket issued on each
key before it, which it waits for, so that it reaches the shadow after every write on its keys that was
answered before it was sent, wherever that write went. It raises no counter and marks nothing: a read
whose place was not known when the primary's answer went to the client, or could not be asked, is
compared as usual, and a difference it shows is `tainted` (`unordered`), not real. So is one a write on
its keys through another replica raced at the primary: it started before the read's answer, and took its
ticket after the read's place (`taint`, asked only of a read whose answers differ).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from comparators import Outcome
from shim.metrics import Counters
from shim.shadow.fate import until
from shim.steps import Steps
from shim.store import StoreError
from shim.store.key_order import NOT_LATE, KeyOrder, Late, most

LATE = (
    "its ticket in the keys' order across replicas was not taken before the primary's answer went to the"
    " client: a later write on the key through another replica may have reached the shadow first"
)
PASSED = (
    "a write on the key that started after the primary's answer took its ticket in the keys' order across"
    " replicas before this write's: it may have reached the shadow first"
)
NOT_TAKEN = (
    "its ticket in the keys' order across replicas was not taken ({error}): it was ordered with this"
    " replica's writes only"
)
STREAMED = (
    "a streamed write is not ordered across replicas: a write on the key through another replica may have"
    " reached the shadow in between"
)
READ_LATE = (
    "its place among the writes on its keys through other replicas was not known before the primary's"
    " answer went to the client: a write sent after it may have reached the shadow first"
)
READ_PASSED = (
    "a write on its keys that started after the primary's answer took its ticket in the keys' order across"
    " replicas before this read's place: it may have reached the shadow first"
)
RACE_WAIT = 2.0  # seconds a read's comparison waits for the store to say whether a write raced it
READ_RACED = (
    "a write on its keys through another replica started before the primary answered it and took its"
    " ticket after this read's place: the primary's answer may show that write, the shadow's cannot"
)
READ_RACE_UNKNOWN = (
    "whether a write on its keys through another replica raced it at the primary could not be asked ({error})"
)
READ_NOT_TAKEN = (
    "its place among the writes on its keys through other replicas could not be asked ({error}): a write"
    " through another replica answered before it may not have reached the shadow"
)
RELEASED = (
    "a write through replica {replica} had its turn on the key when that replica went silent"
    " (store.lease): whether the shadow applied it is unknown"
)


def unordered(keys: Sequence[str], method: str, steps: Steps | None, counters: Counters, side: str) -> None:
    """A write that takes no ticket: its keys (`side`'s ids) go out of step (a write without keys marks
    none)."""
    counters.inc("writes_not_ordered_across_replicas", method)
    if steps is not None:
        steps.mark(keys, method, STREAMED, side)


class FleetPlace:
    """One write's tickets on its keys (a read's place among them: `read`), asked for when it takes its place
    in the lanes."""

    __slots__ = (
        "_answered", "_at", "_counters", "_in_turn", "_method", "_order", "_side", "_steps", "_tickets",
        "late", "unordered",
    )  # fmt: skip

    def __init__(
        self,
        order: KeyOrder,
        keys: tuple[str, ...],
        method: str,
        steps: Steps | None,
        counters: Counters,
        side: str = "",  # whose ids the keys are: the primary's
        read: bool = False,
        started: float | None = None,
    ) -> None:
        self._order = order
        self._method = method
        self._steps = steps
        self._side = side
        self._counters = counters
        self._answered = False
        self._at: float | None = None  # a copy's answer time, until its tickets are judged against it
        self._in_turn = False  # every call before it on its keys is done, here and on other replicas
        self._tickets = order.take(keys, method, read, started)
        # how late the writes before it on its keys went to each side (BK's, Bank's), the most, from any
        # replica, as known when its turn came: a side may have stamped a time it reads back that much later
        self.late = NOT_LATE
        self.unordered = ""  # a read: why a difference it shows may come of its order (it is then tainted)

    @property
    def keys(self) -> tuple[str, ...]:
        return self._tickets.keys

    def answered(self, at: float | None = None) -> None:
        """The primary's answer goes to the client now: its tickets had to be taken by then. Or it went
        from `at` on (`time.time()`, a copy's, from Envoy): then no ticket before its own on a key may be
        that of a call started after `at` (judged once its tickets are taken)."""
        if self._answered:
            return
        self._answered = True
        if at is not None:
            if self._tickets.taken.is_set():
                self._judge(at)
            else:
                self._at = at
            return
        if self._tickets.taken.is_set():
            return
        self._late()

    def _judge(self, at: float) -> None:
        """Late when a ticket before its own on a key is that of a call started after `at` (the clocks'
        skew allowed for): a call the client may have sent once it had this one's answer."""
        tickets = self._tickets
        if not tickets.error and any(held.before > at - self._order.skew for held in tickets.held):
            self._late(passed=True)

    def _late(self, passed: bool = False) -> None:
        """`passed`: a call started after its answer took a ticket before its own."""
        if self._tickets.read:
            self._counters.inc("read_places_late", self._method)
            self.unordered = READ_PASSED if passed else READ_LATE
        else:
            self._counters.inc("tickets_late", self._method)
            self._mark(PASSED if passed else LATE)

    async def ready(self, stop: asyncio.Event) -> bool:
        """Wait for the tickets, then for the turn of each (False: `stop` came first)."""
        tickets = self._tickets
        if not await until(tickets.taken.wait(), stop):
            return False
        if self._at is not None:  # answered before its tickets came back: judged now
            self._judge(self._at)
            self._at = None
        if tickets.error and tickets.read:
            self._counters.inc("read_places_not_taken", self._method)
            self.unordered = self.unordered or READ_NOT_TAKEN.format(error=tickets.error)
            return True
        if tickets.error:
            self._counters.inc("tickets_not_taken", self._method)
            self._mark(NOT_TAKEN.format(error=tickets.error))
            return True
        for held in tickets.held:
            self.late = most(self.late, held.late)
            behind = self._order.behind(held.key)  # a write before it here ended before its turn
            if held.wait or behind:
                waited = asyncio.ensure_future(self._order.wait(held, always=behind))
                if not await until(waited, stop):
                    return False
                self.late = most(self.late, waited.result())
        self._in_turn = True  # (called once this replica's lanes let it go: its own writes before are done)
        return True

    async def taint(self, primary: Outcome, shadow: Outcome, answered: float) -> str:
        """Why a difference this call shows may come of its order across replicas ("": it may not): a read
        whose place was not known in time (`unordered`); or, when its two answers differ, a read that a
        write on its keys through another replica raced at the primary: it started before the primary's
        answer (`answered`, the clocks' skew allowed for) and took its ticket after the read's place, so the
        read's copy did not wait for it. A write whose ticket is taken after the read is compared is not
        seen. Asked once the read's places are released, within RACE_WAIT seconds."""
        tickets = self._tickets
        differ = (primary.code, primary.messages) != (shadow.code, shadow.messages)
        if self.unordered or not differ or not tickets.read or tickets.error or not tickets.taken.is_set():
            return self.unordered
        places = {held.key: held.ticket - 1 for held in tickets.held}
        try:
            async with asyncio.timeout(RACE_WAIT):
                raced = await self._order.raced(places, answered + self._order.skew)
        except (StoreError, TimeoutError) as exc:
            return READ_RACE_UNKNOWN.format(error=str(exc) or f"no answer within {RACE_WAIT:g} s")
        if raced:
            self._counters.inc("reads_raced_across_replicas", self._method)
        return READ_RACED if raced else ""

    def release(self, late: Late = NOT_LATE) -> None:
        """The write is over on the shadow, or given up, having gone to it `late` (`lateness.went`, left on
        its keys): the next tickets on its keys may go, once those before it are done (a write that ends
        before its turn does not let the next ones pass them)."""
        if self._tickets.read:
            return  # a read holds no ticket
        if self._in_turn or self._tickets.error:
            self._tickets.release(late)
        else:
            self._tickets.late = late
            self._order.done_in_turn(self._tickets)

    def _mark(self, why: str) -> None:
        if self._steps is not None:
            self._steps.mark(self.keys, self._method, why, self._side)
