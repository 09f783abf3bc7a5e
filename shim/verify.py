"""Keys out of step, verified: read both ledgers for the key and clear the mark when they agree.

A mark says only that a write may have reached one side only. Often both books
still agree (a write one side refused and the other accepted as a no-op; a
shadow call that timed out but was applied). So when a key goes out of step,
the shim checks it:

- at once, when both sides answered the write: the write still holds the key's
  place in the ordering lanes (the mirrored calls before it are done on both
  sides, the ones after it wait), so the key is read there and then, and the
  calls after it are judged against what was found;
- and in the background otherwise (or when that first check could not
  conclude): `[verify] settle` after the mark (a write BK answered late has
  landed by then), it takes the key's place in the lanes as a write, and reads
  it; then again, each time waiting twice as long, up to `[verify] attempts`.

A check reads the key's state from both sides with the configured state reads
(`[reconcile] reads`, the same as `shim reconcile`; BK's reads name BK's ids,
through the id map, and a key marked while BK was primary, BK's id, is read on
Bank by the Bank id it pairs with: `Sweep.marked`) and compares them with the
rules and the id map. The key is read as the side's id the store's mark says it
is (the mark's `side`, read with its generation): where the id spaces overlap,
one text names an account on each side, and a mark that says neither is read as
every account of its text. If no write on the key came in meanwhile and the
states agree, the mark is cleared ("verified in step"); if they differ, the mark
stays, with the differing state recorded; if a write came in, or a side could not be read (an error, or the
key not found: a check proves nothing then), it is inconclusive. A mark put on
the key meanwhile by another replica (or `shim resync`'s reader) is never
cleared with it: the key's mark in the store has a generation, raised by every
mark put on the key, read before the check, and the mark is cleared only if it
has not risen (`StoredMarks.clear`).

In a fleet ordering writes across replicas (`ordering.across_replicas`), a
write through another replica is not in this replica's lanes: it may be on one
side and not yet on the other while the key is read. So a check also looks at
the key's tickets before and after its reads: a write under way (a ticket
issued and not yet done, other than the one the check holds) or a ticket
taken meanwhile makes it inconclusive, and it is checked again later. A ticket
of a replica gone is no write under way: the look releases it and marks the
key (`KeyOrder.position`), so a check after it can conclude.

Every verification is stored (`verifications`: when, which mark, the result
and the differences), so the evidence that a key was put back in step is kept.
`shim resync KEY` verifies the same way before clearing, unless `--force`.
Without `[reconcile] reads` nothing is verified: marks stay until resynced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog

from comparators import Difference
from shim._lanes import Lanes
from shim._timeouts import bounded
from shim.evidence.record import time_ordered_id
from shim.logs import raised
from shim.metrics import Counters
from shim.reconcile import KeyResult
from shim.settings import POSITIVE, duration, setting
from shim.steps import Steps
from shim.store import OutOfStep, Store, StoreError

_log = structlog.get_logger("shim.verify")

IN_STEP, DIFFERS, INCONCLUSIVE, UNREADABLE = "in-step", "differs", "inconclusive", "unreadable"

# reads a key (its side's id: "bank", "bk", "" when the mark says neither) on both sides and compares
Check = Callable[[str, str], Awaitable[KeyResult]]
Position = Callable[[str], Awaitable[tuple[int, int]]]  # a key's tickets across replicas: (issued, done)
UNDER_WAY = "a write on the key was under way through another replica while it was read"


@dataclass(frozen=True, slots=True)
class VerifySettings:
    """Keys out of step, checked with the [reconcile] reads (`docs/out-of-step.md`)."""

    SECTION: ClassVar[str] = "verify"
    settle: float = setting(1.0, duration(), "after a key goes out of step, the wait before its first check")
    attempts: int = setting(
        5, POSITIVE, "checks of a key before it is left out of step (each waits twice as long as the last)"
    )


@dataclass(frozen=True, slots=True)
class Verification:
    """One check of a key out of step."""

    key: str
    at: float
    mark: OutOfStep
    result: str  # IN_STEP, DIFFERS, INCONCLUSIVE or UNREADABLE
    detail: str  # the differences (JSON), or why it was inconclusive
    cleared: bool  # the mark was cleared


def _differences_json(differences: list[tuple[str, Difference]]) -> str:
    """The differences of a key's state, as stored: each in its JSON form with its method (first 20)."""
    return json.dumps(
        [{"method": method, **d.as_json()} for method, d in differences[:20]],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def store_verification(store: Store | None, replica: str, verification: Verification) -> None:
    if store is None:
        return
    store.marks.put_verification(
        time_ordered_id(),
        verification.at,
        replica,
        verification.key,
        verification.mark,
        verification.result,
        verification.detail,
    )


class Verifier:
    """Verifies each key marked out of step, in the background, one key at a time per key."""

    def __init__(
        self,
        check: Check,
        steps: Steps,
        lanes: Callable[[], Lanes | None],
        store: Store | None,
        counters: Counters,
        replica: str,
        *,
        settle: float = 1.0,
        attempts: int = 5,
        wait: float = 30.0,
        check_now: Check | None = None,
        now_within: float = 1.0,
        fleet: Position | None = None,
        redacting: bool = False,
    ) -> None:
        self._check = check
        self._redacting = redacting  # a failure is logged by its type alone: its message may quote a value
        self._check_now = check_now  # the same reads with a short timeout, for checks that hold the lanes
        self._fleet = fleet  # with ordering.across_replicas: the key's tickets, looked at around the reads
        self._steps = steps
        self._lanes = lanes
        self._store = store
        self._counters = counters
        self._replica = replica
        self.settle = settle
        self.attempts = max(attempts, 1)
        self._wait = wait  # the longest a verification waits for its turn in the lanes
        self._now_within = now_within  # ... and a check holding the key's place, for its mark in the store
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.results: list[Verification] = []  # the latest ones, for tests and the admin API
        self._idle = asyncio.Event()
        self._idle.set()

    def schedule(self, mark: OutOfStep) -> None:
        """Verify this key soon (a key already being verified is verified again after)."""
        running = self._tasks.get(mark.key)
        if running is not None and not running.done():
            return  # its loop reads the current mark at each attempt
        task = asyncio.get_running_loop().create_task(self._run(mark.key), name=f"verify {mark.key}")
        self._tasks[mark.key] = task
        self._idle.clear()
        task.add_done_callback(lambda _, key=mark.key: self._done(key))  # type: ignore[misc]

    def _done(self, key: str) -> None:
        task = self._tasks.get(key)
        if task is not None and task.done():
            del self._tasks[key]
        if not self._tasks:
            self._idle.set()

    async def drain(self) -> None:
        """Wait until no verification is running (for tests and the drain)."""
        await self._idle.wait()

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._idle.set()

    async def _run(self, key: str) -> None:
        for attempt in range(self.attempts):
            await asyncio.sleep(self.settle * (2**attempt))
            mark = self._steps.mark_of(key)
            if mark is None:
                return  # cleared meanwhile (a resync, another replica)
            try:
                verification = await self.verify(key, mark)
            except Exception as exc:  # never raised into the shim; the mark stays
                if self._redacting:  # its message may quote a value: its type alone
                    _log.error("verification failed", key=key, **raised(exc, redacting=True))
                else:
                    _log.error("verification failed", key=key, error=repr(exc))
                self._counters.inc("verification_errors")
                return
            if verification.result in (IN_STEP, DIFFERS):
                return
        self._counters.inc("verifications_given_up")

    async def verify(self, key: str, mark: OutOfStep, *, held: bool = False) -> Verification:
        """One verification of `key` under `mark`: read both sides in the key's turn, clear if they agree.

        `held`: the caller holds the key's place in the lanes already (the write that marked it)."""
        lanes = self._lanes()
        epoch = self._steps.epoch(key)
        try:  # marks put on the key from now on, through any replica, keep it marked
            stored = await bounded(self._steps.stored(key), self._now_within if held else self._wait)
        except (StoreError, TimeoutError) as exc:
            why = str(exc) if isinstance(exc, StoreError) else "the store did not answer in time"
            return self._record(key, mark, INCONCLUSIVE, f"the key's mark was not read: {why}", False)
        # whose id the key is, as the store's mark says (another replica may have marked the other side's)
        generation, side = (None, mark.side) if stored is None else (stored[1], stored[0].side)
        ticket = lanes.enter((key,), write=True) if lanes is not None and not held else None
        try:
            if ticket is not None:
                try:
                    await bounded(ticket.ready(), self._wait)
                except TimeoutError:
                    return self._record(key, mark, INCONCLUSIVE, "calls on the key kept it busy", False)
            seq = lanes.write_seq if lanes is not None else 0
            try:
                before = await self._fleet(key) if self._fleet is not None else (0, 0)
                check = self._check_now if held and self._check_now is not None else self._check
                state = await check(key, side)
                after = await self._fleet(key) if self._fleet is not None else (0, 0)
            except StoreError as exc:
                return self._record(key, mark, INCONCLUSIVE, f"the keys' order was not read: {exc}", False)
            if state.unreadable:
                return self._record(key, mark, UNREADABLE, state.unreadable, False)
            if lanes is not None and lanes.written_since((key,), seq):
                return self._record(
                    key, mark, INCONCLUSIVE, "a write on the key came in while it was read", False
                )
            if self._steps.epoch(key) != epoch:
                return self._record(key, mark, INCONCLUSIVE, "another write on the key was missed", False)
            # held: the write holding the key's place has its ticket, in turn and not yet done
            if after != before or before[0] - before[1] > (1 if held else 0):
                return self._record(key, mark, INCONCLUSIVE, UNDER_WAY, False)
            if state.differences:
                return self._record(key, mark, DIFFERS, _differences_json(state.differences), False)
            cleared = await self._steps.clear(mark, generation, side)
            return self._record(key, mark, IN_STEP, "[]", cleared)
        finally:
            if ticket is not None:
                ticket.release()

    def _record(self, key: str, mark: OutOfStep, result: str, detail: str, cleared: bool) -> Verification:
        verification = Verification(key, time.time(), mark, result, detail, cleared)
        self.results.append(verification)
        del self.results[:-1000]
        self._counters.inc(f"verified_{result.replace('-', '_')}", mark.method)
        store_verification(self._store, self._replica, verification)
        log: Any = _log.info if result == IN_STEP else _log.warning
        log("key verified", key=key, result=result, cleared=cleared, detail=detail[:200])
        return verification


async def verify_once(
    check: Check, key: str, mark: OutOfStep | None, store: Store | None, replica: str
) -> tuple[str, str]:
    """A verification outside a running shim (`shim resync`), of `key` as its mark's side's id: (result,
    detail); stores it when marked."""
    state = await check(key, mark.side if mark is not None else "")
    if state.unreadable:
        result, detail = UNREADABLE, state.unreadable
    elif state.differences:
        result, detail = DIFFERS, _differences_json(state.differences)
    else:
        result, detail = IN_STEP, "[]"
    if mark is not None:
        verification = Verification(key, time.time(), mark, result, detail, result == IN_STEP)
        store_verification(store, replica, verification)
    return result, detail


__all__ = [
    "DIFFERS",
    "INCONCLUSIVE",
    "IN_STEP",
    "UNREADABLE",
    "Verification",
    "Verifier",
    "store_verification",
    "verify_once",
]
