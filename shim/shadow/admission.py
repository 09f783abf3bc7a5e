"""A mirrored call's keys, its sampling, its place in the lanes, and its intent.

A call whose requests are one message takes one place in the lanes of its keys, from its arrival
until it is over on the shadow. A client-streaming call (a batch: many requests, one answer) takes
one place, on the keys of all its messages, as its last message comes (the primary has all of it then,
and answers after; a primary that answers first places it then). On Envoy the copy of its answer may
reach the plane after the request of a call the client made once it had that answer: placed at the
answer, such a call came first, and went to the shadow with ids the batch had not paired yet. A bidi
call (a session) takes one place per request message, with that message's own keys, entered as the
message arrives.

Finding a call's keys means decoding its first request: that waits for the next turn of the loop
(call_soon keeps arrival order), so the primary's own send goes first.

Crash safety: before a write is sent, its intent and keys are written to the store and committed
(`shim.intents`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from google.protobuf import message

from shim.plan import MethodPlan
from shim.shadow import spans
from shim.shadow.fleet import FleetPlace, unordered
from shim.shadow.intent import WriteIntent
from shim.shadow.places import Places
from shim.shadow.shared import Shared, Turn

MISSED = "not mirrored: it came after its stream's mirror was given up; the primary may have applied it"


class Admission:
    __slots__ = (
        "_batch_keys",
        "_over",
        "_shared",
        "admitted",
        "answering",
        "asked",
        "batch",
        "first",
        "intent",
        "is_write",
        "keys",
        "method",
        "names_unknown",
        "not_sampled",
        "places",
        "plan",
        "raced",
        "seq",
        "spanned",
        "started",
        "streamed",
        "turn",
    )

    def __init__(
        self, shared: Shared, plan: MethodPlan, is_write: bool, places: Places, over: Callable[[], bool]
    ) -> None:
        self._shared = shared
        self.method = plan.method
        self.plan = plan
        self.is_write = is_write
        self.places = places
        self._over = over  # the call is over already
        kind = plan.kind
        self.streamed = kind.client_streaming and kind.server_streaming  # a session: one place a message
        self.batch = (
            kind.client_streaming and not kind.server_streaming
        )  # one place, when the primary answers
        self.keys: tuple[str, ...] = ()
        self.first: message.Message | None = None  # the first request, decoded when ids or keys need it
        self.asked = False
        self.admitted = asyncio.Event()  # its place in the lanes is known
        # when the call started, as its data plane saw it (Envoy's, on a copy); None: as it takes its place
        self.started: float | None = None
        self.seq: int | None = None  # the lanes' write_seq when it took its place: later writes came after it
        self.raced = ""  # a write on its keys in flight with it at the primary, as the primary answered it
        self.not_sampled = False  # a read left out by sampling
        # unkeyed because it names an id or alias whose key is unknown: no mark of another key taints it
        self.names_unknown = False
        self._batch_keys: list[str] = []
        self.intent = WriteIntent()  # a write's, in the store
        self.spanned = False  # a batch or session under way when a switch of its method's mode applied
        self.turn: Turn | None = None  # on Envoy: when its steps in the lanes may run (None: at once)
        # set once the primary's answer is in and what it minted is pending (`IdBook.answering`)
        self.answering: asyncio.Future[None] | None = None

    def arrived(self, payload: bytes, index: int) -> None:
        """A request message the client sent (called as it arrives, never waiting)."""
        loop = asyncio.get_running_loop()
        if self.streamed:  # each message takes its own place, before the writer may reach it
            self.enter(self._admit_step, payload, index, time.time())
            self.asked = True
        elif self.batch:  # its keys, gathered off the primary's path; its place when the primary answers
            loop.call_soon(self._gather_keys, payload, index)
            self.asked = True
        elif not self.asked:
            self.ask(payload)

    def ask(self, first: bytes | None) -> None:
        """Take a place in the lanes, in the order calls arrive, after the primary call has gone out."""
        self.asked = True
        if self.streamed:  # no request message at all: nothing to order
            asyncio.get_running_loop().call_soon(self.admitted.set)
            return
        if self.batch:
            return  # placed when the primary answers
        self.enter(self._admit, first)

    def closed(self) -> None:
        """The client sent its last request message: a batch takes its place (after the keys of every message
        fed: call_soon keeps order)."""
        if not self.asked:
            self.ask(None)
        if self.batch:
            self.enter(self.admit_batch)

    def enter(self, step: Callable[..., object], *args: object) -> None:
        """Run a step that takes the call's place in the lanes, or must follow it, at the next turn of the
        loop (call_soon keeps their order); on Envoy once the call's turn among the copies came."""
        turn = self.turn
        if turn is None:
            asyncio.get_running_loop().call_soon(step, *args)
        else:
            turn.enter(step, *args)

    def _sampled(self, keys: tuple[str, ...]) -> bool:
        router = self._shared.router
        return self.is_write or router is None or router.sampled(keys)

    def _decode_for_keys(self, payload: bytes | None) -> tuple[message.Message | None, bool]:
        """The request, decoded when its keys or ids are needed; and whether it was to be decoded but is not
        a message of the method's described request type."""
        shared = self._shared
        if shared.router is None or not self.plan.needs_request:
            return None, False
        decoded = shared.router.decode(self.method, payload)
        return decoded, decoded is None and payload is not None and self.plan.kind.described

    def missed(self, payload: bytes) -> None:
        """A message of a write's request stream that came once its mirror was given up: the primary may
        apply it and the shadow never gets it, so its keys go out of step (at the next turn of the loop, off
        the clients' path)."""
        if self.is_write and (self.streamed or self.batch) and self._shared.steps is not None:
            asyncio.get_running_loop().call_soon(self._mark_missed, payload)

    def _mark_missed(self, payload: bytes) -> None:
        steps = self._shared.steps
        assert steps is not None
        keys = self._shared.translation.keys_for(self.method, self._decode_for_keys(payload)[0])
        steps.mark(keys, self.method, MISSED, self._shared.translation.client_side)

    def _gather_keys(self, payload: bytes, index: int) -> None:
        """A message of a batch: its keys join the batch's."""
        if self._over():
            return
        decoded, _ = self._decode_for_keys(payload)
        if index == 0:
            self.first = decoded
        keys, unknown = self._shared.translation.place(self.method, decoded)
        self.names_unknown = self.names_unknown or unknown
        if not keys and decoded is not None and self.plan.needs_request:
            self._batch_keys.append("")  # a message with no key makes the batch unkeyed
        self._batch_keys.extend(keys)
        if "" not in self._batch_keys:  # what a write cancelled before the primary answered would mark
            self.keys = tuple(dict.fromkeys(self._batch_keys))

    def admit_batch(self) -> None:
        """A batch takes its place as its last message came (or the primary answered, if first), on the keys
        of all its messages; a later call naming an id its answer may mint waits for that answer."""
        if self.admitted.is_set():
            return
        if self._over():
            self.admitted.set()
            return
        keys = () if "" in self._batch_keys else tuple(dict.fromkeys(self._batch_keys))
        if not self._sampled(keys):
            self.not_sampled = True
        else:
            self.seq = self._shared.lanes.write_seq
            self.places.ticket = self._shared.lanes.enter(keys, self.is_write)
            self.answering = self._shared.translation.answering(self.plan.ids, self.places.ticket.order)
            self.keys = keys
            if self.is_write and keys:  # in flight at the primary from now (`Together`), till its answer
                self._shared.together.started(keys, self.method, self.started or time.time(), self)
            self._unordered(keys)  # its keys are known only at its end: it takes no ticket across replicas
            if self.spanned:
                self.mark_spanned()
            self.record_intent()
        self.admitted.set()

    def mark_spanned(self, keys: tuple[str, ...] | None = None) -> None:
        """A stream under way across a switch (`shim.shadow.spans`): its keys out of step, a batch's, or a
        session's at the switch and (`keys`) each later message's."""
        marked = self.keys if keys is None else keys
        spans.mark(self._shared, self.method, marked, self.streamed, self.is_write, first=keys is None)

    def _admit(self, first: bytes | None) -> None:
        if self._over():  # over already (cancelled before its turn came): nothing to order
            self.admitted.set()
            return
        shared = self._shared
        self.first, undecodable = self._decode_for_keys(first)
        keys, self.names_unknown = shared.translation.place(self.method, self.first)
        if not self._sampled(keys):
            self.not_sampled = True
        elif undecodable or not self.plan.kind.described:
            # a made-up method, or bytes no server of the interface can decode (so none applies them):
            # mirrored as they come, in no lane, so that they never make other calls wait
            shared.counters.inc("calls_not_ordered", self.method)
        else:
            self.seq = shared.lanes.write_seq
            self.places.ticket = shared.lanes.enter(keys, self.is_write)
            self.answering = shared.translation.answering(self.plan.ids, self.places.ticket.order)
            self.keys = keys
            if self.is_write and keys:  # in flight at the primary from now (`Together`)
                shared.together.started(keys, self.method, self.started or time.time(), self)
            if shared.key_order is not None and keys:  # its turn across replicas, asked for now
                self.places.fleet = FleetPlace(
                    shared.key_order,
                    keys,
                    self.method,
                    shared.steps,
                    shared.counters,
                    side=shared.translation.client_side,
                    read=not self.is_write,
                    started=self.started,
                )
            elif self.is_write and shared.key_order is not None:
                shared.counters.inc("writes_not_ordered_across_replicas", self.method)
            self.record_intent()
        self.admitted.set()

    def answered(self, span: tuple[float, float] | None = None) -> None:
        """The primary's answer is in, and what it minted pending; or it will mint nothing: the calls after
        it that name an id the map does not know wait for it no more. `span`: when the call started and the
        primary answered it (a write's, for `Together`; its start as its data plane saw it, if known)."""
        if self.answering is not None and not self.answering.done():
            self.answering.set_result(None)
        if span is not None and not self.is_write and not self.not_sampled and self.admitted.is_set():
            # judged now, not once BK answered: a busy key's spans make way (PER_KEY); a copy's until now
            end = (
                span[1] if self.started is None else max(span[1], time.time())
            )  # (session messages: plane time)
            if self.keys or not (self.names_unknown or self.plan.keyed):
                self.raced = self._shared.together.read_reason(self.keys, self.started or span[0], end)
        if self.is_write and self.keys and not self.streamed:
            together = self._shared.together
            if span is not None:  # raced: judged now, as a read's is, before later writes push its span out
                together.answered(self.keys, self.method, self.started or span[0], span[1], self)
                self.raced = together.reason(self.keys, self)
            else:  # the mirror is over: a write the primary never answered is in flight no more
                together.over(self.keys, self)

    def _admit_step(self, payload: bytes, index: int, arrived: float) -> None:
        """A message of a request stream takes its place in the lanes of its own keys (`arrived`: when it
        came, the first as its data plane saw it, if known: its start at the primary, for `Together`)."""
        shared = self._shared
        if self._over() or self.not_sampled:
            self.admitted.set()
            return
        decoded, _ = self._decode_for_keys(payload)
        if index == 0:
            self.first = decoded
        keys, unknown = shared.translation.place(self.method, decoded)
        self.names_unknown = self.names_unknown or unknown
        if index == 0 and not self._sampled(keys):
            self.not_sampled = True
            self.admitted.set()
            return
        if self.seq is None:
            self.seq = shared.lanes.write_seq
        at = (self.started or arrived) if index == 0 else arrived
        self.places.step(shared.lanes.enter(keys, self.is_write, own=self.places.steps), self.is_write, at)
        self.keys = tuple(dict.fromkeys((*self.keys, *keys)))
        if self.spanned:  # a session's message after a switch it is under way across
            self.mark_spanned(keys if self.admitted.is_set() else None)
        if index == 0:
            self._unordered(keys)
            self.record_intent()
        self.admitted.set()

    def _unordered(self, keys: tuple[str, ...]) -> None:
        """A streamed write takes no ticket across replicas: its keys go out of step."""
        shared = self._shared
        if self.is_write and shared.key_order is not None:
            unordered(keys, self.method, shared.steps, shared.counters, shared.translation.client_side)

    def record_intent(self) -> None:
        """Begin writing down this write's intent (awaited before the write is sent to the shadow)."""
        if self.is_write:
            self.intent.record(self._shared.intents, self.method, self.keys)

    async def intent_written(self, stop: asyncio.Event) -> bool:
        """Wait until the intent names every key known so far; False if the call is given up first."""
        return not self.is_write or await self.intent.written(
            self._shared.intents, self.method, self.keys, stop
        )

    async def unwritten_since(self, seq: int) -> bool:
        """Whether no write on this read's keys came in since the lanes' `seq` (taken when the primary
        answered it), so that the primary asked again should answer alike; waits for the read's own place."""
        shared = self._shared
        if shared.arrived is not None and not await shared.arrived():  # a write Bank served may be unknown
            return False
        await self.admitted.wait()
        if self.seq is not None:  # a write that took its place after this read's came after it
            seq = min(seq, self.seq)
        return not shared.lanes.written_since(self.keys, seq)
