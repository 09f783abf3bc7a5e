"""Where comparisons go. A sink is a plain callable `(Comparison) -> None`.

Sinks run in the comparison worker thread, guarded: one that raises is logged
and the others still run.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TextIO, assert_never

import structlog

from comparators import Comparison, Difference, Outcome, Verdict
from shim.settings import PATH, setting

_INDEX = re.compile(r"\[[^\]]*\]")


def path_pattern(path: str) -> str:
    """A path with list indices and keys folded, so that differences group.

    'trades[3].fee' -> 'trades[*].fee'; 'positions[symbol=AAPL].quantity' -> 'positions[*].quantity'.
    """
    return _INDEX.sub("[*]", path)


# the differences of one comparison the diff log and the store keep: an answer of a great many differing
# elements would otherwise write megabytes of JSON per call
KEPT_DIFFERENCES = 1000


def kept_differences(
    differences: tuple[Difference, ...], limit: int = KEPT_DIFFERENCES
) -> tuple[tuple[Difference, ...], int]:
    """At most `limit` of `differences`, in their order, and how many are left out: the first of each
    folded path, kind and rule (so every differing path is kept, as far as the limit allows), then the
    others in order."""
    if len(differences) <= limit:
        return differences, 0
    first: dict[tuple[str, str, str], int] = {}
    for index, diff in enumerate(differences):
        first.setdefault((path_pattern(diff.path), diff.kind.value, diff.rule), index)
    chosen = set(sorted(first.values())[:limit])
    for index in range(len(differences)):
        if len(chosen) >= limit:
            break
        chosen.add(index)
    kept = tuple(differences[i] for i in sorted(chosen))
    return kept, len(differences) - len(kept)


def _side(outcome: Outcome | None) -> dict[str, Any] | None:
    if outcome is None:
        return None
    side: dict[str, Any] = {"status": outcome.status, "latency_ms": round(outcome.latency * 1000, 3)}
    if outcome.local:
        side["local"] = outcome.local
    return side


@dataclass(frozen=True, slots=True)
class DiffLogSettings:
    """The diff log: one JSON line per comparison (`docs/diff-log.md`)."""

    SECTION: ClassVar[str] = "diff_log"
    path: str = setting("-", PATH, '"-" for stdout, or a file (appended to)')


class DiffLog:
    """One JSON line per compared call that did not match (mismatch, tainted, shadow error, skipped, error).

    Each line carries: method, verdict, reason, the routing key and correlation
    id when known, Bank's and BK's status and latency, and the differences with
    their paths and both values.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream  # written as structlog would, never through a level's filter: it is evidence
        self._stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
        self._render = structlog.processors.JSONRenderer(sort_keys=False)
        self._lock = threading.Lock()

    def __call__(self, comparison: Comparison) -> None:
        self.batch([comparison])

    def batch(self, comparisons: Sequence[Comparison]) -> None:
        """The lines of a batch of comparisons, written and flushed at once (one write, not one each)."""
        lines = "".join(self._line(c) for c in comparisons if c.verdict is not Verdict.MATCH)
        if lines:
            with self._lock:
                self._stream.write(lines)
                self._stream.flush()

    def _line(self, comparison: Comparison) -> str:
        exchange = comparison.exchange
        fields: dict[str, Any] = {
            "method": exchange.method,
            "verdict": comparison.verdict.value,
            "bank": _side(exchange.bank),
            "bk": _side(exchange.bk),
        }
        if comparison.reason:
            fields["reason"] = comparison.reason
        if exchange.routing_key:
            fields["key"] = exchange.routing_key
        if exchange.correlation_id:
            fields["correlation_id"] = exchange.correlation_id
        if comparison.differences:
            kept, omitted = kept_differences(comparison.differences)
            fields["differences"] = [d.as_json() for d in kept]
            if omitted:
                fields["differences_omitted"] = omitted
        fields["event"] = "comparison"
        rendered = self._render(None, "msg", self._stamp(None, "msg", fields))
        assert isinstance(rendered, str)  # json.dumps
        return rendered + "\n"


@dataclass
class MethodSummary:
    calls: int = 0
    matched: int = 0
    mismatched: int = 0
    shadow_errors: int = 0
    tainted: int = 0  # mismatches on keys out of step: explained by a write BK missed
    skipped: int = 0
    errors: int = 0  # comparisons that could not be made
    paths: Counter[str] = field(default_factory=Counter)  # real differences: calls per path
    examples: dict[str, Difference] = field(default_factory=dict)
    tolerated: Counter[str] = field(default_factory=Counter)  # tolerated differences per rule name


class Summary:
    """Per-method tallies of verdicts and differing paths (indices folded, one example each)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._methods: dict[str, MethodSummary] = defaultdict(MethodSummary)

    def __call__(self, comparison: Comparison) -> None:
        with self._lock:
            summary = self._methods[comparison.method]
            summary.calls += 1
            verdict = comparison.verdict
            if verdict is Verdict.MATCH:
                summary.matched += 1
            elif verdict is Verdict.MISMATCH:
                summary.mismatched += 1
            elif verdict is Verdict.SHADOW_ERROR:
                summary.shadow_errors += 1
            elif verdict is Verdict.TAINTED:
                summary.tainted += 1
            elif verdict is Verdict.SKIPPED:
                summary.skipped += 1
            elif verdict is Verdict.ERROR:
                summary.errors += 1
            else:
                assert_never(verdict)
            if verdict is Verdict.TAINTED:  # explained by a missed write: not among the real differences
                return
            for pattern in {path_pattern(d.path) for d in comparison.real_differences}:
                summary.paths[pattern] += 1
            for diff in comparison.differences:
                if diff.rule:
                    summary.tolerated[diff.rule] += 1
                else:
                    summary.examples.setdefault(path_pattern(diff.path), diff)

    def methods(self) -> dict[str, MethodSummary]:
        with self._lock:
            return dict(sorted(self._methods.items()))
