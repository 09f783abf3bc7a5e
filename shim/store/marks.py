"""Keys out of step, and the checks of them: what `shim.steps` and `shim.verify` keep in the store.

A mark says a write on a routing key reached one side only, with the earliest such write and the replica
that saw it: a key keeps its earliest mark. A mark is cleared once the key is verified in step (`clear`)
or resynced (`resync`). Every check of a key (a verification) is kept, with its result and the
differences found.
"""

from __future__ import annotations

from collections.abc import Sequence

from shim.store._jobs import Write
from shim.store.backends import Db
from shim.store.engine import Engine, chunks, placeholders
from shim.store.records import OutOfStep

_INSERT_MARK = (
    "INSERT INTO out_of_step (key, since, method, reason, replica) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET since = excluded.since, method = excluded.method,"
    " reason = excluded.reason, replica = excluded.replica WHERE excluded.since < out_of_step.since"
)
_INSERT_VERIFICATION = (
    "INSERT INTO verifications (id, at, replica, key, since, method, reason, result, detail)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class StoredMarks:
    """The keys out of step of a store, and their verifications (`store.marks`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put(self, marks: Sequence[OutOfStep]) -> None:
        """Mark keys out of step (enqueued); a key keeps its earliest mark."""
        rows = [(m.key, m.since, m.method, m.reason, m.replica) for m in marks]
        self._engine.put(Write(_INSERT_MARK, rows, keys=[m.key for m in marks]))

    async def out_of_step(self) -> list[OutOfStep]:
        """Every key out of step, ordered by key, with the replica that marked it."""
        rows = await self._engine.select(
            "SELECT key, since, method, reason, replica FROM out_of_step ORDER BY key"
        )
        return [OutOfStep(*row) for row in rows]

    async def clear(self, key: str, since: float) -> bool:
        """Clear one key's mark if it is still the one made at `since` (a later, earlier-dated mark from
        another replica stays); True when it was cleared."""
        sql = "DELETE FROM out_of_step WHERE key = ? AND since = ? RETURNING key"
        return bool(await self._engine.execute(sql, (key, since)))

    async def resync(self, keys: Sequence[str]) -> list[str]:
        """Clear the marks of `keys`; returns those of them that were out of step, in their order."""
        if not keys:
            return []

        def delete(db: Db) -> list[str]:
            gone: set[str] = set()
            for chunk in chunks(keys):
                sql = f"DELETE FROM out_of_step WHERE key IN ({placeholders(len(chunk))}) RETURNING key"
                gone.update(row[0] for row in db.run(sql, chunk))
            return [key for key in dict.fromkeys(keys) if key in gone]

        return await self._engine.transaction(delete, write=True)

    def put_verification(
        self, id: str, at: float, replica: str, key: str, mark: OutOfStep, result: str, detail: str
    ) -> None:
        """Keep one check of a key out of step (enqueued): when, by which replica, of which mark, what
        it found (`result`), and the differences or why it was inconclusive (`detail`)."""
        row = (id, at, replica, key, mark.since, mark.method, mark.reason, result, detail)
        self._engine.enqueue(_INSERT_VERIFICATION, [row])

    async def last_verifications(self) -> dict[str, tuple[float, str, str]]:
        """The latest verification of each key: key -> (at, result, detail)."""
        rows = await self._engine.select(
            "SELECT v.key, v.at, v.result, v.detail FROM verifications v"
            " JOIN (SELECT key, MAX(at) AS at FROM verifications GROUP BY key) latest"
            " ON latest.key = v.key AND latest.at = v.at"
        )
        return {str(key): (float(at), str(result), str(detail)) for key, at, result, detail in rows}
