"""The bytes a mirrored call keeps for its comparison, within a per-call and a total bound."""

from __future__ import annotations


class Budget:
    """Bytes held for comparison across all mirrored calls (`shadow.max_capture_total`).

    A quarter of it is kept for calls that hold little (at most 1/1024 of it each): calls with large
    messages, such as streams to slow readers, can never take the room every other client's calls need.
    """

    __slots__ = ("limit", "shared", "small", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit if limit > 0 else 2**62
        self.shared = self.limit - self.limit // 4  # what calls holding more than `small` may fill
        self.small = self.limit // 1024
        self.used = 0

    def take(self, size: int, held: int = 0) -> bool:
        """Take `size` more bytes for a call that holds `held` already, if there is room for it."""
        used = self.used + size
        if used > self.limit or (held + size > self.small and used > self.shared):
            return False
        self.used = used
        return True

    def give(self, size: int) -> None:
        self.used -= size


class Capture:
    """What one exchange keeps for comparison: at most `limit` bytes, and only while the total budget
    has room. Once a message is not kept, the call is compared no further.

    It counts the request bytes waiting for the shadow call too (`queued`). Those not kept are held all
    the same until they are sent: they are taken from the total budget as well (`wait`), and given back
    as they are sent, or with the rest once the call is over. They are the last ones queued (once a message
    is not kept, none after it is), so at most `queued` of them still wait."""

    __slots__ = ("_queued", "budget", "exceeded", "held", "left", "starved", "waiting")

    def __init__(self, limit: int, budget: Budget | None = None) -> None:
        self.left = limit if limit > 0 else 2**62
        self.budget = budget
        self.held = 0  # bytes taken from the budget
        self.exceeded = False
        self.starved = False  # exceeded because the total budget was full
        self._queued = 0
        self.waiting = 0  # request bytes not kept, waiting for the shadow call: taken from the budget

    @property
    def queued(self) -> int:
        """Request bytes handed to the shadow call and not yet sent to the shadow."""
        return self._queued

    @queued.setter
    def queued(self, size: int) -> None:
        self._queued = size
        if self.waiting > size:  # sent: what waited is given back
            self._give(self.waiting - max(size, 0))
            self.waiting = max(size, 0)

    def wait(self, size: int) -> bool:
        """`size` request bytes not kept wait for the shadow call: False when the total budget has no room
        for them (the shadow call is then given up)."""
        if self.budget is not None and not self.budget.take(size, self.held + self.waiting):
            return False
        self.waiting += size
        return True

    def take(self, payload: bytes) -> bool:
        if self.exceeded:
            return False
        self.left -= len(payload)
        if self.left < 0:
            self.exceeded = True
            return False
        if self.budget is not None and not self.budget.take(len(payload), self.held):
            self.exceeded = self.starved = True
            return False
        self.held += len(payload)
        return True

    def give_back(self) -> None:
        """The bytes are no longer held (compared, stored, or dropped), nor those that waited for the shadow
        call (over)."""
        self._give(self.held + self.waiting)
        self.held = self.waiting = 0

    def _give(self, size: int) -> None:
        if self.budget is not None and size:
            self.budget.give(size)
