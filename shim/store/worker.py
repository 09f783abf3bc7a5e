"""The store's worker thread: it owns the connection and runs the jobs of one FIFO queue.

Batching and durability: the worker takes every job queued at once; writes next to each other are
committed in one transaction (one batch). A write enqueued is committed within one batch; a flush
waits for it, and a read enqueued after a write sees it. A batch that fails for a passing reason (the
database locked, unreachable, full or read-only) is kept and tried again, first, every RETRY_EVERY
seconds or with the next jobs (the comparisons it holds stay in the backlog, which the sink bounds);
one that fails otherwise is logged, counted in `write_errors` and dropped, its comparisons counted by
method (`take_lost`) and each write's `lost` called. The worker goes on, and on PostgreSQL reconnects
at the next job. A read that fails raises StoreError.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import structlog

from shim.store._errors import StoreError, one_line
from shim.store._jobs import CLOSE, FLUSH, RETRY_EVERY, START, Call, Write, passing
from shim.store.backends import Db, Sqlite
from shim.store.migrations import STATE_TABLES, migrate

T = TypeVar("T")


class Worker:
    """The jobs' queue and the thread's state; `run` is the thread. The caller's side puts jobs in
    `queue` (calls under `lock`, unless `stopped`) and reads the counts."""

    def __init__(self, url: str, connect: Callable[[], Db]) -> None:
        self.url = url
        self._connect = connect
        self.queue: queue.SimpleQueue[Write | Call] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.stopped = False  # the worker has ended (guarded by lock)
        self.backlog = 0  # comparisons enqueued, not yet committed (guarded by lock)
        self.backlog_bytes = 0  # about how many bytes they hold (guarded by lock)
        self.write_errors = 0
        self._lost: Counter[str] = Counter()  # comparisons lost by method (guarded by lock)
        self._db: Db | None = None
        self._retry: list[Write] = []  # writes to try again
        self._retrying = False
        self._writing: list[Write] = []  # the batch being committed
        self._abandoned = False  # close() gave up waiting: the worker writes nothing more
        self._replicas: set[str] = set()  # replicas whose comparisons or counts it committed

    def run(self) -> None:
        """Run jobs until closed: writes next to each other in one transaction, each call in its own.

        Writes that failed for a passing reason (the database locked, unreachable, full or read-only)
        are kept and tried again, first, every RETRY_EVERY seconds or with the next jobs."""
        while True:
            if self._retry:
                try:
                    jobs: list[Write | Call] = [self.queue.get(timeout=RETRY_EVERY)]
                except queue.Empty:
                    jobs = []
            else:
                jobs = [self.queue.get()]
            while True:
                try:
                    jobs.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            writes, self._retry = self._retry, []
            flushes: list[Call] = []  # answered once the writes before them are committed, in one batch
            for index, job in enumerate(jobs):
                if isinstance(job, Write):
                    writes.append(job)
                    continue
                if job.what == FLUSH:
                    flushes.append(job)
                    continue
                if writes:
                    self._write(writes, final=job.what == CLOSE)
                    writes = []
                for flush in flushes:
                    flush.answer()
                flushes = []
                if job.what == CLOSE and self._retry:
                    self._write([], final=True)
                if self._answer(job):
                    self._stop(jobs[index + 1 :])
                    return
            if writes:
                self._write(writes)
            for flush in flushes:
                flush.answer()

    def _answer(self, call: Call) -> bool:
        """Run a call and answer it; True when the worker must stop (closed, or could not start)."""
        if call.what in (FLUSH, CLOSE):  # the writes before it are done: no need of the database
            if call.what == CLOSE:
                self._drop()
            call.answer()
            return call.what == CLOSE
        try:
            result = self._transaction(call.work, call.write)
        except Exception as error:
            if not isinstance(error, StoreError):
                error = StoreError(f"cannot {call.what} store {self.url}: {one_line(error)}")
            call.answer(error=error)
            return call.what == START
        call.answer(result)
        return False

    def _write(self, writes: list[Write], final: bool = False) -> None:
        """Commit these writes in one transaction, after the writes kept for another try.

        On a passing failure (locked, unreachable, full, read-only) they are kept for another try,
        unless `final`; on any other they are lost: logged, counted in `write_errors`, the comparisons
        among them counted by method (`take_lost`), and each write's `lost` called."""
        if self._abandoned:
            return  # close() gave up on them, and said so
        # writes kept from a try earlier in this round of jobs go first, in their order, never left behind
        writes, self._retry = [*self._retry, *writes], []
        grouped: dict[str, list[tuple[object, ...]]] = {}
        for write in writes:
            grouped.setdefault(write.sql, []).extend(write.rows)
            for sql, rows in write.more:
                grouped.setdefault(sql, []).extend(rows)

        def run(db: Db) -> None:
            for sql, rows in grouped.items():
                db.run_many(sql, rows)

        log = structlog.get_logger("shim.store")
        self._writing = writes
        try:
            self._transaction(run, write=True)
        except Exception as error:
            if not final and passing(error):
                if not self._retrying:
                    self._retrying = True
                    log.warning(
                        "store unavailable: writes are kept and tried again",
                        store=self.url,
                        error=one_line(error),
                    )
                self._retry = writes
                return
            if len(writes) > 1:  # written again one at a time: only the writes at fault are lost
                self._writing = []
                for write in writes:
                    self._write([write], final)
                return
            self.write_errors += 1
            lost = Counter(method for write in writes for method in write.methods)
            with self.lock:
                self._lost.update(lost)
            for write in writes:
                if write.lost is not None:
                    write.lost()
            log.warning(
                "store write failed; its writes are lost",
                store=self.url,
                rows=sum(len(rows) for rows in grouped.values()),
                comparisons=sum(lost.values()),
                error=one_line(error),
            )
        else:
            if self._retrying:
                self._retrying = False
                log.info("store available again", store=self.url)
            for write in writes:
                self._replicas.update(write.replicas)
                if write.committed is not None:
                    write.committed()
        finally:
            self._writing = []
        done = sum(len(write.methods) for write in writes)
        if done:
            size = sum(write.size for write in writes)
            with self.lock:
                self.backlog -= done
                self.backlog_bytes -= size

    def take_lost(self) -> dict[str, int]:
        """Comparisons lost in failed writes since the last call, by method."""
        with self.lock:
            lost, self._lost = dict(self._lost), Counter()
        return {str(method): n for method, n in lost.items()}

    def _transaction(self, work: Callable[[Db], T], write: bool) -> T:
        """Run `work` in one transaction, connecting first when there is no live connection."""
        if self._db is not None and self._db.replaced:
            self._renew(self._db)
        if self._db is None or self._db.lost:
            self._drop()
            try:
                self._db = self._connect()
            except Exception as error:
                raise StoreError(f"cannot open store {self.url}: {one_line(error)}") from None
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

    def _renew(self, old: Db) -> None:
        """The SQLite file was deleted (or replaced) under the connection, which would go on writing
        into a file no one can open: make a new one at its path, migrated, with what the old one holds
        that a shim works on (id pairs, keys out of step, modes, intents ...) and this store's counts;
        the comparisons it committed there are counted as lost. Logged once. When the new file cannot
        be made, StoreError, and the next transaction tries again."""
        assert isinstance(old, Sqlite)
        assert old.path is not None
        try:
            new = self._connect()
        except Exception as error:
            raise StoreError(f"cannot make a new file for store {self.url}: {one_line(error)}") from None
        try:
            new.begin(write=True)
            migrate(new, self.url)
            new.commit()
        except Exception as error:
            with contextlib.suppress(Exception):
                new.rollback()
            new.close()
            raise StoreError(f"cannot make a new file for store {self.url}: {one_line(error)}") from None
        log = structlog.get_logger("shim.store")
        lost: int | str
        try:
            lost = old.carry(old.path, STATE_TABLES, sorted(self._replicas))
        except Exception as error:
            lost = "unknown"
            log.warning("cannot copy from the deleted store file", store=self.url, error=one_line(error))
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

    def _stop(self, left: list[Write | Call]) -> None:
        """The worker ends: close the connection, and answer whoever still waits."""
        self._drop()
        with self.lock:
            self.stopped = True
            while True:
                try:
                    left.append(self.queue.get_nowait())
                except queue.Empty:
                    break
        for job in left:
            if isinstance(job, Call):
                job.answer(error=StoreError(f"store {self.url} is closed"))

    def abandon(self, within: float | None) -> None:
        """Called from the caller's side when the worker did not finish closing in time: it writes
        nothing more, and what it had is logged as lost."""
        with self.lock:
            if self.stopped:
                return  # it has just finished
            self.stopped = self._abandoned = True
            comparisons = self.backlog
        left: list[Write | Call] = []
        with contextlib.suppress(queue.Empty):
            while True:
                left.append(self.queue.get_nowait())
        for job in left:
            if isinstance(job, Call) and job.what == CLOSE:
                self.queue.put(job)  # the worker, should it ever come back, closes the connection and ends
        writes = [*self._writing, *self._retry, *(job for job in left if isinstance(job, Write))]
        marks = sorted({str(key) for job in writes for key in job.keys})
        structlog.get_logger("shim.store").error(
            "store did not answer in time: what it had not written is lost",
            store=self.url,
            within_s=within,
            comparisons=comparisons,
            keys_out_of_step=marks,
        )
