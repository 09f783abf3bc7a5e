"""What judged the comparisons: each change of the settings that decide a verdict (the rules, the ids'
settings), by fingerprint. The gate judges the evidence after the latest (`shim.gate.evidence_since`): a
match a rule made proves nothing once that rule is withdrawn or loosened."""

from __future__ import annotations

import secrets

from shim.store.backends import Db
from shim.store.engine import Engine

_LATEST = "SELECT at, fingerprint FROM judging_changes ORDER BY at DESC, id LIMIT 1"


class StoredJudging:
    """The fingerprints of what judged the comparisons, as they changed (`store.judging`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def judged_by(self, fingerprint: str, replica: str, at: float) -> bool:
        """Say that `replica` judges comparisons by `fingerprint` from `at` on: recorded when it is not the
        latest recorded (True), so the evidence before it is not judged. The first one a store is told of is
        taken as in force from the start: the evidence before it is judged as before."""

        latest = await self._engine.select(_LATEST)  # said again every refresh: a read, mostly
        if latest and latest[0][1] == fingerprint:
            return False

        def write(db: Db) -> bool:
            latest = db.run(_LATEST)
            if latest and latest[0][1] == fingerprint:
                return False
            row = (secrets.token_hex(16), at if latest else 0.0, fingerprint, replica)
            db.run("INSERT INTO judging_changes (id, at, fingerprint, replica) VALUES (?, ?, ?, ?)", row)
            return bool(latest)

        return await self._engine.transaction(write, write=True)

    async def changed(self) -> tuple[float, str] | None:
        """When the latest change was recorded, and by which replica (None: none since the first)."""
        rows = await self._engine.select(
            "SELECT at, replica FROM judging_changes WHERE at > 0 ORDER BY at DESC, id LIMIT 1", ()
        )
        return (float(rows[0][0]), str(rows[0][1])) if rows else None
