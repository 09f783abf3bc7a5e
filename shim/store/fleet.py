"""Each replica's view of the modes, and fleet-wide switches: pending, then committed or abandoned.

Two tables (`shim_replica_modes`, `shim_mode_switches`); the protocol that uses them is `shim.fleet`.
On PostgreSQL every change of a switch is also announced on the store's channel (NOTIFY, sent with
the transaction's commit), which `notifications` listens to; on SQLite replicas poll. The messages:
"pending ID DEADLINE PAUSE MODES-JSON" (PAUSE: the switch's own bound on holding calls, 0 for each
replica's switch_pause; earlier builds sent none), "answered ID REPLICA 1|0" (held or not), "decided ID
STATE".

A channel belongs to a database, not to a schema: each store's is named after its schema ("shim_modes_"
and the first 16 hex digits of the schema name's MD5), so that fleets whose stores are schemas of one
database never hear each other's switches.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import psycopg
import psycopg.sql

from shim.store._errors import StoreError, one_line
from shim.store.backends import Db, Postgres
from shim.store.engine import Engine
from shim.store.modes import write_changes
from shim.store.records import ModeChange

CHANNEL = "shim_modes"
# the store's channel: the schema its tables are in (the first of the search path that exists) named
_CHANNEL_SQL = f"'{CHANNEL}_' || left(md5(current_schema()), 16)"
PENDING, COMMITTED, ABANDONED = "pending", "committed", "abandoned"
FORGOTTEN = 3600.0  # seconds after its last heartbeat that a replica's view is dropped

_PUBLISH = (
    "INSERT INTO shim_replica_modes (replica, modes, since, heartbeat, answered) VALUES (?, ?, ?, ?, '')"
    " ON CONFLICT (replica) DO UPDATE SET modes = excluded.modes, since = excluded.since,"
    " heartbeat = excluded.heartbeat"
)
_SWITCH_COLUMNS = "id, at, replica, modes, changes, deadline, state, pause"


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """What one replica applies: its modes by scope, since when, and when it last said so."""

    replica: str
    modes: dict[str, str]
    since: float
    heartbeat: float
    answered: str = ""  # the last switch it answered: its id (held), or "-" + its id (could not hold)


@dataclass(frozen=True, slots=True)
class Switch:
    """A fleet-wide switch: `modes` (scope: mode) proposed by `replica`, to be decided by `deadline`."""

    id: str
    at: float
    replica: str
    modes: dict[str, str]
    changes: list[ModeChange] = field(default_factory=list)
    deadline: float = 0.0
    state: str = PENDING
    pause: float = 0.0  # seconds each replica may hold its calls for it (0: its own switch_pause)


def _notify(db: Db, message: str) -> None:
    if isinstance(db, Postgres):
        db.run(f"SELECT pg_notify({_CHANNEL_SQL}, ?)", (message,))


def _switch(row: Sequence[object]) -> Switch:
    changes = [ModeChange(*change) for change in json.loads(str(row[4]))]
    return Switch(
        str(row[0]), float(str(row[1])), str(row[2]), json.loads(str(row[3])), changes, float(str(row[5])),
        str(row[6]), float(str(row[7])),
    )  # fmt: skip


class StoredFleet:
    """The replicas' views and the fleet switches of a store (`store.fleet`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # -- views -------------------------------------------------------------------------------------

    async def publish(self, view: ReplicaView) -> None:
        """Say which modes this replica applies, since when; `view.heartbeat` is when it says so (kept
        fresh by the replica's heartbeat, `store.liveness`)."""
        modes = json.dumps(view.modes, sort_keys=True)

        def write(db: Db) -> None:
            db.run(_PUBLISH, (view.replica, modes, view.since, view.heartbeat))
            # replicas killed without stopping are listed (as silent) for an hour
            db.run("DELETE FROM shim_replica_modes WHERE heartbeat < ?", (view.heartbeat - FORGOTTEN,))

        await self._engine.transaction(write, write=True)

    async def views(self) -> list[ReplicaView]:
        """Every replica's view, by name. Its `heartbeat` is when it was last heard from by its heartbeat
        (`store.liveness`), measured on the database's clock and given on this machine's (now, less the
        silence); a view whose replica has none (a release before it) keeps its own column."""

        def read(db: Db) -> list[ReplicaView]:
            rows = db.run(
                f"SELECT m.replica, m.modes, m.since, m.heartbeat, m.answered, {db.NOW} - r.seen"
                " FROM shim_replica_modes m LEFT JOIN shim_replicas r ON r.replica = m.replica"
                " ORDER BY m.replica"
            )
            now = time.time()
            return [
                ReplicaView(
                    r[0], json.loads(r[1]), r[2], r[3] if r[5] is None else now - max(float(r[5]), 0.0), r[4]
                )
                for r in rows
            ]

        return await self._engine.transaction(read, write=False)

    async def forget(self, replica: str) -> None:
        """A replica stops: its view goes (no switch waits for it)."""
        sql = "DELETE FROM shim_replica_modes WHERE replica = ?"
        await self._engine.transaction(lambda db: db.run(sql, (replica,)), write=True)

    async def answer(self, replica: str, switch: str, held: bool) -> None:
        """`replica` holds its calls for `switch` (its calls in flight are over), or could not."""

        def write(db: Db) -> None:
            db.run(
                "UPDATE shim_replica_modes SET answered = ? WHERE replica = ?",
                (switch if held else "-" + switch, replica),
            )
            _notify(db, f"answered {switch} {replica} {int(held)}")

        await self._engine.transaction(write, write=True)

    # -- switches ----------------------------------------------------------------------------------

    async def propose(self, switch: Switch) -> str:
        """Record `switch` as pending: "" done, else the id of the switch already pending (one at a time;
        a pending switch past its deadline is abandoned first)."""

        def write(db: Db) -> str:
            db.run(
                "UPDATE shim_mode_switches SET state = ?, open = NULL, decided = ?"
                " WHERE open = 1 AND deadline < ?",
                (ABANDONED, switch.at, switch.at),
            )
            other = db.run("SELECT id FROM shim_mode_switches WHERE open = 1")
            if other:
                return str(other[0][0])
            changes = json.dumps([_change(c) for c in switch.changes])
            db.run(
                f"INSERT INTO shim_mode_switches ({_SWITCH_COLUMNS}, open)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (
                    switch.id, switch.at, switch.replica, json.dumps(switch.modes), changes, switch.deadline,
                    PENDING, switch.pause,
                ),
            )  # fmt: skip
            _notify(
                db, f"pending {switch.id} {switch.deadline!r} {switch.pause!r} {json.dumps(switch.modes)}"
            )
            return ""

        try:
            return await self._engine.transaction(write, write=True)
        except StoreError:  # another replica's switch took the one pending place at the same time
            pending = await self.pending()
            if pending is None:
                raise
            return pending.id

    async def pending(self) -> Switch | None:
        """The switch pending, if any."""
        rows = await self._engine.select(f"SELECT {_SWITCH_COLUMNS} FROM shim_mode_switches WHERE open = 1")
        return _switch(rows[0]) if rows else None

    async def state(self, switch: str) -> str:
        """pending, committed or abandoned ("" for no such switch)."""
        rows = await self._engine.select("SELECT state FROM shim_mode_switches WHERE id = ?", (switch,))
        return str(rows[0][0]) if rows else ""

    async def decide(self, switch: Switch, commit: bool, at: float) -> str:
        """Commit `switch` (its modes set and its changes recorded, in the same transaction) or abandon
        it, unless it was decided already: the state it ends in."""

        def write(db: Db) -> str:
            decided = db.run(
                "UPDATE shim_mode_switches SET state = ?, open = NULL, decided = ?"
                " WHERE id = ? AND state = ? RETURNING id",
                (COMMITTED if commit else ABANDONED, at, switch.id, PENDING),
            )
            if not decided:
                rows = db.run("SELECT state FROM shim_mode_switches WHERE id = ?", (switch.id,))
                return str(rows[0][0]) if rows else ""
            if commit:
                write_changes(db, switch.changes)
            state = COMMITTED if commit else ABANDONED
            _notify(db, f"decided {switch.id} {state}")
            return state

        return await self._engine.transaction(write, write=True)

    async def notifications(self) -> AsyncIterator[str]:
        """Every message on the channel, as it comes, after an empty one once listening (PostgreSQL;
        nothing on SQLite). StoreError when the connection cannot be made or is lost."""
        if self._engine.conninfo is None:
            return
        try:
            conn = await psycopg.AsyncConnection.connect(
                Postgres.conninfo(self._engine.conninfo), autocommit=True
            )
            async with conn:
                channel = await (await conn.execute(f"SELECT {_CHANNEL_SQL}".encode())).fetchone()
                assert channel is not None
                await conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel[0])))
                yield ""  # listening: whatever is announced from now on is heard
                async for notice in conn.notifies():
                    yield notice.payload
        except psycopg.Error as error:
            raise StoreError(f"cannot listen to store {self._engine.url}: {one_line(error)}") from None


def _change(change: ModeChange) -> list[object]:
    return [
        change.at, change.who, change.scope, change.from_mode, change.to_mode, change.reason, change.forced,
    ]  # fmt: skip
