"""What a mirrored call leaves behind once both sides answered: the ids it taught, the marks of a write
both sides did not do alike, and the exchange handed to the comparison."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import structlog

from comparators import Code, Exchange, Outcome
from shim._noise import asked_again
from shim._translation import STATUS_DETAILS_KEY
from shim.logs import raised
from shim.shadow.capture import Capture
from shim.shadow.fate import Fate
from shim.shadow.lateness import went
from shim.shadow.learning import Learning
from shim.shadow.parts import Parts
from shim.shadow.shared import Shared
from shim.steps import out_of_step_reason, refused
from shim.store import OutOfStep
from shim.store.key_order import NOT_LATE, bands
from shim.verify import Verifier

_log = structlog.get_logger("shim.shadow")


class Ended(Parts, Protocol):
    """The mirror of a call whose shadow side is over, as `conclude` reads it."""

    method: str
    primary_answers: int  # answer messages the primary sent
    requests: list[bytes]  # what it kept of the client's requests
    abandoned_why: str
    started_at: float
    answered_at: float | None  # when the primary answered (None: it has not)
    sent_at: float  # when the call went to the shadow (0: it did not)
    shadow_over_at: float  # when its call to the shadow ended (0: not yet)
    shadow_answered_at: list[float]  # when each answer message of the shadow's stream came (the first ones)
    correlation_id: str
    stage: str  # what it waits for now (a switch that waits too long says)

    @property
    def keys(self) -> tuple[str, ...]: ...

    @property
    def fate(self) -> Fate: ...

    @property
    def capture(self) -> Capture: ...


async def conclude(
    shared: Shared,
    mirror: Ended,
    primary: Outcome | None,
    shadow: Outcome,
    *,
    cancelled: bool,
    holding: bool,
    again: asyncio.Task[Outcome | None] | None,
) -> bool:
    """Both sides answered (`primary`: None, or `cancelled`, when the client gave up first): learn the ids
    the call minted, judge a write, free the call's places, and hand its exchange to the comparison (with
    the primary's answer to the read asked `again`). True once the comparison holds the captured bytes (it
    gives them back)."""
    translation, first, learning, admission = (
        shared.translation,
        mirror.admission.first,
        mirror.learning,
        mirror.admission,
    )
    keys, tainted, keyed_method = mirror.keys, "", mirror.plan.keyed
    try:
        if primary is not None and translation.ids is not None:
            plan = mirror.plan.ids
            if primary.code == 0 and plan.mints and not plan.streamed:
                learning.expect(primary, first, False)  # the primary's own callback may not have run yet
            learning.learn(primary, shadow, first)
        if admission.streamed:  # a session: as its messages found their keys, each at its turn
            tainted = mirror.places.taint
        elif shared.steps is not None and (keys or not admission.names_unknown):
            tainted = shared.steps.reason(keys or _made(mirror, learning, primary, shadow))
        if not tainted and mirror.is_write:  # in flight at the primary with another write on its keys
            tainted = admission.raced or shared.together.reason(keys, admission)
        # a read answered with a write in flight on its keys; a read of a method with no key, on any key (one
        # whose key is not known, or a keyed method's read naming none, is not such a listing)
        elif not tainted and primary is not None and (keys or not (admission.names_unknown or keyed_method)):
            answered, start = mirror.answered_at or time.time(), admission.started or mirror.started_at
            tainted = admission.raced or shared.together.read_reason(keys, start, answered)
        if mirror.is_write:
            mirror.stage = "its keys' verification"
            why = (mirror.abandoned_why or "the client cancelled it") if cancelled else ""
            await judge(
                shared,
                keys,
                mirror.method,
                primary,
                shadow,
                cancelled=why,
                unreachable=mirror.fate.unreachable,
                learning=learning,
                holding=holding,
                requests=mirror.requests,
                answered=(mirror.primary_answers, mirror.places.shadow_answers),
            )
    finally:
        # the ids it minted are learned and its keys marked: the calls behind it may go
        release_places(shared, mirror)
        learning.settle()
    if primary is None:
        return False
    if not tainted and mirror.places.fleet is not None:  # a read unordered, or raced, across replicas
        tainted = await mirror.places.fleet.taint(primary, shadow, mirror.answered_at or time.time())
    if not mirror.plan.kind.described and primary.code == shadow.code == Code.UNIMPLEMENTED:
        shared.counters.inc("calls_unimplemented", mirror.method)  # no method of the service: no evidence
        return False
    mirror.stage = "the id pairs of its answer"
    pairs = (
        await learning.pairs(primary, shadow, shared.primary_is_bank, first)
        if translation.ids is not None
        else ()
    )
    capture = mirror.capture
    record, mirror.requests = exchange(
        shared,
        mirror.method,
        mirror.requests,
        primary,
        shadow,
        capture=capture,
        learning=learning,
        fate=mirror.fate,
        is_write=mirror.is_write,
        routing_key=",".join(keys),
        started_at=mirror.started_at,
        cancelled=cancelled,
        ids=pairs,
        tainted=tainted,
        correlation_id=mirror.correlation_id,
        secondary=await asked_again(again),
        **_late(shared, mirror, keys),
    )
    shared.submit(record, capture.give_back)  # the comparison holds the bytes now, until it is done
    return True


def _late(shared: Shared, mirror: Ended, keys: tuple[str, ...]) -> dict[str, Any]:
    """How much later each side may have stamped the times in the call's answers (`Exchange.shadow_late`,
    `primary_late`, `own_late`, `message_late`, `late_steps`): the call's own lateness (and each of its
    stream's messages'), and its keys' writes' (here, or across replicas) by band, each for the times
    stamped until the band's last write was over."""
    fleet = mirror.places.fleet
    own = lateness(mirror)
    keys_late = shared.lateness.allowance(
        keys,
        own,
        mirror.is_write,
        bk_is_shadow=shared.primary_is_bank,
        known=fleet.late if fleet is not None else NOT_LATE,
    )
    steps = tuple(
        (until, bk, bank) if shared.primary_is_bank else (until, bank, bk)
        for until, bk, bank in bands(keys_late)
    )
    start = mirror.admission.started or mirror.started_at
    return {
        "shadow_late": max([own, *(shadow for _, shadow, _ in steps)]),
        "primary_late": max([0.0, *(primary for _, _, primary in steps)]),
        "own_late": own,
        # a stream's answer message came that long after the call started, and holds no time stamped later
        "message_late": tuple(min(own, max(at - start, 0.0)) for at in mirror.shadow_answered_at),
        "late_steps": steps,
    }


MESSAGE_TIMES = 10_000  # answer messages of a stream whose times are kept, each for its own lateness


def release_places(shared: Shared, mirror: Ended) -> None:
    """The call's places on its keys are over: the calls behind it may go, and learn how late it went."""
    mirror.places.release_all(went(lateness(mirror), bk_is_shadow=shared.primary_is_bank))


def lateness(mirror: Ended) -> float:
    """How much later the shadow may have stamped a time of the call than the primary did, at most: from the
    call's start (as its data plane saw it) to the shadow's answer (or now, before it). A mirrored call that
    waited (for the calls before it on its keys, or for a plane behind), or that the shadow was slow to
    answer, may be stamped up to that much later by the shadow's clock, and timestamp rules allow for it
    (`Exchange.shadow_late`)."""
    if not mirror.sent_at:
        return 0.0
    over = mirror.shadow_over_at or time.time()
    return max(over - (mirror.admission.started or mirror.started_at), 0.0)


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
    requests: Sequence[bytes] = (),
    answered: tuple[int, int] = (0, 0),
) -> None:
    """Mark a write's keys out of step unless both sides did the same with it. `cancelled`: why it was given
    up before the primary answered ("" if it was not). When the write still holds its place (`holding`) and
    both sides answered, the keys it marked are checked now. A reason that quotes a side's refusal hashes
    the values of redacted fields it quotes (`requests`: the call's, where those values come from).
    `answered`: the answer messages each side (primary, shadow) sent before its status."""
    if shared.steps is None:
        return
    if cancelled:
        reason = f"{cancelled}: whether either side applied it is unknown"
    elif unreachable:
        return  # neither side received it
    elif learning.stopped:
        # the shadow was cut where it had no counterpart for an id: it did what it answered, and a primary
        # that refused after as many answers did no more (a refusal after more answers proves nothing)
        if refused(primary, answered[0]) and answered[0] == answered[1]:
            return
        reason = ("BK" if shared.primary_is_bank else "Bank") + " was not sent it: " + learning.note()
    else:
        reason = out_of_step_reason(primary, shadow, shared.primary_is_bank, answered)
    if not reason:
        return
    if shared.free_text is not None:
        sides = [side for side in (primary, shadow) if side is not None]
        answers = [raw for side in sides for raw in side.messages]
        rich = [side.trailer(STATUS_DETAILS_KEY) for side in sides]
        reason = shared.free_text(method, requests, answers, rich)(reason)
    # a write with no key in its request placed its effect on the keys of what it minted
    marks = shared.steps.mark(keys or learning.minted_keys(), method, reason, shared.translation.client_side)
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
        if shared.free_text is not None:  # with redaction, its message may quote a value: its type alone
            _log.error("verification failed", key=mark.key, **raised(exc, redacting=True))
        else:
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
    fate: Fate,
    **fields: Any,
) -> tuple[Exchange, list[bytes]]:
    """The exchange of a call both sides are done with (`fields`: the rest of the Exchange's fields); and
    the requests the mirror still keeps (none once the call is too large to compare)."""
    unmapped, idle, unreachable = learning.for_exchange(), fate.idle, fate.unreachable
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
        ended_after=fate.watch.ended_after,  # a read's stream its client ended (`shim.shadow.watch`)
        **fields,
    )
    return record, requests


def _made(mirror: Ended, learning: Learning, primary: Outcome | None, shadow: Outcome) -> tuple[str, ...]:
    """The keys an unkeyed call's answers are about, for its taint. A write both sides applied, whose
    answer minted ids with owners (`owner_key`), answers about what it made: only a mark on those owners'
    keys can explain a difference in it (an account opened, its own key, has none yet; a movement booked
    on an account out of step does). Anything else unkeyed (a read, a refusal, which may hang on any
    key's state) is judged against every key: ()."""
    if not mirror.is_write or primary is None or primary.code != 0 or shadow.code != 0:
        return ()
    return learning.minted_keys()
