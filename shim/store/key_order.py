"""The order of each key's mirrored writes across shim replicas sharing a store: PostgreSQL for a fleet
(`_order_pg.py`), or a SQLite file for the processes of one machine, the workers of `shim serve --workers
N` (`_order_sqlite.py`).

Every mirrored write takes a *ticket* on each of its keys: the key's counter, raised by one, in the
row `shim_key_order(key, issued, done, ...)`. A replica asks for its tickets in the order its writes
took their places in its own lanes, over one connection, many writes in one statement: so one
replica's tickets on a key follow its lanes' order, and a write costs one round trip. The statement
takes the keys' row locks in sorted order (an INSERT ... SELECT ... ORDER BY key ON CONFLICT DO
UPDATE), as does the statement that marks tickets done: no two statements ever wait for each other.

A write holding ticket N on key K is mirrored once K's `done` has reached N - 1 (`wait`), and then
marks N done (`Tickets.release`: done = max(done, N)). It waits for nothing when ticket N - 1 was
this replica's own (its lanes order the two already) or was done when N was issued. A write that ends
before its turn (given up, never sent) marks N done only once N - 1 is (`done_in_turn`).

The holder of every ticket not yet done is kept (`shim_key_tickets`). A waiter finding the ticket
after `done` held by a replica whose heartbeat (`shim.liveness`) is older than the lease, or gone,
moves `done` past it and reports the key (`on_released`): that write may or may not have reached BK. So
does a look at the key's position (`position`): with no write after it, it would stay under way for good.

A ticket statement committed whose answer was lost leaves tickets no write of the replica knows: looked for
(`_tickets.unknown`) after a ticket statement failed, and every lease, they are done in their turn. Each
write's start is kept by ticket (`shim_key_starts`, `raced`) for the reads compared after it.

Waiting is polling, one query for every key waited on: at once when tickets done are announced (on
PostgreSQL, a NOTIFY on `shim_key_done` by the statement marking them, when the next ticket on a key is
another replica's), else 1 ms at first and twice as long each time up to 25 ms (5 ms on SQLite, which
announces nothing and is read from a local file).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Sequence

import structlog

from shim.store import _tickets
from shim.store._errors import StoreError
from shim.store._order_pg import PostgresTickets
from shim.store._order_sqlite import SqliteTickets
from shim.store._tickets import FLOORS, NOT_LATE, Asking, Held, Late, Tickets, bands, late_from, late_of, most

__all__ = [
    "FLOORS", "NOT_LATE", "Held", "KeyOrder", "Late", "Released", "Tickets", "bands", "late_of", "most",
]  # fmt: skip

_log = structlog.get_logger("shim.store.key_order")

_FIRST_POLL, _LAST_POLL = 0.001, 0.025
_LAST_LOOK = 0.005  # ... where tickets done are not announced (SQLite): looking costs a read of a local file

Released = Callable[[str, str, str], None]  # key, the replica that held the ticket, its write's method


class KeyOrder:
    """This replica's tickets and waits. `start()`, then `take`, `wait`; `close()` at the end. The replica's
    heartbeat is written apart (`shim.liveness`), from before `start` until after `close`."""

    def __init__(
        self, url: str, replica: str, lease: float, on_released: Released | None = None, skew: float = 0.001
    ) -> None:
        self.replica = replica
        self.lease = lease
        self.skew = skew  # how far the replicas' clocks may differ (`ordering.clock_skew`)
        self._on_released = on_released
        self._book: PostgresTickets | SqliteTickets = (
            PostgresTickets(url, replica, self._announced)
            if re.match(r"postgres(ql)?://", url, re.IGNORECASE)
            else SqliteTickets(url, replica)
        )
        # whether a write ticketed after a read's place on a key started before a time (`_order_pg.py`)
        self.raced = self._book.raced
        self._asked: list[Tickets] = []
        self._ask = asyncio.Event()
        self._done: dict[str, int] = {}  # tickets done, not yet written: key -> the highest
        self._late: dict[str, Late] = {}  # ... and how late the writes that held them went, the most
        self._finished = asyncio.Event()
        self._waiters: dict[str, list[tuple[int, asyncio.Future[Late]]]] = {}
        self._someone_waits = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._in_turns: set[asyncio.Task[None]] = set()  # tickets waiting for their turn to be done
        self._behind: dict[str, int] = {}  # of those, how many on each key
        self._mine: dict[str, set[int]] = {}  # tickets issued to this replica, not yet written done
        self.polls = 0  # looks at the keys waited on, so far

    async def start(self) -> None:
        """Connect (StoreError if the store cannot be reached), then serve."""
        await self._book.start()
        loop = asyncio.get_running_loop()
        for work, name in ((self._taking, "tickets"), (self._finishing, "done"), (self._polling, "waits")):
            self._tasks.append(loop.create_task(work(), name=f"key order: {name}"))
        if self._book.listener is not None:
            self._tasks.append(loop.create_task(self._book.listener.run(), name="key order: done announced"))

    async def close(self, within: float | None = None) -> None:
        """Write the tickets done so far and close, in `within` seconds (`_tickets.cut`, `unwritten`): those
        held, and those done not written by then, are released with the replica's heartbeat, or its lease."""
        deadline = None if within is None else asyncio.get_running_loop().time() + within
        await _tickets.cut(self._book, [*self._tasks, *self._in_turns])
        self._tasks = []
        with contextlib.suppress(StoreError, TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self.flush()
        _tickets.unwritten(self._done, within)
        await self._book.close()

    async def position(self, key: str) -> tuple[int, int]:
        """The key's tickets (issued, done) so far, (0, 0) for a key never written: a write on it is under
        way through some replica while issued > done (StoreError if the store cannot be read). The tickets
        next in turn of a replica gone are released first, and the key reported, as a waiter would: a
        write a dead replica left in flight is under way no more, whether or not a write follows it."""
        while True:
            rows = await self._book.position(key, self.lease)
            if not rows:
                return (0, 0)
            issued, done, holder, method, gone = rows[0]
            if not await self._release_gone(key, int(done), holder, method, gone):
                return (int(issued), int(done))

    def take(
        self, keys: Sequence[str], method: str, read: bool = False, started: float | None = None
    ) -> Tickets:
        """Tickets on `keys` for one write, asked for now (issued in the order asked); `read`: where a read
        stands on them instead (the last tickets issued before it, which it waits for), in the same order.
        `started`: when the call started (`time.time()`; by default now)."""
        tickets = Tickets(tuple(dict.fromkeys(keys)), method, self._finish, read, started)
        self._asked.append(tickets)
        self._ask.set()
        return tickets

    async def wait(self, held: Held, always: bool = False) -> Late:
        """Until the key's tickets before `held` are done (or released); `always`: also when the ticket
        before was this replica's own. The most lateness of a write done on the key, as then known."""
        if not held.wait and not always:
            return held.late
        future: asyncio.Future[Late] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(held.key, []).append((held.ticket - 1, future))
        self._someone_waits.set()
        return most(held.late, await future)

    def done_in_turn(self, tickets: Tickets) -> None:
        """Mark `tickets` done once the tickets before them are (a write that ended without its turn, or
        before it: the writes after it must still follow the ones before it)."""
        task = asyncio.get_running_loop().create_task(self._in_turn(tickets), name="key order: done in turn")
        self._in_turns.add(task)
        task.add_done_callback(self._in_turns.discard)
        for key in tickets.keys:
            self._behind[key] = self._behind.get(key, 0) + 1

    def behind(self, key: str) -> bool:
        """Whether a write of this replica on `key` ended before its turn and is not yet done: the next
        one must wait in the store even after its own (the lanes no longer hold it back)."""
        return key in self._behind

    async def _in_turn(self, tickets: Tickets) -> None:
        try:
            await tickets.taken.wait()
            for held in tickets.held:
                await self.wait(held, always=True)
            tickets.release(tickets.late)
        finally:
            for key in tickets.keys:
                self._behind[key] -= 1
                if not self._behind[key]:
                    del self._behind[key]

    # -- the tasks -------------------------------------------------------------------------------------

    async def _taking(self) -> None:
        sweep = time.monotonic() + self.lease  # when to look for tickets of this replica it does not know
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(sweep - time.monotonic(), 0.0)):
                    await self._ask.wait()
            if time.monotonic() >= sweep:  # between two ticket statements: none is under way here
                try:
                    for lost in await _tickets.unknown(self._book, self._mine, self._finish):
                        self.done_in_turn(lost)
                    await self._book.forget_starts(time.time() - _tickets.STARTS_KEPT)
                    sweep = time.monotonic() + self.lease
                except StoreError as exc:
                    _log.warning("tickets of this replica not looked for; trying again", error=str(exc))
                    sweep = time.monotonic() + min(self.lease, 1.0)
                continue
            self._ask.clear()
            asked, self._asked = self._asked, []
            asking = Asking(asked)
            try:
                rows = await self._book.take(asking.params())
            except StoreError as exc:
                for tickets in asked:
                    tickets._issued((), str(exc))
                sweep = time.monotonic()  # the statement may have committed all the same
                continue
            asking.issue(rows, self.replica)
            for held in (held for tickets in asked if not tickets.read for held in tickets.held):
                self._mine.setdefault(held.key, set()).add(held.ticket)

    def _finish(self, held: tuple[Held, ...], late: Late) -> None:
        for one in held:
            self._done[one.key] = max(self._done.get(one.key, 0), one.ticket)
            if late != NOT_LATE:
                self._late[one.key] = most(self._late.get(one.key, NOT_LATE), late)
        if held:
            self._finished.set()

    async def _finishing(self) -> None:
        pause = _FIRST_POLL
        while True:
            await self._finished.wait()
            self._finished.clear()
            try:
                await self.flush()
                pause = _FIRST_POLL
            except StoreError as exc:  # kept, and written again: the keys wait for it
                _log.warning("tickets done not written; trying again", error=str(exc))
                self._finished.set()
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)

    async def flush(self) -> None:
        """Write the tickets done so far, now (StoreError if the store fails: they are kept)."""
        if not self._done:
            return
        (done, self._done), (late, self._late) = (self._done, {}), (self._late, {})
        try:
            await self._book.done(done, late)
        except BaseException:  # a failure, or a close that could not wait: they are kept
            for key, ticket in done.items():
                self._done[key] = max(self._done.get(key, 0), ticket)
            for key, one in late.items():
                self._late[key] = most(self._late.get(key, NOT_LATE), one)
            raise
        for key, ticket in done.items():
            if key in self._mine:
                self._mine[key] = {one for one in self._mine[key] if one > ticket}
                if not self._mine[key]:
                    del self._mine[key]
        if any(key in self._waiters for key in done):
            self._someone_waits.set()

    async def _polling(self) -> None:
        pause = _FIRST_POLL
        last = _LAST_POLL if self._book.announces else min(_LAST_LOOK, _LAST_POLL)
        while True:
            for key in [k for k, ws in self._waiters.items() if all(f.done() for _, f in ws)]:
                del self._waiters[key]
            if not self._waiters:
                self._someone_waits.clear()
                await self._someone_waits.wait()
                pause = _FIRST_POLL
            self._someone_waits.clear()
            try:
                moved = await self._poll()
            except StoreError as exc:
                _log.warning("cannot read the keys' order", error=str(exc))
                moved = False
            pause = _FIRST_POLL if moved else min(pause * 2, last)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._someone_waits.wait()

    @property
    def listening(self) -> bool:
        """Whether tickets done, announced, are heard (else they are found by polling only)."""
        return self._book.listening

    def _announced(self) -> None:
        if self._waiters:
            self._someone_waits.set()

    async def _poll(self) -> bool:
        """One look at the keys waited on: wake the waiters whose turn came, release the tickets of
        replicas gone; whether anything moved."""
        rows = await self._book.poll(list(self._waiters), self.lease)
        self.polls += 1
        moved = False
        for key, done, holder, method, gone, *late in rows:
            for need, future in self._waiters.get(key, ()):
                if need <= done and not future.done():
                    future.set_result(late_from(late))
                    moved = True
            if await self._release_gone(key, done, holder, method, gone):
                moved = True
        return moved

    async def _release_gone(self, key: str, done: int, holder: object, method: object, gone: object) -> bool:
        """Release the key's ticket after `done` if another replica holds it and is `gone` (silent past the
        lease), and report the key; whether it was released."""
        if holder is None or holder == self.replica or not gone or not await self._book.release(key, done):
            return False
        _log.warning("ticket of a replica gone released", key=key, replica=holder, method=method)
        if self._on_released is not None:
            self._on_released(key, str(holder), str(method))
        return True
