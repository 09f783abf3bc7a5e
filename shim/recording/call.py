"""One call of a recording: what the client sent and how the primary answered, as one line of the file
(`shim.recording.format`, `docs/recording-format.md`)."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

Metadata = tuple[tuple[str, str | bytes], ...]


_YEAR_10000 = 253_402_300_800.0  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One call: what the client sent, and how the primary answered."""

    seq: int  # its place in the order the calls arrived, from 0
    at: float  # when it arrived, seconds since the epoch
    method: str
    is_write: bool
    keys: tuple[str, ...]
    correlation_id: str
    metadata: Metadata  # the client's, credentials left out
    requests: tuple[bytes, ...]
    responses: tuple[bytes, ...]
    code: int
    details: str = ""
    initial_metadata: Metadata = ()
    trailing_metadata: Metadata = ()
    latency: float = 0.0  # seconds, from the call to the primary's status
    # its keys that were not sampled (written only when some are): their histories are not whole
    unsampled: tuple[str, ...] = ()
    note: str = ""  # what of it is not kept, and why (written only when something is not)
    answered_by: str = ""  # the side that answered, when not the header's (a mode switched while recording)
    # a call of several request messages (a stream): when each came, in seconds after `at`, and, for each
    # answer, how many request messages the primary had been sent when it came (their interleaving)
    request_times: tuple[float, ...] = ()
    answers_after: tuple[int, ...] = ()
    # calls the recorder had lost when it wrote this one (written only when some were): a recording cut
    # short, with no end line to count them, still says how many were lost before each of its calls
    lost: int = 0

    def __post_init__(self) -> None:
        # JSON as Python reads it allows NaN and Infinity: a call's times pace a replay and move Bank's on
        # ... and any number: a time before the epoch or past the year 9999 is no time a call came
        if not (math.isfinite(self.at) and 0 <= self.at < _YEAR_10000):
            raise ValueError(f"at is {self.at!r}, not seconds since the epoch before the year 10000")
        if not (math.isfinite(self.latency) and 0 <= self.latency < _YEAR_10000):
            raise ValueError(f"latency is {self.latency!r}, not a finite number of seconds from 0")
        spoilt = [t for t in self.request_times if not (math.isfinite(t) and 0 <= t < _YEAR_10000)]
        if spoilt:
            raise ValueError(f"request_times holds {spoilt[0]!r}, not a finite number of seconds from 0")
        if self.request_times and len(self.request_times) != len(self.requests):
            raise ValueError(f"{len(self.request_times)} request_times for {len(self.requests)} requests")
        if self.answers_after and (
            len(self.answers_after) != len(self.responses)
            or any(not 0 <= n <= len(self.requests) for n in self.answers_after)
            or list(self.answers_after) != sorted(self.answers_after)
        ):
            raise ValueError("answers_after: one count per answer, rising, none above the requests")

    def as_json(self) -> dict[str, Any]:
        more: dict[str, Any] = {}
        if self.request_times:
            more["request_times"] = list(self.request_times)
            more["answers_after"] = list(self.answers_after)
        if self.unsampled:
            more["unsampled"] = list(self.unsampled)
        if self.note:
            more["note"] = self.note
        if self.answered_by:
            more["answered_by"] = self.answered_by
        if self.lost:
            more["lost"] = self.lost
        return {
            "seq": self.seq,
            "at": self.at,
            "method": self.method,
            "write": self.is_write,
            "keys": list(self.keys),
            "correlation_id": self.correlation_id,
            "metadata": _metadata_out(self.metadata),
            "requests": [base64.b64encode(m).decode() for m in self.requests],
            "responses": [base64.b64encode(m).decode() for m in self.responses],
            "code": self.code,
            "details": self.details,
            "initial_metadata": _metadata_out(self.initial_metadata),
            "trailing_metadata": _metadata_out(self.trailing_metadata),
            "latency": self.latency,
            **more,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RecordedCall:
        return cls(
            seq=int(doc["seq"]),
            at=float(doc["at"]),
            method=str(doc["method"]),
            is_write=bool(doc["write"]),
            keys=tuple(str(k) for k in doc.get("keys", ())),
            correlation_id=str(doc.get("correlation_id", "")),
            metadata=_metadata_in(doc.get("metadata", ())),
            requests=tuple(base64.b64decode(m, validate=True) for m in doc["requests"]),
            responses=tuple(base64.b64decode(m, validate=True) for m in doc["responses"]),
            code=int(doc["code"]),
            details=str(doc.get("details", "")),
            initial_metadata=_metadata_in(doc.get("initial_metadata", ())),
            trailing_metadata=_metadata_in(doc.get("trailing_metadata", ())),
            latency=float(doc.get("latency", 0.0)),
            unsampled=tuple(str(k) for k in doc.get("unsampled", ())),
            note=str(doc.get("note", "")),
            answered_by=str(doc.get("answered_by", "")),
            request_times=tuple(float(t) for t in doc.get("request_times", ())),
            answers_after=tuple(int(n) for n in doc.get("answers_after", ())),
            lost=_count(doc.get("lost", 0)),
        )


def _count(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"lost is {value!r}, not a count")
    return value


def call_line(call: RecordedCall) -> bytes:
    """A call's line in the file (and its row in the store): JSON, newline-terminated."""
    return json.dumps(call.as_json(), separators=(",", ":")).encode() + b"\n"


def _metadata_out(metadata: Metadata) -> list[list[str]]:
    return [[k, base64.b64encode(v).decode() if isinstance(v, bytes) else v] for k, v in metadata]


def _metadata_in(pairs: Any) -> Metadata:
    out: list[tuple[str, str | bytes]] = []
    for key, value in pairs:
        key, value = str(key), str(value)
        out.append((key, base64.b64decode(value, validate=True) if key.endswith("-bin") else value))
    return tuple(out)
