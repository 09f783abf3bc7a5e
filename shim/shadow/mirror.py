"""One client call's shadow half: fed as the call passes, it mirrors the call in a task of its own and
hands the exchange to the comparison once both sides have answered.

Causality: a write reaches the shadow only after the primary received it (its first answer message,
or its final status, came back). A write the primary never received (UNAVAILABLE before any answer) is
not sent to the shadow at all, and is recorded as such, never as a mismatch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from comparators import Outcome
from shim._noise import Noise
from shim.shadow.admission import Admission
from shim.shadow.call import ShadowCall
from shim.shadow.capture import Capture
from shim.shadow.fate import BEHIND, CANCELLED, DEADLINE_PASSED, INTERNAL, NO_ROOM, Fate, ended_by_deadline
from shim.shadow.learning import Learning
from shim.shadow.places import Places
from shim.shadow.record import conclude, release_places
from shim.shadow.shared import Shared
from shim.shadow.watch import ended_watch, within_deadline


class Mirror:
    """The shadow half of one client call."""

    def __init__(
        self,
        shared: Shared,
        method: str,
        metadata: tuple[Any, ...],
        client_timeout: float | None,
        is_write: bool,
        finished: Callable[[Mirror], None],
    ) -> None:
        self._shared = shared
        self._finished = finished  # told once the mirror is over
        self.method = method
        self._metadata = metadata
        self.is_write = is_write
        self.started_at = time.time()
        self.sent_at = 0.0  # when the call went to the shadow (0: not yet)
        self.sent_times: list[float] | None = None  # when each request message went, if asked (a replay)
        self.shadow_over_at = 0.0  # when its call to the shadow ended (0: not yet)
        self.shadow_answered_at: list[float] = []  # when its stream's answers came (`Exchange.message_late`)
        self.correlation_id = ""
        self.capture = Capture(shared.max_capture, shared.budget)
        self.last_active = time.monotonic()  # a message either way, for idle streams
        self.stream = False  # a streaming call: it takes one of the places of streams
        self.requests: list[bytes] = []
        self.abandoned_why = ""  # why the call was given up before the primary answered, if not the client
        self.probe = 0  # the breaker's probe this call is (`Breaker.probe`), 0: none
        self.fate = Fate(shared.timeout, shared.stream_idle, shared.max_wait)
        self.plan = shared.plans.of(method)
        self.places = Places(shared.stream_hold, shared.timeout, shared.together, method)
        self.admission = Admission(shared, self.plan, is_write, self.places, lambda: self.task.done())
        self.learning = Learning(shared.translation, self.plan, self.places, shared.rules)
        self._call = ShadowCall(shared, method, metadata, client_timeout, self.fate, self.capture, self)
        self._primary: asyncio.Future[tuple[Outcome | None, bool]] = (
            asyncio.get_running_loop().create_future()
        )
        self._received = asyncio.Event()  # the primary received the call: it answered something, or ended
        self._handed_over = False  # the exchange (and the bytes it holds) went to the comparison
        self._fed = 0  # request messages handed over
        self.primary_answers = 0  # answer messages the primary sent so far
        # when the primary's answer reached what carries it to the client (a copy's, from Envoy: the client
        # had nothing before); None: now, as the answer is released. Once over: a stream's end, as known here
        self.answered_at: float | None = None
        self._again: asyncio.Task[Outcome | None] | None = None  # the primary asked again, for noise
        self.stage = ""  # what it waits for once the shadow answered ("": see the shadow call's)
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._run(), name=f"shadow {method}"
        )

    @property
    def keys(self) -> tuple[str, ...]:
        return self.admission.keys

    @property
    def settled(self) -> bool:
        """Whether a switch of modes may go on without waiting for this call any more: it is over; or it
        is a server stream the shadow has begun to answer (so it has the request); or a request stream under
        way (`stream_under_way`: it finishes on the side it started on; its keys go out of step)."""
        if self.task.done() or self.stream_under_way:
            return True
        return self.plan.kind.server_streaming and self._call.answers > 0

    @property
    def stream_under_way(self) -> bool:
        """A batch (client stream) the primary has not answered (its mirrored call cannot start before), or a
        session (bidi) not over: it finishes on the side it started on, and must not hold a switch."""
        admission = self.admission
        return not self.task.done() and (admission.streamed or (admission.batch and not self._primary.done()))

    def spanned_switch(self) -> None:
        """A switch of its method's mode applied while it was a stream under way (`stream_under_way`): its
        keys go out of step, as known, and a session's later messages' too (`Admission.mark_spanned`)."""
        admission = self.admission
        if self.task.done() or admission.spanned:
            return
        admission.spanned = True
        if admission.admitted.is_set():  # its keys are known now (a batch's primary answered meanwhile)
            admission.mark_spanned()

    @property
    def waiting_for(self) -> str:
        """What the call waits for now (said when a switch waits for it too long)."""
        return "nothing" if self.task.done() else self.stage or self._call.stage

    # -- fed by the primary handler; none of these wait --------------------------------

    def feed(self, payload: bytes) -> None:
        """A request message the client sent. When more than `max_capture` request bytes wait for the shadow,
        or the total budget has no room for those it does not keep, the shadow call is given up (recorded)."""
        fate = self.fate
        if fate.overflowed or fate.stop.is_set():  # given up: nothing more is mirrored, or kept
            self.admission.missed(payload)
            return
        self.last_active = time.monotonic()
        if self.capture.take(payload):
            self.requests.append(payload)
        elif not self.capture.wait(len(payload)):  # not kept, but held until sent all the same
            fate.overflowed = NO_ROOM
        self.capture.queued += len(payload)
        self.admission.arrived(payload, self._fed)  # its keys, also if it goes no further (out of step)
        self._fed += 1
        if fate.overflowed or self.capture.queued > self._shared.max_capture > 0:
            fate.overflowed = fate.overflowed or BEHIND
            fate.stop.set()
            self._call.cancel()
            return
        self._call.queue.put_nowait(payload)

    def close_requests(self) -> None:
        """The client half-closed its request stream."""
        self.admission.closed()
        self._call.queue.put_nowait(None)

    def primary_message(self, payload: bytes) -> None:
        """An answer message of the primary's stream, before the client gets it."""
        index = self.primary_answers
        self.primary_answers += 1
        self.last_active = time.monotonic()
        self._received.set()
        self.places.answer_released(self.answered_at)
        if self.admission.streamed:
            self.places.primary_answered(self._fed)
            self.places.caught_up(self._call.answers, self._call.sent)
        elif not self.is_write:  # a read's stream: its place goes once the shadow caught up (`watching`)
            self.places.watching(self.primary_answers)
        if self.plan.learns_per_message:
            # after admission (call_soon keeps order), before the client can name what was minted
            self.admission.enter(self._primary_minted, index, payload)

    def primary_done(self, outcome: Outcome, deadline_left: float | None = None) -> None:
        """The primary answered; the shadow now has `timeout` seconds left. `deadline_left`: the seconds left
        of the client's deadline as its status came (None: the call had none; see `ended_by_deadline`)."""
        if self._primary.done():
            return
        if (ended := ended_by_deadline(outcome, deadline_left)) is not None:
            self.abandon(replace(ended, messages=outcome.messages), why=DEADLINE_PASSED)
            return
        if not self.admission.asked:  # the primary answered before the client sent anything
            self.admission.ask(None)
        self.places.answer_released(self.answered_at)
        self.answered_at = at = (not self.plan.kind.server_streaming and self.answered_at) or time.time()
        shared = self._shared
        plan = self.plan.ids
        loop = asyncio.get_running_loop()
        if self.admission.batch:  # answered before the client's last message: placed now, if not yet
            self.admission.enter(self.admission.admit_batch)
        if outcome.code == 0 and (plan.mints or plan.aliases_out) and not plan.streamed:
            # after admission (call_soon keeps order), before the client can name what was minted
            self.admission.enter(self._expect, outcome)
        else:  # (the primary's span: when it started, when it answered, for the writes in flight together)
            self.admission.enter(self.admission.answered, (self.started_at, at))
        noise = shared.noise
        # a read's stream the client ended is not asked again: it would not end either
        again = not self.is_write and not self.capture.exceeded and not self.fate.watch.ended_after
        if noise is not None and again and noise.sampled():
            self._again = loop.create_task(
                self._ask_again(noise, shared.lanes.write_seq, outcome), name=f"noise {self.method}"
            )
        self._primary.set_result((outcome, False))
        self._received.set()
        self._call.queue.put_nowait(None)  # a primary that finished early read no more requests
        if not self.task.done():  # `max_wait` while it waits behind earlier calls, else `timeout`
            self._call.deadline.primary_done(self._call.call is not None)

    def abandon(self, primary: Outcome | None, why: str = "") -> None:
        """The client cancelled (or its deadline passed) before the primary answered; or, with `why`, the
        call's copy was lost before then (`shim.dataplane.processor`). A read's stream whose `primary` holds
        every answer the primary sent (one at least) is compared on them (`shim.shadow.watch`)."""
        if self._primary.done():
            return
        watched = ended_watch(self.plan, primary, self.primary_answers, not self.capture.exceeded)
        if watched is not None:
            self.fate.watch.ended_after = self.primary_answers
            self.primary_done(watched)  # the shadow's time runs from now
            self._call.deadline.watch_ended(self._call.answers)  # unless it answered as much already
            return
        self.abandoned_why = why
        self.admission.enter(self.admission.answered)
        self._primary.set_result((primary, True))
        self.fate.abandoned = True
        self._received.set()
        self.fate.stop.set()
        if self._call.call is not None:
            self._call.cancel()
        elif not self.task.done():
            self.task.cancel()

    def give_up(self) -> None:
        """The shim stops before the shadow answered: the call ends now, recorded as given up."""
        self.fate.shutdown = True
        self._call.deadline.expire()

    def give_up_idle(self) -> None:
        """A stream idle for `stream_idle` gives its place to a call that needs it: recorded as given up (once
        its call ends), and from now on it keeps nothing."""
        self.fate.idle = True
        self.requests = []
        self.capture.give_back()
        self.capture.exceeded = True  # nothing more is kept for a comparison that will not be made
        self._call.deadline.expire()

    def sending(self) -> None:
        """The call goes to the shadow now: after the primary answered, the shadow has `timeout` from now."""
        self.sent_at = time.time()
        self._call.deadline.sending()

    async def _ask_again(self, noise: Noise, seq: int, first: Outcome) -> Outcome | None:
        """The primary's answer to the same read, unless it is no sample next to the `first` (`Noise.kept`)
        or a write on its keys came in meanwhile: Bank's two answers could then differ by that write."""
        translation = self._shared.translation
        requests = tuple(translation.to_primary(self.method, r) for r in self.requests)  # as first sent
        again = await noise.ask_again(self.method, self._metadata, requests)
        if not noise.kept(first, again) or not await self.admission.unwritten_since(seq):
            self._shared.counters.inc("noise_discarded", self.method)
            return None
        return again

    def _expect(self, primary: Outcome) -> None:
        if not self.admission.not_sampled:
            self.learning.expect(primary, self.admission.first, self.task.done())
        self.admission.answered((self.started_at, self.answered_at or time.time()))

    def _primary_minted(self, index: int, payload: bytes) -> None:
        if not self.admission.not_sampled:
            self.learning.primary_minted(index, payload, self.admission.first, self.task.done())

    def over(self) -> bool:
        """No more of the call will be mirrored: it is over, or a read left out by sampling."""
        return self.admission.not_sampled or self.task.done()

    # -- the mirrored call, in its own task --------------------------------------------

    async def _run(self) -> None:
        try:
            await self._mirror()
        finally:
            if not self._handed_over:
                self.capture.give_back()
            release_places(self._shared, self)
            self._shared.breaker.release(self.probe)  # a probe that never got that far (left out, say)
            self.admission.answered()
            self.learning.settle()
            if self.admission.intent.id and self._shared.intents is not None:
                self._shared.intents.done(self.admission.intent.id)
            self._finished(self)

    async def _mirror(self) -> None:
        shared = self._shared
        try:
            await self.admission.admitted.wait()
            if self.admission.not_sampled:
                shared.counters.inc("reads_not_sampled", self.method)
                return
            shadow = await self._call.when_due(self._received, self._primary)
        except asyncio.CancelledError:
            shadow = Outcome(code=CANCELLED, local="shadow call cancelled with the client's call")
        except Exception as exc:  # a bug of ours must not lose the record
            shared.counters.inc("shadow_internal_errors", self.method)
            shadow = Outcome(code=INTERNAL, local=f"shim error while calling the shadow: {exc!r}")
        finally:
            self.shadow_over_at = time.time()
            self._call.deadline.cancel()
        if not self.is_write:  # BK is done with it: later writes may go
            self.places.release_all()
        if (verdict := self.fate.verdict(shadow, self._call.call is not None)) is not None:
            shared.breaker.record(verdict)
        shared.breaker.release(self.probe)  # a probe without a verdict on BK: the next call probes
        holding = self.is_write
        self.stage = "the primary's answer"
        if holding and not self._primary.done():
            # BK is done, the primary's answer still coming (a slow reader, a stream that never ends):
            # after the shadow timeout the calls behind it go on; its fate is judged when that answer comes
            waiting = asyncio.ensure_future(asyncio.shield(self._primary))
            done, _ = await asyncio.wait((waiting,), timeout=shared.timeout)
            if not done:
                waiting.cancel()
                release_places(shared, self)
                holding = False
                shared.counters.inc("places_freed_before_the_primary_answered", self.method)
        primary, cancelled = await self._primary  # then the read asked again, if it is (`primary_done`)
        shadow = within_deadline(self.fate.watch, shadow, self.fate.late)  # a watch the deadline ended
        self._handed_over = await conclude(
            shared, self, primary, shadow, cancelled=cancelled, holding=holding, again=self._again
        )
