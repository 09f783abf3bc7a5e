"""The recorder: each call either data plane serves, as the primary answered it, written to a file or
into the store (its writer: `RecordingWriter`, or `into_store.StoreWriter`).

On the event loop, and cheap: a call is numbered as it arrives (`begin`), its messages are kept as they
pass (`Take`); once it is over, its keys (those every request message names) are computed and sampled
(after its answer has gone), and it waits until every call that arrived before it is over too, so that
the file holds the calls in the order they arrived. It then goes into a bounded queue, and a thread
redacts, encodes and writes it (`shim.recording.format`; into the store, in batches). Nothing here
waits: a call that finds the queue full, or one still running while more than `record.queue` later
calls wait behind it (a long stream), is lost: counted (`recording_lost`), logged, and named in the end
line. Bounds (`max_bytes`, `max_duration`) end the recording whole; the shim goes on serving. `close`
ends it whole on shutdown.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from comparators import carries_credentials
from comparators.redact import FreeText, FreeTextOf
from shim.metrics import Counters
from shim.recording.format import (
    PARTIAL,
    Header,
    Metadata,
    RecordedCall,
    RecordingError,
    RecordingWriter,
)
from shim.recording.settings import RecordSettings
from shim.recording.take import Take as Take
from shim.store_settings import correlation_id

_log = structlog.get_logger("shim.recording")
KeysOf = Callable[[str, bytes | None], tuple[str, ...]]  # (method, a request message) -> the keys it names
# (method, "request"|"response"|"status", raw) -> redacted; "status": the google.rpc.Status of the
# `grpc-status-details-bin` trailer (rich error details)
Keep = Callable[[str, str, bytes], bytes | None]
_STATUS_DETAILS = "grpc-status-details-bin"
_STOP = object()


class Writer(Protocol):
    """Where the recorder's thread writes: `RecordingWriter` (a file) or `into_store.StoreWriter`. Each
    method but `abandon` raises RecordingError when the recording cannot go on."""

    calls: int  # calls added so far (the next one's seq)
    lost: int  # calls added that it could not keep

    def add(self, call: RecordedCall, within: int | None = None) -> bool: ...

    def flush(self) -> None: ...

    def end(self, reason: str = "stopped", lost: int = 0) -> object: ...

    def abandon(self) -> None: ...


def key_sampled(key: str, share: float) -> bool:
    """Whether a key's calls are recorded: a stable hash of the key, so every call on it is, or none."""
    return share >= 1.0 or zlib.crc32(key.encode()) / 2**32 < share


def _clean(metadata: Metadata) -> Metadata:
    return tuple((k, v) for k, v in metadata if not carries_credentials(k))


@dataclass(frozen=True, slots=True)
class _Finished:
    """A call that is over, waiting for the writer."""

    take: Take
    keys: tuple[str, ...]
    unsampled: tuple[str, ...]
    code: int
    details: str
    initial: Metadata
    trailing: Metadata
    latency: float


def _scrubbed(metadata: Metadata, free: FreeText | None) -> Metadata:
    """Metadata whose text values hash the values of redacted fields they quote (`free`; none: as it is)."""
    if free is None:
        return metadata
    return tuple((k, free(v) if isinstance(v, str) else v) for k, v in metadata)


class Recorder:
    """Writes the calls it is handed to `settings.path`, or to `writer` (see the module's docstring)."""

    def __init__(
        self,
        settings: RecordSettings,
        header: Header,
        keys_of: KeysOf,
        keep: Keep | None,
        counters: Counters,
        correlation_header: str = "",
        writer: Writer | None = None,
        where: str = "",
        closing: Callable[[], Awaitable[None]] | None = None,
        free_text: FreeTextOf | None = None,
    ) -> None:
        self.path = Path(settings.path)
        self.where = where or str(self.path)  # for the log: the file, or the store and the recording
        # a RecordingError: the shim does not start
        self._writer: Writer = writer if writer is not None else RecordingWriter(self.path, header)
        self._closing_hook = closing  # once the writer has ended (the store the recorder opened closed)
        self._settings = settings
        self.max_call_bytes = settings.max_call_bytes
        self._answered_by = header.answered_by
        self._keys_of = keys_of
        self._keep = keep
        self._free_text = free_text
        self._counters = counters
        self._correlation_header = correlation_header
        self._queue: queue.Queue[object] = queue.Queue(maxsize=settings.queue)
        self._arrivals = 0  # calls numbered so far
        self._next = 0  # the first arrival not yet handed to the writer
        self._ready: dict[int, _Finished | None] = {}  # calls over, waiting behind earlier arrivals
        self.lost = 0
        self.end_reason = ""
        self._ended = threading.Event()
        self._closing = False
        self._deadline = time.time() + settings.max_duration
        self._flush_by = time.monotonic() + 0.5
        self._thread = threading.Thread(target=self._write_all, name="recorder", daemon=True)
        self._thread.start()
        _log.info("recording", into=self.where, sample=settings.sample, origin=header.origin)
        for kept in getattr(
            self._writer, "kept", ()
        ):  # an earlier recording at that path: kept, never written over
            cut = kept.name.endswith(PARTIAL)
            (_log.warning if cut else _log.info)(
                "an earlier recording cut short (its shim stopped first) is kept; replay it with --truncated"
                if cut
                else "an earlier recording is kept",
                kept=str(kept),
            )

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    @property
    def calls(self) -> int:
        """Calls written so far."""
        return self._writer.calls

    # -- on the event loop --------------------------------------------------------------------------

    def begin(
        self,
        method: str,
        metadata: Metadata,
        is_write: bool,
        answered_by: str = "bank",
        *,
        timed: bool = True,
    ) -> Take | None:
        """A call arrives: its Take (None once the recording has ended). `timed`: its messages are seen as
        they pass, so when each came orders it among the other calls (not so Envoy's copies, which trail)."""
        if self._ended.is_set() or self._closing:
            return None
        self._arrivals += 1
        return Take(self, self._arrivals - 1, method, metadata, is_write, answered_by, timed=timed)

    def settle(
        self, take: Take, code: int, details: str, initial: Metadata, trailing: Metadata, latency: float
    ) -> None:
        if take.size < 0:
            self._lose(take.method, "its messages are larger than record.max_call_bytes")
            self._resolve(take.arrival, None)
            return
        keys = self._keys(take)
        share, unsampled = self._settings.sample, tuple[str, ...]()
        if keys and share < 1.0:
            unsampled = tuple(k for k in keys if not key_sampled(k, share))
            if len(unsampled) == len(keys):
                self._resolve(take.arrival, None)  # none of its keys is recorded
                return
        item = _Finished(take, keys, unsampled, code, details, initial, trailing, latency)
        self._resolve(take.arrival, item)

    def _keys(self, take: Take) -> tuple[str, ...]:
        """The keys every request message of the call names, in the order named: a stream's later
        messages may name others than its first (a session trading on two accounts), as live."""
        if len(take.requests) < 2:
            return self._keys_of(take.method, take.requests[0] if take.requests else None)
        keys: dict[str, None] = {}
        for raw in take.requests:
            keys.update(dict.fromkeys(self._keys_of(take.method, raw)))
        return tuple(keys)

    def settle_abandoned(self, take: Take) -> None:
        if take.is_write:
            self._lose(take.method, "a write ended before the primary's status was known")
        self._resolve(take.arrival, None)

    def _resolve(self, arrival: int, item: _Finished | None) -> None:
        if arrival < self._next:
            return  # given up on before (counted then)
        self._ready[arrival] = item
        if len(self._ready) > self._settings.queue:  # too many wait behind calls still running
            while self._next not in self._ready:
                self._lose("", "finished calls waited too long behind a call still running")
                self._next += 1
        self._release()

    def _release(self) -> None:
        while self._next in self._ready:
            item = self._ready.pop(self._next)
            self._next += 1
            if item is None or self._ended.is_set():
                continue
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self._lose(item.take.method, "the recorder's queue is full (the file is written too slowly)")

    def lose(self, method: str, why: str, count: int = 1) -> None:
        """`count` calls the recording will not have (`method`: "" when unknown), counted in its end line."""
        for _ in range(count):
            self._lose(method, why)

    def _lose(self, method: str, why: str) -> None:
        if self._ended.is_set():
            return
        self.lost += 1
        self._counters.inc("recording_lost", method)
        if self.lost & (self.lost - 1) == 0:  # the 1st, 2nd, 4th, 8th, ...: the log is not flooded
            _log.warning("a call was not recorded", why=why, method=method, lost=self.lost)

    async def close(self, reason: str = "stopped") -> None:
        """End the recording whole: the calls that are over are written, in order; the end line says
        `reason` (unless a bound ended it before)."""
        if self._closing:
            return
        self._closing = True
        for arrival in sorted(self._ready):  # those waiting behind calls that never finished
            self._next = arrival
            self._release()
        self._next = self._arrivals
        self.end_reason = self.end_reason or reason
        await asyncio.to_thread(self._queue.put, _STOP)
        await asyncio.to_thread(self._thread.join)
        if self._closing_hook is not None:
            await self._closing_hook()

    # -- in the writer's thread -----------------------------------------------------------------------

    def _write_all(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=min(1.0, max(self._deadline - time.time(), 0.01)))
            except queue.Empty:
                item = None
            if item is _STOP:
                self._end(self.end_reason or "stopped")
                return
            if self._ended.is_set():
                continue
            if time.time() >= self._deadline:
                self._end("record.max_duration reached")
                continue
            if isinstance(item, _Finished):
                self._write(item)
                # on disk once the queue is drained, or every half second: a killed shim (or comparison
                # plane) leaves every call written before, in its `.partial`
                if not self._ended.is_set() and (self._queue.empty() or time.monotonic() > self._flush_by):
                    self._flush()

    def _flush(self) -> None:
        try:
            self._writer.flush()
        except RecordingError as exc:
            _log.error("recording stopped: the file cannot be written", error=str(exc))
            self.end_reason = "the file could not be written"
            self._ended.set()
            self._writer.abandon()
        self._flush_by = time.monotonic() + 0.5

    def _write(self, item: _Finished) -> None:
        try:
            call = self._encode(item)
            if not self._writer.add(call, within=self._settings.max_bytes):
                self._end("record.max_bytes reached")
        except RecordingError as exc:
            _log.error("recording stopped: the file cannot be written", error=str(exc))
            self.end_reason = "the file could not be written"
            self._ended.set()
            self._writer.abandon()

    def _redacted(self, method: str, side: str, messages: list[bytes], notes: list[str]) -> tuple[bytes, ...]:
        if self._keep is None:
            return tuple(messages)
        out = []
        for index, raw in enumerate(messages):
            kept = self._keep(method, side, raw)
            if kept is None:
                notes.append(f"{side} {index} not kept: it does not decode, and redaction is on")
            out.append(kept if kept is not None else b"")
        return tuple(out)

    def _trailers(
        self, method: str, trailing: Metadata, notes: list[str], free: FreeText | None = None
    ) -> Metadata:
        """The trailers, credentials left out; with redaction, the rich error details (a google.rpc.Status
        whose details are Any) redacted like messages, or left out when they do not decode, and their
        message's quotes of redacted values hashed (`free`)."""
        cleaned = _clean(trailing)
        if self._keep is None:
            return cleaned
        out: list[tuple[str, str | bytes]] = []
        for key, value in cleaned:
            if key == _STATUS_DETAILS:
                kept = self._keep(method, "status", value.encode() if isinstance(value, str) else value)
                if kept is None:
                    notes.append(f"{_STATUS_DETAILS} not kept: it does not decode, and redaction is on")
                    continue
                value = free.rich(kept) if free is not None else kept
            elif free is not None and isinstance(value, str):
                value = free(value)
            out.append((key, value))
        return tuple(out)

    def _encode(self, item: _Finished) -> RecordedCall:
        take, notes = item.take, list[str]()
        free = None
        if self._free_text is not None:
            rich = [v for k, v in item.trailing if k == _STATUS_DETAILS]
            free = self._free_text(take.method, take.requests, take.responses, rich)
        requests = self._redacted(take.method, "request", take.requests, notes)
        responses = self._redacted(take.method, "response", take.responses, notes)
        trailing = self._trailers(take.method, item.trailing, notes, free)
        return RecordedCall(
            seq=self._writer.calls,
            at=take.at,
            method=take.method,
            is_write=take.is_write,
            keys=item.keys,
            correlation_id=correlation_id(self._correlation_header, take.metadata),
            metadata=_scrubbed(_clean(take.metadata), free),
            requests=requests,
            responses=responses,
            code=item.code,
            details=free(item.details) if free is not None else item.details,
            initial_metadata=_scrubbed(_clean(item.initial), free),
            trailing_metadata=trailing,
            latency=item.latency,
            unsampled=item.unsampled,
            note="; ".join(notes),
            answered_by=take.answered_by if take.answered_by != self._answered_by else "",
            lost=self.lost + self._writer.lost,  # so far: a recording cut short knows them without its end
            **take.interleaving(),
        )

    def _end(self, reason: str) -> None:
        if self._ended.is_set():
            return
        self.end_reason = reason
        try:
            self._writer.end(reason, lost=self.lost)
        except RecordingError as exc:
            _log.error("recording not ended whole", error=str(exc))
            self._writer.abandon()
        finally:
            self._ended.set()
        log = _log.info if reason == "stopped" else _log.warning
        log("recording ended", reason=reason, into=self.where, calls=self._writer.calls, lost=self.lost)
