"""Keys out of step: where BK's ledger may differ from Bank's because of a missed write.

A write is *in step* when both sides did the same with it: both applied it
(both answered OK), or both certainly did not (both refused it with a status
that means nothing was done, such as INVALID_ARGUMENT or NOT_FOUND). Anything
else puts its keys out of step:

- the write was not mirrored (dropped at `shadow.max_in_flight`, breaker open,
  or it names an id BK has no counterpart for) while Bank applied it, or may have;
- the shadow call timed out, was given up or cancelled (outcome unknown);
- the client cancelled the write (outcome unknown on both sides);
- one side applied it and the other refused it (or may not have applied it).

A side that answered UNAVAILABLE with no answer message never received the
write (gRPC's meaning of UNAVAILABLE: nothing was done, the call may be
retried), so it counts as refused; but not when its connection was lost once
the write was sent on it (grpc's "Socket closed", Envoy's "connection
termination"): it may have applied it. A stream (a session) that answered
messages and then refused may have applied what it answered: it is in step
only with one that refused after as many answers.

Only the write's own keys are marked. A write the shim cannot key marks no
key: its effect cannot be placed, and marking every key would hide every later
real difference. It is logged and counted (`unkeyed_writes_out_of_step`); the
differences it causes count as real until the books are reconciled, which can
only make the evidence stricter, never hide a fault. It is kept in the store
all the same, as the mark of no key (`NO_KEY`), which taints nothing and cannot
be verified by a key's reads: `shim resync --list` shows it, Bank is not
retired while it is there, and an operator clears it (`shim resync --force
''`) once `shim reconcile` finds the books equal.

Later differences on a key out of step are `tainted`: explained by the missed
write, not counted as parity failures. The mark stays (in the store, so
restarts and other replicas keep it) until the key is verified in step
(`shim.verify`: both ledgers read and compared) or an operator resyncs it
(`shim resync KEY`). Marks an older shim made on every key ("*") are still
honoured until resynced.

A mark says whose id its key is (`side`): the primary's, whose ids its
clients speak (`Translation.client_side`), Bank's while Bank answers and BK's
while BK does. Where the id spaces overlap, one text names two accounts (Bank's
A2 is not BK's A2): a check reads the accounts the mark's side names. Marks of
both sides' ids on one text say neither (""), as do those whose side is not
known (a lost write's intent, a ticket released): a check reads every account
of that text (`shim.reconcile.Sweep.marked`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable

import structlog

from comparators import REFUSALS, Outcome, status_name
from shim.metrics import Counters
from shim.store import NO_KEY, OutOfStep, Store, StoreError

_log = structlog.get_logger("shim.steps")

EVERY_KEY = "*"
APPLIED, REFUSED, UNKNOWN = "applied", "refused", "unknown"


def unreachable(outcome: Outcome | None) -> bool:
    """Whether a side never received the call (`Outcome.never_received`): UNAVAILABLE before any answer
    message, but for a connection lost once the call was sent on it."""
    return outcome is not None and outcome.never_received


def refused(outcome: Outcome | None, answered: int = 0) -> bool:
    """Whether a side's status says it did nothing past the `answered` answer messages it sent: a refusal
    (`REFUSALS`), or UNAVAILABLE before any answer (it never received the call)."""
    if outcome is None or outcome.local or outcome.code == 0:
        return False
    return outcome.code in REFUSALS or (not answered and unreachable(outcome))


def effect(outcome: Outcome | None, answered: int = 0) -> str:
    """What a write's outcome says about its effect on that side's ledger. `answered`: the answer messages
    the side sent before its status (a stream's; its outcome may keep fewer). A stream that answered and
    then refused may have applied what it answered (a session's acked orders): not refused, unknown."""
    if outcome is None or outcome.local:
        return UNKNOWN
    if outcome.code == 0:
        return APPLIED
    if answered or outcome.messages:
        return UNKNOWN
    return REFUSED if refused(outcome) else UNKNOWN


def out_of_step_reason(
    primary: Outcome | None, shadow: Outcome | None, primary_is_bank: bool, answered: tuple[int, int] = (0, 0)
) -> str:
    """Why a write leaves its keys out of step ("" when it does not). `answered`: the answer messages each
    side (primary, shadow) sent before its status. Two streams that refused after as many answers each did
    what they answered (compared message by message), and nothing more: alike."""
    left, right = effect(primary, answered[0]), effect(shadow, answered[1])
    if left == right != UNKNOWN:
        return ""
    if answered[0] == answered[1] and refused(primary, answered[0]) and refused(shadow, answered[1]):
        return ""
    (bank, bk), (on_bank, on_bk) = (
        ((primary, shadow), answered) if primary_is_bank else ((shadow, primary), answered[::-1])
    )
    counted = any(answered)  # a stream: how far each side answered before its status says what it did
    return f"Bank {_said(bank, on_bank, counted)}, BK {_said(bk, on_bk, counted)}"


def _said(outcome: Outcome | None, answered: int = 0, counted: bool = False) -> str:
    if outcome is None:
        return "was not called"
    if outcome.local:
        return outcome.local
    if outcome.code == 0:
        return "applied it (OK)"
    details = outcome.details if len(outcome.details) <= 80 else outcome.details[:79] + "…"
    after = f" after {answered or 'no'} answer message{'' if answered == 1 else 's'}" if counted else ""
    return f"answered {status_name(outcome.code)}" + (f" ({details})" if details else "") + after


Listener = Callable[[OutOfStep], None]


class Steps:
    """The keys out of step, in memory and in the store."""

    def __init__(
        self, store: Store | None, counters: Counters, refresh: float = 1.0, replica: str = ""
    ) -> None:
        self._store = store
        self._replica = replica  # this shim, as its marks name it
        self._counters = counters
        self._refresh = refresh
        self._marks: dict[str, OutOfStep] = {}
        self._fresh: dict[str, OutOfStep] = {}  # marked while a refresh was reading the store
        self._cleared: set[str] = set()  # cleared while a refresh was reading the store
        self._refreshing = False
        self._no_key: OutOfStep | None = None  # the mark of no key, as the store had it or as made here
        self._no_key_fresh = False  # made while a refresh was reading the store
        self._task: asyncio.Task[None] | None = None
        # missed writes seen per key (marked or already out of step): a verification that began before one
        # of them must not clear the mark
        self._epochs: dict[str, int] = {}
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """Call `listener(mark)` for each key newly marked out of step (to verify it)."""
        self._listeners.append(listener)

    def epoch(self, key: str) -> int:
        """How many missed writes this process has seen on `key`; it grows with each."""
        return self._epochs.get(key, 0)

    @property
    def keys(self) -> dict[str, OutOfStep]:
        return dict(self._marks)

    @property
    def no_key(self) -> OutOfStep | None:
        """The mark of the writes out of step with no key, when there is one (it taints nothing)."""
        return self._no_key

    async def start(self) -> None:
        await self.refresh()
        if self._store is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="out-of-step refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self.refresh()
            except StoreError as exc:
                _log.warning("cannot re-read the keys out of step", error=str(exc))

    async def refresh(self) -> None:
        """Re-read the marks from the store (resyncs and other replicas' marks)."""
        if self._store is None:
            return
        self._refreshing = True
        self._fresh = {}
        self._cleared = set()
        self._no_key_fresh = False
        try:
            marks = {mark.key: mark for mark in await self._store.marks.out_of_step()}
        finally:
            self._refreshing = False
        for key in self._cleared:
            marks.pop(key, None)
        marks.update(self._fresh)
        no_key = marks.pop(NO_KEY, None)
        if not self._no_key_fresh:
            self._no_key = no_key
        self._marks = marks

    def mark(self, keys: Iterable[str], method: str, reason: str, side: str = "") -> list[OutOfStep]:
        """These keys (`side`'s ids: "bank", "bk", or "" when not known) missed a write; returns the new marks
        (a key out of step already keeps its mark, whose side becomes "" when this one's differs). A write
        without keys marks no key: it is kept in the store as the mark of no key (see the module
        docstring)."""
        keys = tuple(k for k in keys if k)
        now = time.time()
        if not keys:
            self._counters.inc("unkeyed_writes_out_of_step", method)
            _log.warning(
                "write out of step without a key: no key marked; what it changed counts as real until the"
                " books are reconciled",
                method=method,
                reason=reason,
            )
            mark = OutOfStep(NO_KEY, now, method, reason, self._replica, side)
            self._no_key, self._no_key_fresh = self._no_key or mark, self._refreshing
            if self._store is not None:
                self._store.marks.put([mark])
            return []
        marks = []
        again = []  # marked here already: the store keeps its earliest mark, or takes this one
        for key in keys:
            self._epochs[key] = self._epochs.get(key, 0) + 1
            while len(self._epochs) > 100_000:
                del self._epochs[next(iter(self._epochs))]
            held = self._marks.get(key)
            if held is not None:
                # another replica (or `shim resync`) may have cleared it in the store since this one last
                # looked: the store must not lose this write's mark for this replica's stale memory
                again.append(OutOfStep(key, now, method, reason, self._replica, side))
                if held.side != side:  # the other side's id of the same text: either account may be meant
                    self._marks[key] = dataclasses.replace(held, side="")
                    if self._refreshing:
                        self._fresh[key] = self._marks[key]
                continue
            mark = OutOfStep(key, now, method, reason, self._replica, side)
            self._marks[key] = mark
            if self._refreshing:
                self._fresh[key] = mark
            marks.append(mark)
            self._counters.inc("keys_out_of_step", method)
            _log.warning("key out of step", key=key, method=method, reason=reason)
        if (marks or again) and self._store is not None:
            self._store.marks.put([*marks, *again])
        for mark in marks:
            for listener in self._listeners:
                listener(mark)
        return marks

    async def generation(self, key: str) -> int | None:
        """The generation of the key's mark in the store (raised by every mark put on it, from any replica),
        read before a check of the key; None without a store, or when it holds no mark of the key."""
        held = await self.stored(key)
        return None if held is None else held[1]

    async def stored(self, key: str) -> tuple[OutOfStep, int] | None:
        """The key's mark in the store, and its generation (`generation`): what a check reads the key as
        (its side) and may clear. None without a store, or when it holds no mark of the key."""
        if self._store is None:
            return None
        return (await self._store.marks.marked([key])).get(key)

    async def clear(self, mark: OutOfStep, generation: int | None, side: str | None = None) -> bool:
        """Clear a mark found in step (verified), if no mark was put on its key since its `generation` was
        read, before the check (None: the store held none then), and, with `side`, the store's mark says the
        key is that side's id (as the check read it); False when the key's mark has changed meanwhile, here
        or in the store (another replica marked the key again: it stays marked)."""
        held = self._marks.get(mark.key)
        if held is not None and held != mark:
            return False
        if self._store is not None:
            marks = self._store.marks
            if generation is None or not await marks.clear(mark.key, mark.since, generation, side):
                if await marks.marked([mark.key]):
                    return False
                held_now = self._marks.get(mark.key)
                if held_now is not None and held_now != mark:
                    return False
        if self._marks.get(mark.key) == mark:
            del self._marks[mark.key]
        if self._refreshing:
            self._cleared.add(mark.key)
            self._fresh.pop(mark.key, None)
        self._counters.inc("keys_verified_in_step", mark.method)
        return True

    def mark_of(self, key: str) -> OutOfStep | None:
        return self._marks.get(key)

    def reason(self, keys: tuple[str, ...]) -> str:
        """Why a call on these keys (none: any key) is tainted; "" when none is out of step."""
        if not self._marks:
            return ""
        every = self._marks.get(EVERY_KEY)
        if every is not None:
            return _tainted(every)
        if not keys:
            first = min(self._marks.values(), key=lambda m: m.since)
            return _tainted(first)
        for key in keys:
            mark = self._marks.get(key)
            if mark is not None:
                return _tainted(mark)
        return ""


def _tainted(mark: OutOfStep) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mark.since))
    what = "every key" if mark.key == EVERY_KEY else f"key {mark.key!r}"
    return f"{what} out of step since {when}: {mark.method.lstrip('/')} {mark.reason}"
