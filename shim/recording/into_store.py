"""Recording into the evidence store ([record] into = "store"): the recorder's writer, and how a process
joins a recording (`docs/recording.md`, "Recording into the store").

The recorder (`recorder.py`) orders, samples, redacts and encodes the calls as it does for a file; its
thread hands each call to `StoreWriter.add`, which keeps the call's line (`format.call_line`, the same
bytes as the file's) and counts it against `record.max_bytes`; `flush` (when the recorder's queue is
drained, or every half second) commits what was added in one transaction, through the store's own
worker (the event loop never waits on it: only the recorder's thread does). A batch the store does not
take is lost: counted (`recording_lost`), logged, and named in the part's end. Each process is one
part of the recording: its calls numbered from 0 in the order they arrived there, with their arrival
time, so that `shim record export` merges the parts in arrival order (`export.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog

from shim.config import Config
from shim.errors import StartupError
from shim.evidence.record import time_ordered_id
from shim.metrics import Counters
from shim.recording.format import END_LINE_BYTES, Header, RecordedCall, RecordingError, call_line
from shim.store import Store, StoreError

_log = structlog.get_logger("shim.recording")
T = TypeVar("T")
STORE_TIMEOUT = 60.0  # seconds the recorder's thread waits for one batch before it counts it as lost
# what a process joining a recording must have recorded with as the one that began it
_SAME = ("methods", "mode", "answered_by", "origin", "redacted", "redaction_key", "sampled")


def new_recording_id() -> str:
    """A recording id: when it began (UTC), and 6 random hex digits."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"


class StoreWriter:
    """The recorder's writer into the store: one part of one recording (used by the recorder's thread)."""

    def __init__(
        self,
        store: Store,
        recording: str,
        part: str,
        header: Header,
        loop: asyncio.AbstractEventLoop,
        counters: Counters,
    ) -> None:
        self._store = store
        self.recording = recording
        self.part = part
        self._loop = loop
        self._counters = counters
        self.calls = 0  # calls added (the next one's seq)
        self.bytes = len(json.dumps(header.as_json(), separators=(",", ":"))) + 1  # as the file would be
        self.lost = 0  # calls added that the store did not take
        self._batch: list[tuple[int, float, str, str]] = []  # seq, at, the call's line, its method

    def add(self, call: RecordedCall, within: int | None = None) -> bool:
        """Keep a call for the next batch; with `within`, only if the recording (as a file) stays within
        that many bytes with its end line: False, and nothing kept, when it would not."""
        line = call_line(call)
        if within is not None and self.bytes + len(line) + END_LINE_BYTES > within:
            return False
        self._batch.append((call.seq, call.at, line[:-1].decode(), call.method))
        self.bytes += len(line)
        self.calls += 1
        return True

    def flush(self) -> None:
        """Commit the calls added since the last flush, in one transaction; lost (and counted) if the
        store does not take them."""
        batch, self._batch = self._batch, []
        if not batch:
            return
        rows = [(seq, at, line) for seq, at, line, _ in batch]
        try:
            self._run(self._store.recordings.add(self.recording, self.part, rows))
        except (StoreError, TimeoutError) as exc:
            self.lost += len(batch)
            methods: dict[str, int] = {}
            for *_, method in batch:
                methods[method] = methods.get(method, 0) + 1
            for method, n in methods.items():
                self._in_loop(self._counters.inc, "recording_lost", method, n)
            _log.warning(
                "calls not recorded: the store did not take them",
                recording=self.recording,
                calls=len(batch),
                lost=self.lost,
                error=str(exc),
            )

    def end(self, reason: str = "stopped", lost: int = 0) -> str:
        """Commit what is left, and the part's end: the calls lost (`lost`, and those the store did not
        take). A RecordingError when the store does not take the end (the part stays unended)."""
        self.flush()
        try:
            self._run(self._store.recordings.end(self.part, time.time(), reason, lost + self.lost))
        except (StoreError, TimeoutError) as exc:
            raise RecordingError(f"recording {self.recording}: its end not stored: {exc}") from None
        return self.recording

    def abandon(self) -> None:
        """Give up what was not committed (the part stays unended: an export takes it as cut short)."""
        self._batch.clear()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        try:
            future = asyncio.run_coroutine_threadsafe(work, self._loop)
        except RuntimeError:  # the event loop is closed: the store is out of reach
            work.close()
            raise StoreError("the shim's event loop has stopped") from None
        try:
            return future.result(STORE_TIMEOUT)
        except TimeoutError:
            future.cancel()
            raise

    def _in_loop(self, call: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is closed: nothing reads the counters
            self._loop.call_soon_threadsafe(call, *args)


def _same(header: Header) -> Callable[[str], bool]:
    mine = header.as_json()

    def same(held: str) -> bool:
        try:
            theirs = json.loads(held)
        except ValueError:
            return False
        return isinstance(theirs, dict) and all(theirs.get(k) == mine.get(k) for k in _SAME)

    return same


async def store_writer(
    config: Config, header: Header, replica: str, counters: Counters, store: Store | None
) -> tuple[StoreWriter, str, Callable[[], Awaitable[None]] | None]:
    """This process's part of the recording `record.id` (a new one without), in `store` (the shim's) or
    in a store opened for it: the writer, where it writes (for the log), and what closes that store.
    A StartupError when the store cannot be opened or recorded into."""
    own = store is None
    if store is None:
        try:
            store = Store.open(config.store.url)
            await store.start()
        except StoreError as exc:
            raise StartupError(f"record: {exc}") from None
        if config.store.retain is not None:  # no housekeeping runs beside without BK: retention now
            try:
                await store.recordings.delete_before(time.time() - config.store.retain)
            except StoreError as exc:
                _log.warning("retention failed", error=str(exc))
    recording, part = config.record.id or new_recording_id(), time_ordered_id()
    text = json.dumps(header.as_json(), separators=(",", ":"))
    try:
        await store.recordings.begin(recording, text, part, replica, header.created_at, _same(header))
    except StoreError as exc:
        if own:
            await store.close()
        raise StartupError(f"record.id: {exc}") from None
    writer = StoreWriter(store, recording, part, header, asyncio.get_running_loop(), counters)
    return writer, f"store {store.url} recording {recording}", store.close if own else None
