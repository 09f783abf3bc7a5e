"""Which side gets a method's writes in each mode, and which side answers: a switch must not leave the side
that answers some calls without the writes of a method (`shim.admin`).

In `bank` mode a write reaches Bank alone, in `bk` mode BK alone; in `shadow` and `bk-primary` both. Bank
answers in `bank` and `shadow`, BK in `bk-primary` and `bk`. So a write method kept in `bank` while BK
answers another scope (the default promoted), or retired to `bk` on its own while Bank still answers one,
leaves the answering side a book without those writes: its clients read stale answers. Retired to `bk` on
its own while Bank is compared (the default in `bk-primary`), it leaves Bank's compared answers a book
without them: real mismatches blamed on BK, on every key those writes touch. A write method in `bank`
while Bank answers everything is the documented incident (BK misses the writes, Bank answers them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from comparators import DescriptorRegistry
from shim.config import Config
from shim.modes import DEFAULT
from shim.store.records import NO_KEY, ModeChange, OutOfStep, shown_key

GETS_WRITES = {"bank": {"Bank"}, "shadow": {"Bank", "BK"}, "bk-primary": {"Bank", "BK"}, "bk": {"BK"}}
ANSWERS = {"bank": "Bank", "shadow": "Bank", "bk-primary": "BK", "bk": "BK"}
COMPARED = {"shadow": "BK", "bk-primary": "Bank"}  # the side mirrored, whose answers are compared


def writes_missed(
    table: Mapping[str, str], methods: Iterable[str], is_write: Callable[[str], bool]
) -> list[str]:
    """Each write method (of `methods` and the scopes of `table`) whose writes a side answering some scope,
    or compared in one, does not get, said with its mode and that side; [] when none. A write method in
    `bank` mode while BK is only compared is the documented incident: not counted."""
    default = table[DEFAULT]
    modes = {m: table.get(m, default) for m in [*methods, *(s for s in table if s != DEFAULT)]}
    scopes = [default, *modes.values()]
    answering = {ANSWERS[mode] for mode in scopes if mode in ANSWERS}
    compared = {COMPARED[mode] for mode in scopes if mode in COMPARED} - answering
    missed = []
    for method, mode in modes.items():
        gets = GETS_WRITES.get(mode, answering | compared)
        said = [f"{' and '.join(sorted(answering - gets))} answers"] if answering - gets else []
        if mode != "bank" and compared - gets:
            said.append(f"{' and '.join(sorted(compared - gets))} is compared")
        if said and is_write(method):
            missed.append(f"{method.lstrip('/')} ({mode}): {', '.join(said)}, and gets none of its writes")
    return missed


WRITES_MISSED = (
    "{}: that side's clients would read answers from a book that misses those writes (a side compared:"
    " its answers would differ on those writes' keys, blamed on the other); switch the method with the"
    " default, or give it a mode in which that side gets its writes (--force overrides, recorded as forced)"
)


def newly_missed(
    current: Mapping[str, str],
    default: str,
    changes: Iterable[ModeChange],
    config: Config,
    registry: DescriptorRegistry | None,
) -> list[str]:
    """The write methods the `changes` to the modes (`current`, the `default` mode in force) leave the
    answering side without (those it lacked already are not their doing)."""
    before = {DEFAULT: default, **current}
    after = {**before, **{change.scope: change.to_mode for change in changes}}
    known = list(registry.methods) if registry is not None else []
    is_write = _writes(config, registry)
    earlier = set(writes_missed(before, known, is_write))
    return [m for m in writes_missed(after, known, is_write) if m not in earlier]


def _writes(config: Config, registry: DescriptorRegistry | None) -> Callable[[str], bool]:
    """Whether a method writes: its [methods] `read`, else its descriptor (not read-only); unknown: yes."""

    def is_write(method: str) -> bool:
        name = method.lstrip("/")
        settings = config.methods.get(name)
        if settings is not None and settings.read is not None:
            return not settings.read
        info = registry.method("/" + name) if registry is not None else None
        return info is None or not info.read_only

    return is_write


UNRETIRE = (
    "{0}: Bank is retired there (mode bk): it was sent none of the writes since, so in {1} mode it would"
    " answer, or be compared, from a book that lacks them; bring Bank's book up to BK's first (`shim"
    " reconcile` says where they differ), then switch with --force (recorded as forced)"
)
RETIRE_KEPT = (
    "{} keeps a mode of its own in which Bank still answers: retired, Bank would go on answering it from a"
    " book that gets no write any more. Switch it to bk-primary first (shim mode set bk-primary --method"
    " METHOD): a method in bk-primary is retired with the default"
)
RETIRE_OUT_OF_STEP = (
    "{}: BK's book is known to differ from Bank's on them, and once Bank is retired nothing tells which is"
    " right; reconcile, resolve and `shim resync` them (`shim resync --list`) before retiring Bank"
    " (--force overrides)"
)


def bank_called(table: Mapping[str, str]) -> str:
    """The methods whose own mode still calls Bank ("" when none does), with their modes."""
    kept = sorted(scope for scope, mode in table.items() if scope != DEFAULT and mode != "bk")
    return ", ".join(f"{scope.lstrip('/')} ({table[scope]})" for scope in kept)


def stretch_mark(
    changes: Iterable[ModeChange], config: Config, registry: DescriptorRegistry | None, replica: str
) -> OutOfStep | None:
    """The mark of no key a switch into `bank` mode leaves, when a write method is in its scope (the default:
    any; without descriptors, every method may write): in the stretch writes reach Bank alone, on keys the
    shim may never see (on Envoy, a call in `bank` mode does not pass through it), so BK's book lacks them
    where nothing says. Bank is then not retired until the books are reconciled and the mark cleared (`shim
    resync --force ''`). None for a stretch of read methods. A start from no recorded mode counts: a first
    start in `shadow` records nothing, so no record is no proof that nothing was mirrored."""
    is_write = _writes(config, registry)
    for change in changes:
        if change.to_mode != "bank" or change.from_mode == "bank":
            continue
        default = change.scope == DEFAULT
        if default and registry is not None and not any(is_write(m) for m in registry.methods):
            continue
        if not default and not is_write(change.scope):
            continue
        at = datetime.fromtimestamp(change.at, UTC).isoformat(timespec="seconds")
        scope = "the default mode" if default else change.scope.lstrip("/")
        reason = (
            f"a stretch in bank mode from {at} ({scope}): its writes reached Bank alone, on keys the shim may"
            " not have seen; reconcile the books (shim reconcile), then clear this mark"
        )
        return OutOfStep(NO_KEY, change.at, change.scope, reason, replica, "bank")
    return None


def out_of_step_said(keys: list[str]) -> str:
    """Keys out of step, said briefly: "2 keys are out of step (A1, (writes with no key))"."""
    named = ", ".join(shown_key(key) for key in keys[:5]) + (", ..." if len(keys) > 5 else "")
    return f"{len(keys)} key{'s are' if len(keys) > 1 else ' is'} out of step ({named})"
