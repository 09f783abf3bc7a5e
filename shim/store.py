"""A small durable store for the state that shim replicas share.

Over 400 lines: the engines, the migrations, the writer thread and the SQL of every domain are here
together; they are to become `shim/store/` (engine, migrations, one repository per domain, as
`shim/id_pairs.py` already is), with the house issue.

It holds two things:

- id pairs: which Bank id and which BK id name the same thing, per kind of id
  ("trade", ...). Each side is unique within a kind, and the first pair learned
  wins: a later pair that conflicts on either side is ignored.
- keys out of step: routing keys for which a write reached one side only, with
  the earliest such write. `resync()` clears them once they agree again.

Engines, one schema:

- SQLite, the embedded default: one file in WAL mode (synchronous=NORMAL, so a
  commit survives a crash of the shim but maybe not of the machine), or
  ":memory:" where nothing persists. Another process (the CLI) may open the
  same file at the same time. A file deleted under the store is made again
  (see `_renew` and shim/_sqlite_file.py).
- PostgreSQL, for a fleet of replicas sharing one database, through psycopg 3.

URL forms given to `Store.open`:

    postgresql://user:password@host:5432/db   (or postgres://...; libpq's query
                                               parameters too, e.g. ?options=...)
    sqlite:///abs/path/shim.db                 an absolute file
    sqlite:state/shim.db or state/shim.db      a file relative to `base`, else the cwd
    :memory:                                   SQLite in memory

Threading: each Store has one worker thread that owns its connection and takes
jobs from a FIFO queue. The async methods put a job there and await its answer,
so the event loop never waits on the database. `put_pairs` and
`mark_out_of_step` only enqueue: they never block and never raise. Writes
enqueued before `start()` are committed once it has connected; after `close()`
they are ignored. The worker is a daemon thread: `close()` before exiting;
`close(within=...)` leaves behind a worker that a database does not answer.

Batching and durability: the worker takes every job queued at once; writes
next to each other are committed in one transaction (one batch). A write
enqueued is committed within one batch; `flush()` waits for it, and a read
enqueued after a write sees it. A batch that fails (the database is gone) is
logged, counted in `write_errors` and dropped; the worker goes on, and on
PostgreSQL reconnects at the next job. A read that fails raises StoreError.

Schema: the table shim_schema holds the version; `MIGRATIONS[i]` brings it
from version i to i + 1. `start()` applies the missing ones in one transaction
(on PostgreSQL under an advisory lock, so that replicas starting together do
not race; on SQLite under BEGIN IMMEDIATE) and refuses a database newer than
this code.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg
import psycopg.conninfo
import structlog

from shim import _sqlite_file
from shim.errors import ShimError

T = TypeVar("T")

# Portable SQL (SQLite and PostgreSQL), with ? for parameters. Entry i brings the
# schema from version i to i + 1; never change an entry once released, add one.
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
]

_ADVISORY_LOCK = 0x5348_494D_5354_4F52  # "SHIMSTOR": held by the replica that migrates
# what a shim needs to work on (copied into a new SQLite file made for one deleted under it); the
# comparisons, most of a file, are not: they are counted as lost instead
_STATE_TABLES = (
    "id_pairs", "out_of_step", "modes", "mode_changes", "intents", "verifications", "key_aliases",
    "unpaired_ids",
)  # fmt: skip
_CHUNK = 500  # values per IN (...) list, well under every engine's limit
_SQLITE_MIN = (3, 35, 0)  # DELETE ... RETURNING
_FORMS = (
    "postgresql://..., postgres://..., sqlite:///abs/path.db, sqlite:rel/path.db, a plain path, or :memory:"
)

_PAIR_COLUMNS = "kind, bank_id, bk_id, owner, learned_at"
_INSERT_PAIR = f"INSERT INTO id_pairs ({_PAIR_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
_INSERT_MARK = (
    "INSERT INTO out_of_step (key, since, method, reason) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET since = excluded.since, method = excluded.method,"
    " reason = excluded.reason WHERE excluded.since < out_of_step.since"
)
_SIDES = {"bank": "bank_id", "bk": "bk_id"}
_COMPARISON_COLUMNS = (
    "id, at, replica, method, routing_key, correlation_id, verdict, reason, is_write,"
    " bank_code, bk_code, bank_ms, bk_ms, real_count, tolerated_count, noise_sampled, differences, payloads"
)
_INSERT_COMPARISON = (
    f"INSERT INTO comparisons ({_COMPARISON_COLUMNS}) VALUES ({', '.join('?' * 18)}) ON CONFLICT DO NOTHING"
)
_INSERT_PATH = (
    "INSERT INTO comparison_paths (comparison_id, at, method, source, path, kind, rule, bank, other)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_COUNT = "INSERT INTO counts (at, replica, method, name, value) VALUES (?, ?, ?, ?, ?)"


@dataclass(frozen=True, slots=True)
class ModeChange:
    """One audited change of a scope's mode ("*": the default mode; else "/pkg.Svc/Method")."""

    at: float
    who: str
    scope: str
    from_mode: str
    to_mode: str
    reason: str
    forced: bool


@dataclass(frozen=True, slots=True)
class IdPair:
    """A Bank id and the BK id that names the same thing."""

    kind: str  # an id kind, e.g. "trade"
    bank_id: str
    bk_id: str
    owner: str = ""  # the routing key of the thing the id names ("" when unknown)
    learned_at: float = 0.0  # unix time; put_pairs stamps 0.0 with the time it was enqueued


@dataclass(frozen=True, slots=True)
class OutOfStep:
    """A routing key that a write reached on one side only."""

    key: str  # a routing key, or "*" for every key
    since: float  # unix time of the first write that was missed
    method: str  # "/pkg.Svc/Method" of that write
    reason: str


@dataclass(frozen=True, slots=True)
class PathRow:
    """One differing path of a comparison, lists folded (`trades[*].fee`)."""

    source: str  # "bk": Bank against BK; "bank": Bank against Bank asked again (noise)
    path: str
    kind: str
    rule: str  # the rule that tolerated it; "" when real
    bank: str  # one example of each value, as JSON text
    other: str


@dataclass(frozen=True, slots=True)
class ComparisonRecord:
    """One comparison as stored: what the reports and the gate are made of."""

    id: str
    at: float  # unix time the shim received the call
    replica: str
    method: str
    routing_key: str
    correlation_id: str
    verdict: str
    reason: str
    is_write: bool
    bank_code: int | None  # None: that side was not called
    bk_code: int | None
    bank_ms: float | None
    bk_ms: float | None
    real_count: int
    tolerated_count: int
    noise_sampled: bool  # Bank was asked a second time, for noise
    differences: str  # JSON list of {path, kind, bank, bk, rule, noise}
    payloads: str | None  # JSON {requests, bank, bk} (base64), when kept
    paths: tuple[PathRow, ...] = ()


def comparison_rows(
    records: Sequence[ComparisonRecord],
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The rows of the comparisons and of their paths, in the columns of their INSERTs."""
    rows: list[tuple[object, ...]] = [
        (
            r.id, r.at, r.replica, r.method, r.routing_key, r.correlation_id, r.verdict, r.reason,
            int(r.is_write), r.bank_code, r.bk_code, r.bank_ms, r.bk_ms, r.real_count,
            r.tolerated_count, int(r.noise_sampled), r.differences, r.payloads,
        )
        for r in records
    ]  # fmt: skip
    paths: list[tuple[object, ...]] = [
        (r.id, r.at, r.method, p.source, p.path, p.kind, p.rule, p.bank, p.other)
        for r in records
        for p in r.paths
    ]
    return rows, paths


class StoreError(ShimError):
    """The store failed; str(error) is one line: what failed and where."""


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _mask(url: str) -> str:
    """The url with any password replaced by ***."""
    url = re.sub(r"^([a-z][a-z0-9+.-]*://[^/:@?#]*):[^@/?#]*@", r"\1:***@", url, flags=re.IGNORECASE)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)


# -- engines ---------------------------------------------------------------------------------------------


class _Db:
    """One open connection, with its engine's ways. Used by the worker thread only."""

    def run(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        raise NotImplementedError

    def begin(self, write: bool) -> None:
        """Start a transaction; `write` when it will write (SQLite then takes the write lock at once)."""
        raise NotImplementedError

    def lock_schema(self) -> None:
        """Within the transaction, keep other replicas from migrating at the same time."""

    def commit(self) -> None:
        raise NotImplementedError

    def rollback(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def lost(self) -> bool:
        """True when the connection is gone and the next job must reconnect."""
        return False

    @property
    def replaced(self) -> bool:
        """True when the file the connection has open is no longer the one at its path (deleted)."""
        return False


class _Sqlite(_Db):
    def __init__(self, conn: sqlite3.Connection, path: Path | None = None) -> None:
        self._conn = conn
        self.path = path
        self._file = _sqlite_file.identity(path) if path is not None else None

    @staticmethod
    def connect(path: Path | None) -> _Sqlite:
        if sqlite3.sqlite_version_info < _SQLITE_MIN:
            need = ".".join(map(str, _SQLITE_MIN))
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old: the store needs {need} or newer")
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(f"cannot create the directory {path.parent}: {_one_line(error)}") from None
        # isolation_level=None: no implicit transactions, we BEGIN and COMMIT ourselves
        if path is None:
            conn = sqlite3.connect(":memory:", isolation_level=None)
        else:
            with _sqlite_file.creating(path):
                conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            _wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            conn.close()
            raise
        return _Sqlite(conn, path)

    def run(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self._conn.executemany(sql, rows)

    def begin(self, write: bool) -> None:
        self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def commit(self) -> None:
        self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()

    @property
    def replaced(self) -> bool:
        if self.path is None:
            return False
        now = _sqlite_file.identity(self.path)
        return now is None or now != self._file

    def carry(self, path: Path, replicas: Sequence[str]) -> int:
        """Copy what a shim works on into the (migrated) database at `path`, and this file's counts of
        `replicas`; their comparisons are counted there as `store_failed`. Returns how many."""
        return _sqlite_file.carry(self._conn, path, _STATE_TABLES, replicas, "store_failed")


def _wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL (in memory it stays "memory"). The switch answers "database is locked" at once,
    without waiting for busy_timeout, while another connection opens the file: retry then, for 5 s."""
    deadline = time.monotonic() + 5.0
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


class _Postgres(_Db):
    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        self._conn = conn

    @staticmethod
    def connect(conninfo: str) -> _Postgres:
        # defaults that the url may override: give up on an unreachable server after 10 s
        params: dict[str, Any] = {"connect_timeout": 10, "application_name": "shim"}
        params.update(psycopg.conninfo.conninfo_to_dict(conninfo))
        return _Postgres(psycopg.connect(psycopg.conninfo.make_conninfo(**params), autocommit=False))

    @staticmethod
    def _sql(sql: str) -> str:
        """The one place where SQLite's ? parameters become psycopg's %s."""
        return sql.replace("%", "%%").replace("?", "%s")

    def run(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cursor:
            cursor.execute(self._sql(sql), params)
            return cursor.fetchall() if cursor.description is not None else []

    def run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(self._sql(sql), rows)

    def begin(self, write: bool) -> None:
        pass  # with autocommit off, psycopg opens the transaction at the first statement

    def lock_schema(self) -> None:
        self.run("SELECT pg_advisory_xact_lock(?)", (_ADVISORY_LOCK,))

    def commit(self) -> None:
        self._conn.commit()

    def rollback(self) -> None:
        self._conn.rollback()

    def close(self) -> None:
        self._conn.close()

    @property
    def lost(self) -> bool:
        return self._conn.closed or self._conn.broken


def _migrate(db: _Db, url: str) -> None:
    """Bring the schema to len(MIGRATIONS), inside the caller's transaction."""
    db.lock_schema()
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
    for statements in MIGRATIONS[version:]:
        for statement in statements:
            db.run(statement)
    if version < len(MIGRATIONS):
        db.run("UPDATE shim_schema SET version = ?", (len(MIGRATIONS),))


# -- jobs ------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Write:
    sql: str
    rows: Sequence[tuple[object, ...]]
    comparisons: int = 0  # how many of the rows count in the backlog
    more: tuple[tuple[str, Sequence[tuple[object, ...]]], ...] = ()  # committed with them, in order


@dataclass(slots=True)
class _Call:
    """Work for the worker whose answer someone awaits."""

    work: Callable[[_Db], object]
    what: str  # "read", "update", ...: for the error message
    write: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[object]

    def answer(self, result: object = None, error: BaseException | None = None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)


def _settle(future: asyncio.Future[object], result: object, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_START = "open"  # the first call: connect and migrate; when it fails the worker ends
_FLUSH = "flush"  # a call that only answers, once the writes before it are done
_CLOSE = "close"  # the last call: the worker closes the connection and ends


_RETRY_EVERY = 0.5  # seconds between tries of writes kept after a passing failure
_PASSING = ("database is locked", "database table is locked", "disk i/o error", "unable to open")


def _passing(error: BaseException) -> bool:
    """Whether a failed write may succeed later: the database locked, unreachable, or gone for a while."""
    if isinstance(error, StoreError | psycopg.OperationalError):
        return True
    return isinstance(error, sqlite3.OperationalError) and str(error).lower().startswith(_PASSING)


def _chunks(values: Sequence[str]) -> Iterator[list[str]]:
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), _CHUNK):
        yield unique[start : start + _CHUNK]


def _marks(count: int) -> str:
    return ", ".join("?" * count)


# -- the store -------------------------------------------------------------------------------------------


class Store:
    """The shim's shared state in SQLite or PostgreSQL. Make one with `Store.open(url)`, then `start()`."""

    def __init__(self, url: str, connect: Callable[[], _Db]) -> None:
        self.url = url  # as given, password masked
        self._connect = connect
        self._queue: queue.SimpleQueue[_Write | _Call] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: _Db | None = None  # the worker's
        self._write_errors = 0
        self._closed = False  # no more writes taken
        self._closing: asyncio.Future[object] | None = None
        self._lock = threading.Lock()
        self._stopped = False  # the worker has ended (guarded by _lock)
        self._backlog = 0  # comparisons enqueued, not yet committed (guarded by _lock)
        self._retry: list[_Write] = []  # the worker's: writes to try again
        self._retrying = False
        self._lost: Counter[object] = Counter()  # comparisons lost by method (guarded by _lock)
        self._writing: list[_Write] = []  # the worker's batch being committed
        self._abandoned = False  # close() gave up waiting: the worker writes nothing more
        self._replicas: set[str] = set()  # the worker's: replicas whose comparisons or counts it committed

    @staticmethod
    def open(url: str, base: Path | None = None) -> Store:
        """A store for `url` (see the module docstring for the forms); it connects at `start()`."""
        masked = _mask(url)
        if re.match(r"postgres(ql)?://", url, flags=re.IGNORECASE):
            try:
                psycopg.conninfo.conninfo_to_dict(url)
            except psycopg.Error as error:
                raise StoreError(f"invalid store url {masked}: {_one_line(error)}") from None
            return Store(masked, lambda: _Postgres.connect(url))
        rest = url
        if url.lower().startswith("sqlite:"):
            rest = url[len("sqlite:") :]
            if rest.startswith("//"):  # sqlite:///abs/path: an empty host, then the absolute path
                rest = rest[2:]
                if not rest.startswith("/"):
                    raise StoreError(
                        f"invalid store url {masked}: a SQLite url has no host; use one of {_FORMS}"
                    )
        elif re.match(r"[a-z][a-z0-9+.-]*:", url, flags=re.IGNORECASE) and url != ":memory:":
            raise StoreError(f"unknown store url {masked}: use one of {_FORMS}")
        if not rest:
            raise StoreError(f"store url {masked!r} names no file: use one of {_FORMS}")
        if rest == ":memory:":
            return Store(masked, lambda: _Sqlite.connect(None))
        path = Path(rest)
        if not path.is_absolute():
            path = (base if base is not None else Path.cwd()) / path
        return Store(masked, lambda: _Sqlite.connect(path))

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    @property
    def write_errors(self) -> int:
        """Write batches that failed (each logged once): their writes are lost."""
        return self._write_errors

    # -- life ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (making a SQLite file's directory) and bring the schema up to date."""
        if self._thread is not None or self._closed:
            raise StoreError(f"store {self.url} was already started: open a new one")
        self._thread = threading.Thread(target=self._work, name="shim-store", daemon=True)
        self._thread.start()
        try:
            await self._submit(lambda db: _migrate(db, self.url), _START, write=True)
        except StoreError:
            self._closed = True  # the worker has stopped
            raise

    async def close(self, within: float | None = None) -> None:
        """Commit what is queued and close the connection. Writes after this are ignored.

        With `within`, wait at most that many seconds: a database that has not answered by then (one
        that takes connections and never replies says nothing for minutes) is left to the worker, a
        daemon thread, and what was not committed is given up: logged once, its comparisons counted."""
        if self._closing is None:
            self._closed = True
            if self._thread is None:
                return
            try:
                self._closing = self._call(lambda db: None, _CLOSE, write=False)
            except StoreError:
                return  # the worker has stopped already (it could not start)
        try:
            async with asyncio.timeout(within):
                with contextlib.suppress(StoreError):  # it was stopping as we asked: nothing is left open
                    await asyncio.shield(self._closing)
        except TimeoutError:
            self._give_up(within)

    def _give_up(self, within: float | None) -> None:
        """The worker did not finish in time: it writes nothing more, and what it had is logged as lost."""
        with self._lock:
            if self._stopped:
                return  # it has just finished
            self._stopped = self._abandoned = True
            comparisons = self._backlog
        left: list[_Write | _Call] = []
        with contextlib.suppress(queue.Empty):
            while True:
                left.append(self._queue.get_nowait())
        for job in left:
            if isinstance(job, _Call) and job.what == _CLOSE:
                self._queue.put(job)  # the worker, should it ever come back, closes the connection and ends
        writes = [*self._writing, *self._retry, *(job for job in left if isinstance(job, _Write))]
        marks = sorted({str(row[0]) for job in writes if job.sql == _INSERT_MARK for row in job.rows})
        structlog.get_logger("shim.store").error(
            "store did not answer in time: what it had not written is lost",
            store=self.url,
            within_s=within,
            comparisons=comparisons,
            keys_out_of_step=marks,
        )

    async def flush(self) -> None:
        """Wait until every write enqueued before this call is committed (or its batch failed)."""
        await self._submit(lambda db: None, _FLUSH, write=False)

    # -- id pairs --------------------------------------------------------------------------------------

    def put_pairs(self, pairs: Sequence[IdPair]) -> None:
        """Learn pairs (enqueued); a pair conflicting with one already known is ignored."""
        if self._closed or not pairs:
            return
        now = time.time()
        rows = [(p.kind, p.bank_id, p.bk_id, p.owner, p.learned_at if p.learned_at else now) for p in pairs]
        self._queue.put(_Write(_INSERT_PAIR, rows))

    async def find_pairs(self, kind: str, side: str, values: Sequence[str]) -> list[IdPair]:
        """The pairs of `kind` whose `side` ("bank" or "bk") id is one of `values`, in their order."""
        column = _SIDES.get(side)
        if column is None:
            raise ValueError(f"side must be 'bank' or 'bk', not {side!r}")
        if not values:
            return []

        def read(db: _Db) -> list[IdPair]:
            found: dict[str, IdPair] = {}
            for chunk in _chunks(values):
                where = f"kind = ? AND {column} IN ({_marks(len(chunk))})"
                sql = f"SELECT {_PAIR_COLUMNS} FROM id_pairs WHERE {where}"
                for row in db.run(sql, [kind, *chunk]):
                    pair = IdPair(*row)
                    found[getattr(pair, column)] = pair
            return [found[value] for value in dict.fromkeys(values) if value in found]

        return await self._submit(read, "read", write=False)

    async def recent_pairs(self, limit: int) -> list[IdPair]:
        """Up to `limit` pairs, the most recently learned first."""
        if limit <= 0:
            return []
        sql = f"SELECT {_PAIR_COLUMNS} FROM id_pairs ORDER BY learned_at DESC, kind, bank_id LIMIT ?"
        return await self._submit(
            lambda db: [IdPair(*row) for row in db.run(sql, (limit,))], "read", write=False
        )

    # -- keys out of step ------------------------------------------------------------------------------

    def mark_out_of_step(self, marks: Sequence[OutOfStep]) -> None:
        """Mark keys out of step (enqueued); a key keeps its earliest mark."""
        if self._closed or not marks:
            return
        self._queue.put(_Write(_INSERT_MARK, [(m.key, m.since, m.method, m.reason) for m in marks]))

    async def out_of_step(self) -> list[OutOfStep]:
        """Every key out of step, ordered by key."""
        sql = "SELECT key, since, method, reason FROM out_of_step ORDER BY key"
        return await self._submit(lambda db: [OutOfStep(*row) for row in db.run(sql)], "read", write=False)

    async def clear_mark(self, key: str, since: float) -> bool:
        """Clear one key's mark if it is still the one made at `since` (a later, earlier-dated mark from
        another replica stays); True when it was cleared."""
        sql = "DELETE FROM out_of_step WHERE key = ? AND since = ? RETURNING key"
        return bool(await self._submit(lambda db: db.run(sql, (key, since)), "update", write=True))

    async def resync(self, keys: Sequence[str]) -> list[str]:
        """Clear the marks of `keys`; returns those of them that were out of step, in their order."""
        if not keys:
            return []

        def delete(db: _Db) -> list[str]:
            gone: set[str] = set()
            for chunk in _chunks(keys):
                sql = f"DELETE FROM out_of_step WHERE key IN ({_marks(len(chunk))}) RETURNING key"
                gone.update(row[0] for row in db.run(sql, chunk))
            return [key for key in dict.fromkeys(keys) if key in gone]

        return await self._submit(delete, "update", write=True)

    # -- modes ------------------------------------------------------------------------------------------

    async def modes(self) -> dict[str, str]:
        """The modes set at run time, by scope."""
        sql = "SELECT scope, mode FROM modes"
        return await self._submit(lambda db: dict(db.run(sql)), "read", write=False)

    async def change_modes(self, changes: Sequence[ModeChange]) -> None:
        """Set the modes and record the changes, in one transaction (every replica reads them)."""

        def write(db: _Db) -> None:
            for change in changes:
                db.run(
                    "INSERT INTO modes (scope, mode, at) VALUES (?, ?, ?)"
                    " ON CONFLICT (scope) DO UPDATE SET mode = excluded.mode, at = excluded.at",
                    (change.scope, change.to_mode, change.at),
                )
                db.run(
                    "INSERT INTO mode_changes (id, at, who, scope, from_mode, to_mode, reason, forced)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        secrets.token_hex(16),
                        change.at,
                        change.who,
                        change.scope,
                        change.from_mode,
                        change.to_mode,
                        change.reason,
                        int(change.forced),
                    ),
                )

        await self._submit(write, "update", write=True)

    async def mode_history(self, limit: int = 100) -> list[ModeChange]:
        """The latest mode changes, newest first."""
        sql = (
            "SELECT at, who, scope, from_mode, to_mode, reason, forced FROM mode_changes"
            " ORDER BY at DESC, id LIMIT ?"
        )

        def read(db: _Db) -> list[ModeChange]:
            return [
                ModeChange(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]))
                for row in db.run(sql, (limit,))
            ]

        return await self._submit(read, "read", write=False)

    # -- comparisons ------------------------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Comparisons enqueued and not yet committed (or failed)."""
        return self._backlog

    def put_comparisons(self, records: Sequence[ComparisonRecord]) -> None:
        """Store comparisons (enqueued, committed in one batch with what is queued beside them)."""
        if self._closed or not records:
            return
        rows, paths = comparison_rows(records)
        with self._lock:
            self._backlog += len(records)
        more = ((_INSERT_PATH, paths),) if paths else ()
        self._queue.put(_Write(_INSERT_COMPARISON, rows, len(records), more))

    def put_counts(self, at: float, replica: str, counts: Sequence[tuple[str, str, int]]) -> None:
        """Record counts (method, name, value) taken at `at`: what was counted but not stored."""
        if self._closed or not counts:
            return
        self._queue.put(_Write(_INSERT_COUNT, [(at, replica, m, n, v) for m, n, v in counts]))

    async def select(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query written with ? parameters (both engines)."""
        return await self._submit(lambda db: db.run(sql, params), "read", write=False)

    def enqueue(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        """A write committed with the next batch, never waited for (like put_pairs); ignored once closed."""
        if self._closed or not rows:
            return
        self._queue.put(_Write(sql, rows))

    async def write(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        """A write committed before this returns (durable as the engine makes commits), with ? parameters.

        It is committed in one batch with the writes queued beside it, so concurrent callers share a
        commit. A batch that fails for a passing reason is kept for another try; this returns then too
        (see `flush`)."""
        if not rows:
            return
        self.enqueue(sql, rows)
        await self.flush()

    async def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """One statement that writes (DELETE ... RETURNING, say), committed; its rows."""
        return await self._submit(lambda db: db.run(sql, params), "update", write=True)

    async def delete_before(self, at: float) -> int:
        """Remove the comparisons (and counts) older than `at`; returns how many comparisons went."""

        def delete(db: _Db) -> int:
            db.run("DELETE FROM comparison_paths WHERE at < ?", (at,))
            db.run("DELETE FROM counts WHERE at < ?", (at,))
            return len(db.run("DELETE FROM comparisons WHERE at < ? RETURNING id", (at,)))

        return await self._submit(delete, "update", write=True)

    # -- the caller's side of the queue ----------------------------------------------------------------

    def _call(self, work: Callable[[_Db], object], what: str, write: bool) -> asyncio.Future[object]:
        if self._thread is None:
            raise StoreError(f"store {self.url} is not started: call start() first")
        if self._closed and what != _CLOSE:
            raise StoreError(f"store {self.url} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        with self._lock:  # so that no call is enqueued after the worker has stopped, unanswered
            if self._stopped:
                raise StoreError(f"store {self.url} is closed")
            self._queue.put(_Call(work, what, write, loop, future))
        return future

    async def _submit(self, work: Callable[[_Db], T], what: str, write: bool) -> T:
        return cast(T, await self._call(work, what, write))

    # -- the worker thread -----------------------------------------------------------------------------

    def _work(self) -> None:
        """Run jobs until closed: writes next to each other in one transaction, each call in its own.

        Writes that failed for a passing reason (the database locked or unreachable) are kept and
        tried again, first, every _RETRY_EVERY seconds or with the next jobs."""
        while True:
            if self._retry:
                try:
                    jobs: list[_Write | _Call] = [self._queue.get(timeout=_RETRY_EVERY)]
                except queue.Empty:
                    jobs = []
            else:
                jobs = [self._queue.get()]
            while True:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            writes, self._retry = self._retry, []
            flushes: list[_Call] = []  # answered once the writes before them are committed, in one batch
            for index, job in enumerate(jobs):
                if isinstance(job, _Write):
                    writes.append(job)
                    continue
                if job.what == _FLUSH:
                    flushes.append(job)
                    continue
                if writes:
                    self._write(writes, final=job.what == _CLOSE)
                    writes = []
                for flush in flushes:
                    flush.answer()
                flushes = []
                if job.what == _CLOSE and self._retry:
                    self._write(self._retry, final=True)
                    self._retry = []
                if self._answer(job):
                    self._stop(jobs[index + 1 :])
                    return
            if writes:
                self._write(writes)
            for flush in flushes:
                flush.answer()

    def _answer(self, call: _Call) -> bool:
        """Run a call and answer it; True when the worker must stop (closed, or could not start)."""
        if call.what in (_FLUSH, _CLOSE):  # the writes before it are done: no need of the database
            if call.what == _CLOSE:
                self._drop()
            call.answer()
            return call.what == _CLOSE
        try:
            result = self._transaction(call.work, call.write)
        except Exception as error:
            if not isinstance(error, StoreError):
                error = StoreError(f"cannot {call.what} store {self.url}: {_one_line(error)}")
            call.answer(error=error)
            return call.what == _START
        call.answer(result)
        return False

    def _write(self, writes: list[_Write], final: bool = False) -> None:
        """Commit these writes in one transaction.

        On a passing failure (locked, unreachable) they are kept for another try, unless `final`;
        on any other they are lost: logged, counted in `write_errors`, and the comparisons among
        them counted by method (`take_lost`)."""
        if self._abandoned:
            return  # close() gave up on them, and said so
        grouped: dict[str, list[tuple[object, ...]]] = {}
        for write in writes:
            grouped.setdefault(write.sql, []).extend(write.rows)
            for sql, rows in write.more:
                grouped.setdefault(sql, []).extend(rows)

        def run(db: _Db) -> None:
            for sql, rows in grouped.items():
                db.run_many(sql, rows)

        log = structlog.get_logger("shim.store")
        self._writing = writes
        try:
            self._transaction(run, write=True)
        except Exception as error:
            if not final and _passing(error):
                if not self._retrying:
                    self._retrying = True
                    log.warning(
                        "store unavailable: writes are kept and tried again",
                        store=self.url,
                        error=_one_line(error),
                    )
                self._retry = writes
                return
            self._write_errors += 1
            lost = Counter(row[3] for row in grouped.get(_INSERT_COMPARISON, ()))
            with self._lock:
                self._lost.update(lost)
            log.warning(
                "store write failed; its writes are lost",
                store=self.url,
                rows=sum(len(rows) for rows in grouped.values()),
                comparisons=sum(lost.values()),
                error=_one_line(error),
            )
        else:
            if self._retrying:
                self._retrying = False
                log.info("store available again", store=self.url)
            self._replicas.update(str(row[2]) for row in grouped.get(_INSERT_COMPARISON, ()))
            self._replicas.update(str(row[1]) for row in grouped.get(_INSERT_COUNT, ()))
        finally:
            self._writing = []
        done = sum(write.comparisons for write in writes)
        if done:
            with self._lock:
                self._backlog -= done

    def take_lost(self) -> dict[str, int]:
        """Comparisons lost in failed writes since the last call, by method."""
        with self._lock:
            lost, self._lost = dict(self._lost), Counter()
        return {str(method): n for method, n in lost.items()}

    def _transaction(self, work: Callable[[_Db], T], write: bool) -> T:
        """Run `work` in one transaction, connecting first when there is no live connection."""
        if self._db is not None and self._db.replaced:
            self._renew(self._db)
        if self._db is None or self._db.lost:
            self._drop()
            try:
                self._db = self._connect()
            except Exception as error:
                raise StoreError(f"cannot open store {self.url}: {_one_line(error)}") from None
        db = self._db
        try:
            db.begin(write)
            result = work(db)
            db.commit()
        except BaseException:
            try:
                db.rollback()
            except Exception:
                self._drop()  # a connection that cannot roll back is of no more use
            raise
        return result

    def _renew(self, old: _Db) -> None:
        """The SQLite file was deleted (or replaced) under the connection, which would go on writing
        into a file no one can open: make a new one at its path, migrated, with what the old one holds
        that a shim works on (id pairs, keys out of step, modes, intents ...) and this store's counts;
        the comparisons it committed there are counted as lost. Logged once. When the new file cannot
        be made, StoreError, and the next transaction tries again."""
        assert isinstance(old, _Sqlite)
        assert old.path is not None
        try:
            new = self._connect()
        except Exception as error:
            raise StoreError(f"cannot make a new file for store {self.url}: {_one_line(error)}") from None
        try:
            new.begin(write=True)
            _migrate(new, self.url)
            new.commit()
        except Exception as error:
            with contextlib.suppress(Exception):
                new.rollback()
            new.close()
            raise StoreError(f"cannot make a new file for store {self.url}: {_one_line(error)}") from None
        log = structlog.get_logger("shim.store")
        lost: int | str
        try:
            lost = old.carry(old.path, sorted(self._replicas))
        except Exception as error:
            lost = "unknown"
            log.warning("cannot copy from the deleted store file", store=self.url, error=_one_line(error))
        with contextlib.suppress(Exception):
            old.close()
        self._db = new
        log.error(
            "store file deleted while in use: a new one is made; the comparisons in the deleted one are"
            " counted as lost",
            store=self.url,
            comparisons_lost=lost,
        )

    def _drop(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None

    def _stop(self, left: list[_Write | _Call]) -> None:
        """The worker ends: close the connection, and answer whoever still waits."""
        self._drop()
        with self._lock:
            self._stopped = True
            while True:
                try:
                    left.append(self._queue.get_nowait())
                except queue.Empty:
                    break
        for job in left:
            if isinstance(job, _Call):
                job.answer(error=StoreError(f"store {self.url} is closed"))
