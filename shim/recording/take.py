"""One call as the recorder keeps it while it runs (`shim.recording.recorder`): its messages as they pass,
and, for a session seen as it passes, when each request came and which answers followed which."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from shim.recording.format import Metadata


class Recorder(Protocol):
    """What a Take needs of the recorder that made it (`shim.recording.recorder.Recorder`)."""

    max_call_bytes: int

    def settle(
        self, take: Take, code: int, details: str, initial: Metadata, trailing: Metadata, latency: float
    ) -> None: ...

    def settle_abandoned(self, take: Take) -> None: ...


class Take:
    """One call, as the recorder keeps it while it runs (made by `Recorder.begin`)."""

    __slots__ = (
        "_recorder",
        "answered_by",
        "answers_after",
        "arrival",
        "at",
        "is_write",
        "metadata",
        "method",
        "request_times",
        "requests",
        "responses",
        "size",
        "timed",
    )

    def __init__(
        self,
        recorder: Recorder,
        arrival: int,
        method: str,
        metadata: Metadata,
        is_write: bool,
        by: str,
        *,
        timed: bool = True,
    ) -> None:
        self._recorder = recorder
        self.arrival = arrival
        self.at = time.time()
        self.method = method
        self.metadata = metadata
        self.is_write = is_write
        self.answered_by = by
        self.requests: list[bytes] = []
        self.responses: list[bytes] = []
        self.request_times: list[float] = []  # when each request message came (their interleaving with
        self.answers_after: list[int] = []  # the answers: the requests kept when each answer came)
        self.size = 0  # bytes kept; -1: more than record.max_call_bytes (the call is lost)
        self.timed = timed  # when its request messages came is kept (see `Recorder.begin`)

    def _keep(self, kept: list[bytes], raw: bytes) -> bool:
        if self.size < 0:
            return False
        self.size += len(raw)
        if self.size > self._recorder.max_call_bytes:
            self.size = -1
            self.requests.clear()
            self.responses.clear()
            return False
        kept.append(raw)
        return True

    def request(self, raw: bytes) -> None:
        if self._keep(self.requests, raw) and self.timed:
            self.request_times.append(time.time())

    def response(self, raw: bytes) -> None:
        if self._keep(self.responses, raw):
            self.answers_after.append(len(self.requests))

    def finish(self, code: int, details: str, initial: Metadata, trailing: Metadata, latency: float) -> None:
        """The primary's status is in (call it once the client has the answer: the rest is deferred)."""
        asyncio.get_running_loop().call_soon(
            self._recorder.settle, self, code, details, initial, trailing, latency
        )

    def abandon(self) -> None:
        """The call ended before the primary's status was known (the client cancelled, its copy was lost):
        a write is lost (the primary may have done it), a read is left out."""
        self._recorder.settle_abandoned(self)

    def interleaving(self) -> dict[str, Any]:
        """A conversation's request times and answer counts: only for a stream that answered some of its
        requests before the last one came (a batch, answered once it is whole, takes one place as it is)."""
        if len(self.requests) < 2 or not self.answers_after or self.answers_after[0] >= len(self.requests):
            return {}
        if not self.timed:
            return {}
        return {
            "request_times": tuple(max(t - self.at, 0.0) for t in self.request_times),
            "answers_after": tuple(self.answers_after),
        }
