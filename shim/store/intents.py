"""Intents: mirrored writes sent and not yet judged (`shim.intents`); what a crash leaves here puts its
keys out of step. A write's keys are kept as a JSON list."""

from __future__ import annotations

import json

from shim.store.backends import Db
from shim.store.engine import Engine
from shim.store.records import Intent

_INSERT = (
    "INSERT INTO intents (id, at, replica, method, keys) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET keys = excluded.keys"
)


class StoredIntents:
    """The intents of a store, every replica's (`store.intents`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def put(self, intent: Intent) -> None:
        """Write the intent down, committed before this returns (StoreError when it is not: the store
        locked, unreachable, full or read-only keeps it for another try, but the caller cannot count on
        it)."""
        row = (intent.id, intent.at, intent.replica, intent.method, json.dumps(list(intent.keys)))
        await self._engine.write_committed(_INSERT, [row])

    def delete(self, intent_id: str) -> None:
        """Forget an intent (committed with the next batch)."""
        self._engine.enqueue("DELETE FROM intents WHERE id = ?", [(intent_id,)])

    async def all(self) -> list[Intent]:
        """Every intent, the oldest first."""
        rows = await self._engine.select("SELECT id, at, replica, method, keys FROM intents ORDER BY at")
        return [
            Intent(str(intent_id), float(at), str(replica), str(method), _keys(str(keys)))
            for intent_id, at, replica, method, keys in rows
        ]

    async def of_silent(self, me: str, lease: float) -> list[tuple[Intent, float | None]]:
        """The intents of replicas other than `me` that are silent past `lease` seconds by their heartbeat
        (`shim_replicas`, the database's clock), or have none: each with its writer's silence (None
        without a heartbeat: a replica of an earlier release, or one forgotten). The oldest first."""

        def read(db: Db) -> list[tuple[Intent, float | None]]:
            rows = db.run(
                f"SELECT i.id, i.at, i.replica, i.method, i.keys, {db.NOW} - r.seen FROM intents i"
                " LEFT JOIN shim_replicas r ON r.replica = i.replica"
                f" WHERE i.replica <> ? AND (r.seen IS NULL OR r.seen < {db.NOW} - ?) ORDER BY i.at",
                (me, lease),
            )
            return [
                (
                    Intent(str(intent_id), float(at), str(replica), str(method), _keys(str(keys))),
                    None if silent is None else float(silent),
                )
                for intent_id, at, replica, method, keys, silent in rows
            ]

        return await self._engine.transaction(read, write=False)

    async def claim(self, intent_id: str) -> bool:
        """Delete the intent, committed; False when it was gone already (another replica claimed it)."""
        return bool(await self._engine.execute("DELETE FROM intents WHERE id = ? RETURNING id", (intent_id,)))


def _keys(text: str) -> tuple[str, ...]:
    try:
        keys = json.loads(text)
    except ValueError:
        return ()
    return tuple(str(k) for k in keys) if isinstance(keys, list) else ()
