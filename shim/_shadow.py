"""The shadow side: mirrored calls that never delay the primary.

Over 400 lines: a `Mirror` keeps one call's state for admission, ordering, the shadow call, noise
and ids at once; splitting it by those concerns is the serving side's restructure, not done yet.

The handler serving a client call asks the dispatcher for a `Mirror` and feeds
it the client's request messages as they arrive (without awaiting anything the
shadow does), then the primary's answer messages and its outcome. The mirror
calls the shadow upstream in a task of its own; when both the primary's and the
shadow's outcomes are known it hands an `Exchange` to the comparison pipeline.

Bounds: at most `max_in_flight` mirrored calls at once (beyond that a call is
not mirrored, and the exchange says so); a shadow call may take `timeout`
seconds after the primary answered, then it is cancelled and recorded as a
shadow timeout; at most `max_capture` bytes of requests and answers are kept
per exchange.

Order (`shim._lanes`). A call whose requests are one message takes one place
in the lanes of its keys, from its arrival until it is over on the shadow. A
client-streaming call (a batch: many requests, one answer) takes one place,
on the keys of all its messages, when the primary answers: the primary applies
a batch when it has all of it, and the mirror cannot start before then anyway.
A bidi call (a session) takes one place per request message, with that
message's own keys, entered as the message arrives: so a long session holds
its keys only while a message of it is in flight, not for the whole session.
A message's place is released once the shadow shows it has got as far: its
j-th answer releases at most j messages, and no more than the primary had been
sent when it sent its own j-th answer (under parity both sides answer alike:
one answer per message releases message by message). A message sent while the
shadow has answered as much as the primary (a protocol that answers nothing
per message) is released `ordering.stream_hold` after it was sent; every place
is released when the call ends.

Causality. A write reaches the shadow only after the primary received it: its
first answer message, or its final status, came back. A write the primary
never received (UNAVAILABLE before any answer: connection refused, say) is not
sent to the shadow at all, and is recorded as such, never as a mismatch.

Crash safety. Before a write is sent, its intent and keys are written to the
store and committed (`shim.intents`); it is deleted once the write is judged.

With an id map (`[ids.KIND]`) or key aliases, a mirror also: orders a call
that names an id or alias with the calls on the key it stands for; rewrites
ids into the shadow's (`shim._translation`); learns the pairs minted by the
call from the two answers (message by message for streamed answers); and gives
the comparison the pairs of the ids in the answers. A write both sides did not
do alike marks its keys out of step (`shim.steps`); later mismatches on them
are `tainted` until the keys are verified in step (`shim.verify`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import structlog
from google.protobuf import message
from grpc import aio

from comparators import Exchange, Outcome
from comparators.ids import Ambiguous, Found
from shim import _grpc_compat
from shim._breaker import Breaker
from shim._lanes import Lanes, Ticket
from shim._noise import Noise, asked_again
from shim._outcome import snapshot
from shim._overload import LoopLag
from shim._translation import IdPlan, Translation
from shim.adapters import Channel
from shim.aliases import KeyAliases
from shim.ids import IdBook, Pending
from shim.intents import Intents
from shim.metrics import Counters
from shim.routing import Router
from shim.steps import REFUSED, Steps, effect, out_of_step_reason, unreachable
from shim.store import OutOfStep
from shim.verify import Verifier

_CANCELLED = 1
_DEADLINE_EXCEEDED = 4
_INTERNAL = 13

Submit = Callable[[Exchange, Callable[[], None] | None], None]  # the exchange, and what to call once done

_log = structlog.get_logger("shim.shadow")


class Budget:
    """Bytes held for comparison across all mirrored calls (`shadow.max_capture_total`).

    A quarter of it is kept for calls that hold little (at most 1/1024 of it each): calls with large
    messages, such as streams to slow readers, can never take the room every other client's calls need.
    """

    __slots__ = ("limit", "shared", "small", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit if limit > 0 else 2**62
        self.shared = self.limit - self.limit // 4  # what calls holding more than `small` may fill
        self.small = self.limit // 1024
        self.used = 0

    def take(self, size: int, held: int = 0) -> bool:
        """Take `size` more bytes for a call that holds `held` already, if there is room for it."""
        used = self.used + size
        if used > self.limit or (held + size > self.small and used > self.shared):
            return False
        self.used = used
        return True

    def give(self, size: int) -> None:
        self.used -= size


class Capture:
    """What one exchange keeps for comparison: at most `limit` bytes, and only while the total budget
    has room. Once a message is not kept, the call is compared no further."""

    __slots__ = ("budget", "exceeded", "held", "left", "starved")

    def __init__(self, limit: int, budget: Budget | None = None) -> None:
        self.left = limit if limit > 0 else 2**62
        self.budget = budget
        self.held = 0  # bytes taken from the budget
        self.exceeded = False
        self.starved = False  # exceeded because the total budget was full

    def take(self, payload: bytes) -> bool:
        if self.exceeded:
            return False
        self.left -= len(payload)
        if self.left < 0:
            self.exceeded = True
            return False
        if self.budget is not None and not self.budget.take(len(payload), self.held):
            self.exceeded = self.starved = True
            return False
        self.held += len(payload)
        return True

    def give_back(self) -> None:
        """The bytes are no longer held (compared, stored, or dropped)."""
        if self.budget is not None and self.held:
            self.budget.give(self.held)
        self.held = 0


class Mirror:
    """The shadow half of one client call."""

    def __init__(
        self,
        dispatcher: ShadowDispatcher,
        method: str,
        metadata: tuple[Any, ...],
        client_timeout: float | None,
        is_write: bool,
    ) -> None:
        self._dispatcher = dispatcher
        self.method = method
        self._metadata = metadata
        self._client_timeout = client_timeout
        self.is_write = is_write
        self.started_at = time.time()
        self.keys: tuple[str, ...] = ()
        self.capture = Capture(dispatcher.max_capture, dispatcher.budget)
        self.last_active = time.monotonic()  # a message either way, for idle streams
        self.stream = False  # a streaming call: it takes one of the places of streams
        self._idle = False  # given up, idle, for a call that needed its place
        self._handed_over = False  # the exchange (and the bytes it holds) went to the comparison
        self.requests: list[bytes] = []
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._primary: asyncio.Future[tuple[Outcome | None, bool]] = (
            asyncio.get_running_loop().create_future()
        )
        self._received = asyncio.Event()  # the primary received the call: it answered something, or ended
        self._call: aio.Call | None = None
        self._expired = False
        self._abandoned = False
        self._overflowed = False
        self._queued = 0  # request bytes handed over and not yet written to the shadow
        self._timer: asyncio.TimerHandle | None = None
        self._admitted = asyncio.Event()  # its place in the lanes is known
        self._admission_asked = False
        self._ticket: Ticket | None = None  # the call's place, for a call of one request message
        streaming = dispatcher.request_streaming(method)
        self._streamed = streaming and not dispatcher.unary_answer(method)  # a session: one place a message
        self._batch = streaming and not self._streamed  # a batch: one place, taken when the primary answers
        self._batch_keys: list[str] = []
        # unkeyed because it names an id or alias whose key is unknown: no mark of another key taints it
        self._names_unknown = False
        # one place per request message of a session, from the first not yet released (`_released`)
        self._steps: deque[Ticket] = deque()
        self._stepped_count = 0  # request messages of a session that have their place
        self._stepped = asyncio.Event()  # a step was admitted (the writer may wait for one)
        self._fed = 0  # request messages handed over
        self._released = 0  # steps released so far
        self._sent = 0  # request messages sent to the shadow
        # per primary answer: request messages it had been sent by then, from answer `_progress_base` on
        self._progress: deque[int] = deque()
        self._progress_base = 0
        self._shadow_answers = 0  # answer messages the shadow sent so far
        self._not_sampled = False
        self._stop = asyncio.Event()  # the call is given up while it waits in its lanes
        self._first: message.Message | None = None  # the first request, decoded when ids or keys need it
        self._head: bytes | None = None  # the first request as sent to the shadow (ids translated)
        self._expected: list[Pending] = []  # ids the primary minted, until the shadow's answer pairs them
        self._shutdown = False  # given up because the shim stops
        self._expect_done = False
        self._primary_answers = 0  # answer messages the primary sent so far
        self._minted: dict[int, list[Found]] = {}  # per answer message: the ids the primary minted there
        self._shadow_minted: dict[int, list[Found]] = {}  # ... and those the shadow minted
        self._unreachable = False  # not sent: the primary never received the write
        self._intent = ""  # the id of this write's intent in the store
        self._intent_saved: asyncio.Task[None] | None = None  # its recording, begun when the call is placed
        self._intent_keys = 0  # how many of the keys the recorded intent names
        self.tainted = ""
        self.abandoned_why = ""  # why the call was given up before the primary answered, if not the client
        self.unmapped: list[Found] = []
        self.ambiguous: list[Ambiguous] = []
        self.answers: dict[int, list[message.Message]] = {}  # decoded answers, by id() of their Outcome
        self.correlation_id = ""
        self._again: asyncio.Task[Outcome | None] | None = None  # the primary asked again, for noise
        self._writer: asyncio.Task[None] | None = None  # what sends a stream's requests to the shadow
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._run(), name=f"shadow {method}"
        )

    @property
    def settled(self) -> bool:
        """Whether a switch of modes may go on without waiting for this call any more: it is over; or it
        is a server stream the shadow has begun to answer (so it has the request); or it is a session (its
        later messages follow the side it started on, and it must not hold a switch)."""
        if self.task.done() or self._streamed:
            return True
        return not self._dispatcher.unary_answer(self.method) and self._shadow_answers > 0

    # -- fed by the primary handler; none of these wait --------------------------------

    def feed(self, payload: bytes) -> None:
        """A request message the client sent.

        When the shadow falls so far behind that more than `max_capture` request
        bytes wait for it, the shadow call is given up (and recorded as such)
        rather than buffering without bound.
        """
        if self._overflowed or self._stop.is_set():  # given up: nothing more is mirrored, or kept
            return
        self.last_active = time.monotonic()
        if self.capture.take(payload):
            self.requests.append(payload)
        self._queued += len(payload)
        if self._queued > self._dispatcher.max_capture > 0:
            self._overflowed = True
            self._stop.set()
            if self._call is not None:
                self._call.cancel()
            return
        loop = asyncio.get_running_loop()
        if self._streamed:  # each message takes its own place, before the writer may reach it
            loop.call_soon(self._admit_step, payload, self._fed)
            self._admission_asked = True
        elif self._batch:  # its keys, gathered off the primary's path; its place when the primary answers
            loop.call_soon(self._gather_keys, payload, self._fed)
            self._admission_asked = True
        elif not self._admission_asked:
            self._ask_admission(payload)
        self._fed += 1
        self._queue.put_nowait(payload)

    def close_requests(self) -> None:
        """The client half-closed its request stream."""
        if not self._admission_asked:
            self._ask_admission(None)
        self._queue.put_nowait(None)

    def _ask_admission(self, first: bytes | None) -> None:
        """Take a place in the lanes, in the order calls arrive, after the primary call has gone out.

        Finding the keys means decoding the first request: that waits for the
        next turn of the loop (call_soon keeps arrival order), so the primary's
        own send goes first.
        """
        self._admission_asked = True
        if self._streamed:  # no request message at all: nothing to order
            asyncio.get_running_loop().call_soon(self._admitted.set)
            return
        if self._batch:
            return  # placed when the primary answers
        asyncio.get_running_loop().call_soon(self._admit, first)

    def _gather_keys(self, payload: bytes, index: int) -> None:
        """A message of a batch: its keys join the batch's."""
        if self.task.done():
            return
        decoded, _ = self._decode_for_keys(payload)
        if index == 0:
            self._first = decoded
        keys, unknown = self._dispatcher.translation.place(self.method, decoded)
        self._names_unknown = self._names_unknown or unknown
        if not keys and decoded is not None and self._dispatcher.translation.needs_request(self.method):
            self._batch_keys.append("")  # a message with no key makes the batch unkeyed
        self._batch_keys.extend(keys)
        if "" not in self._batch_keys:  # what a write cancelled before the primary answered would mark
            self.keys = tuple(dict.fromkeys(self._batch_keys))

    def _admit_batch(self) -> None:
        """A batch takes its place when the primary answered, on the keys of all its messages."""
        if self.task.done():
            self._admitted.set()
            return
        keys = () if "" in self._batch_keys else tuple(dict.fromkeys(self._batch_keys))
        router = self._dispatcher.router
        if not self.is_write and router is not None and not router.sampled(keys):
            self._not_sampled = True
        else:
            self._ticket = self._dispatcher.lanes.enter(keys, self.is_write)
            self.keys = keys
            self._record_intent()
        self._admitted.set()

    def _decode_for_keys(self, payload: bytes | None) -> tuple[message.Message | None, bool]:
        """The first request, decoded when its keys or ids are needed; and whether it was to be decoded but
        is not a message of the method's described request type."""
        dispatcher = self._dispatcher
        if dispatcher.router is None or not dispatcher.translation.needs_request(self.method):
            return None, False
        decoded = dispatcher.router.decode(self.method, payload)
        return decoded, decoded is None and payload is not None and not dispatcher.undescribed(self.method)

    def _admit(self, first: bytes | None) -> None:
        if self.task.done():  # over already (cancelled before its turn came): nothing to order
            self._admitted.set()
            return
        dispatcher = self._dispatcher
        self._first, undecodable = self._decode_for_keys(first)
        keys, self._names_unknown = dispatcher.translation.place(self.method, self._first)
        if not self.is_write and dispatcher.router is not None and not dispatcher.router.sampled(keys):
            self._not_sampled = True
        elif undecodable or dispatcher.undescribed(self.method):
            # a made-up method, or bytes no server of the interface can decode (so none applies them):
            # mirrored as they come, in no lane, so that they never make other calls wait
            dispatcher.counters.inc("calls_not_ordered", self.method)
        else:
            self._ticket = dispatcher.lanes.enter(keys, self.is_write)
            self.keys = keys
            self._record_intent()
        self._admitted.set()

    def _record_intent(self) -> None:
        """Begin writing down this write's intent (awaited before the write is sent to the shadow)."""
        intents = self._dispatcher.intents
        if intents is None or not self.is_write or not self.keys:  # a lost write with no key marks nothing
            return
        self._intent = self._intent or secrets.token_hex(16)
        self._intent_keys = len(self.keys)
        self._intent_saved = asyncio.get_running_loop().create_task(
            intents.record(self._intent, self.method, self.keys), name=f"intent {self.method}"
        )

    def _admit_step(self, payload: bytes, index: int) -> None:
        """A message of a request stream takes its place in the lanes of its own keys."""
        dispatcher = self._dispatcher
        if self.task.done() or self._not_sampled:
            self._admitted.set()
            return
        decoded, _ = self._decode_for_keys(payload)
        if index == 0:
            self._first = decoded
        keys, unknown = dispatcher.translation.place(self.method, decoded)
        self._names_unknown = self._names_unknown or unknown
        router = dispatcher.router
        if index == 0 and not self.is_write and router is not None and not router.sampled(keys):
            self._not_sampled = True
            self._admitted.set()
            return
        self._steps.append(dispatcher.lanes.enter(keys, self.is_write))
        self._stepped_count += 1
        self.keys = tuple(dict.fromkeys((*self.keys, *keys)))
        if index == 0:
            self._record_intent()
        self._admitted.set()
        self._stepped.set()

    def primary_message(self, payload: bytes) -> None:
        """An answer message of the primary's stream, before the client gets it."""
        index = self._primary_answers
        self._primary_answers += 1
        self.last_active = time.monotonic()
        self._received.set()
        if self._streamed:
            self._progress.append(self._fed)
            self._caught_up()
        if self._dispatcher.learns_per_message(self.method):
            # after admission (call_soon keeps order), before the client can name what was minted
            asyncio.get_running_loop().call_soon(self._primary_minted, index, payload)

    def primary_done(self, outcome: Outcome) -> None:
        """The primary answered; the shadow now has `timeout` seconds left."""
        if self._primary.done():
            return
        if not self._admission_asked:  # the primary answered before the client sent anything
            self._ask_admission(None)
        translation = self._dispatcher.translation
        plan = translation.plan(self.method)
        if outcome.code == 0 and (plan.mints or plan.aliases_out) and not plan.streamed:
            # after admission (call_soon keeps order), before the client can name what was minted
            asyncio.get_running_loop().call_soon(self._expect, outcome)
        noise = self._dispatcher.noise
        if noise is not None and not self.is_write and not self.capture.exceeded and noise.sampled():
            self._again = asyncio.get_running_loop().create_task(
                self._ask_again(noise, self._dispatcher.lanes.write_seq), name=f"noise {self.method}"
            )
        self._primary.set_result((outcome, False))
        self._received.set()
        if self._batch:  # after the keys of every message fed (call_soon keeps order)
            asyncio.get_running_loop().call_soon(self._admit_batch)
        self._queue.put_nowait(None)  # a primary that finished early read no more requests
        if not self.task.done():
            timeout = self._dispatcher.timeout
            self._timer = asyncio.get_running_loop().call_later(timeout, self._expire)

    def abandon(self, primary: Outcome | None, why: str = "") -> None:
        """The client cancelled (or its deadline passed) before the primary answered; or, with `why`, the
        call's copy was lost before then (`shim.dataplane.processor`)."""
        if self._primary.done():
            return
        self.abandoned_why = why
        self._primary.set_result((primary, True))
        self._abandoned = True
        self._received.set()
        self._stop.set()
        if self._call is not None:
            self._call.cancel()
        elif not self.task.done():
            self.task.cancel()

    async def _ask_again(self, noise: Noise, seq: int) -> Outcome | None:
        """The primary's answer to the same read, unless a write on its keys came in meanwhile: Bank's
        two answers could then differ by that write, which is no noise."""
        translation = self._dispatcher.translation
        requests = tuple(translation.to_primary(self.method, r) for r in self.requests)  # as first sent
        again = await noise.ask_again(self.method, self._metadata, requests)
        await self._admitted.wait()
        if self._dispatcher.lanes.written_since(self.keys, seq):
            self._dispatcher.counters.inc("noise_discarded", self.method)
            return None
        return again

    # -- ids minted, learned as both sides tell them ------------------------------------------

    def _expect(self, primary: Outcome) -> None:
        """Register the ids the primary minted, and learn the aliases in its answer (once: from
        primary_done, or when the mirror gets to learning first, its shadow having answered first)."""
        if self._expect_done or self._not_sampled:
            return
        self._expect_done = True
        translation = self._dispatcher.translation
        plan = translation.plan(self.method)
        answers = self._decoded(plan, primary)
        translation.learn_aliases(self.method, answers, self._first)
        if plan.mints and translation.ids is not None:
            found = translation.minted_in(self.method, plan, answers, self._first)
            self._expected += translation.expect(self.method, found, self._first)
            if self.task.done():  # over already: nothing will pair them now
                translation.ids.settle(self._expected)

    def _primary_minted(self, index: int, payload: bytes) -> None:
        """One answer message of the primary's stream: its aliases learned, its minted ids pending."""
        if self._not_sampled:
            return
        translation = self._dispatcher.translation
        plan = translation.plan(self.method)
        answers = translation.decode_answers(plan, (payload,))
        translation.learn_aliases(self.method, answers, self._first)
        if not plan.mints or translation.ids is None:
            return
        found = translation.minted_in(self.method, plan, answers, self._first)
        self._minted[index] = found
        pendings = translation.expect(self.method, found, self._first)
        self._expected += pendings
        if self.task.done():
            translation.ids.settle(pendings)
        elif index in self._shadow_minted:
            del self._minted[index]
            translation.pair(self.method, plan, found, self._shadow_minted.pop(index), self._first)

    def _shadow_message(self, index: int, payload: bytes) -> None:
        """One answer message of the shadow's stream: pairs with the primary's message at the same place."""
        translation = self._dispatcher.translation
        plan = translation.plan(self.method)
        if not plan.mints or translation.ids is None:
            return
        found = translation.minted_in(
            self.method, plan, translation.decode_answers(plan, (payload,)), self._first
        )
        if index in self._minted:
            translation.pair(self.method, plan, self._minted.pop(index), found, self._first)
        else:
            self._shadow_minted[index] = found

    def _decoded(self, plan: IdPlan, outcome: Outcome) -> list[message.Message]:
        """One side's answers to this call, decoded once."""
        found = self.answers.get(id(outcome))
        if found is None:
            found = self.answers[id(outcome)] = self._dispatcher.translation.decode_answers(
                plan, outcome.messages
            )
        return found

    # -- the shadow call itself ----------------------------------------------------------

    def give_up(self) -> None:
        """The shim stops before the shadow answered: the call ends now, recorded as given up."""
        self._shutdown = True
        self._expire()

    def give_up_idle(self) -> None:
        """A stream idle for `stream_idle` gives its place to a call that needs it: recorded as given up (once
        its call ends), and from now on it keeps nothing."""
        self._idle = True
        self.requests = []
        self.capture.give_back()
        self.capture.exceeded = True  # nothing more is kept for a comparison that will not be made
        self._expire()

    def _expire(self) -> None:
        self._expired = True
        self._stop.set()
        if self._call is not None:
            self._call.cancel()

    def _release_steps(self, upto: int) -> None:
        """The places of the request messages before `upto`: calls behind them may go (and are forgotten)."""
        while self._released < min(upto, self._stepped_count):
            self._steps.popleft().release()
            self._released += 1

    def _caught_up(self) -> None:
        """Release the request messages the shadow has shown, by its answers, to have got past."""
        answered = min(self._shadow_answers, self._progress_base + len(self._progress))
        if not answered:
            return
        while self._progress_base < answered - 1:  # answers before the last one are no longer needed
            self._progress.popleft()
            self._progress_base += 1
        self._release_steps(min(self._progress[0], answered, self._sent))

    def _held_long_enough(self, upto: int) -> None:
        """`stream_hold` after a message was sent: release it unless the shadow lags the primary's answers
        (then its own answers release it, or the end of the call)."""
        if self._shadow_answers >= self._primary_answers:
            self._release_steps(upto)

    def _release_all(self) -> None:
        if self._ticket is not None:
            self._ticket.release()
        self._release_steps(self._stepped_count)

    async def _run(self) -> None:
        try:
            await self._mirror()
        finally:
            if not self._handed_over:
                self.capture.give_back()
            self._release_all()
            ids = self._dispatcher.translation.ids
            if ids is not None:
                ids.settle(self._expected)
            if self._intent:
                self._dispatcher.intent_done(self._intent)
            self._dispatcher.release(self)

    async def _mirror(self) -> None:
        dispatcher = self._dispatcher
        try:
            await self._admitted.wait()
            if self._not_sampled:
                dispatcher.counters.inc("reads_not_sampled", self.method)
                return
            shadow = await self._in_turn()
        except asyncio.CancelledError:
            shadow = Outcome(code=_CANCELLED, local="shadow call cancelled with the client's call")
        except Exception as exc:  # a bug of ours must not lose the record
            dispatcher.counters.inc("shadow_internal_errors", self.method)
            shadow = Outcome(code=_INTERNAL, local=f"shim error while calling the shadow: {exc!r}")
        finally:
            if self._timer is not None:
                self._timer.cancel()
        if not self.is_write:  # BK is done with it: later writes may go
            self._release_all()
        if not self._abandoned and not self._unreachable:  # says nothing of BK's health
            dispatcher.breaker.record(not shadow.local and not unreachable(shadow))
        holding = self.is_write
        if holding and not self._primary.done():
            # BK is done, the primary's answer still coming (a slow reader, a stream that never ends):
            # after the shadow timeout the calls behind it go on; its fate is judged when that answer comes
            waiting = asyncio.ensure_future(asyncio.shield(self._primary))
            done, _ = await asyncio.wait((waiting,), timeout=dispatcher.timeout)
            if not done:
                waiting.cancel()
                self._release_all()
                holding = False
                dispatcher.counters.inc("places_freed_before_the_primary_answered", self.method)
        primary, cancelled = await self._primary
        translation = dispatcher.translation
        try:
            if primary is not None and translation.ids is not None:
                plan = translation.plan(self.method)
                if primary.code == 0 and plan.mints and not plan.streamed:
                    self._expect(primary)  # primary_done's callback may not have run yet
                self._learn(primary, shadow)
            if dispatcher.steps is not None and (self.keys or not self._names_unknown):
                self.tainted = dispatcher.steps.reason(self.keys)
            if self.is_write:
                marks = dispatcher.judge_write(self, primary, shadow, cancelled)
                verifier = dispatcher.verifier
                if marks and verifier is not None and holding and not shadow.local and not cancelled:
                    for mark in marks:  # both answered: check the key now, while the write holds its place
                        await self._verify(verifier, mark)
        finally:
            # the ids it minted are learned and its keys marked: the calls behind it may go
            self._release_all()
            if translation.ids is not None:
                translation.ids.settle(self._expected)
        if primary is None:
            return
        pairs = await self._pairs(primary, shadow) if translation.ids is not None else ()
        unmapped = tuple((f.kind, _where(f), f.value) for f in self.unmapped) + tuple(
            ("|".join(kind for kind, _ in a.counterparts), "request", a.value) for a in self.ambiguous
        )
        note = ""
        requests = tuple(self.requests)
        if unmapped:
            note = _unmapped_note(self.unmapped, self.ambiguous)
        elif self._idle:
            note = ""  # the shadow's outcome says why
        elif self._unreachable:
            note = "not mirrored: the primary never received the write (UNAVAILABLE before any answer)"
        elif self.capture.exceeded:
            note = (
                "too large to compare: the shadow side held shadow.max_capture_total bytes already"
                if self.capture.starved
                else "too large to compare: more than shadow.max_capture bytes"
            )
            if not shadow.local:  # not compared: nothing of it is kept
                requests, primary = (), replace(primary, messages=())
                self.requests = []
                self.capture.give_back()
        dispatcher.submit(
            Exchange(
                method=self.method,
                requests=requests,
                primary=primary,
                # too large to compare: not compared (the note says why), unless the shadow failed anyway
                shadow=None
                if unmapped or self._unreachable or (self.capture.exceeded and not shadow.local)
                else shadow,
                primary_is_bank=dispatcher.primary_is_bank,
                is_write=self.is_write,
                routing_key=",".join(self.keys),
                started_at=self.started_at,
                cancelled=cancelled,
                note=note,
                ids=pairs,
                tainted=self.tainted,
                unmapped=unmapped,
                correlation_id=self.correlation_id,
                secondary=await asked_again(self._again),
            ),
            self.capture.give_back,  # the comparison holds the bytes now, until it is done
        )
        self._handed_over = True

    async def _verify(self, verifier: Verifier, mark: OutOfStep) -> None:
        """Check a key this write just put out of step; a failing check leaves the mark (and the background
        checks) as they are, and never loses this call's record."""
        try:
            await verifier.verify(mark.key, mark, held=True)
        except Exception as exc:
            self._dispatcher.counters.inc("verification_errors", self.method)
            _log.error("verification failed", key=mark.key, error=repr(exc))

    def _learn(self, primary: Outcome, shadow: Outcome) -> None:
        """Learn the pairs of the ids this call minted, from the two whole answers."""
        translation = self._dispatcher.translation
        plan = translation.plan(self.method)
        if not plan.mints or shadow.local or primary.code != 0 or shadow.code != 0 or self.unmapped:
            return
        primary_found = translation.minted_in(self.method, plan, self._decoded(plan, primary), self._first)
        shadow_found = translation.minted_in(self.method, plan, self._decoded(plan, shadow), self._first)
        translation.pair(self.method, plan, primary_found, shadow_found, self._first)

    async def _pairs(self, primary: Outcome, shadow: Outcome) -> tuple[tuple[str, str, str], ...]:
        dispatcher = self._dispatcher
        if shadow.local:
            return ()
        bk = shadow if dispatcher.primary_is_bank else primary
        translation = dispatcher.translation
        plan = translation.plan(self.method)
        answers = self._decoded(plan, bk) if plan.response else []
        return await translation.known_pairs(self.method, bk, answers, self._first)

    async def _in_turn(self) -> Outcome:
        """The shadow call, once the calls it follows in its lanes are done (or a stand-in outcome)."""
        started = time.perf_counter()
        first_step = self._steps[0] if self._steps and not self._released else None
        ticket = self._ticket if self._ticket is not None else first_step
        if ticket is not None and ticket.waiting_for and not await self._until(ticket.ready()):
            return self._given_up(time.perf_counter() - started, waiting=True)
        if self._stop.is_set():
            return self._given_up(0.0, waiting=False)
        dispatcher = self._dispatcher
        if self.is_write:
            if not await self._until(self._received.wait()):
                return self._given_up(time.perf_counter() - started, waiting=True)
            if self._primary.done():
                primary, _ = self._primary.result()
                if unreachable(primary) and not self._primary_answers:
                    self._unreachable = True
                    return Outcome(code=_CANCELLED, local="not sent: the primary never received the write")
            if not await self._intent_written():
                return self._given_up(time.perf_counter() - started, waiting=True)
        if self._stop.is_set():  # the client cancelled while the primary had it
            return self._given_up(time.perf_counter() - started, waiting=False)
        if dispatcher.translation.plan(self.method).request:
            head = await self._queue.get()
            if head is None:
                self._queue.put_nowait(None)  # no request at all: the writer just closes the stream
            else:
                translated = await dispatcher.translation.translate(
                    self.method, head, self._stop, self._first
                )
                if translated.unmapped or translated.ambiguous:
                    self.unmapped, self.ambiguous = translated.unmapped, translated.ambiguous
                    return Outcome(
                        code=_CANCELLED,
                        latency=time.perf_counter() - started,
                        local="not sent: " + _unmapped_note(self.unmapped, self.ambiguous),
                    )
                self._queued -= len(head) - len(translated.payload)
                self._head = translated.payload
            if self._stop.is_set():
                return self._given_up(time.perf_counter() - started, waiting=True)
        return await self._call_shadow()

    async def _ready_to_send(self, index: int) -> bool:
        """A later message of a request stream: its turn in the lanes, and (for a write) its keys in the
        intent."""
        if not await self._step_ready(index):
            return False
        return not self.is_write or await self._intent_written()

    async def _intent_written(self) -> bool:
        """Wait until the intent names every key known so far (a stream's later messages may add keys)."""
        if self._intent_keys < len(self.keys):  # keys the intent does not name yet
            previous = self._intent_saved
            if previous is not None and not await self._until(previous):
                return False
            self._record_intent()
        return self._intent_saved is None or await self._until(self._intent_saved)

    async def _step_ready(self, index: int) -> bool:
        """Wait until request message `index` has its place in the lanes and its turn; False if given up."""
        while index >= self._stepped_count:
            if self._not_sampled or self._stop.is_set() or self.task.done():
                return not self._stop.is_set()
            self._stepped.clear()
            if not await self._until(self._stepped.wait()):
                return False
        if index < self._released:  # released already (held long enough)
            return True
        step = self._steps[index - self._released]
        return not step.waiting_for or await self._until(step.ready())

    async def _until(self, waiting: Any) -> bool:
        """Wait for `waiting` unless the call is given up first; True when it completed."""
        done = asyncio.ensure_future(waiting)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait((done, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            done.cancel()
            stop.cancel()
        return done.done() and not done.cancelled()

    def _given_up(self, latency: float, waiting: bool) -> Outcome:
        where = "while it waited behind earlier calls on its keys" if waiting else "before it was sent"
        if self._shutdown:
            return Outcome(
                code=_CANCELLED, latency=latency, local=f"shadow call given up {where}: the shim stopped"
            )
        if self._abandoned:
            return Outcome(
                code=_CANCELLED,
                latency=latency,
                local=f"shadow call cancelled with the client's call {where}",
            )
        if self._idle:
            return Outcome(code=_DEADLINE_EXCEEDED, latency=latency, local=self._idle_note(where))
        if self._overflowed:
            return Outcome(
                code=_CANCELLED,
                latency=latency,
                local=f"shadow given up {where}: it fell more than shadow.max_capture request bytes behind",
            )
        return Outcome(
            code=_DEADLINE_EXCEEDED,
            latency=latency,
            local=f"shadow timeout {where}: no answer within {self._dispatcher.timeout:g}s after the primary",
        )

    async def _call_shadow(self) -> Outcome:
        started = time.perf_counter()
        if self._dispatcher.unary(self.method):
            messages = await self._exchange_unary()
        else:
            messages = await self._exchange_stream()
        latency = time.perf_counter() - started
        if self._abandoned:
            return Outcome(
                code=_CANCELLED, latency=latency, local="shadow call cancelled with the client's call"
            )
        if self._overflowed:
            return Outcome(
                code=_CANCELLED,
                latency=latency,
                local="shadow given up: it fell more than shadow.max_capture request bytes behind",
            )
        if self._shutdown:
            return Outcome(
                code=_CANCELLED,
                latency=latency,
                local="shadow call given up: the shim stopped before it answered",
            )
        if self._idle:
            return Outcome(code=_DEADLINE_EXCEEDED, latency=latency, local=self._idle_note("while in flight"))
        if self._expired:
            return Outcome(
                code=_DEADLINE_EXCEEDED,
                latency=latency,
                local=f"shadow timeout: no answer within {self._dispatcher.timeout:g}s after the primary",
            )
        if self.unmapped or self.ambiguous:
            return Outcome(
                code=_CANCELLED,
                latency=latency,
                local="given up: " + _unmapped_note(self.unmapped, self.ambiguous),
            )
        assert self._call is not None
        return await snapshot(self._call, messages, latency)

    def _idle_note(self, where: str) -> str:
        idle = self._dispatcher.stream_idle
        return f"shadow call given up {where}: idle for {idle:g}s, its place was needed by another call"

    def _we_cancelled(self) -> bool:
        return self._expired or self._abandoned or self._overflowed or bool(self.unmapped or self.ambiguous)

    async def _exchange_unary(self) -> tuple[bytes, ...]:
        """A unary method: grpc's unary path (one batch each way), cheaper than a stream of one."""
        head, self._head = self._head, None
        payload = head if head is not None else await self._queue.get()
        if payload is None:  # the client sent nothing (its call ended first): the stream path says so
            self._queue.put_nowait(None)
            return await self._exchange_stream()
        call = self._dispatcher.channel.unary_unary(self.method)(
            payload, metadata=self._metadata, timeout=self._client_timeout
        )
        self._call = call
        self._queued -= len(payload)
        if self._overflowed or self._abandoned:
            call.cancel()
        try:
            answer = await call
        except aio.AioRpcError:
            return ()
        except asyncio.CancelledError:
            if self._we_cancelled():
                return ()
            raise
        return (answer,) if answer is not None and self.capture.take(answer) else ()

    async def _exchange_stream(self) -> tuple[bytes, ...]:
        channel = self._dispatcher.channel
        call = channel.stream_stream(self.method)(metadata=self._metadata, timeout=self._client_timeout)
        self._call = call
        if self._overflowed or self._abandoned:
            call.cancel()
        writer = self._writer = asyncio.get_running_loop().create_task(
            self._write(call), name=f"shadow writer {self.method}"
        )
        learning = self._dispatcher.learns_per_message(self.method)
        messages: list[bytes] = []
        index = 0
        try:
            while True:
                try:
                    message = await call.read()
                except aio.AioRpcError:
                    break
                except asyncio.CancelledError:
                    if self._we_cancelled():
                        break  # we cancelled the call ourselves
                    raise
                if message is aio.EOF:
                    break
                self._shadow_answers += 1
                self.last_active = time.monotonic()
                if self._streamed:
                    self._caught_up()
                if learning:
                    self._shadow_message(index, message)
                index += 1
                if self.capture.take(message):
                    messages.append(message)
        finally:
            writer.cancel()
        return tuple(messages)

    async def _write(self, call: aio.StreamStreamCall[Any, Any]) -> None:
        translation = self._dispatcher.translation
        translating = translation.plan(self.method).request
        hold = self._dispatcher.stream_hold
        loop = asyncio.get_running_loop()
        head, self._head = self._head, None
        while True:
            if head is not None:
                payload, head = head, None
            else:
                item = await self._queue.get()
                if item is None:
                    await _grpc_compat.close_sending(call)
                    return
                payload = item
                if self._streamed and self._sent and not await self._ready_to_send(self._sent):
                    call.cancel()
                    return
                if translating:
                    size = len(payload)
                    translated = await translation.translate(self.method, payload, self._stop, self._first)
                    if translated.unmapped or translated.ambiguous:  # BK has no counterpart: stop there
                        self.unmapped, self.ambiguous = translated.unmapped, translated.ambiguous
                        self._stop.set()
                        call.cancel()
                        return
                    payload = translated.payload
                    self._queued -= size - len(payload)
            sent = await _grpc_compat.send(call, payload)
            self._queued -= len(payload)
            self._sent += 1
            if self._streamed:
                self._caught_up()
                if hold > 0:
                    loop.call_later(hold, self._held_long_enough, self._sent)
            if not sent:
                return


class ShadowDispatcher:
    """Starts mirrors within bounds and counts what it could not mirror."""

    def __init__(
        self,
        channel: Channel,
        submit: Submit,
        counters: Counters,
        *,
        timeout: float,
        max_in_flight: int,
        max_capture: int,
        primary_is_bank: bool = True,
        router: Router | None = None,
        breaker: Breaker | None = None,
        ids: IdBook | None = None,
        aliases: KeyAliases | None = None,
        steps: Steps | None = None,
        intents: Intents | None = None,
        correlation_header: str = "",
        noise: Noise | None = None,
        overload: LoopLag | None = None,
        shed_lag: float = 0.0,
        stream_hold: float = 0.5,
        max_in_flight_streams: int = 0,
        max_capture_total: int = 0,
        stream_idle: float = 30.0,
    ) -> None:
        self.overload = overload
        self.shed_lag = shed_lag
        self.router = router
        self.correlation_header = correlation_header
        self.noise = noise
        self.translation = Translation(router, ids, aliases, counters, primary_is_bank)
        self.steps = steps
        self.intents = intents
        self.verifier: Verifier | None = None  # checks keys out of step (set when [reconcile] reads exist)
        self.breaker = breaker if breaker is not None else Breaker(counters)
        self.lanes = Lanes()
        self.channel = channel
        self.submit = submit
        self.counters = counters
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        # streams (which may last) take at most this many of the places: calls of one message always find some
        self.max_streams = max_in_flight_streams or max(1, max_in_flight // 2)
        self.max_capture = max_capture
        self.budget = Budget(max_capture_total)
        self.stream_idle = stream_idle
        self.primary_is_bank = primary_is_bank
        self.stream_hold = stream_hold
        self._live: set[Mirror] = set()  # strong references: a running mirror is never collected
        self._streams = 0  # of the live mirrors, those of streaming calls
        self._leaving: set[Mirror] = set()  # given up for their places, finishing: counted no more
        self._idle = asyncio.Event()
        self._idle.set()
        self._kinds: dict[str, tuple[bool, bool, bool]] = {}

    def start(
        self,
        method: str,
        metadata: tuple[Any, ...],
        client_timeout: float | None,
        is_write: bool,
    ) -> tuple[Mirror | None, str]:
        """A mirror for a call, or none and why."""
        stream = not self.unary(method)
        full = ""
        if len(self._live) >= self.max_in_flight:
            full = "not mirrored: shadow.max_in_flight calls already in flight"
        elif stream and self._streams >= self.max_streams:
            full = "not mirrored: shadow.max_in_flight_streams streams already in flight"
        if full and not self._make_room(streams_only=not len(self._live) >= self.max_in_flight):
            self.counters.inc("shadow_dropped", method)
            return None, full
        if not self.breaker.allow():
            self.counters.inc("shadow_breaker_skipped", method)
            return None, "not mirrored: the shadow breaker is open after repeated shadow failures"
        if self.overload is not None and self.shed_lag > 0:
            lag = self.overload.lag
            if lag > self.shed_lag and not is_write:  # a write missed would put its keys out of step
                self.counters.inc("shadow_shed", method)
                late = f"{lag * 1000:.0f} ms"
                return None, f"not mirrored: the shim is overloaded (its event loop runs {late} late)"
        mirror = Mirror(self, method, metadata, client_timeout, is_write)
        mirror.correlation_id = self.correlation_id(metadata)
        mirror.stream = stream
        self._live.add(mirror)
        self._streams += stream
        self._idle.clear()
        return mirror, ""

    def _make_room(self, streams_only: bool) -> bool:
        """Give up the mirror idle longest (for `stream_idle` or more) so that a new call takes its place."""
        now = time.monotonic()
        idle = [
            m
            for m in self._live
            if (m.stream or not streams_only) and now - m.last_active >= self.stream_idle
        ]
        if not idle:
            return False
        victim = min(idle, key=lambda m: m.last_active)
        self._live.discard(victim)
        self._streams -= victim.stream
        self._leaving.add(victim)
        self.counters.inc("shadow_idle_given_up", victim.method)
        victim.give_up_idle()
        return True

    def correlation_id(self, metadata: tuple[Any, ...]) -> str:
        """The value of the client's request metadata that names the call ("" without)."""
        if self.correlation_header:
            for key, value in metadata:
                if key == self.correlation_header:
                    return value if isinstance(value, str) else value.decode(errors="replace")
        return ""

    @property
    def in_flight(self) -> int:
        return len(self._live) + len(self._leaving)

    def give_up_all(self) -> int:
        """The shim stops: every mirrored call still running is given up (and recorded as such)."""
        for mirror in [*self._live, *self._leaving]:
            mirror.give_up()
        return self.in_flight

    def _kind(self, method: str) -> tuple[bool, bool, bool]:
        """(unary, request streaming, server streaming) by the descriptors (cached); unknown methods are
        none of these: their calls take one place in the lanes, unkeyed."""
        kind = self._kinds.get(method)
        if kind is None:
            registry = self.router.registry if self.router is not None else None
            info = registry.method(method) if registry is not None else None
            kind = (
                (info.unary, info.client_streaming, info.server_streaming)
                if info is not None
                else (False,) * 3
            )
            if len(self._kinds) < 10_000:
                self._kinds[method] = kind
        return kind

    def undescribed(self, method: str) -> bool:
        """Whether the shim has descriptors and `method` is not among them: it is not part of the interface
        the shim was given, so its calls are mirrored but not ordered (a made-up method must not make every
        later call wait behind it). Without any descriptors every method counts as described."""
        registry = self.router.registry if self.router is not None else None
        return registry is not None and registry.method(method) is None

    def unary(self, method: str) -> bool:
        """Whether the descriptors say `method` is unary-unary (cached)."""
        return self._kind(method)[0]

    def unary_answer(self, method: str) -> bool:
        """Whether the descriptors say `method` answers with one message (not a stream)."""
        return not self._kind(method)[2]

    def request_streaming(self, method: str) -> bool:
        return self._kind(method)[1]

    def learns_per_message(self, method: str) -> bool:
        """Whether the ids (and aliases) minted in the answer stream are learned message by message."""
        plan = self.translation.plan(method)
        return plan.streamed and (plan.mints or plan.aliases_out)

    def release(self, mirror: Mirror) -> None:
        if mirror in self._live:
            self._live.discard(mirror)
            self._streams -= mirror.stream
        self._leaving.discard(mirror)
        if not self._live and not self._leaving:
            self._idle.set()

    async def drain(self) -> None:
        """Wait until no mirrored call is in flight."""
        await self._idle.wait()

    def to_primary(self, method: str, payload: bytes) -> bytes:
        return self.translation.to_primary(method, payload)

    def intent_done(self, intent: str) -> None:
        if self.intents is not None:
            self.intents.done(intent)

    # -- keys out of step ------------------------------------------------------------------------

    def judge_write(
        self, mirror: Mirror, primary: Outcome | None, shadow: Outcome, cancelled: bool
    ) -> list[OutOfStep]:
        """Mark the write's keys out of step unless both sides did the same with it; the new marks."""
        if self.steps is None:
            return []
        if cancelled:
            cause = mirror.abandoned_why or "the client cancelled it"
            reason = f"{cause}: whether either side applied it is unknown"
        elif mirror._unreachable:
            return []  # neither side received it
        elif mirror.unmapped or mirror.ambiguous:
            if effect(primary) == REFUSED:
                return []
            reason = "BK was not sent it: " + _unmapped_note(mirror.unmapped, mirror.ambiguous)
        else:
            reason = out_of_step_reason(primary, shadow, self.primary_is_bank)
        if not reason:
            return []
        return self.steps.mark(mirror.keys, mirror.method, reason)

    def unmirrored(self, method: str, first: bytes | None, primary: Outcome, why: str) -> None:
        """A write that was not mirrored: its keys are out of step unless the primary did nothing with it."""
        if self.steps is None or effect(primary) == REFUSED:
            return
        keys: tuple[str, ...] = ()
        router = self.router
        if router is not None:
            decoded = router.decode(method, first) if self.translation.needs_request(method) else None
            keys = self.translation.keys_for(method, decoded)
        said = "applied it" if primary.code == 0 else "may have applied it"
        self.steps.mark(keys, method, f"{why}; the primary {said}")

    def keys_of(self, method: str, first: bytes | None) -> tuple[str, ...]:
        """The routing keys of a call from its first request (for calls that are not mirrored)."""
        if self.router is None or first is None or not self.translation.needs_request(method):
            return ()
        return self.translation.keys_for(method, self.router.decode(method, first))


def _where(found: Found) -> str:
    index, *rest = found.path
    text = "request" if index == 0 else f"request[{index}]"
    for part in rest:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _unmapped_note(unmapped: list[Found], ambiguous: list[Ambiguous] | None = None) -> str:
    parts = []
    if unmapped:
        named = ", ".join(f"{f.kind} {f.value!r} ({_where(f)})" for f in unmapped[:3])
        more = f" and {len(unmapped) - 3} more" if len(unmapped) > 3 else ""
        parts.append(
            f"the request names {named}{more}, with no known counterpart on the shadow (unmapped-id)"
        )
    if ambiguous:
        parts.append("the request names " + "; ".join(str(a) for a in ambiguous[:3]) + " (ambiguous id)")
    return "; ".join(parts)
