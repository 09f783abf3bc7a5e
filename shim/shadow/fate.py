"""How a mirrored call ends before the shadow answered, and what its record then says."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

from comparators import Code, Outcome
from shim.shadow.watch import Watch
from shim.steps import unreachable

CANCELLED, DEADLINE_EXCEEDED, INTERNAL = Code.CANCELLED, Code.DEADLINE_EXCEEDED, Code.INTERNAL

WAITING = "while it waited behind earlier calls on its keys"
BEHIND = "it fell more than shadow.max_capture request bytes behind"
NO_ROOM = "its request bytes waiting for it found no room in shadow.max_capture_total"
NOT_SENT = "before it was sent"
DEADLINE_PASSED = "the client's deadline passed (the primary answered DEADLINE_EXCEEDED)"
DEADLINE_SLACK = 0.01  # seconds: the primary's timer may end the call this early, rounding the deadline


def ended_by_deadline(primary: Outcome, deadline_left: float | None) -> Outcome | None:
    """The primary's outcome as recorded when the client's deadline ended the call, if it did: its
    DEADLINE_EXCEEDED came once that deadline had passed (`deadline_left`: the seconds left of it then; None:
    the call had none). The client has its own timer's answer, or this one; BK, whose mirrored call carries
    the deadline counted from when it is sent (so it runs on after the primary's ended), may well answer
    it, and that is no difference between them: the call is not compared, as when the client cancels (and
    a write's keys go out of step)."""
    if primary.code != DEADLINE_EXCEEDED or deadline_left is None or deadline_left > DEADLINE_SLACK:
        return None
    return Outcome(code=CANCELLED, local=f"not compared: {DEADLINE_PASSED}")


@dataclass(slots=True)
class Fate:
    """Why a mirrored call stopped early, if it did; `stop` is set as soon as it must stop."""

    timeout: float  # the shadow timeout, for its note
    stream_idle: float
    max_wait: float  # ordering.max_wait, for its note
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    expired: bool = False  # the shadow timeout passed
    late: bool = False  # the client's deadline, which the mirror carries, passed before the shadow answered
    waited_out: bool = False  # ordering.max_wait passed while it waited behind earlier calls
    abandoned: bool = False  # the client cancelled (or its copy was lost) before the primary answered
    overflowed: str = ""  # why its request bytes could wait for the shadow no longer (BEHIND, NO_ROOM)
    idle: bool = False  # an idle stream, given up for a call that needed its place
    shutdown: bool = False  # the shim stops
    unreachable: bool = False  # not sent: the primary never received the write
    watch: Watch = field(default_factory=Watch)  # a read's stream the client ended (`shim.shadow.watch`)

    @property
    def stopped_by_us(self) -> bool:
        """The shim cut the shadow call short (the timeout, max_wait, the client, its bytes, or its stream
        had as many answers as the primary's the client ended)."""
        return self.expired or self.waited_out or self.abandoned or bool(self.overflowed) or self.watch.enough

    def past_client_deadline(self, outcome: Outcome, latency: float, deadline: float | None) -> Outcome:
        """The shadow's outcome, said to be no answer within the client's `deadline` when that deadline, which
        the mirror carries, ended it: not one of BK's failures."""
        if outcome.code != DEADLINE_EXCEEDED or deadline is None or latency < deadline - DEADLINE_SLACK:
            return outcome
        self.late = True
        return replace(outcome, local=f"no answer within the client's deadline ({deadline:.3g} s)")

    def verdict(self, shadow: Outcome, sent: bool) -> bool | None:
        """What the call's end says of BK's health, for the breaker (`sent`: the call went to BK): True, BK
        answered (whatever its status); False, BK could not be reached, or did not answer within the shadow
        timeout; None, nothing: the shim did not send the call (an id with no counterpart, a write the
        primary never received, its turn or its intent never came), or it or the client cut the call short
        (cancelled, its place or its bytes ran out, the shim stopped, an error of the shim's)."""
        if not sent:
            return None
        if not shadow.local:
            return not unreachable(shadow)
        cut = self.abandoned or self.shutdown or self.idle or self.overflowed
        return False if (self.expired or self.late) and not cut else None

    def idle_note(self, where: str) -> str:
        idle = self.stream_idle
        return f"shadow call given up {where}: idle for {idle:g}s, its place was needed by another call"

    def given_up(self, latency: float, where: str) -> Outcome:
        """The outcome of a call stopped before it was sent (`where`: while it waited, or before sending)."""
        if self.shutdown:
            return Outcome(
                code=CANCELLED, latency=latency, local=f"shadow call given up {where}: the shim stopped"
            )
        if self.abandoned:
            return Outcome(
                code=CANCELLED, latency=latency, local=f"shadow call cancelled with the client's call {where}"
            )
        if self.idle:
            return Outcome(code=DEADLINE_EXCEEDED, latency=latency, local=self.idle_note(where))
        if self.overflowed:
            return Outcome(
                code=CANCELLED,
                latency=latency,
                local=f"shadow given up {where}: {self.overflowed}",
            )
        if self.waited_out:
            return Outcome(
                code=DEADLINE_EXCEEDED,
                latency=latency,
                local=f"shadow given up {where}: not sent within ordering.max_wait ({self.max_wait:g}s) "
                "after the primary",
            )
        return Outcome(
            code=DEADLINE_EXCEEDED,
            latency=latency,
            local=f"shadow timeout {where}: no answer within {self.timeout:g}s after the primary",
        )

    def cut_short(self, latency: float) -> Outcome | None:
        """The outcome of a call stopped while the shadow had it, if it was."""
        if self.abandoned:
            return Outcome(
                code=CANCELLED, latency=latency, local="shadow call cancelled with the client's call"
            )
        if self.overflowed:
            return Outcome(
                code=CANCELLED,
                latency=latency,
                local=f"shadow given up: {self.overflowed}",
            )
        if self.shutdown:
            return Outcome(
                code=CANCELLED,
                latency=latency,
                local="shadow call given up: the shim stopped before it answered",
            )
        if self.idle:
            return Outcome(code=DEADLINE_EXCEEDED, latency=latency, local=self.idle_note("while in flight"))
        if self.waited_out:  # a session's later message, waiting behind earlier calls on its keys
            return Outcome(
                code=DEADLINE_EXCEEDED,
                latency=latency,
                local=f"shadow given up: a message not sent within ordering.max_wait ({self.max_wait:g}s) "
                "after the primary, waiting behind earlier calls on its keys",
            )
        if self.expired and self.watch.ended_after:
            return Outcome(
                code=DEADLINE_EXCEEDED, latency=latency, local=self.watch.timeout_note(self.timeout)
            )
        if self.expired:
            return Outcome(
                code=DEADLINE_EXCEEDED,
                latency=latency,
                local=f"shadow timeout: no answer within {self.timeout:g}s after the primary",
            )
        return None


async def until(waiting: Any, stop: asyncio.Event) -> bool:
    """Wait for `waiting` unless `stop` is set first; True when it completed."""
    done = asyncio.ensure_future(waiting)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((done, stopped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        done.cancel()
        stopped.cancel()
    return done.done() and not done.cancelled()
