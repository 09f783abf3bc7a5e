"""The keys' tickets in a SQLite file (`key_order.py`), for the processes of one machine that share it:
the workers of `shim serve --workers N`. Each step is one transaction on a connection of its own (tickets
on one, the rest on another), under SQLite's one write lock. Nothing is announced: a replica waiting
looks again every few milliseconds."""

from __future__ import annotations

from collections import Counter
from typing import Any

from shim.store._tickets import LATE_COLUMNS, NOT_LATE, Late
from shim.store.backends import Db
from shim.store.engine import Engine, chunks, placeholders

_LATE = ", ".join(LATE_COLUMNS)
_TAKE = (
    "INSERT INTO shim_key_order (key, issued, done, last_replica, prev_replica, started, prev_started)"
    " VALUES (?, ?, 0, ?, '', ?, 0)"
    " ON CONFLICT (key) DO UPDATE SET issued = issued + excluded.issued, prev_replica = last_replica,"
    " last_replica = excluded.last_replica, prev_started = started, started = MAX(started, excluded.started)"
    f" RETURNING key, issued, done, prev_replica, prev_started, {_LATE}"
)
_HOLD = "INSERT INTO shim_key_tickets (key, ticket, replica, method) VALUES (?, ?, ?, ?)"
_START = "INSERT INTO shim_key_starts (key, ticket, started) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
_RACED = "SELECT 1 FROM shim_key_starts WHERE key = ? AND ticket > ? AND started < ? LIMIT 1"
_SEEN = f"SELECT key, issued, done, last_replica, started, {_LATE} FROM shim_key_order WHERE key IN ({{}})"
_GONE = "DELETE FROM shim_key_tickets WHERE key = ? AND ticket <= ?"
_DONE = (
    f"INSERT INTO shim_key_order (key, issued, done, last_replica, prev_replica, {_LATE})"
    f" VALUES (?, ?, ?, '', ''{', ?' * len(LATE_COLUMNS)})"
    " ON CONFLICT (key) DO UPDATE SET done = MAX(done, excluded.done), "
    + ", ".join(f"{c} = MAX({c}, excluded.{c})" for c in LATE_COLUMNS)
)
_POLL = (
    "SELECT o.key, o.done, t.replica, t.method, (h.seen IS NULL OR h.seen < {now} - ?), "
    + ", ".join(f"o.{c}" for c in LATE_COLUMNS)
    + " FROM shim_key_order o LEFT JOIN shim_key_tickets t ON t.key = o.key AND t.ticket = o.done + 1"
    " LEFT JOIN shim_replicas h ON h.replica = t.replica WHERE o.key IN ({keys})"
)
_POSITION = (
    "SELECT o.issued, o.done, t.replica, t.method, (h.seen IS NULL OR h.seen < {now} - ?)"
    " FROM shim_key_order o LEFT JOIN shim_key_tickets t ON t.key = o.key AND t.ticket = o.done + 1"
    " LEFT JOIN shim_replicas h ON h.replica = t.replica WHERE o.key = ?"
)
_RELEASE = "UPDATE shim_key_order SET done = done + 1 WHERE key = ? AND done = ? RETURNING done"


class SqliteTickets:
    """The statements of `key_order.KeyOrder` on a SQLite file (see `PostgresTickets`)."""

    announces = False  # tickets done are found by looking
    listener = None
    listening = False

    def __init__(self, url: str, replica: str) -> None:
        self._me = replica
        self._taker = Engine.open(url)
        self._other = Engine.open(url)

    async def start(self) -> None:
        await self._taker.start()
        await self._other.start()

    async def abort(self) -> None:
        """Nothing to cut: each statement runs on a worker thread, which a cancelled wait leaves behind."""

    async def close(self) -> None:
        await self._taker.close(within=1.0)
        await self._other.close(within=1.0)

    async def take(self, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        keys: list[str] = params["keys"]
        counted = Counter(keys)
        started: dict[str, float] = {}
        for key, start in zip(keys, params["starts"], strict=True):
            started[key] = max(started.get(key, 0.0), start)
        me = self._me

        def work(db: Db) -> list[tuple[Any, ...]]:
            rows = [
                row for key in sorted(counted) for row in db.run(_TAKE, (key, counted[key], me, started[key]))
            ]
            issued = {str(row[0]): int(row[1]) for row in rows}
            db.run_many(
                _HOLD,
                [
                    (key, issued[key] - counted[key] + nth, me, method)
                    for key, method, nth in zip(keys, params["methods"], params["nth"], strict=True)
                ],
            )
            db.run_many(
                _START,
                [
                    (key, issued[key] - counted[key] + nth, start)
                    for key, nth, start in zip(keys, params["nth"], params["starts"], strict=True)
                ],
            )
            for part in chunks([key for key in params["read_keys"] if key not in counted]):
                rows += db.run(_SEEN.format(placeholders(len(part))), part)
            return rows

        return await self._taker.transaction(work, write=True)

    async def done(self, done: dict[str, int], late: dict[str, Late]) -> None:
        def work(db: Db) -> None:
            for key, ticket in sorted(done.items()):
                db.run(_GONE, (key, ticket))
                db.run(_DONE, (key, ticket, ticket, *late.get(key, NOT_LATE)))

        await self._other.transaction(work, write=True)

    async def poll(self, keys: list[str], lease: float) -> list[tuple[Any, ...]]:
        def work(db: Db) -> list[tuple[Any, ...]]:
            return [
                row
                for part in chunks(keys)
                for row in db.run(_POLL.format(now=db.NOW, keys=placeholders(len(part))), (lease, *part))
            ]

        return await self._other.transaction(work, write=False)

    async def release(self, key: str, done: int) -> bool:
        def work(db: Db) -> bool:
            moved = db.run(_RELEASE, (key, done))
            if moved:
                db.run("DELETE FROM shim_key_tickets WHERE key = ? AND ticket = ?", (key, moved[0][0]))
            return bool(moved)

        return await self._other.transaction(work, write=True)

    async def mine(self) -> list[tuple[Any, ...]]:
        """(key, ticket, method) of every ticket this replica holds, not yet done (see `PostgresTickets`)."""
        return await self._taker.select(
            "SELECT key, ticket, method FROM shim_key_tickets WHERE replica = ?", (self._me,)
        )

    async def position(self, key: str, lease: float) -> list[tuple[Any, ...]]:
        def work(db: Db) -> list[tuple[Any, ...]]:
            return db.run(_POSITION.format(now=db.NOW), (lease, key))

        return await self._other.transaction(work, write=False)

    async def raced(self, places: dict[str, int], before: float) -> bool:
        def work(db: Db) -> bool:
            return any(db.run(_RACED, (key, place, before)) for key, place in places.items())

        return await self._other.transaction(work, write=False)

    async def forget_starts(self, before: float) -> None:
        await self._other.transaction(
            lambda db: db.run("DELETE FROM shim_key_starts WHERE started < ?", (before,)), write=True
        )
