"""The gate: whether the evidence in a report meets the criteria for the point of no return.

`evaluate(report, min_compared=..., min_answered=..., max_mismatch_rate=..., max_unproven_rate=...,
required_methods=...)` judges each required method (or, when none is required, each method of the
report) on four criteria:

- compared: at least `min_compared` clean comparisons (verdict `match` or
  `mismatch`: compared on keys in step, nothing in the way);
- answered: at least `min_answered` of them (no more than `min_compared`) answered by Bank (status OK).
  The same refusal on both sides (`UNAUTHENTICATED`, `INVALID_ARGUMENT`, ...) is a match, but it shows
  nothing of the method's work: a window of nothing else (credentials broken, both sides overloaded,
  garbage requests) is no proof, and fails naming the refusals by status, most first;
- real mismatch rate: real mismatches / clean comparisons, at most `max_mismatch_rate`;
- unproven: at most `max_unproven_rate` of the method's calls proved nothing
  (`tainted`, `skipped`, `shadow-error`, `error`, or `dropped`: compared by no one, because the shim
  counted the comparison and did not store it), with the count of each. The calls are those stored
  and those dropped. A drop counted under no method (`""`, or the counters' `(other)` and
  `(not described)`: labels without a "/") could be any method's, so it counts against every
  method judged, and is judged as no method of its own. So do the unproven calls stored under no
  method: those recorded under `UNSEEN`, "(calls the shim did not see)", whose copies never reached
  the shim, each of them a call and unproven in every method's count.

It fails closed: a method short of clean comparisons, or with too many calls
that prove nothing, is "not proven". When more than one replica wrote the
evidence, such a failure names the replicas behind it, most first, with their
counts (the calls each did not compare, or left unproven). A required method with no call in the
window fails as "not covered". A report with no method at all, when none is
required, fails too: no evidence is not a pass.

The evidence judged is that of the last `[gate] window`, and none from before the build of BK
in service was declared (`shim bk-build`; `evidence_since`): an older build's answers prove nothing
about this one's. Nor any from before the latest switch into or out of `bank` mode, on any scope:
in `bank` mode nothing is mirrored, so BK's book lacks the writes made then, and what BK answered
before says nothing about the book it holds since; nor from before the latest switch into or out of `bk`
mode, in which Bank is sent no write. The criteria come from
`[gate]` in the config (`GateSettings`); `shim gate` prints each one and
exits 0 only when all pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from shim.errors import ConfigError
from shim.evidence import MethodReport, Report, method_name
from shim.evidence.fleet import responsible
from shim.modes import DEFAULT
from shim.settings import POSITIVE, SHARE, Kind, duration, setting

if TYPE_CHECKING:
    from shim.store import ReplicaView, Store

NOT_PROVEN = "not proven"  # what the measure of a failed compared, answered or unproven criterion starts with


def _methods(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(m, str) and "/" in m and not m.startswith("/") for m in value
    ):
        raise ConfigError(f'{key}: expected a list of "package.Service/Method" names')
    return tuple(value)


@dataclass(frozen=True, slots=True)
class GateSettings:
    """The gate's criteria for the point of no return, per method (`shim gate`, `docs/reports.md`)."""

    SECTION: ClassVar[str] = "gate"
    window: float = setting(
        86_400.0, duration(), "how far back the gate looks at the evidence", reloadable=True
    )
    min_compared: int = setting(
        100,
        POSITIVE,
        "clean comparisons (match or mismatch) each method needs (at least 1: none proves nothing)",
        reloadable=True,
    )
    min_answered: int = setting(
        10,
        POSITIVE,
        "clean comparisons Bank answered (status OK) each method needs, no more than min_compared: the same"
        " refusal on both sides is a match, but shows nothing of the method's work (at least 1)",
        reloadable=True,
    )
    max_mismatch_rate: float = setting(
        0.0, SHARE, "real mismatches / clean comparisons, per method", reloadable=True
    )
    max_unproven_rate: float = setting(
        0.01,
        SHARE,
        "calls tainted, skipped, shadow-error, error or dropped / calls, per method",
        reloadable=True,
    )
    methods: tuple[str, ...] = setting(
        (),
        Kind("list of methods", _methods),
        'methods that must be covered ("package.Service/Method")',
        reloadable=True,
    )


async def evidence_since(store: Store, window: float, until: float) -> float:
    """Where the gate's evidence starts, judged at `until` (now): `window` before it, not before the build of
    BK in service was declared, not before the latest switch into or out of a mode in which one side is
    sent no write (`ONE_SIDED`), and not before the rules that judge the comparisons last changed
    (`store.judging`: a match a rule made proves nothing once the rule is withdrawn). One stamped after
    `until` (by a clock ahead of this one: another replica's, the host a command ran on) leaves no evidence
    to judge: the clocks disagree, and which evidence came after it is not known. Before, it was left out,
    and the evidence from before it judged."""
    build = await store.builds.in_service(_EVER)
    stretch = await one_sided_since(store, _EVER)
    judging = await store.judging.changed()
    since = until - window
    for at in (build.at if build is not None else None, stretch, judging[0] if judging else None):
        if at is not None:
            since = max(since, min(at, until))
    return since


_EVER = float("inf")  # whatever the time a build or a switch was stamped with


async def one_sided_since(store: Store, until: float) -> float | None:
    """When a scope last went into or out of a mode in which one side is sent no write, at or before
    `until` (None: never)."""
    found = [at for mode in ONE_SIDED if (at := await store.modes.last_change_with(mode, until)) is not None]
    return max(found, default=None)


UNMIRRORED = "bank"  # the mode in which BK is sent nothing
RETIRED = "bk"  # the mode in which Bank is sent nothing
# a side's book lacks every write made in these modes, and what it answered before says nothing of it since
ONE_SIDED = (UNMIRRORED, RETIRED)


@dataclass(frozen=True, slots=True)
class Criterion:
    """One line of the gate: what was measured against what threshold."""

    method: str  # "" for a criterion about the whole report
    name: str  # "compared", "answered", "real mismatch rate", "unproven", "covered", "evidence"
    measured: str
    threshold: str
    passed: bool


@dataclass(frozen=True, slots=True)
class GateResult:
    criteria: tuple[Criterion, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    @property
    def failed(self) -> tuple[Criterion, ...]:
        return tuple(c for c in self.criteria if not c.passed)


def split_fleet(views: Sequence[ReplicaView], lease: float, now: float) -> str:
    """The live replicas (heard from within `lease`) and their modes, when they do not all run the same
    modes: "REPLICA in SCOPE MODE, ...; ..." on the scopes they differ on ("" when they agree). A replica
    in other modes than the rest answers, or mirrors, differently: Bank alone gets its writes in `bank`
    mode, say, so the evidence of the others says nothing of the book BK holds."""
    live = [view for view in views if now - view.heartbeat <= lease]
    scopes = sorted({scope for view in live for scope in view.modes})

    def mode(view: ReplicaView, scope: str) -> str:
        return view.modes.get(scope) or view.modes.get(DEFAULT, "")

    differ = [s for s in scopes if len({mode(view, s) for view in live}) > 1]
    return (
        "; ".join(
            f"{view.replica} in {', '.join(f'{s.lstrip(chr(47))} {mode(view, s)}' for s in differ)}"
            for view in live
        )
        if differ
        else ""
    )


def evaluate(
    report: Report,
    *,
    min_compared: int,
    min_answered: int,
    max_mismatch_rate: float,
    max_unproven_rate: float,
    required_methods: Sequence[str],
    scope: Sequence[str] = (),
) -> GateResult:
    """Judge the report: one criterion per line, in the order of the methods.

    Every method with calls in the window is judged, and each required method must be covered besides:
    naming a method never hides another's failure. With a `scope` (a switch of some methods' modes),
    only the methods of the scope are judged, and each must be covered. A method needs `min_answered`
    answered comparisons, or `min_compared` when that is fewer: a gate asked for one clean comparison
    asks for no more."""
    if scope:
        names = list(dict.fromkeys(method_name(m) for m in scope))
    else:
        required = list(dict.fromkeys(method_name(m) for m in required_methods))
        names = required + [m.method for m in report.methods if m.method not in required]
    names = [name for name in names if is_method(name)]
    unnamed = [m for m in report.methods if not is_method(m.method)]
    unattributed = sum(m.dropped for m in unnamed)
    unknown = _unknown(unnamed)  # calls stored under no method, unproven: could be any method's
    criteria: list[Criterion] = []
    if not names:
        measured = "no method has a call in the window"
        if unattributed:
            measured += f"; {unattributed:,} dropped without a method"
        measured += "".join(f"; {n:,} {name}" for name, n in unknown)
        criteria.append(Criterion("", "evidence", measured, "≥ 1 method", False))
    for name in names:
        m = report.method(name)
        if m is None or m.calls == 0:
            measured = "not covered: no call in the window"
            if m is not None and (named := responsible(m.by_replica, lambda s: s.dropped)):
                measured += f"; {m.dropped:,} dropped, by replica: {named}"
            criteria.append(Criterion(name, "covered", measured, "≥ 1 call", False))
            continue
        enough = m.compared >= min_compared
        measured = f"{m.compared:,}"
        if not enough:
            measured = f"{NOT_PROVEN}: {m.compared:,} clean of {m.calls:,} calls"
            if named := responsible(m.by_replica, lambda s: s.not_compared):
                measured += f"; not compared, by replica: {named}"
        criteria.append(Criterion(name, "compared", measured, f"≥ {min_compared:,}", enough))
        criteria.append(_answered(m, min(min_answered, min_compared)))
        rate = m.real_mismatch_rate or 0.0
        criteria.append(
            Criterion(
                name,
                "real mismatch rate",
                f"{_percent(rate)} ({m.real_mismatches:,} of {m.compared:,})",
                f"≤ {_percent(max_mismatch_rate)}",
                rate <= max_mismatch_rate,
            )
        )
        dropped = m.dropped + unattributed  # calls never compared: as unproven as a skipped one
        elsewhere = sum(n for _, n in unknown)
        calls = m.calls + dropped + elsewhere
        unproven = (m.unproven + dropped + elsewhere) / calls
        measured = f"{_percent(unproven)} of {calls:,} calls ({_by_verdict(m, unattributed, unknown)})"
        if unproven > max_unproven_rate:
            measured = f"{NOT_PROVEN}: {measured}"
            if named := responsible(m.by_replica, lambda s: s.not_compared):
                measured += f"; by replica: {named}"
        criteria.append(
            Criterion(
                name, "unproven", measured, f"≤ {_percent(max_unproven_rate)}", unproven <= max_unproven_rate
            )
        )
    return GateResult(tuple(criteria))


def _answered(m: MethodReport, needed: int) -> Criterion:
    """Whether at least `needed` of the method's clean comparisons were answered by Bank (status OK); when
    not, the rest by status: "UNAUTHENTICATED 250" for a refusal alike on both sides (as all are, in a
    match), "NOT_FOUND → OK 5" for Bank's refusal that BK answered (a mismatch), most first."""
    answered = m.answered >= needed
    measured = f"{m.answered:,} of {m.compared:,} clean comparisons"
    if not answered:
        measured = f"{NOT_PROVEN}: {m.answered:,} of {m.compared:,} clean comparisons answered by Bank"
        if m.unanswered:
            pairs = ", ".join(
                f"{_status(p.bank)} {p.count:,}"
                if p.bank == p.bk
                else f"{_status(p.bank)} → {_status(p.bk)} {p.count:,}"
                for p in m.unanswered
            )
            alike = all(p.bank == p.bk for p in m.unanswered)
            measured += (
                f"; the rest were refusals alike on both sides ({pairs})"
                if alike
                else f"; the rest, by status (Bank → BK): {pairs}"
            )
    return Criterion(m.method, "answered", measured, f"≥ {needed:,}", answered)


def _status(name: str | None) -> str:
    """A side's status as the gate names it (None: that side gave no answer of its own)."""
    return name if name is not None else "no answer"


def is_method(name: str) -> bool:
    """Whether a name in the report is a method's ("package.Service/Method"), not a label of counts that
    name none ("", "(other)", "(not described)")."""
    return "/" in name


def _unknown(unnamed: Sequence[MethodReport]) -> list[tuple[str, int]]:
    """The unproven calls stored under each name that is no method's (`UNSEEN`, "(calls the shim did not
    see)": calls whose copies never reached the shim), by name."""
    return [(_shown(m.method), m.unproven) for m in unnamed if m.unproven]


def _shown(name: str) -> str:
    """A name that is no method's as the gate names it: quoted unless it is one of the shim's labels."""
    return name if name.startswith("(") and name.endswith(")") else repr(name)


def _by_verdict(m: MethodReport, unattributed: int, unknown: Sequence[tuple[str, int]] = ()) -> str:
    """The unproven calls by verdict, then the dropped ones: "tainted 40, skipped 10, shadow-error 0,
    error 0, dropped 5"; with drops counted under no method, "dropped 5 (2 without a method)"; then the
    unproven calls stored under no method, by name: "(calls the shim did not see) 5,000"."""
    counts = {"tainted": m.tainted, "skipped": m.skipped, "shadow-error": m.shadow_errors, "error": m.errors}
    other = m.unproven - sum(counts.values())  # a verdict this shim does not know: unproven too
    if other:
        counts["other"] = other
    text = ", ".join(f"{verdict} {n:,}" for verdict, n in counts.items())
    text += f", dropped {m.dropped + unattributed:,}"
    if unattributed:
        text += f" ({unattributed:,} without a method)"
    return text + "".join(f", {name} {n:,}" for name, n in unknown)


def _percent(rate: float) -> str:
    """A rate as a percentage, to 4 significant digits: 0%, 0.1%, 4.157%."""
    return f"{rate * 100:.4g}%"
