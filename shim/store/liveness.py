"""Each replica's liveness: one heartbeat per replica, on the database's clock (`shim_replicas`).

A replica writes `seen` = the database's clock every `store.refresh` (`shim.liveness`); whoever asks
how long a replica has been silent reads the same clock, so the replicas' own clocks, which differ
from machine to machine, never enter it. What it decides, with one lease (`store.lease`): a fleet
switch stops waiting for the replica (`shim.fleet`), its tickets on keys are released
(`key_order.py`, which reads this table in its own query) and its mirrored writes' intents are
claimed (`intents.py`). A replica that stops cleanly removes its row once its writes are judged.
"""

from __future__ import annotations

import time

from shim.store.backends import Db
from shim.store.engine import Engine

FORGOTTEN = 3600.0  # seconds after its last heartbeat that a replica's row is dropped


class StoredLiveness:
    """The replicas' heartbeats in a store (`store.liveness`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def beat(self, replica: str) -> None:
        """`replica` is alive now, by the database's clock (StoreError when the store cannot say so)."""

        def write(db: Db) -> None:
            db.run(
                f"INSERT INTO shim_replicas (replica, seen) VALUES (?, {db.NOW})"
                " ON CONFLICT (replica) DO UPDATE SET seen = excluded.seen",
                (replica,),
            )
            # the view's own column, by this replica's clock, is what replicas of earlier releases read
            db.run("UPDATE shim_replica_modes SET heartbeat = ? WHERE replica = ?", (time.time(), replica))
            db.run(f"DELETE FROM shim_replicas WHERE seen < {db.NOW} - ?", (FORGOTTEN,))
            # replicas killed without stopping are listed (as silent) by `shim mode show` for as long
            db.run("DELETE FROM shim_replica_modes WHERE heartbeat < ?", (time.time() - FORGOTTEN,))

        await self._engine.transaction(write, write=True)

    async def silence(self) -> dict[str, float]:
        """Seconds since each replica's last heartbeat, by the database's clock."""

        def read(db: Db) -> dict[str, float]:
            rows = db.run(f"SELECT replica, {db.NOW} - seen FROM shim_replicas")
            return {str(replica): max(float(silent), 0.0) for replica, silent in rows}

        return await self._engine.transaction(read, write=False)

    async def forget(self, replica: str) -> None:
        """`replica` stopped: it holds nothing any more (its tickets are released at once)."""
        sql = "DELETE FROM shim_replicas WHERE replica = ?"
        await self._engine.transaction(lambda db: db.run(sql, (replica,)), write=True)
