"""The schema, versioned: `MIGRATIONS[i]` brings it from version i to i + 1.

The table shim_schema holds the version. `migrate` applies the missing ones inside the caller's
transaction (the store's first: on PostgreSQL under an advisory lock, so that replicas starting
together do not race; on SQLite under BEGIN IMMEDIATE) and refuses a database newer than this code.
"""

from __future__ import annotations

from shim.store._errors import StoreError
from shim.store.backends import Db

# Portable SQL (SQLite and PostgreSQL), with ? for parameters and {now} for the database's clock (seconds
# since the epoch). Entry i brings the schema from version i to i + 1; never change an entry once released,
# add one.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        "CREATE TABLE id_pairs ("
        " kind TEXT NOT NULL, bank_id TEXT NOT NULL, bk_id TEXT NOT NULL,"
        " owner TEXT NOT NULL DEFAULT '', learned_at DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (kind, bank_id))",
        "CREATE UNIQUE INDEX id_pairs_bk ON id_pairs (kind, bk_id)",
        "CREATE INDEX id_pairs_learned_at ON id_pairs (learned_at)",
        "CREATE TABLE out_of_step ("
        " key TEXT PRIMARY KEY, since DOUBLE PRECISION NOT NULL,"
        " method TEXT NOT NULL, reason TEXT NOT NULL)",
    ),
    (
        # one row per comparison; differences as JSON (see ComparisonRecord)
        "CREATE TABLE comparisons ("
        " id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, replica TEXT NOT NULL,"
        " method TEXT NOT NULL, routing_key TEXT NOT NULL, correlation_id TEXT NOT NULL,"
        " verdict TEXT NOT NULL, reason TEXT NOT NULL, is_write INTEGER NOT NULL,"
        " bank_code INTEGER, bk_code INTEGER, bank_ms DOUBLE PRECISION, bk_ms DOUBLE PRECISION,"
        " real_count INTEGER NOT NULL, tolerated_count INTEGER NOT NULL,"
        " noise_sampled INTEGER NOT NULL, differences TEXT NOT NULL, payloads TEXT)",
        "CREATE INDEX comparisons_at ON comparisons (at)",
        "CREATE INDEX comparisons_method_at ON comparisons (method, at)",
        # one row per differing path (lists folded to [*]) of one comparison, for reports
        "CREATE TABLE comparison_paths ("
        " comparison_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, method TEXT NOT NULL,"
        " source TEXT NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL, rule TEXT NOT NULL,"
        " bank TEXT NOT NULL, other TEXT NOT NULL)",
        "CREATE INDEX comparison_paths_method_at ON comparison_paths (method, at)",
        "CREATE INDEX comparison_paths_comparison ON comparison_paths (comparison_id)",
        # what was counted but not stored (dropped comparisons, ...), flushed now and then
        "CREATE TABLE counts ("
        " at DOUBLE PRECISION NOT NULL, replica TEXT NOT NULL, method TEXT NOT NULL,"
        " name TEXT NOT NULL, value INTEGER NOT NULL)",
        "CREATE INDEX counts_at ON counts (at)",
    ),
    (
        # the mode of each scope ("*": the default; else a method) set at run time, and its history
        "CREATE TABLE modes (scope TEXT PRIMARY KEY, mode TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE mode_changes ("
        " id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, who TEXT NOT NULL, scope TEXT NOT NULL,"
        " from_mode TEXT NOT NULL, to_mode TEXT NOT NULL, reason TEXT NOT NULL, forced INTEGER NOT NULL)",
        "CREATE INDEX mode_changes_at ON mode_changes (at)",
    ),
    (
        # mirrored writes sent and not yet judged: what a crash leaves here puts its keys out of step
        "CREATE TABLE intents ("
        " id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, replica TEXT NOT NULL,"
        " method TEXT NOT NULL, keys TEXT NOT NULL)",
        "CREATE INDEX intents_at ON intents (at)",
        # each check of a key out of step: both ledgers read, and what they said
        "CREATE TABLE verifications ("
        " id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, replica TEXT NOT NULL, key TEXT NOT NULL,"
        " since DOUBLE PRECISION NOT NULL, method TEXT NOT NULL, reason TEXT NOT NULL,"
        " result TEXT NOT NULL, detail TEXT NOT NULL)",
        "CREATE INDEX verifications_key_at ON verifications (key, at)",
        # other names of routing keys, learned from answers (a client's own reference for an account)
        "CREATE TABLE key_aliases ("
        " kind TEXT NOT NULL, alias TEXT NOT NULL, key TEXT NOT NULL, learned_at DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (kind, alias))",
        "CREATE INDEX key_aliases_learned_at ON key_aliases (learned_at)",
        # ids a side minted whose minting call ended without the other side's id: not unknown, unpaired
        "CREATE TABLE unpaired_ids ("
        " kind TEXT NOT NULL, side TEXT NOT NULL, value TEXT NOT NULL, owner TEXT NOT NULL,"
        " at DOUBLE PRECISION NOT NULL, PRIMARY KEY (kind, side, value))",
    ),
    (
        # which replica marked a key out of step ("" for a mark made before replicas were kept)
        "ALTER TABLE out_of_step ADD COLUMN replica TEXT NOT NULL DEFAULT ''",
    ),
    (
        # recordings of the clients' calls ([record] into = "store"): the header, as the file's first line
        "CREATE TABLE recordings ("
        " id TEXT PRIMARY KEY, started DOUBLE PRECISION NOT NULL, header TEXT NOT NULL)",
        # each shim process recording into one: its calls so far, and once it ended, how
        "CREATE TABLE recording_parts ("
        " id TEXT PRIMARY KEY, recording TEXT NOT NULL, replica TEXT NOT NULL,"
        " started DOUBLE PRECISION NOT NULL, last_at DOUBLE PRECISION NOT NULL,"
        " calls INTEGER NOT NULL, ended DOUBLE PRECISION, reason TEXT NOT NULL, lost INTEGER NOT NULL)",
        "CREATE INDEX recording_parts_recording ON recording_parts (recording)",
        # one row per call, as the file's line (JSON), numbered per part in the order the calls arrived
        "CREATE TABLE recorded_calls ("
        " part TEXT NOT NULL, seq INTEGER NOT NULL, recording TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,"
        " call TEXT NOT NULL, PRIMARY KEY (part, seq))",
        "CREATE INDEX recorded_calls_recording ON recorded_calls (recording)",
    ),
    (
        # the order of each key's mirrored writes across replicas (`key_order.py`, PostgreSQL only):
        # tickets issued and done per key, who holds the tickets not yet done, and each replica's heartbeat
        "CREATE TABLE shim_key_order ("
        " key TEXT PRIMARY KEY, issued BIGINT NOT NULL, done BIGINT NOT NULL,"
        " last_replica TEXT NOT NULL, prev_replica TEXT NOT NULL)",
        "CREATE TABLE shim_key_tickets ("
        " key TEXT NOT NULL, ticket BIGINT NOT NULL, replica TEXT NOT NULL, method TEXT NOT NULL,"
        " PRIMARY KEY (key, ticket))",
        "CREATE TABLE shim_replicas (replica TEXT PRIMARY KEY, seen DOUBLE PRECISION NOT NULL)",
    ),
    (
        # each replica's view: the modes it applies (JSON, scope: mode), since when, when it was last heard
        # from, and the last fleet switch it answered (its id; "-" + id: it could not hold its calls)
        "CREATE TABLE shim_replica_modes ("
        " replica TEXT PRIMARY KEY, modes TEXT NOT NULL, since DOUBLE PRECISION NOT NULL,"
        " heartbeat DOUBLE PRECISION NOT NULL, answered TEXT NOT NULL)",
        # fleet switches: pending (open = 1: at most one at a time), then committed or abandoned
        "CREATE TABLE shim_mode_switches ("
        " id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, replica TEXT NOT NULL, modes TEXT NOT NULL,"
        " changes TEXT NOT NULL, deadline DOUBLE PRECISION NOT NULL, state TEXT NOT NULL, open INTEGER,"
        " decided DOUBLE PRECISION)",
        "CREATE UNIQUE INDEX shim_mode_switches_open ON shim_mode_switches (open)",
        "CREATE INDEX shim_mode_switches_at ON shim_mode_switches (at)",
    ),
    (
        # shim_replicas (above) is every replica's one heartbeat now, on both engines (`liveness.py`):
        # the intents of a replica gone silent are found by their writer
        "CREATE INDEX intents_replica ON intents (replica)",
    ),
    (
        # per key, the latest start (time.time(), the replica's) of a call that took a ticket, and that
        # before the last statement raised it: a write whose ticket follows one started after its own
        # answer is out of its order (`key_order.py`)
        "ALTER TABLE shim_key_order ADD COLUMN started DOUBLE PRECISION NOT NULL DEFAULT 0",
        "ALTER TABLE shim_key_order ADD COLUMN prev_started DOUBLE PRECISION NOT NULL DEFAULT 0",
    ),
    (
        # a switch's own bound on how long each replica holds its calls for it (`shim mode set --pause`);
        # 0: each replica's switch_pause
        "ALTER TABLE shim_mode_switches ADD COLUMN pause DOUBLE PRECISION NOT NULL DEFAULT 0",
    ),
    (
        # per key, the most lateness (seconds) of a write done on it, from any replica: how much later the
        # shadow may have stamped a time a call after it reads back (`KeyOrder`, `Exchange.shadow_late`)
        "ALTER TABLE shim_key_order ADD COLUMN late DOUBLE PRECISION NOT NULL DEFAULT 0",
    ),
    (
        # ... and the same of Bank's, mirrored while BK was primary: `late` is BK's
        "ALTER TABLE shim_key_order ADD COLUMN late_bank DOUBLE PRECISION NOT NULL DEFAULT 0",
    ),
    (
        # the lateness by band (`_tickets.FLOORS`): `late` and `late_bank` are the top band's now, and each
        # band says when its last write was over (time.time()): a time stamped after it was stamped by none
        # of them. The lateness kept before is taken to be over now, so the times it allowed for still are
        "ALTER TABLE shim_key_order ADD COLUMN late_until DOUBLE PRECISION NOT NULL DEFAULT 0",
        "UPDATE shim_key_order SET late_until = {now} WHERE late > 0 OR late_bank > 0",
        *(
            f"ALTER TABLE shim_key_order ADD COLUMN {name}_{band} DOUBLE PRECISION NOT NULL DEFAULT 0"
            for band in (1, 2)
            for name in ("late", "late_bank", "late_until")
        ),
    ),
    (
        # each build of BK declared in service (`shim bk-build`): the gate judges what came after the latest
        "CREATE TABLE bk_builds ("
        " id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, build TEXT NOT NULL, who TEXT NOT NULL,"
        " reason TEXT NOT NULL)",
        "CREATE INDEX bk_builds_at ON bk_builds (at)",
    ),
    (
        # each key's mark's generation, raised by every mark put on the key, even one that leaves the key its
        # earlier mark: a check clears the mark only at the generation it read before it began (`marks.py`)
        "ALTER TABLE out_of_step ADD COLUMN gen BIGINT NOT NULL DEFAULT 0",
    ),
    (
        # whose id each key out of step is ("bank", "bk": the primary's when the write was made; "": not
        # recorded, or marks of both sides' ids of the same text): a check reads the accounts it names
        "ALTER TABLE out_of_step ADD COLUMN side TEXT NOT NULL DEFAULT ''",
    ),
    (
        # each change of what judges a comparison (the rules, the ids' settings), by fingerprint: the gate
        # judges what came after the latest (`judging.py`)
        "CREATE TABLE judging_changes ("
        " id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, fingerprint TEXT NOT NULL,"
        " replica TEXT NOT NULL)",
        "CREATE INDEX judging_changes_at ON judging_changes (at)",
    ),
    (
        # when each write's call started, by ticket, for a while (`key_order.STARTS_KEPT`): a read compared
        # after it learns of the writes on its keys that started before its answer and came after its place
        "CREATE TABLE shim_key_starts ("
        " key TEXT NOT NULL, ticket BIGINT NOT NULL, started DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (key, ticket))",
        "CREATE INDEX shim_key_starts_started ON shim_key_starts (started)",
    ),
]

# what a shim needs to work on (copied into a new SQLite file made for one deleted under it); the
# comparisons, most of a file, are not: they are counted as lost instead
STATE_TABLES = (
    "id_pairs", "out_of_step", "modes", "mode_changes", "intents", "verifications", "key_aliases",
    "unpaired_ids", "shim_replica_modes", "shim_mode_switches", "bk_builds", "judging_changes",
)  # fmt: skip


def migrate(db: Db, url: str, create: bool = True) -> None:
    """Bring the schema to len(MIGRATIONS), inside the caller's transaction. With `create` false (the
    commands that work on a store a shim made), nothing is made or migrated: a database with no
    shim_schema table (another application's, an empty one) is refused, and so is a shim store of an
    older schema, which the replicas of its release still use."""
    db.lock_schema()
    if not create and not db.has_table("shim_schema"):
        raise StoreError(
            f"store {url}: not a shim store (no table shim_schema in the database, in the schemas of its"
            " search_path; `shim serve` makes one)"
        )
    db.run("CREATE TABLE IF NOT EXISTS shim_schema (version INTEGER NOT NULL)")
    rows = db.run("SELECT version FROM shim_schema")
    if not rows:
        db.run("INSERT INTO shim_schema (version) VALUES (0)")
    version = max((int(row[0]) for row in rows), default=0)
    if version > len(MIGRATIONS):
        known = len(MIGRATIONS)
        raise StoreError(
            f"store {url} has schema version {version}; this shim knows up to {known}: upgrade the shim"
        )
    if not create and version < len(MIGRATIONS):
        raise StoreError(
            f"store {url} has schema version {version}; this shim reads {len(MIGRATIONS)}: upgrade it by"
            " starting the new release's `shim serve` (see docs/fleet.md, Upgrading the shim)"
        )
    for statements in MIGRATIONS[version:]:
        for statement in statements:
            db.run(statement.replace("{now}", db.NOW))
    if version < len(MIGRATIONS):
        db.run("UPDATE shim_schema SET version = ?", (len(MIGRATIONS),))
