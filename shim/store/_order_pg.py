"""The keys' tickets in PostgreSQL (`key_order.py`): each step one statement on a connection of the
event loop's own, and tickets done announced to the replicas waiting (NOTIFY on `shim_key_done`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shim.store._async import Connection, Listener
from shim.store._tickets import LATE_COLUMNS, NOT_LATE, Late

_LATE = ", ".join(LATE_COLUMNS)
_TAKE = f"""
WITH asked AS (SELECT * FROM unnest(%(keys)s::text[], %(methods)s::text[], %(nth)s::bigint[],
                                   %(starts)s::float8[]) AS a(key, method, nth, start)),
counted AS (SELECT key, count(*) AS n, max(start) AS s FROM asked GROUP BY key),
taken AS (
  INSERT INTO shim_key_order AS o (key, issued, done, last_replica, prev_replica, started, prev_started)
  SELECT key, n, 0, %(me)s, '', s, 0 FROM counted ORDER BY key
  ON CONFLICT (key) DO UPDATE SET issued = o.issued + excluded.issued,
    prev_replica = o.last_replica, last_replica = excluded.last_replica,
    prev_started = o.started, started = GREATEST(o.started, excluded.started)
  RETURNING key, issued, done, prev_replica, prev_started, {_LATE}),
held AS (
  INSERT INTO shim_key_tickets (key, ticket, replica, method)
  SELECT a.key, t.issued - c.n + a.nth, %(me)s, a.method
  FROM asked a JOIN counted c ON c.key = a.key JOIN taken t ON t.key = a.key),
starts AS (
  INSERT INTO shim_key_starts (key, ticket, started)
  SELECT a.key, t.issued - c.n + a.nth, a.start
  FROM asked a JOIN counted c ON c.key = a.key JOIN taken t ON t.key = a.key
  ON CONFLICT DO NOTHING),
seen AS (  -- where the reads stand on keys no write of theirs raises (as before the statement)
  SELECT key, issued, done, last_replica, started, {_LATE} FROM shim_key_order
  WHERE key = ANY(%(read_keys)s::text[]) AND NOT key = ANY(%(keys)s::text[]))
SELECT key, issued, done, prev_replica, prev_started, {_LATE} FROM taken
UNION ALL SELECT key, issued, done, last_replica, started, {_LATE} FROM seen
"""
CHANNEL = "shim_key_done"
_DONE = f"""
WITH d AS (SELECT * FROM unnest(%(keys)s::text[], %(tickets)s::bigint[],
                                {", ".join(f"%({c})s::float8[]" for c in LATE_COLUMNS)})
           AS d(key, n, {_LATE})),
gone AS (DELETE FROM shim_key_tickets t USING d WHERE t.key = d.key AND t.ticket <= d.n),
up AS (
  INSERT INTO shim_key_order AS o (key, issued, done, last_replica, prev_replica, {_LATE})
  SELECT key, n, n, '', '', {_LATE} FROM d ORDER BY key
  ON CONFLICT (key) DO UPDATE SET done = GREATEST(o.done, excluded.done),
    {", ".join(f"{c} = GREATEST(o.{c}, excluded.{c})" for c in LATE_COLUMNS)}
  RETURNING key, issued, done)
SELECT pg_notify('{CHANNEL}', '') FROM up WHERE up.issued > up.done AND EXISTS (SELECT 1
  FROM shim_key_tickets t WHERE t.key = up.key AND t.ticket = up.done + 1 AND t.replica <> %(me)s) LIMIT 1
"""
_POLL = f"""
SELECT o.key, o.done, t.replica, t.method,
  (h.seen IS NULL OR h.seen < extract(epoch from clock_timestamp()) - %(lease)s),
  {", ".join(f"o.{c}" for c in LATE_COLUMNS)}
FROM shim_key_order o
LEFT JOIN shim_key_tickets t ON t.key = o.key AND t.ticket = o.done + 1
LEFT JOIN shim_replicas h ON h.replica = t.replica
WHERE o.key = ANY(%(keys)s::text[])
"""
_POSITION = """
SELECT o.issued, o.done, t.replica, t.method,
  (h.seen IS NULL OR h.seen < extract(epoch from clock_timestamp()) - %(lease)s)
FROM shim_key_order o
LEFT JOIN shim_key_tickets t ON t.key = o.key AND t.ticket = o.done + 1
LEFT JOIN shim_replicas h ON h.replica = t.replica
WHERE o.key = %(key)s
"""
_RELEASE = """
WITH r AS (UPDATE shim_key_order SET done = done + 1 WHERE key = %(key)s AND done = %(done)s
           RETURNING key, done)
DELETE FROM shim_key_tickets t USING r WHERE t.key = r.key AND t.ticket = r.done RETURNING t.ticket
"""
_RACED = """
SELECT EXISTS (SELECT 1 FROM shim_key_starts s
  JOIN unnest(%(keys)s::text[], %(places)s::bigint[]) AS q(key, place) ON s.key = q.key
  WHERE s.ticket > q.place AND s.started < %(before)s)
"""
# commits not waited for on disk: a write's tickets must come back before its primary's answer goes out
# (a crash of PostgreSQL itself may then lose the last moments of tickets: see docs/fleet-order.md)
_SETTINGS = "SET synchronous_commit = off"


class PostgresTickets:
    """The statements of `key_order.KeyOrder` on PostgreSQL: tickets on one connection (so one replica's
    are taken in the order it asks), the rest on another; `announced()` at each tickets done announced."""

    announces = True  # tickets done are announced: polls may be far apart

    def __init__(self, url: str, replica: str, announced: Callable[[], None]) -> None:
        self._me = replica
        self._taker = Connection(url, "shim-key-order", _SETTINGS)
        self._other = Connection(url, "shim-key-done", _SETTINGS)
        self.listener = Listener(url, "shim-key-listen", CHANNEL, announced)

    async def start(self) -> None:
        await self._taker.run("SELECT 1", {})
        await self._other.run("SELECT 1", {})

    async def abort(self) -> None:
        """The statements under way end at once (their connections closed outright); the next opens anew."""
        await self.close()

    async def close(self) -> None:
        await self._taker.close()
        await self._other.close()

    @property
    def listening(self) -> bool:
        return self.listener.listening

    async def take(self, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """(key, issued, done, the replica of the last ticket before, the latest start before, the most
        lateness of the writes done on it, by band: `Late`) per key asked (see `Asking`)."""
        return await self._taker.run(_TAKE, {**params, "me": self._me})

    async def done(self, done: dict[str, int], late: dict[str, Late]) -> None:
        """Each key's tickets up to its number are done, by writes that went up to `late` late."""
        keys = list(done)
        lates = [late.get(key, NOT_LATE) for key in keys]
        columns = {column: [one[i] for one in lates] for i, column in enumerate(LATE_COLUMNS)}
        await self._other.run(
            _DONE, {"keys": keys, "tickets": list(done.values()), "me": self._me, **columns}
        )

    async def poll(self, keys: list[str], lease: float) -> list[tuple[Any, ...]]:
        """(key, done, holder of done + 1, its method, whether its holder is silent past `lease`, the most
        lateness of the writes done on it, by band: `Late`)."""
        return await self._other.run(_POLL, {"keys": keys, "lease": lease})

    async def release(self, key: str, done: int) -> bool:
        """Move the key's done past ticket done + 1 if done is still `done`: whether it moved."""
        return bool(await self._other.run(_RELEASE, {"key": key, "done": done}))

    async def mine(self) -> list[tuple[Any, ...]]:
        """(key, ticket, method) of every ticket this replica holds, not yet done; on the tickets' connection,
        so that none of this replica's ticket statements is under way meanwhile."""
        return await self._taker.run(
            "SELECT key, ticket, method FROM shim_key_tickets WHERE replica = %(me)s", {"me": self._me}
        )

    async def position(self, key: str, lease: float) -> list[tuple[Any, ...]]:
        """(issued, done, holder of done + 1, its method, whether its holder is silent past `lease`)."""
        return await self._other.run(_POSITION, {"key": key, "lease": lease})

    async def raced(self, places: dict[str, int], before: float) -> bool:
        """Whether a write whose ticket on a key comes after the place given (the key: the last ticket before)
        started before `before`."""
        params = {"keys": list(places), "places": list(places.values()), "before": before}
        return bool((await self._other.run(_RACED, params))[0][0])

    async def forget_starts(self, before: float) -> None:
        """The writes' starts from before `before` are forgotten."""
        await self._other.run("DELETE FROM shim_key_starts WHERE started < %(before)s", {"before": before})
