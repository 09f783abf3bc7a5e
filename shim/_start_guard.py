"""A shim started by its config in a mode other than the last recorded one (`shim.modes.started_in`) changes
the modes as a switch at run time does, so it is guarded as `shim.admin.set_mode` guards one: a promotion
(BK to answer where Bank did) and Bank's retirement from `bk-primary` run the gate on the stored evidence;
Bank is not retired while keys are out of step or a method's own mode still calls it, nor brought back from
retirement; no method's writes are kept from the side that answers; no live replica of the store runs other
modes. What is refused stops the start, nothing recorded, unless `shim serve --force` (the change is then
recorded as forced). Before, a config that said `bk` (one letter from `bank`) retired Bank unasked.

A start with no BK upstream sends every call to Bank alone: a stretch in `bank` mode for the evidence of the
store the config names, recorded there as a start in `bank` (`without_bk`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from comparators import DescriptorRegistry
from shim._mode_guards import (
    RETIRE_KEPT,
    RETIRE_OUT_OF_STEP,
    UNRETIRE,
    WRITES_MISSED,
    bank_called,
    newly_missed,
    out_of_step_said,
    stretch_mark,
)
from shim._promotion import gate_failures
from shim.admin import following_the_default
from shim.config import Config
from shim.errors import StartupError
from shim.gate import split_fleet
from shim.liveness import lease_of
from shim.modes import BK_ANSWERS, DEFAULT, STARTED_BY
from shim.store import ModeChange, ReplicaView, Store, StoreError


async def start_refused(
    store: Store,
    config: Config,
    registry: DescriptorRegistry | None,
    stored: Mapping[str, str],
    started: ModeChange,
    replica: str,
) -> list[str]:
    """Why the start `started` (from the default scope's last recorded mode, "" for none, to the config's)
    may not go on, with the run-time modes `stored` (the methods' own): [] when it may."""
    was, mode = started.from_mode or "shadow", started.to_mode  # none recorded: a first start, as shadow
    found = []
    if started.from_mode == "bk":
        found.append(UNRETIRE.format("the default mode", mode))
    if missed := newly_missed(stored, was, [started], config, registry):
        found.append(WRITES_MISSED.format("; ".join(missed)))
    promoted = {scope: m for scope, m in stored.items() if m == "bk-primary"}
    if mode == "bk" and (kept := bank_called({**stored, DEFAULT: mode, **dict.fromkeys(promoted, "bk")})):
        raise StartupError(f"starting in the config's mode bk is refused: {RETIRE_KEPT.format(kept)}")
    if mode == "bk" and promoted:  # (at run time, retired with the default; a start changes no own mode)
        found.append(
            f"{bank_called(promoted)} keeps a mode of its own, in which Bank is still mirrored: a start does"
            " not change it (shim mode set bk --retire-bank retires it with the default)"
        )
    marks = await store.marks.out_of_step() if mode == "bk" else []
    if keys := list(dict.fromkeys(mark.key for mark in marks)):
        found.append(RETIRE_OUT_OF_STEP.format(out_of_step_said(keys)))
    promoting = mode in BK_ANSWERS and was not in BK_ANSWERS
    if promoting or (mode == "bk" and was == "bk-primary"):
        moved = following_the_default(registry, stored, config.gate.methods)
        own = {scope.lstrip("/") for scope in stored if scope != DEFAULT}
        if failed := await gate_failures(store, config, moved, own, since_promotion=not promoting):
            what = "BK may not become primary" if promoting else "Bank may not be retired"
            more = f"; and {len(failed) - 3} more (shim gate lists them)" if len(failed) > 3 else ""
            found.append(f"the gate fails, so {what}: " + "; ".join(failed[:3]) + more)
    lease = lease_of(max(config.store.refresh, 0.05), config.store.lease)
    now = time.time()
    this = ReplicaView(replica, {**stored, DEFAULT: mode}, now, now)
    views = [view for view in await store.fleet.views() if view.replica != replica]
    if split := split_fleet([this, *views], lease, now):
        found.append(f"live replicas of the store would run different modes ({split})")
    return found


def refusal(started: ModeChange, found: list[str]) -> str:
    """The start's error: what was refused, and how to go on."""
    return (
        f"starting in the config's mode {started.to_mode} (the default mode last recorded:"
        f" {started.from_mode or 'none'}) is refused, as a switch to it at run time would be:"
        f" {'; '.join(found)}."
        f" Start in {started.from_mode or 'shadow'} and switch at run time (shim mode set: guarded, audited,"
        " and applied by every replica as one step), or start with shim serve --force (recorded as forced)"
    )


async def without_bk(config: Config, registry: DescriptorRegistry | None, replica: str) -> ModeChange | None:
    """A start with no BK upstream, in the store the config names when it holds anything
    (`Store.holds_nothing`: none is made for it). Refused (a StartupError, unless `shim serve --force`)
    while BK answers the clients by the store's modes, or a live replica runs other modes: this one would
    answer from Bank beside them, its writes reaching Bank alone. Then recorded as a start in `bank` mode,
    from the default mode in force (the gate's evidence starts afresh after it), with the stretch's mark
    (`stretch_mark`). Before, nothing was guarded or recorded: a restart without BK in an incident, and
    back, left the gate judging the evidence from before, and BK was promoted though its book lacked the
    writes made then. The change recorded (None: none, the default mode in force being `bank`). A store
    that fails raises StoreError."""
    if Store.holds_nothing(config.store.url):
        return None
    store = Store.open(config.store.url)
    try:
        await store.start()
        stored = await store.modes.current()
        history = await store.modes.history(limit=100_000)
        last = stored.get(DEFAULT) or next((c.to_mode for c in history if c.scope == DEFAULT), "")
        found = []
        if answering := sorted({mode for mode in [last, *stored.values()] if mode in BK_ANSWERS}):
            found.append(
                f"BK answers the clients by the store's modes ({', '.join(answering)}): without BK this shim"
                " would answer them from Bank, and send the writes it takes to Bank alone"
            )
        now, lease = time.time(), lease_of(max(config.store.refresh, 0.05), config.store.lease)
        views = [view for view in await store.fleet.views() if view.replica != replica]
        if split := split_fleet([ReplicaView(replica, {DEFAULT: "bank"}, now, now), *views], lease, now):
            found.append(f"live replicas of the store would run different modes ({split})")
        if found and not config.serving.forced_start:
            raise StartupError(
                f"starting without BK is refused: {'; '.join(found)}. Start with BK (--bk), or with shim"
                " serve --force (recorded as forced)"
            )
        if last == "bank":
            return None
        change = ModeChange(
            now, STARTED_BY, DEFAULT, last, "bank", "the shim started without BK", bool(found)
        )
        await store.modes.started(change)
        if (mark := stretch_mark([change], config, registry, replica)) is not None:
            store.marks.put([mark])
        return change
    except StoreError as exc:
        raise StoreError(f"a start without BK is recorded in the store, which failed: {exc}") from exc
    finally:
        await store.close()
