"""The builds of BK declared in service (`shim bk-build`): the gate judges the evidence after the latest."""

from __future__ import annotations

import secrets

from shim.store.engine import Engine
from shim.store.records import BkBuild

_COLUMNS = "at, build, who, reason"


class StoredBuilds:
    """The builds of BK a store was told of, in the order they were declared (`store.builds`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def declare(self, build: BkBuild) -> None:
        """Record that BK runs `build` from `build.at` on (committed before it returns)."""
        sql = f"INSERT INTO bk_builds (id, {_COLUMNS}) VALUES (?, ?, ?, ?, ?)"
        row = (secrets.token_hex(16), build.at, build.build, build.who, build.reason)
        await self._engine.transaction(lambda db: db.run(sql, row), write=True)

    async def in_service(self, at: float) -> BkBuild | None:
        """The build declared latest at or before `at`; None when none was."""
        sql = f"SELECT {_COLUMNS} FROM bk_builds WHERE at <= ? ORDER BY at DESC, id LIMIT 1"
        rows = await self._engine.select(sql, (at,))
        return BkBuild(rows[0][0], rows[0][1], rows[0][2], rows[0][3]) if rows else None

    async def history(self, limit: int = 100) -> list[BkBuild]:
        """The latest builds declared, newest first."""
        sql = f"SELECT {_COLUMNS} FROM bk_builds ORDER BY at DESC, id LIMIT ?"
        rows = await self._engine.select(sql, (limit,))
        return [BkBuild(row[0], row[1], row[2], row[3]) for row in rows]
