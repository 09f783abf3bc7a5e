"""The order of each key's mirrored writes across shim replicas sharing a PostgreSQL store.

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
moves `done` past it and reports the key (`on_released`): that write may or may not have reached BK.

Waiting is polling, one query for every key waited on: at once when tickets done are announced (a
NOTIFY on `shim_key_done` by the statement marking them, when the next ticket on a key is another
replica's), else 1 ms at first and twice as long each time up to 25 ms. Only PostgreSQL: SQLite has
one writer and serves one shim.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import structlog

from shim.store._async import Connection, Listener
from shim.store._errors import StoreError
from shim.store._tickets import Asking, Held, Tickets

_log = structlog.get_logger("shim.store.key_order")

_TAKE = """
WITH asked AS (SELECT * FROM unnest(%(keys)s::text[], %(methods)s::text[], %(nth)s::bigint[])
               AS a(key, method, nth)),
counted AS (SELECT key, count(*) AS n FROM asked GROUP BY key),
taken AS (
  INSERT INTO shim_key_order AS o (key, issued, done, last_replica, prev_replica)
  SELECT key, n, 0, %(me)s, '' FROM counted ORDER BY key
  ON CONFLICT (key) DO UPDATE SET issued = o.issued + excluded.issued,
    prev_replica = o.last_replica, last_replica = excluded.last_replica
  RETURNING key, issued, done, prev_replica),
held AS (
  INSERT INTO shim_key_tickets (key, ticket, replica, method)
  SELECT a.key, t.issued - c.n + a.nth, %(me)s, a.method
  FROM asked a JOIN counted c ON c.key = a.key JOIN taken t ON t.key = a.key),
seen AS (  -- where the reads stand on keys no write of theirs raises (as before the statement)
  SELECT key, issued, done, last_replica FROM shim_key_order
  WHERE key = ANY(%(read_keys)s::text[]) AND NOT key = ANY(%(keys)s::text[]))
SELECT key, issued, done, prev_replica FROM taken
UNION ALL SELECT key, issued, done, last_replica FROM seen
"""
CHANNEL = "shim_key_done"
_DONE = f"""
WITH d AS (SELECT * FROM unnest(%(keys)s::text[], %(tickets)s::bigint[]) AS d(key, n)),
gone AS (DELETE FROM shim_key_tickets t USING d WHERE t.key = d.key AND t.ticket <= d.n),
up AS (
  INSERT INTO shim_key_order AS o (key, issued, done, last_replica, prev_replica)
  SELECT key, n, n, '', '' FROM d ORDER BY key
  ON CONFLICT (key) DO UPDATE SET done = GREATEST(o.done, excluded.done)
  RETURNING key, issued, done)
SELECT pg_notify('{CHANNEL}', '') FROM up WHERE up.issued > up.done AND EXISTS (SELECT 1
  FROM shim_key_tickets t WHERE t.key = up.key AND t.ticket = up.done + 1 AND t.replica <> %(me)s) LIMIT 1
"""
_POLL = """
SELECT o.key, o.done, t.replica, t.method,
  (h.seen IS NULL OR h.seen < extract(epoch from clock_timestamp()) - %(lease)s) FROM shim_key_order o
LEFT JOIN shim_key_tickets t ON t.key = o.key AND t.ticket = o.done + 1
LEFT JOIN shim_replicas h ON h.replica = t.replica
WHERE o.key = ANY(%(keys)s::text[])
"""
_RELEASE = """
WITH r AS (UPDATE shim_key_order SET done = done + 1 WHERE key = %(key)s AND done = %(done)s
           RETURNING key, done)
DELETE FROM shim_key_tickets t USING r WHERE t.key = r.key AND t.ticket = r.done RETURNING t.ticket
"""
_FIRST_POLL, _LAST_POLL = 0.001, 0.025
# commits not waited for on disk: a write's tickets must come back before its primary's answer goes out
# (a crash of PostgreSQL itself may then lose the last moments of tickets: see docs/fleet-order.md)
_SETTINGS = "SET synchronous_commit = off"

Released = Callable[[str, str, str], None]  # key, the replica that held the ticket, its write's method


class KeyOrder:
    """This replica's tickets and waits. `start()`, then `take`, `wait`; `close()` at the end. The replica's
    heartbeat is written apart (`shim.liveness`), from before `start` until after `close`."""

    def __init__(self, url: str, replica: str, lease: float, on_released: Released | None = None) -> None:
        self.replica = replica
        self.lease = lease
        self._on_released = on_released
        self._taker = Connection(url, "shim-key-order", _SETTINGS)  # tickets only, in the lanes' order
        self._other = Connection(url, "shim-key-done", _SETTINGS)  # done, and waits
        self._asked: list[Tickets] = []
        self._ask = asyncio.Event()
        self._done: dict[str, int] = {}  # tickets done, not yet written: key -> the highest
        self._finished = asyncio.Event()
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self._someone_waits = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._in_turns: set[asyncio.Task[None]] = set()  # tickets waiting for their turn to be done
        self._behind: dict[str, int] = {}  # of those, how many on each key
        self.polls = 0  # looks at the keys waited on, so far
        self._listener = Listener(url, "shim-key-listen", CHANNEL, self._announced)  # tickets done, announced

    async def start(self) -> None:
        """Connect (StoreError if the store cannot be reached), then serve."""
        await self._taker.run("SELECT 1", {})
        await self._other.run("SELECT 1", {})
        loop = asyncio.get_running_loop()
        for work, name in (
            (self._taking, "key order: tickets"),
            (self._finishing, "key order: done"),
            (self._polling, "key order: waits"),
            (self._listener.run, "key order: done announced"),
        ):
            self._tasks.append(loop.create_task(work(), name=name))

    async def close(self) -> None:
        """Write the tickets done so far and close (the tickets still held are released once the
        replica's heartbeat is removed, or its lease passes)."""
        for task in [*self._tasks, *self._in_turns]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(StoreError):
            await self.flush()
        await self._taker.close()
        await self._other.close()

    async def position(self, key: str) -> tuple[int, int]:
        """The key's tickets (issued, done) so far, (0, 0) for a key never written: a write on it is under
        way through some replica while issued > done (StoreError if the store cannot be read)."""
        rows = await self._other.run(
            "SELECT issued, done FROM shim_key_order WHERE key = %(key)s", {"key": key}
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def take(self, keys: Sequence[str], method: str, read: bool = False) -> Tickets:
        """Tickets on `keys` for one write, asked for now (issued in the order asked); `read`: where a read
        stands on them instead (the last tickets issued before it, which it waits for), in the same order."""
        tickets = Tickets(tuple(dict.fromkeys(keys)), method, self._finish, read)
        self._asked.append(tickets)
        self._ask.set()
        return tickets

    async def wait(self, held: Held, always: bool = False) -> None:
        """Until the key's tickets before `held` are done (or released); `always`: also when the ticket
        before was this replica's own."""
        if not held.wait and not always:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(held.key, []).append((held.ticket - 1, future))
        self._someone_waits.set()
        await future

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
            tickets.release()
        finally:
            for key in tickets.keys:
                self._behind[key] -= 1
                if not self._behind[key]:
                    del self._behind[key]

    # -- the tasks -------------------------------------------------------------------------------------

    async def _taking(self) -> None:
        while True:
            await self._ask.wait()
            self._ask.clear()
            asked, self._asked = self._asked, []
            asking = Asking(asked)
            try:
                rows = await self._taker.run(_TAKE, {**asking.params(), "me": self.replica})
            except StoreError as exc:
                for tickets in asked:
                    tickets._issued((), str(exc))
                continue
            asking.issue(rows, self.replica)

    def _finish(self, held: tuple[Held, ...]) -> None:
        for one in held:
            self._done[one.key] = max(self._done.get(one.key, 0), one.ticket)
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
        done, self._done = self._done, {}
        try:
            await self._other.run(
                _DONE, {"keys": list(done), "tickets": list(done.values()), "me": self.replica}
            )
        except StoreError:
            for key, ticket in done.items():
                self._done[key] = max(self._done.get(key, 0), ticket)
            raise
        if any(key in self._waiters for key in done):
            self._someone_waits.set()

    async def _polling(self) -> None:
        pause = _FIRST_POLL
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
            pause = _FIRST_POLL if moved else min(pause * 2, _LAST_POLL)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._someone_waits.wait()

    @property
    def listening(self) -> bool:
        """Whether tickets done, announced, are heard (else they are found by polling only)."""
        return self._listener.listening

    def _announced(self) -> None:
        if self._waiters:
            self._someone_waits.set()

    async def _poll(self) -> bool:
        """One look at the keys waited on: wake the waiters whose turn came, release the tickets of
        replicas gone; whether anything moved."""
        rows = await self._other.run(_POLL, {"keys": list(self._waiters), "lease": self.lease})
        self.polls += 1
        moved = False
        for key, done, holder, method, gone in rows:
            for need, future in self._waiters.get(key, ()):
                if need <= done and not future.done():
                    future.set_result(None)
                    moved = True
            if holder is not None and holder != self.replica and gone:
                released = await self._other.run(_RELEASE, {"key": key, "done": done})
                if released:
                    moved = True
                    _log.warning("ticket of a replica gone released", key=key, replica=holder, method=method)
                    if self._on_released is not None:
                        self._on_released(key, str(holder), str(method))
        return moved
