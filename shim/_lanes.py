"""Per-key lanes: the order in which mirrored calls may reach the shadow.

Every call enters the lanes of its routing keys when the shim receives it, in
that order (the event loop makes entering atomic). It may go ahead once the
calls it must follow are done:

- a write follows every earlier call (read or write) on each of its keys;
- a read follows the earlier writes on each of its keys, so reads between two
  writes run concurrently, and the next write waits for them;
- a call without a key may touch any key, so it counts as a call on every
  key: an unkeyed write follows everything earlier and everything later
  follows it; an unkeyed read (a listing of all accounts, say) follows every
  earlier write, keyed or not, and every later write follows it.

A call with several keys follows the earlier calls of each. Since a call only
ever waits for calls that entered before it, no two calls wait for each other:
there is no deadlock. Each ticket has its `order`, the rank of its entry among
every ticket's: whatever else a call waits for (the pair of an id it names) must
come from a call of a lower order, or that guarantee is lost.

Every call waits for each earlier call it conflicts with *directly*, never
through a call in between. So a call that is skipped, fails, times out or is
given up releases its place in every lane at once: the calls behind it that
conflict with what it waited for still wait for those calls themselves, and the
others go. A ticket must be released when its call is over (or given up),
whatever happened, or its keys stay blocked.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable

_REMEMBERED_KEYS = 100_000  # keys whose last write's place is kept (for written_since)

Done = asyncio.Future[None]
_ENTERED = itertools.count(1)  # the order of every ticket, in the order they entered (0: none)


class _Lane:
    """The calls in flight on one key."""

    __slots__ = ("readers", "writes")

    def __init__(self) -> None:
        self.writes: set[Done] = set()
        self.readers: set[Done] = set()


class _Everything:
    """What unkeyed calls must be ordered against: every call in flight, by kind."""

    __slots__ = ("keyed_reads", "keyed_writes", "unkeyed_reads", "unkeyed_writes")

    def __init__(self) -> None:
        self.unkeyed_writes: set[Done] = set()
        self.keyed_writes: set[Done] = set()
        self.keyed_reads: set[Done] = set()
        self.unkeyed_reads: set[Done] = set()

    def empty(self) -> bool:
        return not (self.unkeyed_writes or self.keyed_writes or self.keyed_reads or self.unkeyed_reads)

    def discard(self, done: Done) -> None:
        self.unkeyed_writes.discard(done)
        self.keyed_writes.discard(done)
        self.keyed_reads.discard(done)
        self.unkeyed_reads.discard(done)


class Ticket:
    """One call's place in the lanes."""

    __slots__ = ("_after", "_done", "_lanes", "keys", "order")

    def __init__(self, lanes: Lanes, keys: tuple[str, ...], after: list[Done]) -> None:
        self._lanes = lanes
        self.keys = keys
        self.order = next(_ENTERED)  # a ticket entered later has a higher one
        self._after = after
        self._done: Done = asyncio.get_running_loop().create_future()

    @property
    def waiting_for(self) -> int:
        """How many earlier calls this one still waits for."""
        return sum(1 for future in self._after if not future.done())

    @property
    def released(self) -> bool:
        return self._done.done()

    async def ready(self) -> None:
        """Wait until every call this one follows is done."""
        for future in self._after:
            if not future.done():
                await asyncio.shield(future)

    def release(self) -> None:
        """The call is over (or given up): the calls behind it no longer wait for it."""
        if not self._done.done():
            self._done.set_result(None)
            self._lanes._forget(self)


class Lanes:
    def __init__(self) -> None:
        self._lanes: dict[str, _Lane] = {}
        self._everything = _Everything()
        self.write_seq = 0  # writes entered so far
        # write_seq of the last write on each key, for the most recent keys written
        self._written: dict[str, int] = {}
        self._forgotten_seq = 0  # the highest write_seq of a key dropped from _written

    def written_since(self, keys: tuple[str, ...], seq: int) -> bool:
        """Whether a write on any of `keys` (none: on any key) entered after `write_seq` was `seq`.

        A key written long ago may be forgotten: then the answer errs on the side of "yes"."""
        if not keys or self.write_seq == seq:
            return self.write_seq != seq
        if self._unkeyed_write_since(seq):
            return True
        for key in keys:
            last = self._written.get(key)
            if (last if last is not None else self._forgotten_seq) > seq:
                return True
        return False

    def _unkeyed_write_since(self, seq: int) -> bool:
        return self._written.get("", 0) > seq

    def _wrote(self, key: str) -> None:
        self._written.pop(key, None)
        self._written[key] = self.write_seq
        if len(self._written) > _REMEMBERED_KEYS:
            oldest = next(iter(self._written))
            self._forgotten_seq = max(self._forgotten_seq, self._written.pop(oldest))

    def __len__(self) -> int:
        """Keys with calls in them, the unkeyed calls counting as one (for tests and metrics)."""
        return len(self._lanes) + (0 if self._everything.empty() else 1)

    def enter(self, keys: Iterable[str], write: bool, own: Iterable[Ticket] = ()) -> Ticket:
        """A ticket for a call on `keys` (none: unkeyed), placed after the calls it must follow; never after
        `own` (a session's earlier messages: one stream keeps their order on the other side), though after
        whatever came between them."""
        ticket = self._enter(keys, write)
        mine = {t._done for t in own}
        if mine:
            ticket._after[:] = [f for f in ticket._after if f not in mine]
        return ticket

    def _enter(self, keys: Iterable[str], write: bool) -> Ticket:
        keys = tuple(dict.fromkeys(k for k in keys if k))  # distinct, in order
        if write:
            self.write_seq += 1
        after: list[Done] = []
        ticket = Ticket(self, keys, after)
        every = self._everything
        after.extend(every.unkeyed_writes)
        if not keys:  # a call on every key
            after.extend(every.keyed_writes)
            if write:
                after.extend(every.keyed_reads)
                after.extend(every.unkeyed_reads)
                every.unkeyed_writes.add(ticket._done)
                self._wrote("")
            else:
                every.unkeyed_reads.add(ticket._done)
            return ticket
        if write:
            after.extend(every.unkeyed_reads)
            every.keyed_writes.add(ticket._done)
        else:
            every.keyed_reads.add(ticket._done)
        seen = set(after)
        for key in keys:
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane()
            earlier = [*lane.writes, *lane.readers] if write else list(lane.writes)
            after.extend(f for f in earlier if f not in seen)
            seen.update(earlier)
            if write:
                lane.writes.add(ticket._done)
                self._wrote(key)
            else:
                lane.readers.add(ticket._done)
        return ticket

    def _forget(self, ticket: Ticket) -> None:
        """Drop the call from every set it is in, and lanes with nothing left in them."""
        done = ticket._done
        self._everything.discard(done)
        for key in ticket.keys:
            lane = self._lanes.get(key)
            if lane is None:
                continue
            lane.writes.discard(done)
            lane.readers.discard(done)
            if not lane.writes and not lane.readers:
                del self._lanes[key]
