"""Key aliases: other names of routing keys, learned from answers (`shim.aliases`), per alias kind."""

from __future__ import annotations

from collections.abc import Sequence

from shim.store.engine import Engine

_INSERT = (
    "INSERT INTO key_aliases (kind, alias, key, learned_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (kind, alias) DO UPDATE SET key = excluded.key, learned_at = excluded.learned_at"
)


class StoredAliases:
    """The key aliases of a store (`store.aliases`); an alias learned again takes its latest key."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put(self, aliases: Sequence[tuple[str, str, str, float]]) -> None:
        """Learn aliases (kind, alias, key, learned_at), enqueued."""
        self._engine.enqueue(_INSERT, aliases)

    async def recent(self, limit: int) -> list[tuple[str, str, str]]:
        """Up to `limit` aliases (kind, alias, key), the most recently learned first."""
        rows = await self._engine.select(
            "SELECT kind, alias, key FROM key_aliases ORDER BY learned_at DESC LIMIT ?", (limit,)
        )
        return [(str(kind), str(alias), str(key)) for kind, alias, key in rows]

    async def find(self, kind: str, alias: str) -> str | None:
        """The key of an alias; None when it is not known."""
        rows = await self._engine.select(
            "SELECT key FROM key_aliases WHERE kind = ? AND alias = ?", (kind, alias)
        )
        return str(rows[0][0]) if rows else None
