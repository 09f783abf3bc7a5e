"""The report's model: frozen values, one `MethodReport` per method, built by `build_report`
(shim.evidence.queries), shown by `shim.report` and judged by `shim.gate`.

Clean and unproven. A call is *compared* (a clean comparison) when its verdict
is `match` or `mismatch`: both answers were compared on keys in step, nothing
in the way. Every other verdict (`tainted`, `skipped`, `shadow-error`,
`error`) is *unproven*: the call proves nothing about BK. Rates are shares of
compared calls; the unproven rate is a share of all calls. A clean comparison is
*answered* when Bank answered it (status OK): the same refusal on both sides is a
match, but one that shows nothing of the method's work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from comparators import Difference
from shim.store.records import BkBuild

COMPARED = ("match", "mismatch")  # clean comparisons: compared on keys in step, nothing in the way
BUCKETS = 30  # points of each method's time series
# counts (table counts) of something else a shim lost: calls its recording lost, intents of mirrored writes
# it could not store; every other name counted is a comparison not stored (`dropped`)
LOST = ("recording_lost", "intents_not_recorded")


@dataclass(frozen=True, slots=True)
class Latency:
    """Percentiles of one side's latency (ms), nearest rank; None when no call was measured."""

    count: int
    p50: float | None
    p99: float | None


@dataclass(frozen=True, slots=True)
class CodePair:
    """How often Bank answered `bank` while BK answered `bk` (status names; None: not called)."""

    bank: str | None
    bk: str | None
    count: int


@dataclass(frozen=True, slots=True)
class PathStat:
    """One path (lists folded, `trades[*].fee`) at which BK's answers really differed from Bank's."""

    path: str
    kind: str  # of the example
    calls: int  # mismatched calls with a real difference at this path
    bk_rate: float  # calls / compared calls of the method
    noise_calls: int  # calls asked twice whose two Bank answers differed here
    noise_rate: float  # noise_calls / noise_sampled (0 when none was asked twice)
    noise_sampled: int  # the calls asked twice that noise_rate was measured on
    classification: str  # "real" or "noise"
    example_bank: Any  # one example (the earliest): Bank's value, as recorded
    example_bk: Any  # ... and BK's
    example_key: str = ""  # the example call's routing keys
    # its first request, decoded (None unless store.payloads kept it and the descriptors decode it)
    example_request: Any = None
    # "" when noise_rate is the method's own; a service's name when it is the service's (a header, on a
    # method too few of whose calls were asked twice: see shim.evidence.noise)
    noise_of: str = ""


@dataclass(frozen=True, slots=True)
class TaintedPath:
    """One path (lists folded) at which tainted calls really differed: a key out of step explains them."""

    path: str
    kind: str  # of the example
    calls: int  # tainted calls with a real difference at this path
    example_bank: Any  # one example (the earliest): Bank's value, as recorded
    example_bk: Any  # ... and BK's


@dataclass(frozen=True, slots=True)
class Bucket:
    """A slice of the window: [start, end)."""

    start: float
    end: float
    compared: int
    real_mismatches: int

    @property
    def rate(self) -> float | None:
        return self.real_mismatches / self.compared if self.compared else None


@dataclass(frozen=True, slots=True)
class ReplicaSeen:
    """A shim replica (a process, see shim.evidence.record.replica_name) that wrote to the store in the
    window: comparisons, or counts of what it did not store."""

    name: str
    calls: int  # comparisons it stored, every verdict
    compared: int  # clean comparisons among them (match or mismatch)
    first_seen: float  # unix time of the first comparison or count it wrote in the window
    last_seen: float  # ... and of the last


@dataclass(frozen=True, slots=True)
class ReplicaShare:
    """One replica's part of a method's figures about a process's health, for a fleet's report."""

    replica: str
    calls: int
    compared: int
    tainted: int
    skipped: int  # not mirrored: shed, dropped at max_in_flight, breaker open, ids without counterpart
    shadow_errors: int  # the shadow failed or timed out
    errors: int  # the comparison could not be made
    dropped_by_name: tuple[tuple[str, int], ...]  # comparisons it counted but did not store
    lost_by_name: tuple[tuple[str, int], ...]  # ("recording_lost" | "intents_not_recorded", n)

    @property
    def unproven(self) -> int:
        return self.calls - self.compared

    @property
    def dropped(self) -> int:
        return sum(n for _, n in self.dropped_by_name)

    @property
    def lost(self) -> int:
        return sum(n for _, n in self.lost_by_name)

    @property
    def not_compared(self) -> int:
        """Calls of this replica that are no clean comparison: unproven, or dropped before the store."""
        return self.unproven + self.dropped


@dataclass(frozen=True, slots=True)
class MethodReport:
    """What the store holds about one method within the window."""

    method: str  # "package.Service/Method"
    calls: int  # comparisons stored, every verdict
    compared: int  # clean comparisons: verdict match or mismatch
    answered: int  # clean comparisons Bank answered (status OK): the rest it refused, or failed
    matched: int
    mismatches: int  # verdict mismatch: real_mismatches + noise_mismatches
    real_mismatches: int
    noise_mismatches: int  # mismatches whose real paths are all noise
    tainted: int
    shadow_errors: int
    skipped: int
    errors: int  # verdict error: the comparison could not be made
    tolerated: int  # calls with at least one difference a rule tolerated
    tolerated_by_rule: tuple[tuple[str, int], ...]  # (rule, calls), most first
    noise_sampled: int  # calls for which Bank was asked twice
    dropped: int  # comparisons counted but not stored
    dropped_by_name: tuple[tuple[str, int], ...]  # ("comparisons_dropped" | "store_dropped" | ..., n)
    bank_latency: Latency
    bk_latency: Latency
    codes: tuple[CodePair, ...]  # most first
    unanswered: tuple[CodePair, ...]  # the clean comparisons Bank did not answer OK, by status; most first
    paths: tuple[PathStat, ...]  # most calls first
    tainted_paths: tuple[TaintedPath, ...]  # most calls first
    series: tuple[Bucket, ...]
    lost_by_name: tuple[tuple[str, int], ...] = ()  # other things lost (`LOST`), by name
    # each replica's share, most calls not compared first; empty when one replica wrote the whole window
    by_replica: tuple[ReplicaShare, ...] = ()

    @property
    def lost(self) -> int:
        return sum(n for _, n in self.lost_by_name)

    @property
    def unproven(self) -> int:
        """Calls that prove nothing about BK: every verdict but match and mismatch."""
        return self.calls - self.compared

    @property
    def unproven_rate(self) -> float | None:
        return self.unproven / self.calls if self.calls else None

    @property
    def matched_rate(self) -> float | None:
        return self.matched / self.compared if self.compared else None

    @property
    def real_mismatch_rate(self) -> float | None:
        return self.real_mismatches / self.compared if self.compared else None


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call that did not match, as stored."""

    id: str
    at: str  # RFC 3339, UTC
    method: str
    verdict: str
    mismatch: str | None  # for a mismatch: "real" or "noise"
    reason: str
    routing_key: str
    correlation_id: str
    bank_code: str | None
    bk_code: str | None
    bank_ms: float | None
    bk_ms: float | None
    differences: tuple[Difference, ...]  # BK's, then Bank's noise; at most KEPT_DIFFERENCES of each
    omitted: int = 0  # BK's differences the store did not keep (`shim.sinks.KEPT_DIFFERENCES`)


@dataclass(frozen=True, slots=True)
class Report:
    since: float
    until: float
    generated_at: float
    store: str  # the store's url, password masked
    relative: float  # the noise thresholds the paths were classified with
    absolute: float
    min_sampled: int  # calls of a method asked twice before its noise rates count
    methods: tuple[MethodReport, ...]
    calls: tuple[CallRecord, ...] | None  # None: not asked for
    limit: int  # the most calls listed
    replicas: tuple[ReplicaSeen, ...] = ()  # the replicas that wrote in the window, by name
    bk_build: BkBuild | None = None  # the build of BK declared in service at `until` (`shim bk-build`)

    @property
    def fleet(self) -> bool:
        """Whether more than one replica wrote in the window (then figures are broken down by replica)."""
        return len(self.replicas) > 1

    def method(self, name: str) -> MethodReport | None:
        wanted = method_name(name)
        return next((m for m in self.methods if m.method == wanted), None)


def method_name(name: str) -> str:
    """ "pkg.Svc/Method" for "/pkg.Svc/Method" or "pkg.Svc/Method"."""
    return name.lstrip("/")


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
