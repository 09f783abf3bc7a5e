"""Keys out of step, and the checks of them: what `shim.steps` and `shim.verify` keep in the store.

A mark says a write on a routing key reached one side only, with the earliest such write and the replica
that saw it: a key keeps its earliest mark. It says whose id the key is (`side`): marks of both sides' ids
of one text (where the id spaces overlap) share the key's row, which then says neither (""). Every mark put
on a key raises the key's *generation*, even one that leaves the key its earlier mark. A mark is cleared
once the key is verified in step (`clear`: only if no mark was put on the key since its generation was
read, before the check, and the check read the key as the side the mark says) or resynced (`resync`).
Every check of a key (a verification) is kept, with its result and the differences found.
"""

from __future__ import annotations

from collections.abc import Sequence

from shim.store._jobs import Write
from shim.store.backends import Db
from shim.store.engine import Engine, chunks, placeholders
from shim.store.records import OutOfStep

_KEPT = "CASE WHEN excluded.since < out_of_step.since THEN excluded.{0} ELSE out_of_step.{0} END"
_INSERT_MARK = (
    "INSERT INTO out_of_step (key, since, method, reason, replica, side, gen) VALUES (?, ?, ?, ?, ?, ?, 1)"
    " ON CONFLICT (key) DO UPDATE SET gen = out_of_step.gen + 1,"
    " side = CASE WHEN excluded.side = out_of_step.side THEN out_of_step.side ELSE '' END, "
    + ", ".join(f"{column} = {_KEPT.format(column)}" for column in ("since", "method", "reason", "replica"))
)
_COLUMNS = "key, since, method, reason, replica, side"
_INSERT_VERIFICATION = (
    "INSERT INTO verifications (id, at, replica, key, since, method, reason, result, detail)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class StoredMarks:
    """The keys out of step of a store, and their verifications (`store.marks`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put(self, marks: Sequence[OutOfStep]) -> None:
        """Mark keys out of step (enqueued); a key keeps its earliest mark, and the side of its marks ("" once
        they are of both sides), and each put raises its generation."""
        rows = [(m.key, m.since, m.method, m.reason, m.replica, m.side) for m in marks]
        self._engine.put(Write(_INSERT_MARK, rows, keys=[m.key for m in marks]))

    async def out_of_step(self) -> list[OutOfStep]:
        """Every key out of step, ordered by key, with the replica that marked it."""
        rows = await self._engine.select(f"SELECT {_COLUMNS} FROM out_of_step ORDER BY key")
        return [OutOfStep(*row) for row in rows]

    async def marked(self, keys: Sequence[str]) -> dict[str, tuple[OutOfStep, int]]:
        """The marks of those of `keys` that are out of step, each with its generation (for `clear`)."""

        def read(db: Db) -> dict[str, tuple[OutOfStep, int]]:
            found: dict[str, tuple[OutOfStep, int]] = {}
            for chunk in chunks(keys):
                sql = f"SELECT {_COLUMNS}, gen FROM out_of_step WHERE key IN ({placeholders(len(chunk))})"
                for *row, gen in db.run(sql, chunk):
                    found[str(row[0])] = (OutOfStep(*row), int(gen))
            return {key: found[key] for key in dict.fromkeys(keys) if key in found}

        return await self._engine.transaction(read, write=False) if keys else {}

    async def clear(self, key: str, since: float, generation: int, side: str | None = None) -> bool:
        """Clear one key's mark if it is still the one made at `since`, of `generation` (as `marked` read it
        before the key was checked), and, with `side`, says the key is that side's id (as the check read it):
        a mark put on the key meanwhile by any replica, earlier or later, keeps it. True when it was
        cleared."""
        sql = "DELETE FROM out_of_step WHERE key = ? AND since = ? AND gen = ?"
        params: tuple[object, ...] = (key, since, generation)
        if side is not None:
            sql, params = sql + " AND side = ?", (*params, side)
        return bool(await self._engine.execute(sql + " RETURNING key", params))

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
