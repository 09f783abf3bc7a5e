"""The two engines behind one interface: an open connection, used by the store's worker thread only.

- SQLite, the embedded default: one file in WAL mode (synchronous=NORMAL, so a commit survives a
  crash of the shim but maybe not of the machine), or ":memory:" where nothing persists. Another
  process (the CLI) may open the same file at the same time. A file deleted under the store is
  made again (`Sqlite.replaced`, `Sqlite.carry`, and `_sqlite_file`).
- PostgreSQL, for a fleet of replicas sharing one database, through psycopg 3.

SQL is written once, portable, with ? for parameters; `Postgres` turns them into psycopg's %s.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import psycopg.conninfo

from shim.store import _sqlite_file
from shim.store._errors import StoreError, one_line
from shim.store._text import adapt
from shim.store.contents import is_store, not_another_applications

SQLITE_MIN = (3, 35, 0)  # DELETE ... RETURNING
EACH = 10_000  # rows fetched at a time by `Db.each`
ADVISORY_LOCK = 0x5348_494D_5354_4F52  # "SHIMSTOR": held by the replica that migrates


class Db:
    """One open connection, with its engine's ways. Used by the worker thread only."""

    NOW = ""  # SQL for the database's clock: seconds since the epoch, as a float

    def run(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        raise NotImplementedError

    def change(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run a statement that writes; how many rows it changed (none fetched)."""
        raise NotImplementedError

    def each(self, sql: str, params: Sequence[object] = ()) -> Iterator[tuple[Any, ...]]:
        """The rows of a query, fetched `EACH` at a time as they are read, never all at once (read them all,
        within the transaction)."""
        raise NotImplementedError

    def begin(self, write: bool) -> None:
        """Start a transaction; `write` when it will write (SQLite then takes the write lock at once)."""
        raise NotImplementedError

    def lock_schema(self) -> None:
        """Within the transaction, keep other replicas from migrating at the same time."""

    def has_table(self, name: str) -> bool:
        """Whether the database has a table of this name (on PostgreSQL: where its search_path looks)."""
        raise NotImplementedError

    def repeatable(self) -> None:
        """First in a read transaction: every statement of it sees the same rows, those committed when its
        first statement ran (SQLite in WAL mode reads so already; PostgreSQL: REPEATABLE READ)."""

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


class Sqlite(Db):
    NOW = "((julianday('now') - 2440587.5) * 86400.0)"  # to the millisecond

    def __init__(self, conn: sqlite3.Connection, path: Path | None = None) -> None:
        self._conn = conn
        self.path = path
        self._file = _sqlite_file.identity(path) if path is not None else None

    @staticmethod
    def connect(path: Path | None, create: bool = True) -> Sqlite:
        """A connection to the file at `path` (in memory: None). With `create` false, only to a shim store
        that is there already (`contents.is_store`): nothing is made, and no other file is written to."""
        if sqlite3.sqlite_version_info < SQLITE_MIN:
            need = ".".join(map(str, SQLITE_MIN))
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old: the store needs {need} or newer")
        if path is not None and not create:
            is_store(path)
        elif path is not None:
            not_another_applications(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise StoreError(f"cannot create the directory {path.parent}: {one_line(error)}") from None
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
        return Sqlite(conn, path)

    def run(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    def run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        self._conn.executemany(sql, rows)

    def change(self, sql: str, params: Sequence[object] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    def each(self, sql: str, params: Sequence[object] = ()) -> Iterator[tuple[Any, ...]]:
        cursor = self._conn.execute(sql, params)
        try:
            while rows := cursor.fetchmany(EACH):
                yield from rows
        finally:
            cursor.close()

    def has_table(self, name: str) -> bool:
        return bool(self.run("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

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

    def carry(self, path: Path, tables: Sequence[str], replicas: Sequence[str]) -> int:
        """Copy `tables` (what a shim works on) into the (migrated) database at `path`, and this file's
        counts of `replicas`; their comparisons are counted there as `store_failed`. Returns how many."""
        return _sqlite_file.carry(self._conn, path, tables, replicas, "store_failed")


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


class Postgres(Db):
    NOW = "extract(epoch from clock_timestamp())"  # not now(): the transaction's start

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        self._conn = conn

    @staticmethod
    def connect(conninfo: str) -> Postgres:
        conn = psycopg.connect(Postgres.conninfo(conninfo), autocommit=False)
        adapt(conn.adapters)  # text with a NUL in it, as protobuf strings may hold
        return Postgres(conn)

    @staticmethod
    def conninfo(url: str) -> str:
        """`url` with the defaults it may override: give up on an unreachable server after 10 s."""
        params: dict[str, Any] = {"connect_timeout": 10, "application_name": "shim"}
        params.update(psycopg.conninfo.conninfo_to_dict(url))
        return psycopg.conninfo.make_conninfo(**params)

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

    def change(self, sql: str, params: Sequence[object] = ()) -> int:
        with self._conn.cursor() as cursor:
            cursor.execute(self._sql(sql), params)
            return cursor.rowcount

    def each(self, sql: str, params: Sequence[object] = ()) -> Iterator[tuple[Any, ...]]:
        with self._conn.cursor(name="shim_each") as cursor:  # on the server: the rows come as read
            cursor.itersize = EACH
            cursor.execute(self._sql(sql), params)
            yield from cursor

    def begin(self, write: bool) -> None:
        pass  # with autocommit off, psycopg opens the transaction at the first statement

    def lock_schema(self) -> None:
        self.run("SELECT pg_advisory_xact_lock(?)", (ADVISORY_LOCK,))

    def has_table(self, name: str) -> bool:
        return bool(self.run("SELECT to_regclass(?) IS NOT NULL", (name,))[0][0])

    def repeatable(self) -> None:
        self.run("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def commit(self) -> None:
        self._conn.commit()

    def rollback(self) -> None:
        self._conn.rollback()

    def close(self) -> None:
        self._conn.close()

    @property
    def lost(self) -> bool:
        return self._conn.closed or self._conn.broken
