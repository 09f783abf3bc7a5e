"""Key aliases: other names of routing keys, learned from answers (`shim.aliases`), per alias kind.

The aliases of a kind whose fields are redacted, or of every kind when routing keys are hashed, are
stored sealed (`seal_with`, `shim.store._sealing`), as the ids of redacted fields are: the methods here
take and give aliases and keys as they are, and the store holds both sealed. A row sealed under another
key is left out and counted (`unopened`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from shim.store._sealing import SealedRows, Unopened
from shim.store.backends import Db
from shim.store.engine import Engine

_INSERT = (
    "INSERT INTO key_aliases (kind, alias, key, learned_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (kind, alias) DO UPDATE SET key = excluded.key, learned_at = excluded.learned_at"
)
_UNSEALED = (  # shim.store._sealing.PREFIX
    "SELECT alias, key, learned_at FROM key_aliases"
    " WHERE kind = ? AND (alias NOT LIKE 'sealed:%' OR key NOT LIKE 'sealed:%')"
)


class StoredAliases(SealedRows):
    """The key aliases of a store (`store.aliases`); an alias learned again takes its latest key."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)

    def put(self, aliases: Sequence[tuple[str, str, str, float]]) -> None:
        """Learn aliases (kind, alias, key, learned_at), enqueued."""
        seal = self._seal
        self._engine.enqueue(
            _INSERT, [(k, seal(k, alias), seal(k, key), at) for k, alias, key, at in aliases]
        )

    async def recent(self, limit: int) -> list[tuple[str, str, str]]:
        """Up to `limit` aliases (kind, alias, key), the most recently learned first."""
        rows = await self._engine.select(
            "SELECT kind, alias, key FROM key_aliases ORDER BY learned_at DESC LIMIT ?", (limit,)
        )
        found = []
        for kind, alias, key in rows:
            try:
                found.append((str(kind), self._open(kind, str(alias)), self._open(kind, str(key))))
            except Unopened:
                self.unopened += 1
        return found

    async def find(self, kind: str, alias: str) -> str | None:
        """The key of an alias; None when it is not known (or does not open)."""
        rows = await self._engine.select(
            "SELECT key FROM key_aliases WHERE kind = ? AND alias = ?", (kind, self._seal(kind, alias))
        )
        try:
            return self._open(kind, str(rows[0][0])) if rows else None
        except Unopened:
            self.unopened += 1
            return None

    def _seal_rows(self, db: Db, kind: str, seal: Callable[[str, str], str]) -> int:
        rows = db.run(_UNSEALED, (kind,))
        for alias, key, at in rows:
            db.run("DELETE FROM key_aliases WHERE kind = ? AND alias = ?", (kind, alias))
            db.run(_INSERT, (kind, seal(kind, alias), seal(kind, key), at))
        return len(rows)
