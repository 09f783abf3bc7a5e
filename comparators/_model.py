"""The values that travel from the shim to the comparators and back.

All are frozen dataclasses of plain Python values (bytes, str, int, tuples), so
they cross threads and processes safely and can be stored as they are.
"""

from __future__ import annotations

import base64
import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

Metadata = tuple[tuple[str, str | bytes], ...]


class Code(enum.IntEnum):
    """gRPC status codes by number (the one table of them: this package never imports grpc, and the shim
    uses these too). An Outcome's `code` is a plain int; it compares equal to these."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


STATUS_NAMES: dict[int, str] = {code.value: code.name for code in Code}

# statuses that say the call was certainly not carried out: a refusal, which two sides can agree on. Any
# other status but OK (INTERNAL, UNKNOWN, DATA_LOSS, DEADLINE_EXCEEDED, CANCELLED, UNAVAILABLE, an unknown
# code) says the call broke: it may or may not have been carried out
REFUSALS = frozenset(
    {
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.ALREADY_EXISTS,
        Code.PERMISSION_DENIED,
        Code.RESOURCE_EXHAUSTED,
        Code.FAILED_PRECONDITION,
        Code.ABORTED,
        Code.OUT_OF_RANGE,
        Code.UNIMPLEMENTED,
        Code.UNAUTHENTICATED,
    }
)


# what grpc and Envoy say of an UNAVAILABLE call whose connection was never made (the call never left), and
# of one whose connection was lost once the call was sent on it (the side may have carried it out)
_NEVER_CONNECTED = re.compile(
    r"failed to connect|connection failure|connection refused|no healthy upstream"
    r"|name resolution|dns resolution",
    re.IGNORECASE,
)
_LOST_MIDWAY = re.compile(
    r"socket closed|stream removed|connection reset|reset by peer|broken pipe|goaway|rst_stream"
    r"|end of tcp stream|connection termination|remote reset|keepalive|cancelling all calls"
    r"|connection closed|transport closed",
    re.IGNORECASE,
)


def status_name(code: int) -> str:
    return STATUS_NAMES.get(code, f"CODE_{code}")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one side answered one call. An error is an Outcome too.

    `local` is empty when the upstream produced this outcome; otherwise it says
    what the shim did instead of getting an answer (e.g. "shadow timeout after
    2s", "cancelled by client"), and `code` is the status the shim assigned.
    """

    code: int
    details: str = ""
    initial_metadata: Metadata = ()
    trailing_metadata: Metadata = ()
    messages: tuple[bytes, ...] = ()
    latency: float = 0.0  # seconds, from the shim sending the call to the final status
    local: str = ""
    # what went wrong in the adapter that served this side (`shim.adapters`), "" when nothing did;
    # the status is then the INTERNAL the shim answered in the adapter's stead
    adapter_error: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def status(self) -> str:
        return status_name(self.code)

    @property
    def failed(self) -> bool:
        """A status neither OK nor a refusal (`REFUSALS`): the call broke, and may or may not have been
        carried out."""
        return self.code != Code.OK and self.code not in REFUSALS

    @property
    def unavailable_before_answering(self) -> bool:
        """UNAVAILABLE before any answer message, from the side (not the shim's own)."""
        return not self.local and self.code == Code.UNAVAILABLE and not self.messages

    @property
    def never_received(self) -> bool:
        """Whether the side never received the call: UNAVAILABLE before any answer, given by the side itself
        or for a connection never made (gRPC's meaning: nothing was done). Not when the words are those of a
        connection lost once the call was sent on it (grpc's "Socket closed", Envoy's "connection
        termination", a server stopping with the call under way): that side may have carried it out."""
        if not self.unavailable_before_answering:
            return False
        return bool(_NEVER_CONNECTED.search(self.details)) or not _LOST_MIDWAY.search(self.details)

    def trailer(self, key: str) -> str | bytes | None:
        """The first trailing metadata value under `key`, if any."""
        for k, v in self.trailing_metadata:
            if k == key:
                return v
        return None


# a replay's offsets by recorded time: (from, to) seconds since the epoch, the lowest and highest offset (when
# the call went to BK, less when it came live) of the calls that came live then (`shim.replay.stamps`)
StampSegment = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One client call as both sides saw it."""

    method: str  # "/package.Service/Method"
    requests: tuple[bytes, ...]
    primary: Outcome
    shadow: Outcome | None  # None when the call was not mirrored
    primary_is_bank: bool = True
    is_write: bool = True  # unknown methods are treated as writes
    routing_key: str = ""
    started_at: float = 0.0  # unix time the shim received the call
    cancelled: bool = False  # the client cancelled (or its deadline expired) before the primary answered
    correlation_id: str = ""
    note: str = ""  # why the call was not mirrored, when it was not
    # (kind, Bank id, BK id) pairs known for the ids in this exchange's answers
    ids: tuple[tuple[str, str, str], ...] = ()
    # why an earlier missed write explains differences (a key out of step), "" when none does
    tainted: str = ""
    # ids the request names that have no counterpart on the shadow: (kind, where, value); not sent
    unmapped: tuple[tuple[str, str, str], ...] = ()
    # the primary asked the same again (a read sampled for noise): what differs between its two
    # answers is noise, not a difference of BK's
    secondary: Outcome | None = None
    # seconds BK's timestamps are taken to run ahead of Bank's (a replay: how much later than the recording
    # the call ran); a timestamp rule compares BK's time with Bank's moved on by this much
    clock_offset: float = 0.0
    # per answer message of Bank's, its own `clock_offset` for the times in it and in BK's answer paired with
    # it (a replayed session: how much later than live the request it followed went); empty: `clock_offset`
    message_offsets: tuple[float, ...] = ()
    # seconds the shadow received the call after the primary did, at most (its mirrored call waited: for the
    # calls before it on its keys, or for a comparison plane behind); a timestamp rule lets the shadow's time
    # run up to this much later than the primary's, as its clock may have when it handled the call
    shadow_late: float = 0.0
    # seconds the primary may have stamped a time this call's answers hold later than the shadow did: a write
    # on its keys mirrored late while the sides were the other way round (before a switch of the primary)
    primary_late: float = 0.0
    # of `shadow_late`, the call's own share (how late its own mirrored call went)
    own_late: float = 0.0
    # per answer message (a stream's), the call's own share for the times in it and in the other side's
    # message paired with it, in place of `own_late`: the shadow's message came that long after the call
    # started, and holds no time stamped later. Empty (or beyond it): `own_late`
    message_late: tuple[float, ...] = ()
    # the rest of `shadow_late` and `primary_late`, by band of lateness of the earlier writes on its keys:
    # (until, the shadow's, the primary's), each for the times the side that was primary then stamped by
    # `until` (seconds since the epoch, the shim's clock: when the band's last write was over), plus the
    # rule's tolerance and `LATE_MARGIN`. A time stamped later was stamped by none of that band's writes.
    # Empty: `shadow_late` and `primary_late` hold for every time
    late_steps: tuple[tuple[float, float, float], ...] = ()
    # a replay's: the offsets of the calls replayed so far by the recorded time they span, and when this call
    # came live; a time Bank stamped before it is moved on by the offsets of the calls under way then
    stamp_offsets: tuple[StampSegment, ...] = ()
    recorded_at: float = 0.0
    # a read's stream its client ended (a watch, cancelled or past its deadline) once the primary had sent
    # this many answers: the first this many of each side are compared, never their statuses (the client
    # ended the call, not a server); fewer of BK's is a difference. 0: the call was not ended so
    ended_after: int = 0

    @property
    def bank(self) -> Outcome | None:
        return self.primary if self.primary_is_bank else self.shadow

    @property
    def bk(self) -> Outcome | None:
        return self.shadow if self.primary_is_bank else self.primary

    @property
    def noise_sample(self) -> Outcome | None:
        """The primary's second answer when it is a sample of noise: the primary answered it itself (not a
        local outcome) with the status code of its first answer. A second ask that failed where the first
        did not (timed out, shed with UNAVAILABLE or RESOURCE_EXHAUSTED), or the reverse, says how the
        primary fared under load, not how its answers to one question vary: no sample (`docs/noise.md`)."""
        again = self.secondary
        if again is None or again.local or again.code != self.primary.code:
            return None
        return again


class DiffKind(enum.StrEnum):
    CHANGED = "changed"
    ADDED = "added"  # present in BK's answer only
    REMOVED = "removed"  # present in Bank's answer only
    TYPE = "type"
    STATUS = "status"
    MESSAGE_COUNT = "message-count"
    UNDECODABLE = "undecodable"
    BYTES = "bytes"  # no descriptor: the raw answers differ
    UNKNOWN_FIELD = "unknown-field"  # fields the descriptors do not know
    UNMAPPED_ID = "unmapped-id"  # an id with no known counterpart on the other side
    ADAPTER_ERROR = "adapter-error"  # the adapter in front of BK raised or answered the wrong type
    # a multiset whose left-over elements could not all be tried for pairs under the rules (too many): which
    # pair is not known; `bank` and `bk` say how many of each side were left over
    UNPROVEN = "unproven"


def jsonable(value: Any) -> Any:
    """A value as JSON can hold it: bytes become base64 text ("base64:..."), tuples lists."""
    if isinstance(value, bytes):
        return "base64:" + base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


class Difference(NamedTuple):
    """One way in which BK's answer differs from Bank's: the one shape of a difference, from the
    comparator to the report.

    `rule` names the rule that tolerated it; empty means it is a real difference. `noise` marks a
    difference between Bank's answer and its answer to the same call asked again (`Comparison.noise`),
    which says how Bank differs from itself rather than anything about BK.
    (A named tuple rather than a dataclass: a walk makes many, and a tuple is
    made several times faster.)

    Its one JSON form (`as_json`) is what the diff log, the store and `shim report --json` write:
    `{"path", "kind", "bank", "bk"}`, plus `"rule"` when a rule tolerated it and `"noise": true` for
    Bank against itself; bytes are written as "base64:..." text (docs/diff-log.md).
    """

    path: str
    kind: DiffKind
    bank: object = None
    bk: object = None
    rule: str = ""
    noise: bool = False

    def as_json(self) -> dict[str, Any]:
        """The difference in its one JSON form."""
        out: dict[str, Any] = {
            "path": self.path,
            "kind": self.kind.value,
            "bank": jsonable(self.bank),
            "bk": jsonable(self.bk),
        }
        if self.rule:
            out["rule"] = self.rule
        if self.noise:
            out["noise"] = True
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Difference:
        """A difference read back from its JSON form (values as JSON holds them); ValueError when
        `data` is not one."""
        path, kind, rule = data.get("path"), data.get("kind"), data.get("rule", "")
        if not isinstance(path, str) or not isinstance(kind, str) or not isinstance(rule, str):
            raise ValueError(f"not a difference: {dict(data)!r}")
        return cls(path, DiffKind(kind), data.get("bank"), data.get("bk"), rule, data.get("noise") is True)


class Verdict(enum.StrEnum):
    MATCH = "match"
    MISMATCH = "mismatch"
    SHADOW_ERROR = "shadow-error"  # the shadow side gave no usable answer
    SKIPPED = "skipped"  # not compared: not mirrored, dropped, or cancelled
    TAINTED = "tainted"  # differences on a key out of step: explained by a write BK missed
    # the comparison could not be made (the comparator raised, Bank's answer did not decode, the adapter
    # in front of BK failed): `reason` says why. Never evidence of parity, never tainted.
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Comparison:
    exchange: Exchange
    verdict: Verdict
    differences: tuple[Difference, ...] = ()
    reason: str = ""  # why a comparison was skipped or is a shadow error
    decoded: bool = False  # True when answers were compared field by field
    # real differences between the primary's answer and its answer to the same call asked again
    noise: tuple[Difference, ...] = ()

    @property
    def noise_sampled(self) -> bool:
        """Whether the primary was asked again for this call and its second answer is a sample of noise
        (`Exchange.noise_sample`): the calls a noise rate is measured on."""
        return self.exchange.noise_sample is not None

    @property
    def method(self) -> str:
        return self.exchange.method

    @property
    def real_differences(self) -> tuple[Difference, ...]:
        return tuple(d for d in self.differences if not d.rule)


__all__ = [
    "STATUS_NAMES",
    "Comparison",
    "DiffKind",
    "Difference",
    "Exchange",
    "Metadata",
    "Outcome",
    "Verdict",
    "jsonable",
    "status_name",
]
