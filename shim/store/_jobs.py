"""What the store's worker thread takes from its queue: writes, and calls whose answer someone awaits."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg

from shim.store._errors import StoreError
from shim.store.backends import Db

Rows = Sequence[tuple[object, ...]]


@dataclass(slots=True)
class Write:
    """Rows for one statement, and the statements committed with them, in order; never waited for.

    What the rows stand for, for the store's accounting: `methods`, the method of each comparison among
    them (the backlog; counted by method when the write is lost), and `size`, about how many bytes they
    hold (the backlog's bytes); `replicas`, the replicas whose rows they
    are (a SQLite file made again carries their counts); `keys`, the keys out of step they mark (named in
    the log when close gives up on them). `lost`, when given, is called (on the store's thread) if the
    write fails for good, so that what it held can be written again later; `committed`, once its batch
    commits."""

    sql: str
    rows: Rows
    more: tuple[tuple[str, Rows], ...] = ()
    methods: Sequence[str] = ()
    replicas: frozenset[str] = frozenset()
    keys: Sequence[str] = ()
    lost: Callable[[], None] | None = None
    committed: Callable[[], None] | None = None
    size: int = 0


@dataclass(slots=True)
class Call:
    """Work for the worker whose answer someone awaits."""

    work: Callable[[Db], object]
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


START = "open"  # the first call: connect and migrate; when it fails the worker ends
FLUSH = "flush"  # a call that only answers, once the writes before it are done
CLOSE = "close"  # the last call: the worker closes the connection and ends

RETRY_EVERY = 0.5  # seconds between tries of writes kept after a passing failure
_PASSING = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "unable to open",
    "database or disk is full",
    "attempt to write a readonly database",
)


# PostgreSQL's SQLSTATEs of a server that takes writes again later, whatever psycopg's class: read-only
# (a standby during a failover, a managed server at a full disk: 25006, an InternalError), and the classes
# of connection exceptions, insufficient resources and operator intervention (shut down, starting up)
_PASSING_PG = ("25006",)
_PASSING_PG_CLASSES = ("08", "53", "57")


def passing(error: BaseException) -> bool:
    """Whether a failed write may succeed later: the database locked, unreachable, gone, full (its disk)
    or read-only (its file system, or a PostgreSQL server) for a while."""
    if isinstance(error, StoreError | psycopg.OperationalError):
        return True
    if isinstance(error, psycopg.Error):
        state = error.sqlstate or ""
        return state in _PASSING_PG or state[:2] in _PASSING_PG_CLASSES
    return isinstance(error, sqlite3.OperationalError) and str(error).lower().startswith(_PASSING)
