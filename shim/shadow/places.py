"""A mirrored call's places in its keys' lanes (`shim._lanes`), and when they are released.

A call of one request message has one place (`ticket`). A session (a bidi call) has one place per
request message (`steps`): its j-th answer on the shadow releases at most j messages, and no more than
the primary had been sent when it sent its own j-th answer. A message the shadow's answers do not
release (one neither side answers) is released on hold while the shadow has answered as much as the
primary: `ordering.stream_hold` after the primary answered having been sent it (and after it went to the
shadow); or, the primary answering nothing more, the shadow timeout after it went to the shadow. Every
place is released when the call ends.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from shim._lanes import Ticket
from shim.shadow.fate import until
from shim.shadow.fleet import FleetPlace
from shim.shadow.together import Together
from shim.store.key_order import NOT_LATE, Late


class Places:
    __slots__ = (
        "_bound",
        "_hold",
        "_method",
        "_past",
        "_past_armed",
        "_progress",
        "_progress_base",
        "_sent_held",
        "_sent_long",
        "_spans",
        "_spans_base",
        "_together",
        "_watched",
        "first_order",
        "fleet",
        "released",
        "shadow_answers",
        "stepped",
        "stepped_count",
        "steps",
        "taint",
        "ticket",
    )

    def __init__(
        self, hold: float = 0.0, bound: float = 0.0, together: Together | None = None, method: str = ""
    ) -> None:
        self.ticket: Ticket | None = None  # the call's place, for a call of one request message
        self.fleet: FleetPlace | None = None  # a write's place in its keys' order across replicas
        # one place per request message of a session, from the first not yet released (`released`)
        self.steps: deque[Ticket] = deque()
        self.stepped_count = 0  # request messages of a session that have their place
        self.stepped = asyncio.Event()  # a step was admitted (the writer may wait for one)
        self.released = 0  # steps released so far
        self.first_order = 0  # the order (`Ticket.order`) of a session's first place; 0 until it has one
        # per primary answer: request messages it had been sent by then, from answer `_progress_base` on
        self._progress: deque[int] = deque()
        self._progress_base = 0
        # the hold (`stream_hold`, 0: none) and its bound (the shadow timeout), and how far each has run: the
        # request messages the primary had been sent by an answer `hold` ago, those sent to the shadow `hold`
        # ago, and those sent `bound` ago
        self._hold, self._bound = hold, bound
        self._past = self._past_armed = self._sent_held = self._sent_long = 0
        self.shadow_answers = 0  # answer messages the shadow sent so far (any call kind)
        self._watched = 0  # answer messages the primary sent so far, of a read's stream (`watching`)
        # a session's writes in flight at the primary (`Together`): each message's place, from the first
        # the primary has not answered past, and when it took it
        self._together, self._method = together, method
        self._spans: deque[tuple[Ticket, float]] = deque()
        self._spans_base = 0  # the index of the first message of `_spans`
        # a session's taint: why one of its messages, at its turn, was on a key out of step (the first such
        # reason; "": none). A key marked later, by a call after that message, does not explain it
        self.taint = ""

    def step(self, ticket: Ticket, write: bool = False, at: float = 0.0) -> None:
        """The next request message of a session has its place (a `write`'s is in flight at the primary from
        `at`, when it came, until the primary answers past it, or the call ends: `Together`)."""
        self.steps.append(ticket)
        if self._together is not None:  # kept by index, a message with no span too (start 0)
            start = (at or time.time()) if write and ticket.keys else 0.0
            if start:
                self._together.started(ticket.keys, self._method, start, ticket)
            self._spans.append((ticket, start))
        if not self.stepped_count:
            self.first_order = ticket.order
        self.stepped_count += 1
        self.stepped.set()

    @property
    def order(self) -> int:
        """The order of the call's first place in the lanes (`Ticket.order`); 0 before it has one."""
        return self.ticket.order if self.ticket is not None else self.first_order

    def order_of(self, index: int) -> int:
        """The order of the place of request message `index` (a session's own; 0 when not known)."""
        if self.ticket is not None or not self.stepped_count:
            return self.order
        at = index - self.released
        return self.steps[at].order if 0 <= at < len(self.steps) else 0

    def first(self) -> Ticket | None:
        """The place the call's first message waits on."""
        if self.ticket is not None:
            return self.ticket
        return self.steps[0] if self.steps and not self.released else None

    def answer_released(self, at: float | None = None) -> None:
        """The primary's answer goes to the client now (or went, from `at` on: a copy's)."""
        if self.fleet is not None:
            self.fleet.answered(at)

    def primary_answered(self, fed: int) -> None:
        """The primary sent an answer message, having been sent `fed` request messages: it got past them.
        Their spans at the primary (`Together`) end no further than one message an answer: a client that
        sends the next message before the last one's answer (a pipelined session) still has it in flight."""
        self._progress.append(fed)
        if self._together is not None:
            now, past = time.time(), min(fed, self._progress_base + len(self._progress))  # (answers so far)
            while self._spans and self._spans_base < past:
                ticket, start = self._spans.popleft()
                self._spans_base += 1
                if start:
                    self._together.answered(ticket.keys, self._method, start, now, ticket)
        if self._hold > 0 and fed > self._past_armed:  # (an answer past no new message adds nothing)
            self._past_armed = fed
            asyncio.get_running_loop().call_later(self._hold, self._held, "_past", fed)

    def shadow_answered(self, answers: int) -> None:
        """The shadow sent its `answers`-th answer message (any call kind)."""
        self.shadow_answers = answers
        if self._watched:
            self._watch()

    def watching(self, primary_answers: int) -> None:
        """The primary sent answer message `primary_answers` of a read's stream (one request, answers that
        may go on as long as the client watches). Its place is released once the shadow has answered as
        much as the primary, and the primary has sent nothing more for `ordering.stream_hold`: the shadow
        has read what the read asked about, and the writes after it on its keys go on, each side's stream
        showing them as they come. Before, they waited for the stream to end on the shadow, however long
        the client watched (past `ordering.max_wait` they were given up, their keys out of step)."""
        self._watched = primary_answers
        self._watch()

    def _watch(self) -> None:
        if self._hold > 0 and self.ticket is not None and self.shadow_answers >= self._watched:
            asyncio.get_running_loop().call_later(self._hold, self._watch_held, self._watched)

    def _watch_held(self, answers: int) -> None:
        if self.ticket is not None and self._watched == answers and self.shadow_answers >= answers:
            self.ticket.release()

    def shadow_sent(self, sent: int) -> None:
        """Request message `sent` of a session went to the shadow."""
        self.caught_up(self.shadow_answers, sent)
        if self._hold > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(self._hold, self._held, "_sent_held", sent)
            loop.call_later(max(self._bound, self._hold), self._held, "_sent_long", sent)

    def _held(self, which: str, upto: int) -> None:
        setattr(self, which, max(getattr(self, which), upto))
        self._release_held()

    def _release_held(self) -> None:
        """Release the messages whose hold is over while the shadow has answered as much as the primary (a
        shadow that lags is released by its own answers, or the end of the call): those the primary answered
        past `stream_hold` ago and sent to the shadow as long ago; and, the primary answering nothing past
        them (a slow primary, or none of it answered), those sent to the shadow the shadow timeout ago. Never
        on the send alone: a primary slower than the hold answers, and the client may call on, after it."""
        if self.shadow_answers >= self._progress_base + len(self._progress):
            self.release_steps(max(min(self._past, self._sent_held), self._sent_long))

    def release_steps(self, upto: int) -> None:
        """The places of the request messages before `upto`: calls behind them may go (and are forgotten)."""
        while self.released < min(upto, self.stepped_count):
            self.steps.popleft().release()
            self.released += 1

    def caught_up(self, shadow_answers: int, sent: int) -> None:
        """Release the request messages the shadow has shown, by its answers, to have got past; and those
        whose hold is over, once the shadow has answered as much as the primary (`_release_held`)."""
        self.shadow_answers = shadow_answers
        answered = min(shadow_answers, self._progress_base + len(self._progress))
        if answered:
            while self._progress_base < answered - 1:  # answers before the last one are no longer needed
                self._progress.popleft()
                self._progress_base += 1
            self.release_steps(min(self._progress[0], answered, sent))
        self._release_held()

    def release_all(self, late: Late = NOT_LATE) -> None:
        """Every place of the call; a write's order across replicas keeps how `late` it went to the shadow."""
        if self.ticket is not None:
            self.ticket.release()
        if self.fleet is not None:
            self.fleet.release(late)
        self.release_steps(self.stepped_count)
        while self._spans and self._together is not None:  # in flight no more, answered past or not
            ticket, start = self._spans.popleft()
            if start:
                self._together.over(ticket.keys, ticket)

    def step_of(self, index: int) -> Ticket | None:
        """The place of a session's request message `index`; None once released (or not yet taken)."""
        at = index - self.released
        return self.steps[at] if 0 <= at < len(self.steps) else None

    def turn_taken(self, ticket: Ticket | None, reason: Callable[[tuple[str, ...]], str]) -> None:
        """A session's message has its turn (the calls before it on its keys are done): a key of it out of
        step now (`reason`: why, "" if none) taints the session. Judged at the session's end instead, a mark
        a later call made, hours after the message that differed, would hide that difference as tainted."""
        if ticket is not None and not self.taint:
            self.taint = reason(ticket.keys)

    async def step_ready(self, index: int, stop: asyncio.Event, over: Callable[[], bool]) -> bool:
        """Wait until request message `index` has its place and its turn; False if the call is given up
        first. `over`: no more places will come (the call is over, or not sampled)."""
        while index >= self.stepped_count:
            if over() or stop.is_set():
                return not stop.is_set()
            self.stepped.clear()
            if not await until(self.stepped.wait(), stop):
                return False
        if index < self.released:  # released already (held long enough)
            return True
        step = self.steps[index - self.released]
        return not step.waiting_for or await until(step.ready(), stop)
