"""What the store holds, one frozen dataclass per kind of row: the values its repositories take and give."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IdPair:
    """A Bank id and the BK id that names the same thing."""

    kind: str  # an id kind, e.g. "trade"
    bank_id: str
    bk_id: str
    owner: str = ""  # the routing key of the thing the id names ("" when unknown)
    learned_at: float = 0.0  # unix time; StoredPairs.put stamps 0.0 with the time it was enqueued


@dataclass(frozen=True, slots=True)
class Unpaired:
    """An id one side minted whose minting call ended without the other side's."""

    kind: str
    side: str  # "bank" or "bk"
    value: str
    owner: str
    at: float


NO_KEY = ""  # the key of the mark of the writes out of step that have no key (`shim.steps`)


def shown_key(key: str) -> str:
    """A marked key as messages name it: the mark of no key says what it stands for."""
    return "(writes with no key)" if key == NO_KEY else key


@dataclass(frozen=True, slots=True)
class OutOfStep:
    """A routing key that a write reached on one side only."""

    key: str  # a routing key, "*" for every key (an older shim's), or NO_KEY for the writes with none
    since: float  # unix time of the first write that was missed
    method: str  # "/pkg.Svc/Method" of that write
    reason: str
    replica: str = ""  # the shim that marked it (shim.evidence.record.replica_name); "" when not known
    # whose id the key is: "bank" or "bk" (the primary's, whose ids its clients speak, when the write was
    # made); "" when not recorded, or when marks of both sides' ids of the same text share the key
    side: str = ""


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
class BkBuild:
    """A build of BK declared in service (`shim bk-build`): the gate judges only the evidence after it."""

    at: float  # unix time it was declared: from then on, every BK answer is taken to be this build's
    build: str  # the operator's name for it, e.g. "bk 2.4.1" or an image digest
    who: str
    reason: str


@dataclass(frozen=True, slots=True)
class Intent:
    """A mirrored write that was sent and whose fate was not recorded (yet)."""

    id: str
    at: float
    replica: str
    method: str
    keys: tuple[str, ...]


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
    bank_code: int | None  # None: that side gave no answer of its own (not called, or its call cut short)
    bk_code: int | None
    bank_ms: float | None
    bk_ms: float | None
    real_count: int
    tolerated_count: int
    noise_sampled: bool  # Bank was asked a second time, for noise
    differences: str  # JSON list of {path, kind, bank, bk, rule, noise}
    payloads: str | None  # JSON {requests, bank, bk} (base64), when kept
    paths: tuple[PathRow, ...] = ()


@dataclass(frozen=True, slots=True)
class RecordingPart:
    """What one shim process recorded into a recording: its calls so far, and once it ended, how."""

    id: str
    recording: str
    replica: str  # the process ("host:pid:tag", shim.evidence.record.replica_name)
    started: float
    last_at: float  # when its last committed call arrived (its start when none)
    calls: int  # committed so far
    ended: float | None  # None: still recording, or its process stopped before it could say so
    reason: str
    lost: int


@dataclass(frozen=True, slots=True)
class StoredRecording:
    """A recording in the store: its header (the file's first line, as JSON) and its parts."""

    id: str
    started: float
    header: str
    parts: tuple[RecordingPart, ...]

    @property
    def ended(self) -> float | None:
        """When its last part ended; None while any part has not."""
        ends = [p.ended for p in self.parts]
        return max(e for e in ends if e is not None) if ends and None not in ends else None

    @property
    def calls(self) -> int:
        return sum(p.calls for p in self.parts)

    @property
    def lost(self) -> int:
        return sum(p.lost for p in self.parts)

    @property
    def reason(self) -> str:
        """Why its parts ended, each reason once ("" while one has not)."""
        if self.ended is None:
            return ""
        return "; ".join(dict.fromkeys(p.reason for p in self.parts))
