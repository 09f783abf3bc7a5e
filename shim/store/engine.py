"""The store's engine: statements in, rows out, on a thread of its own; no SQL of any domain.

URL forms given to `Engine.open`:

    postgresql://user:password@host:5432/db   (or postgres://...; libpq's query
                                               parameters too, e.g. ?options=...)
    sqlite:///abs/path/shim.db                 an absolute file
    sqlite:state/shim.db or state/shim.db      a file relative to `base`, else the cwd
    :memory:                                   SQLite in memory

Threading: each store has one worker thread (`worker.Worker`) that owns its connection and takes
jobs from a FIFO queue. The async methods put a job there and await its answer, so the event loop
never waits on the database. `enqueue` and `put` only enqueue: they never block and never raise.
Writes enqueued before `start()` are committed once it has connected; after `close()` they are
ignored. The worker is a daemon thread: `close()` before exiting; `close(within=...)` leaves behind a
worker that a database does not answer.

The repositories (`shim/store/pairs.py`, `marks.py`, ...) hold the SQL of each domain and call the
engine; `shim.store.Store` is the engine with them as attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar, cast

from shim.store._errors import StoreError
from shim.store._jobs import CLOSE, FLUSH, START, Call, Rows, Write
from shim.store._url import other_shown, postgres_shown
from shim.store.backends import Db, Postgres, Sqlite
from shim.store.migrations import migrate
from shim.store.worker import Worker

T = TypeVar("T")

_CHUNK = 500  # values per IN (...) list, well under every engine's limit
_FORMS = (
    "postgresql://..., postgres://..., sqlite:///abs/path.db, sqlite:rel/path.db, a plain path, or :memory:"
)


def chunks(values: Sequence[str]) -> Iterator[list[str]]:
    """The values, each once, in lists short enough for one IN (...)."""
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), _CHUNK):
        yield unique[start : start + _CHUNK]


def placeholders(count: int) -> str:
    """ "?, ?, ?" for `count` values."""
    return ", ".join("?" * count)


_POSTGRES = re.compile(r"postgres(ql)?://", re.IGNORECASE)


def _sqlite_path(url: str, base: Path | None) -> Path | None:
    """The SQLite file `url` names (relative to `base`, else the working directory); None: in memory."""
    masked = other_shown(url)
    rest = url
    if url.lower().startswith("sqlite:"):
        rest = url[len("sqlite:") :]
        if rest.startswith("//"):  # sqlite:///abs/path: an empty host, then the absolute path
            rest = rest[2:]
            if not rest.startswith("/"):
                raise StoreError(f"invalid store url {masked}: a SQLite url has no host; use one of {_FORMS}")
    elif re.match(r"[a-z][a-z0-9+.-]*:", url, flags=re.IGNORECASE) and url != ":memory:":
        raise StoreError(f"unknown store url {masked}: use one of {_FORMS}")
    if not rest:
        raise StoreError(f"store url {masked!r} names no file: use one of {_FORMS}")
    if rest == ":memory:":
        return None
    path = Path(rest)
    return path if path.is_absolute() else (base if base is not None else Path.cwd()) / path


class Engine:
    """The shim's shared state in SQLite or PostgreSQL. Make one with `open(url)`, then `start()`."""

    def __init__(self, url: str, connect: Callable[[], Db]) -> None:
        self.url = url  # as shown: without its password or any other secret (`shim.store._url`)
        self.conninfo: str | None = None  # PostgreSQL's, unmasked (never logged): for LISTEN
        self.create = True  # start() makes the store, or brings an older one up to date
        self._worker = Worker(url, connect)
        self._thread: threading.Thread | None = None
        self._closed = False  # no more writes taken
        self._closing: asyncio.Future[object] | None = None

    @classmethod
    def open(cls, url: str, base: Path | None = None, create: bool = True) -> Self:
        """A store for `url` (see the module docstring for the forms); it connects at `start()`. With
        `create` false (the commands that read a store), only one that is there: `start()` refuses a
        missing or empty file, or a database that holds no shim store, and makes nothing in it."""
        engine = cls._open(url, base, create)
        engine.create = create
        return engine

    @classmethod
    def _open(cls, url: str, base: Path | None, create: bool) -> Self:
        if _POSTGRES.match(url):
            engine = cls(postgres_shown(url), lambda: Postgres.connect(url))
            engine.conninfo = url
            return engine
        path = _sqlite_path(url, base)
        if path is None:
            return cls(other_shown(url), lambda: Sqlite.connect(None))
        return cls(other_shown(url), lambda: Sqlite.connect(path, create))

    @staticmethod
    def holds_nothing(url: str, base: Path | None = None) -> bool:
        """Whether the store at `url` holds nothing before it is opened: one in memory, or a SQLite file that
        is not there."""
        if _POSTGRES.match(url):
            return False
        path = _sqlite_path(url, base)
        return path is None or not path.exists()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @property
    def write_errors(self) -> int:
        """Write batches that failed (each logged once): their writes are lost."""
        return self._worker.write_errors

    @property
    def backlog(self) -> int:
        """Comparisons enqueued and not yet committed (or failed)."""
        return self._worker.backlog

    @property
    def backlog_bytes(self) -> int:
        """About how many bytes the comparisons of the backlog hold."""
        return self._worker.backlog_bytes

    def take_lost(self) -> dict[str, int]:
        """Comparisons lost in failed writes since the last call, by method."""
        return self._worker.take_lost()

    # -- life ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (making a SQLite file's directory) and bring the schema up to date."""
        if self._thread is not None or self._closed:
            raise StoreError(f"store {self.url} was already started: open a new one")
        self._thread = threading.Thread(target=self._worker.run, name="shim-store", daemon=True)
        self._thread.start()
        try:
            await self._submit(lambda db: migrate(db, self.url, self.create), START, write=True)
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
                self._closing = self._call(lambda db: None, CLOSE, write=False)
            except StoreError:
                return  # the worker has stopped already (it could not start)
        try:
            async with asyncio.timeout(within):
                with contextlib.suppress(StoreError):  # it was stopping as we asked: nothing is left open
                    await asyncio.shield(self._closing)
        except TimeoutError:
            self._worker.abandon(within)

    async def flush(self) -> None:
        """Wait until every write enqueued before this call is committed (or its batch failed)."""
        await self._submit(lambda db: None, FLUSH, write=False)

    # -- statements ------------------------------------------------------------------------------------

    async def select(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query written with ? parameters (both engines)."""
        return await self.transaction(lambda db: db.run(sql, params), write=False)

    def enqueue(self, sql: str, rows: Rows) -> None:
        """A write committed with the next batch, never waited for; ignored once closed."""
        self.put(Write(sql, rows))

    def put(self, write: Write) -> None:
        """Enqueue a write (see `Write` for what it may say it stands for); ignored once closed."""
        if self._closed or not write.rows:
            return
        if write.methods:
            with self._worker.lock:
                self._worker.backlog += len(write.methods)
                self._worker.backlog_bytes += write.size
        self._worker.queue.put(write)

    async def write(self, sql: str, rows: Rows) -> None:
        """A write committed before this returns (durable as the engine makes commits), with ? parameters.

        It is committed in one batch with the writes queued beside it, so concurrent callers share a
        commit. A batch that fails for a passing reason is kept for another try; this returns then too
        (see `flush`)."""
        if not rows:
            return
        self.enqueue(sql, rows)
        await self.flush()

    async def write_committed(self, sql: str, rows: Rows) -> None:
        """As `write`, but StoreError unless these rows were committed before this returns: a batch kept
        for another try (the database locked past its busy timeout, unreachable, full or read-only) is
        not committed yet. The rows stay queued then, and may be committed later."""
        if not rows:
            return
        committed: list[bool] = []  # set on the worker's thread before the flush is answered
        self.put(Write(sql, rows, committed=lambda: committed.append(True)))
        await self.flush()
        if not committed:
            raise StoreError(
                f"cannot update store {self.url}: not committed (locked, unreachable, full or read-only);"
                " kept for another try"
            )

    async def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """One statement that writes (DELETE ... RETURNING, say), committed; its rows."""
        return await self.transaction(lambda db: db.run(sql, params), write=True)

    async def snapshot(self, work: Callable[[Db], T]) -> T:
        """`work` run in one read transaction in which every statement sees the same rows: those committed
        when its first statement ran, none written meanwhile (by this store or another process). The
        worker runs nothing else until it is done."""

        def read(db: Db) -> T:
            db.repeatable()
            return work(db)

        return await self.transaction(read, write=False)

    async def transaction(self, work: Callable[[Db], T], write: bool) -> T:
        """`work` run on the worker's connection in one transaction (of its own), committed; its result.
        A failure raises StoreError: "cannot read store ..." (or "update", when `write`)."""
        return await self._submit(work, "update" if write else "read", write=write)

    # -- the caller's side of the queue ----------------------------------------------------------------

    def _call(self, work: Callable[[Db], object], what: str, write: bool) -> asyncio.Future[object]:
        if self._thread is None:
            raise StoreError(f"store {self.url} is not started: call start() first")
        if self._closed and what != CLOSE:
            raise StoreError(f"store {self.url} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        with self._worker.lock:  # so that no call is enqueued after the worker has stopped, unanswered
            if self._worker.stopped:
                raise StoreError(f"store {self.url} is closed")
            self._worker.queue.put(Call(work, what, write, loop, future))
        return future

    async def _submit(self, work: Callable[[Db], T], what: str, write: bool) -> T:
        return cast(T, await self._call(work, what, write))
