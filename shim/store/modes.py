"""The modes set at run time, by scope ("*": the default; else a method), and their audited history."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from shim.store.backends import Db
from shim.store.engine import Engine
from shim.store.records import ModeChange

_SET_MODE = (
    "INSERT INTO modes (scope, mode, at) VALUES (?, ?, ?)"
    " ON CONFLICT (scope) DO UPDATE SET mode = excluded.mode, at = excluded.at"
)
_INSERT_CHANGE = (
    "INSERT INTO mode_changes (id, at, who, scope, from_mode, to_mode, reason, forced)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


class StoredModes:
    """The modes of a store, which every replica follows, and the changes made (`store.modes`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def current(self) -> dict[str, str]:
        """The modes set at run time, by scope."""
        return dict(await self._engine.select("SELECT scope, mode FROM modes"))

    async def change(self, changes: Sequence[ModeChange]) -> None:
        """Set the modes and record the changes, in one transaction (every replica reads them)."""
        await self._engine.transaction(lambda db: write_changes(db, changes), write=True)

    async def started(self, change: ModeChange) -> None:
        """Record a mode a shim started in by its config, no mode being set at run time for the scope: the
        history says so (the gate's evidence starts at a stretch in `bank` mode begun so), and the config
        keeps deciding at the next start."""

        def write(db: Db) -> None:
            # another process of the same start (`--workers`) may have recorded it since this one looked
            last = db.run(
                "SELECT to_mode FROM mode_changes WHERE scope = ? ORDER BY at DESC, id LIMIT 1",
                (change.scope,),
            )
            if not last or last[0][0] != change.to_mode:
                db.run(_INSERT_CHANGE, _change_row(change))

        await self._engine.transaction(write, write=True)

    async def last_change_with(self, mode: str, until: float) -> float | None:
        """When a scope last went into or out of `mode`, at or before `until` (None: never)."""
        sql = "SELECT MAX(at) FROM mode_changes WHERE (from_mode = ? OR to_mode = ?) AND at <= ?"
        ((at,),) = await self._engine.select(sql, (mode, mode, until))
        return None if at is None else float(at)

    async def history(self, limit: int = 100) -> list[ModeChange]:
        """The latest mode changes, newest first."""
        sql = (
            "SELECT at, who, scope, from_mode, to_mode, reason, forced FROM mode_changes"
            " ORDER BY at DESC, id LIMIT ?"
        )
        rows = await self._engine.select(sql, (limit,))
        return [ModeChange(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6])) for row in rows]


def write_changes(db: Db, changes: Sequence[ModeChange]) -> None:
    """Set the modes and record the changes, within the caller's transaction."""
    for change in changes:
        db.run(_SET_MODE, (change.scope, change.to_mode, change.at))
        db.run(_INSERT_CHANGE, _change_row(change))


def _change_row(change: ModeChange) -> tuple[object, ...]:
    return (
        secrets.token_hex(16),
        change.at,
        change.who,
        change.scope,
        change.from_mode,
        change.to_mode,
        change.reason,
        int(change.forced),
    )
