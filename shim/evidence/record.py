"""Comparisons into the store: the evidence that reports and the gate read.

`StoreSink` is a sink: it turns each Comparison into a `ComparisonRecord`
and hands it to the store, which commits it in a batch on its own thread. It
never blocks: when more than `max_buffer` comparisons (or `max_buffer_bytes` of them) wait to be committed
(the database is slow or down), further ones are dropped and counted. The
counts of what was not stored (dropped here or by the comparison pipeline, or
lost in a write the store could not make) are written to the store now and
then, so that a report can say how much evidence is missing, and which replica lost it (with them,
what else a replica lost: calls its recording lost, intents of mirrored writes it could not store).

A record keeps: when, which replica, method, routing key, correlation id,
verdict and reason, both status codes and latencies, the count of real and
tolerated differences, the differences themselves (JSON; `shim.sinks.KEPT_DIFFERENCES`
at most), and the differing paths folded (`trades[*].fee`), one row each, with one example; with `[store]
payloads = true` also the request and both answers (base64), with the values
of redacted fields replaced (a message that does not decode is not kept).
Values of redacted fields never get here: the comparators replaced them first.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import structlog

from comparators import Comparison, Difference, jsonable
from shim.evidence.model import LOST
from shim.metrics import Counters
from shim.sinks import kept_differences, path_pattern
from shim.store import ComparisonRecord, PathRow, Store
from shim.store.comparisons import record_size

_log = structlog.get_logger("shim.evidence.record")

# counted by the shim, and written to the store's counts: comparisons that never reached it, and the other
# things a replica lost (the calls its recording lost, the intents of writes it could not store)
_NOT_STORED = ("comparisons_dropped", *LOST)


_named: tuple[int, str] | None = None  # this process's name (`replica_name`), with the pid it was made for


def replica_name() -> str:
    """This shim process, as the store names it: `host:pid:tag`, the tag six random hex digits drawn once
    per process. A process started again under the same host and pid (a container restarted in its pod, a
    new PID namespace) is so another replica, and what its predecessor left in the store (intents,
    tickets, a view) is taken for a dead replica's, not for its own. Earlier releases named a process
    `host:pid`."""
    global _named
    pid = os.getpid()
    if _named is None or _named[0] != pid:  # drawn again in a child process (a worker forked)
        _named = (pid, f"{socket.gethostname()}:{pid}:{secrets.token_hex(3)}")
    return _named[1]


_ids: tuple[int, str, Iterator[int]] | None = None  # (pid, this process's random prefix, a counter)
_ids_drawn = threading.Lock()


def time_ordered_id() -> str:
    """32 hex digits: the time in milliseconds, then 48 random bits drawn once per process and a count
    of the process's ids (as UUIDv7 does, with its counter), so that records land at the end of the
    store's indexes rather than on random pages, and ids from any number of processes differ. Drawing
    random bits for each id asked the system for them each time, which let go of the interpreter's lock
    on the threads that store comparisons: each such id then waited to take it back."""
    global _ids
    ids = _ids
    if ids is None or ids[0] != os.getpid():  # drawn again in a child process (a worker forked)
        with _ids_drawn:
            if _ids is None or _ids[0] != os.getpid():
                _ids = (os.getpid(), secrets.token_hex(6), itertools.count())
            ids = _ids
    return f"{int(time.time() * 1000):012x}{ids[1]}{next(ids[2]) & 0xFFFFFFFF:08x}"


def _json(value: Any) -> str:
    return json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"))


def _paths(differences: tuple[Difference, ...], source: str) -> list[PathRow]:
    """One row per folded path and rule, with the first example of it."""
    rows: dict[tuple[str, str], PathRow] = {}
    for diff in differences:
        pattern = path_pattern(diff.path)
        if (pattern, diff.rule) not in rows:
            rows[(pattern, diff.rule)] = PathRow(
                source, pattern, diff.kind.value, diff.rule, _json(diff.bank), _json(diff.bk)
            )
    return list(rows.values())


def _b64(payload: bytes) -> str:
    return base64.b64encode(payload).decode()


# (method, "request" | "answer" | "status", bytes) -> the bytes to keep (redacted), or None to keep nothing;
# "status": the google.rpc.Status of rich error details (`grpc-status-details-bin`)
PayloadFilter = Callable[[str, str, bytes], bytes | None]


def _kept(
    method: str, side: str, messages: tuple[bytes, ...], keep: PayloadFilter | None
) -> list[str | None]:
    out: list[str | None] = []
    for raw in messages:
        kept = keep(method, side, raw) if keep is not None else raw
        out.append(_b64(kept) if kept is not None else None)
    return out


def record_of(
    comparison: Comparison,
    replica: str,
    correlation_id: str = "",
    payloads: bool = False,
    keep: PayloadFilter | None = None,
) -> ComparisonRecord:
    """A comparison as the store keeps it; with `payloads`, its messages too, through `keep`."""
    exchange = comparison.exchange
    bank, bk = exchange.bank, exchange.bk
    method = exchange.method
    # bounded: the counts and the folded paths below are of every difference
    differences = [
        d.as_json()
        for d in (*kept_differences(comparison.differences)[0], *kept_differences(comparison.noise)[0])
    ]
    kept = None
    if payloads:
        kept = json.dumps(
            {
                "requests": _kept(method, "request", exchange.requests, keep),
                "bank": _kept(method, "answer", bank.messages, keep) if bank is not None else None,
                "bk": _kept(method, "answer", bk.messages, keep) if bk is not None else None,
            },
            separators=(",", ":"),
        )
    return ComparisonRecord(
        id=time_ordered_id(),
        at=exchange.started_at or time.time(),
        replica=replica,
        method=exchange.method,
        routing_key=exchange.routing_key,
        correlation_id=correlation_id or exchange.correlation_id,
        verdict=comparison.verdict.value,
        reason=comparison.reason,
        is_write=exchange.is_write,
        bank_code=bank.code if bank is not None and not bank.local else None,
        bk_code=bk.code if bk is not None and not bk.local else None,
        bank_ms=round(bank.latency * 1000, 3) if bank is not None and not bank.local else None,
        bk_ms=round(bk.latency * 1000, 3) if bk is not None and not bk.local else None,
        real_count=sum(1 for d in comparison.differences if not d.rule),
        tolerated_count=sum(1 for d in comparison.differences if d.rule),
        noise_sampled=comparison.noise_sampled,
        differences=_json(differences),
        payloads=kept,
        paths=(*_paths(comparison.differences, "bk"), *_paths(comparison.noise, "bank")),
    )


class StoreSink:
    """Hands every comparison to the store; drops (and counts) beyond `max_buffer` waiting, or beyond
    `max_buffer_bytes` of them."""

    def __init__(
        self,
        store: Store,
        replica: str = "",
        max_buffer: int = 100_000,
        payloads: bool = False,
        keep: PayloadFilter | None = None,
        max_buffer_bytes: int = 256 * 1024**2,
    ) -> None:
        self.store = store
        self.replica = replica or replica_name()
        self.max_buffer = max_buffer
        self.max_buffer_bytes = max_buffer_bytes
        self.payloads = payloads
        self.keep = keep
        self._lock = threading.Lock()
        self._dropped: Counter[str] = Counter()  # by method, since the last take
        self._warned = False

    def __call__(self, comparison: Comparison) -> None:
        self.batch([comparison])

    def batch(self, comparisons: Sequence[Comparison]) -> None:
        """Hand comparisons to the store in one write (the pipeline's sink thread gives each batch the
        comparison worker answered): one wake-up of the store's thread rather than one each."""
        store = self.store
        held, size = store.backlog, store.backlog_bytes
        records, sizes = [], 0
        for comparison in comparisons:
            if held >= self.max_buffer or size >= self.max_buffer_bytes:
                self._drop(comparison.method)
                continue
            record = record_of(comparison, self.replica, payloads=self.payloads, keep=self.keep)
            records.append(record)
            bytes_ = record_size(record)
            held, size, sizes = held + 1, size + bytes_, sizes + bytes_
        if records:
            store.comparisons.put(records, size=sizes)
            self._warned = False

    def _drop(self, method: str) -> None:
        with self._lock:
            self._dropped[method] += 1
            warn, self._warned = not self._warned, True
        if warn:
            _log.warning(
                "store is behind: comparisons are dropped (and counted) until it catches up",
                store=self.store.url,
                max_buffer=self.max_buffer,
                max_buffer_bytes=self.max_buffer_bytes,
            )

    def take_dropped(self) -> dict[str, int]:
        """Comparisons dropped since the last call, by method."""
        with self._lock:
            dropped, self._dropped = dict(self._dropped), Counter()
        return dropped


class CountsFlusher:
    """Writes to the store, now and then, how many comparisons were not stored and what else was lost (by
    method), under this replica's name. Counts whose write failed for good are kept, and written with the
    next flush: the store loses no count while it cannot write, and says how much is missing once it can
    (a write that fails for a passing reason, the database locked or full, is tried again by the store)."""

    def __init__(self, store: Store, counters: Counters, sink: StoreSink) -> None:
        self._store = store
        self._counters = counters
        self._sink = sink
        self._seen: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._unwritten: Counter[tuple[str, str]] = Counter()  # (method, name): counts a failed write held

    def flush(self) -> None:
        now = time.time()
        counts: Counter[tuple[str, str]] = Counter()
        for (name, method), value in self._counters.snapshot().items():
            if name not in _NOT_STORED:
                continue
            delta = value - self._seen.get((name, method), 0)
            if delta:
                counts[(method, name)] += delta
                self._seen[(name, method)] = value
        counts.update({(method, "store_dropped"): n for method, n in self._sink.take_dropped().items()})
        counts.update({(method, "store_failed"): n for method, n in self._store.take_lost().items()})
        with self._lock:
            counts.update(self._unwritten)
            self._unwritten.clear()
        counts = +counts  # only what is there to write

        def lost() -> None:  # on the store's thread: their write failed for good; the next flush writes them
            with self._lock:
                self._unwritten.update(counts)

        rows = [(method, name, n) for (method, name), n in counts.items()]
        self._store.counts.put(now, self._sink.replica, rows, lost=lost)
