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
there is no deadlock. A ticket must be released when its call is over (or
given up), whatever happened, or its keys stay blocked. A call given up before
its turn still holds the calls behind it until the calls it followed are done:
waiting is transitive, so those calls must not overtake them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

_REMEMBERED_KEYS = 100_000  # keys whose last write's place is kept (for written_since)


class _Lane:
    __slots__ = ("last_write", "readers")

    def __init__(self) -> None:
        self.last_write: asyncio.Future[None] | None = None
        self.readers: set[asyncio.Future[None]] = set()


class _Everything:
    """What unkeyed calls must be ordered against: every call in flight, by kind."""

    __slots__ = ("keyed_reads", "keyed_writes", "last_write", "unkeyed_reads")

    def __init__(self) -> None:
        self.last_write: asyncio.Future[None] | None = None  # the last unkeyed write
        self.keyed_writes: set[asyncio.Future[None]] = set()
        self.keyed_reads: set[asyncio.Future[None]] = set()
        self.unkeyed_reads: set[asyncio.Future[None]] = set()

    def empty(self) -> bool:
        return (self.last_write is None or self.last_write.done()) and not (
            self.keyed_writes or self.keyed_reads or self.unkeyed_reads
        )

    def discard(self, done: asyncio.Future[None]) -> None:
        self.keyed_writes.discard(done)
        self.keyed_reads.discard(done)
        self.unkeyed_reads.discard(done)


class Ticket:
    """One call's place in the lanes."""

    __slots__ = ("_after", "_done", "_lanes", "_released", "keys")

    def __init__(self, lanes: Lanes, keys: tuple[str, ...], after: list[asyncio.Future[None]]) -> None:
        self._lanes = lanes
        self.keys = keys
        self._after = after
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._released = False

    @property
    def waiting_for(self) -> int:
        """How many earlier calls this one still waits for."""
        return sum(1 for future in self._after if not future.done())

    async def ready(self) -> None:
        """Wait until every call this one follows is done."""
        for future in self._after:
            if not future.done():
                await asyncio.shield(future)

    def release(self) -> None:
        """The call is over (or given up): the calls behind it may go once the calls it follows are done."""
        if self._released:
            return
        self._released = True
        pending = [future for future in self._after if not future.done()]
        if not pending:
            self._finish()
            return
        left = len(pending)

        def one_done(_: asyncio.Future[None]) -> None:
            nonlocal left
            left -= 1
            if left == 0:
                self._finish()

        for future in pending:
            future.add_done_callback(one_done)

    def _finish(self) -> None:
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
        for key in keys:
            last = self._written.get(key)
            if (last if last is not None else self._forgotten_seq) > seq:
                return True
        return False

    def _wrote(self, key: str) -> None:
        self._written.pop(key, None)
        self._written[key] = self.write_seq
        if len(self._written) > _REMEMBERED_KEYS:
            oldest = next(iter(self._written))
            self._forgotten_seq = max(self._forgotten_seq, self._written.pop(oldest))

    def __len__(self) -> int:
        """Keys with calls in them, the unkeyed calls counting as one (for tests and metrics)."""
        return len(self._lanes) + (0 if self._everything.empty() else 1)

    def enter(self, keys: Iterable[str], write: bool) -> Ticket:
        """A ticket for a call on `keys` (none: unkeyed), placed after the calls it must follow."""
        keys = tuple(dict.fromkeys(k for k in keys if k))  # distinct, in order
        if write:
            self.write_seq += 1
        after: list[asyncio.Future[None]] = []
        ticket = Ticket(self, keys, after)
        every = self._everything
        pending = [f for f in (every.last_write,) if f is not None and not f.done()]
        if not keys:  # a call on every key
            pending += every.keyed_writes
            if write:
                pending += every.keyed_reads
                pending += every.unkeyed_reads
                every.last_write = ticket._done
                every.keyed_writes, every.keyed_reads, every.unkeyed_reads = set(), set(), set()
            else:
                every.unkeyed_reads.add(ticket._done)
            after.extend(f for f in pending if not f.done())
            return ticket
        if write:
            pending += every.unkeyed_reads
            every.keyed_writes.add(ticket._done)
        else:
            every.keyed_reads.add(ticket._done)
        after.extend(f for f in pending if not f.done())
        for key in keys:
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane()
            if lane.last_write is not None and not lane.last_write.done():
                after.append(lane.last_write)
            if write:
                after.extend(r for r in lane.readers if not r.done())
                lane.last_write = ticket._done
                self._wrote(key)
                lane.readers = set()
            else:
                lane.readers.add(ticket._done)
        return ticket

    def _forget(self, ticket: Ticket) -> None:
        """Drop lanes with nothing left in them, so that keys do not pile up."""
        self._everything.discard(ticket._done)
        for key in ticket.keys:
            lane = self._lanes.get(key)
            if lane is None:
                continue
            lane.readers.discard(ticket._done)
            if (lane.last_write is None or lane.last_write.done()) and not lane.readers:
                del self._lanes[key]
