"""The in-memory summary of comparisons (`shim.sinks.Summary`): each verdict in its own count."""

from __future__ import annotations

from comparators import Comparison, Difference, DiffKind, Exchange, Outcome, Verdict
from shim.sinks import Summary

METHOD = "/pay.v1.Payments/Get"


def _comparison(verdict: Verdict, *differences: Difference) -> Comparison:
    exchange = Exchange(METHOD, (b"",), Outcome(0, messages=(b"a",)), Outcome(0, messages=(b"b",)))
    return Comparison(exchange, verdict, differences, reason="why")


def test_each_verdict_is_counted_apart() -> None:
    """An error is counted as an error, not as skipped; every verdict has its own count."""
    summary = Summary()
    counts = {
        Verdict.MATCH: 5,
        Verdict.MISMATCH: 4,
        Verdict.SHADOW_ERROR: 3,
        Verdict.TAINTED: 2,
        Verdict.SKIPPED: 1,
        Verdict.ERROR: 6,
    }
    for verdict, n in counts.items():
        for _ in range(n):
            summary(_comparison(verdict))
    (tally,) = summary.methods().values()
    counted = {
        Verdict.MATCH: tally.matched,
        Verdict.MISMATCH: tally.mismatched,
        Verdict.SHADOW_ERROR: tally.shadow_errors,
        Verdict.TAINTED: tally.tainted,
        Verdict.SKIPPED: tally.skipped,
        Verdict.ERROR: tally.errors,
    }
    assert counted == counts
    assert tally.calls == sum(counts.values())


def test_tainted_differences_are_not_among_the_real_paths() -> None:
    """A tainted call's differences are explained by a missed write: they make no path's count."""
    summary = Summary()
    fee = Difference("fee", DiffKind.CHANGED, "0.03", "0.02")
    summary(_comparison(Verdict.MISMATCH, fee))
    summary(_comparison(Verdict.TAINTED, fee))
    (tally,) = summary.methods().values()
    assert dict(tally.paths) == {"fee": 1}
