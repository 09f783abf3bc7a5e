"""A small durable store for the state that shim replicas share, behind one boundary: no SQL outside it.

It holds, in one versioned schema (`migrations.py`), on SQLite or PostgreSQL (`backends.py`):

- id pairs: which Bank id and which BK id name the same thing, per kind of id, and the ids a side
  minted without a counterpart (`store.pairs`, `pairs.py`);
- keys out of step: routing keys for which a write reached one side only, with the earliest such
  write, and each check of them (`store.marks`, `marks.py`);
- the modes set at run time and their history (`store.modes`, `modes.py`), each replica's view of
  them and the fleet-wide switches (`store.fleet`, `fleet.py`);
- comparisons and their differing paths (`store.comparisons`, `comparisons.py`), and the counts of
  what was not stored (`store.counts`, `counts.py`);
- intents, mirrored writes not yet judged (`store.intents`, `intents.py`), and key aliases
  (`store.aliases`, `aliases.py`);
- the builds of BK declared in service, the latest of which bounds the gate's evidence
  (`store.builds`, `builds.py`);
- each replica's heartbeat, on the database's clock (`store.liveness`, `liveness.py`);
- recordings of the clients' calls, each process's part of them and their calls (`store.recordings`,
  `recordings.py`).

The engine (`engine.py`: connections, the URL forms, the life of a store; `worker.py`: the thread
that batches writes, retries them and counts what is lost) knows no domain; each repository owns the
SQL of one, holds the engine, and speaks in the records of `records.py`. A SQLite file deleted under
the store is made again (`_sqlite_file.py`); what a SQLite file holds is read without writing to it
(`held_in`, `contents.py`). `Store` is the engine with its repositories:

    store = Store.open("shim.db")
    await store.start()
    store.pairs.put([IdPair("trade", "B1", "K1")])
    marks = await store.marks.out_of_step()
    await store.close()
"""

from __future__ import annotations

from collections.abc import Callable

from shim.store._errors import StoreError
from shim.store._sealing import Sealer, sealed
from shim.store._url import shown_url
from shim.store.aliases import StoredAliases
from shim.store.backends import Db
from shim.store.builds import StoredBuilds
from shim.store.comparisons import StoredComparisons, comparison_rows
from shim.store.contents import held_in
from shim.store.counts import StoredCounts
from shim.store.engine import Engine
from shim.store.fleet import ReplicaView, StoredFleet, Switch
from shim.store.intents import StoredIntents
from shim.store.judging import StoredJudging
from shim.store.liveness import StoredLiveness
from shim.store.marks import StoredMarks
from shim.store.migrations import MIGRATIONS
from shim.store.modes import StoredModes
from shim.store.pairs import SIDES, StoredPairs
from shim.store.recordings import StoredRecordings
from shim.store.records import (
    NO_KEY,
    BkBuild,
    ComparisonRecord,
    IdPair,
    Intent,
    ModeChange,
    OutOfStep,
    PathRow,
    RecordingPart,
    StoredRecording,
    Unpaired,
    shown_key,
)


class Store(Engine):
    """The shim's shared state in SQLite or PostgreSQL, by domain. `Store.open(url)`, then `start()`."""

    def __init__(self, url: str, connect: Callable[[], Db]) -> None:
        super().__init__(url, connect)
        self.pairs = StoredPairs(self)
        self.marks = StoredMarks(self)
        self.modes = StoredModes(self)
        self.fleet = StoredFleet(self)
        self.comparisons = StoredComparisons(self)
        self.counts = StoredCounts(self)
        self.intents = StoredIntents(self)
        self.liveness = StoredLiveness(self)
        self.aliases = StoredAliases(self)
        self.recordings = StoredRecordings(self)
        self.builds = StoredBuilds(self)
        self.judging = StoredJudging(self)


__all__ = [
    "MIGRATIONS",
    "NO_KEY",
    "SIDES",
    "BkBuild",
    "ComparisonRecord",
    "Engine",
    "IdPair",
    "Intent",
    "ModeChange",
    "OutOfStep",
    "PathRow",
    "RecordingPart",
    "ReplicaView",
    "Sealer",
    "Store",
    "StoreError",
    "StoredRecording",
    "Switch",
    "Unpaired",
    "comparison_rows",
    "held_in",
    "sealed",
    "shown_key",
    "shown_url",
]
