"""What a mirrored call leaves behind: the marks of a write both sides did not do alike, and the
exchange handed to the comparison."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import structlog

from comparators import Exchange, Outcome
from shim.shadow.capture import Capture
from shim.shadow.learning import Learning
from shim.shadow.shared import Shared
from shim.steps import REFUSED, effect, out_of_step_reason
from shim.store import OutOfStep
from shim.verify import Verifier

_log = structlog.get_logger("shim.shadow")


async def judge(
    shared: Shared,
    keys: tuple[str, ...],
    method: str,
    primary: Outcome | None,
    shadow: Outcome,
    *,
    cancelled: str,
    unreachable: bool,
    learning: Learning,
    holding: bool,
) -> None:
    """Mark a write's keys out of step unless both sides did the same with it. `cancelled`: why it was given
    up before the primary answered ("" if it was not). When the write still holds its place (`holding`) and
    both sides answered, the keys it marked are checked now."""
    if shared.steps is None:
        return
    if cancelled:
        reason = f"{cancelled}: whether either side applied it is unknown"
    elif unreachable:
        return  # neither side received it
    elif learning.stopped:
        if effect(primary) == REFUSED:
            return
        reason = "BK was not sent it: " + learning.note()
    else:
        reason = out_of_step_reason(primary, shadow, shared.primary_is_bank)
    if not reason:
        return
    marks = shared.steps.mark(keys, method, reason)
    verifier = shared.verifier
    if marks and verifier is not None and holding and not shadow.local and not cancelled:
        for mark in marks:
            await _verify(shared, verifier, method, mark)


async def _verify(shared: Shared, verifier: Verifier, method: str, mark: OutOfStep) -> None:
    """Check a key a write just put out of step; a failing check leaves the mark (and the background
    checks) as they are, and never loses the call's record."""
    try:
        await verifier.verify(mark.key, mark, held=True)
    except Exception as exc:
        shared.counters.inc("verification_errors", method)
        _log.error("verification failed", key=mark.key, error=repr(exc))


def exchange(
    shared: Shared,
    method: str,
    requests: list[bytes],
    primary: Outcome,
    shadow: Outcome,
    *,
    capture: Capture,
    learning: Learning,
    idle: bool,
    unreachable: bool,
    **fields: Any,
) -> tuple[Exchange, list[bytes]]:
    """The exchange of a call both sides are done with (`fields`: the rest of the Exchange's fields); and
    the requests the mirror still keeps (none once the call is too large to compare)."""
    unmapped = learning.for_exchange()
    note = ""
    kept = tuple(requests)
    if unmapped:
        note = learning.note()
    elif idle:
        note = ""  # the shadow's outcome says why
    elif unreachable:
        note = "not mirrored: the primary never received the write (UNAVAILABLE before any answer)"
    elif capture.exceeded:
        note = (
            "too large to compare: the shadow side held shadow.max_capture_total bytes already"
            if capture.starved
            else "too large to compare: more than shadow.max_capture bytes"
        )
        if not shadow.local:  # not compared: nothing of it is kept
            kept, primary = (), replace(primary, messages=())
            requests = []
            capture.give_back()
    record = Exchange(
        method=method,
        requests=kept,
        primary=primary,
        # too large to compare: not compared (the note says why), unless the shadow failed anyway
        shadow=None if unmapped or unreachable or (capture.exceeded and not shadow.local) else shadow,
        primary_is_bank=shared.primary_is_bank,
        note=note,
        unmapped=unmapped,
        **fields,
    )
    return record, requests
