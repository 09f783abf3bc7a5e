"""The call to the shadow, once it is due: its first request's ids translated, then the request and
answer messages.

A unary method takes grpc's unary path (one batch each way, cheaper than a stream of one); every other
call is a stream, whose requests a writer task sends as the client's arrive (a session's, each in its
turn in the lanes) while the answers are read.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from grpc import aio

from comparators import Outcome
from shim import _grpc_compat
from shim._outcome import snapshot
from shim.shadow.capture import Capture
from shim.shadow.deadline import Deadline
from shim.shadow.fate import CANCELLED, NOT_SENT, WAITING, Fate, until
from shim.shadow.parts import Parts
from shim.shadow.record import MESSAGE_TIMES
from shim.shadow.shared import Shared
from shim.steps import unreachable


class Side(Parts, Protocol):
    """The mirror a shadow call belongs to."""

    last_active: float  # when a message last passed, either way
    primary_answers: int  # answer messages the primary sent so far
    sent_times: list[float] | None  # when each request message went to the shadow, if kept
    shadow_answered_at: list[float]  # when the shadow's answer messages came (the first MESSAGE_TIMES)

    def over(self) -> bool: ...

    def sending(self) -> None: ...


class ShadowCall:
    __slots__ = (
        "_admission",
        "_capture",
        "_client_timeout",
        "_fate",
        "_learning",
        "_metadata",
        "_places",
        "_plan",
        "_shared",
        "_side",
        "_writer",
        "answers",
        "call",
        "deadline",
        "head",
        "method",
        "queue",
        "sent",
        "stage",
    )

    def __init__(
        self,
        shared: Shared,
        method: str,
        metadata: tuple[Any, ...],
        client_timeout: float | None,
        fate: Fate,
        capture: Capture,
        side: Side,
    ) -> None:
        self._shared = shared
        self.method = method
        self._metadata = metadata
        self._client_timeout = client_timeout
        self._fate = fate
        self._capture = capture
        self._admission = side.admission
        self._learning = side.learning
        self._places = side.places
        self._plan = side.plan
        self._side = side
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()  # the client's requests; None: no more
        self.call: aio.Call | None = None
        self.head: bytes | None = None  # the first request as sent to the shadow (ids translated)
        self.sent = 0  # request messages sent to the shadow
        self.answers = 0  # answer messages the shadow sent so far
        self._writer: asyncio.Task[None] | None = None  # what sends a stream's requests
        self.deadline = Deadline(
            fate, shared.timeout, shared.max_wait, self.cancel
        )  # once the primary answered
        self.stage = "its place in the lanes"  # what it waits for now (a switch that waits too long says)

    def cancel(self) -> None:
        if self.call is not None:
            self.call.cancel()

    def _we_cancelled(self) -> bool:
        return self._fate.stopped_by_us or self._learning.stopped

    async def when_due(
        self,
        received: asyncio.Event,
        primary: asyncio.Future[tuple[Outcome | None, bool]],
    ) -> Outcome:
        """The shadow call, once the calls it follows in its lanes are done and, for a write, the primary
        received it (`received`: it answered something, or ended); or a stand-in outcome."""
        started = time.perf_counter()
        fate = self._fate
        ticket = self._places.first()
        self.stage = "its turn after the earlier calls on its keys"
        if ticket is not None and ticket.waiting_for and not await until(ticket.ready(), fate.stop):
            return fate.given_up(time.perf_counter() - started, WAITING)
        if self._admission.streamed and (steps := self._shared.steps) is not None:
            self._places.turn_taken(ticket, steps.reason)
        if fate.stop.is_set():
            return fate.given_up(0.0, NOT_SENT)
        if self._side.is_write:
            self.stage = "the primary to receive it"
            if not await until(received.wait(), fate.stop):
                return fate.given_up(time.perf_counter() - started, WAITING)
            if primary.done():
                answer, _ = primary.result()
                if unreachable(answer) and not self._side.primary_answers:
                    fate.unreachable = True
                    return Outcome(code=CANCELLED, local="not sent: the primary never received the write")
            fleet = self._places.fleet
            self.stage = "its turn across replicas"
            if fleet is not None and not await fleet.ready(fate.stop):  # its turn across replicas
                return fate.given_up(time.perf_counter() - started, WAITING)
            self.stage = "its intent to be stored"
            if not await self._admission.intent_written(fate.stop):
                return fate.given_up(time.perf_counter() - started, WAITING)
        elif (fleet := self._places.fleet) is not None:  # a read: after the writes before it
            self.stage = "its turn across replicas"
            if not await fleet.ready(fate.stop):
                return fate.given_up(time.perf_counter() - started, WAITING)
        if fate.stop.is_set():  # the client cancelled while the primary had it
            return fate.given_up(time.perf_counter() - started, NOT_SENT)
        if self._plan.ids.request:
            self.stage = "the counterparts of the ids it names"
            stopped = await self._take_head(started)
            if stopped is not None:
                return stopped
            if fate.stop.is_set():
                return fate.given_up(time.perf_counter() - started, WAITING)
        return await self._run()

    async def _take_head(self, started: float) -> Outcome | None:
        """Take the first request and translate its ids; an outcome instead when the shadow has no single
        counterpart for an id it names."""
        head = await self.queue.get()
        if head is None:
            self.queue.put_nowait(None)  # no request at all: the writer just closes the stream
            return None
        translated = await self._shared.translation.translate(
            self.method, head, self._fate.stop, self._admission.first, self._places.order
        )
        if translated.unmapped or translated.ambiguous:
            self._learning.stopped_by(translated.unmapped, translated.ambiguous)
            return Outcome(
                code=CANCELLED,
                latency=time.perf_counter() - started,
                local="not sent: " + self._learning.note(),
            )
        self._capture.queued -= len(head) - len(translated.payload)
        self.head = translated.payload
        return None

    async def _run(self) -> Outcome:
        """Call the shadow; its outcome (or why the call was cut short)."""
        started = time.perf_counter()
        self.stage = "the shadow's answer"
        if self._plan.kind.unary:
            messages = await self._exchange_unary()
        else:
            messages = await self._exchange_stream()
        latency = time.perf_counter() - started
        cut = self._fate.cut_short(latency)
        if cut is not None:
            return cut
        if self._learning.stopped:
            return Outcome(code=CANCELLED, latency=latency, local="given up: " + self._learning.note())
        assert self.call is not None
        outcome = await snapshot(self.call, messages, latency)
        return self._fate.past_client_deadline(outcome, latency, self._client_timeout)

    async def _exchange_unary(self) -> tuple[bytes, ...]:
        head, self.head = self.head, None
        payload = head if head is not None else await self.queue.get()
        if payload is None:  # the client sent nothing (its call ended first): the stream path says so
            self.queue.put_nowait(None)
            return await self._exchange_stream()
        call = self._shared.channel.unary_unary(self.method)(
            payload, metadata=self._metadata, timeout=self._client_timeout
        )
        self.call = call
        self._side.sending()
        self._capture.queued -= len(payload)
        if self._fate.overflowed or self._fate.abandoned:
            call.cancel()
        try:
            answer = await call
        except aio.AioRpcError:
            return ()
        except asyncio.CancelledError:
            if self._we_cancelled():
                return ()
            raise
        return (answer,) if answer is not None and self._capture.take(answer) else ()

    async def _exchange_stream(self) -> tuple[bytes, ...]:
        channel = self._shared.channel
        call = channel.stream_stream(self.method)(metadata=self._metadata, timeout=self._client_timeout)
        self.call = call
        self._side.sending()
        if self._fate.overflowed or self._fate.abandoned:
            call.cancel()
        writer = self._writer = asyncio.get_running_loop().create_task(
            self._write(call), name=f"shadow writer {self.method}"
        )
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
                self.answers += 1
                self._shadow_answered(index, message)
                index += 1
                if self._capture.take(message):
                    messages.append(message)
        finally:
            writer.cancel()
        return tuple(messages)

    async def _write(self, call: aio.StreamStreamCall[Any, Any]) -> None:
        translation = self._shared.translation
        translating = self._plan.ids.request
        head, self.head = self.head, None
        while True:
            if head is not None:
                payload, head = head, None
            else:
                item = await self.queue.get()
                if item is None:
                    await _grpc_compat.close_sending(call)
                    return
                payload = item
                turn = self._admission.streamed and self.sent  # (idle: BK answered all it was sent)
                idle = lambda: self.answers >= self.sent  # noqa: E731
                if turn and not await self.deadline.turn(self._ready_to_send(self.sent), idle):
                    call.cancel()
                    return
                if translating:
                    size = len(payload)
                    translated = await translation.translate(
                        self.method,
                        payload,
                        self._fate.stop,
                        self._admission.first,
                        self._places.order_of(self.sent),
                    )
                    if translated.unmapped or translated.ambiguous:  # BK has no counterpart: stop there
                        self._learning.stopped_by(translated.unmapped, translated.ambiguous)
                        self._fate.stop.set()
                        call.cancel()
                        return
                    payload = translated.payload
                    self._capture.queued -= size - len(payload)
            if self._side.sent_times is not None:
                self._side.sent_times.append(time.time())
            if self._admission.streamed and self.sent:
                self.deadline.sending(again=True)  # the shadow idle: it has `timeout` for this one
            sent = await _grpc_compat.send(call, payload)
            self._capture.queued -= len(payload)
            self.sent += 1
            self._shadow_sent(self.sent)
            if not sent:
                return

    # -- a session's places, released as the shadow shows it got past its messages -------------

    def _shadow_answered(self, index: int, payload: bytes) -> None:
        side = self._side
        side.last_active = time.monotonic()
        if len(side.shadow_answered_at) < MESSAGE_TIMES:
            side.shadow_answered_at.append(time.time())
        self._places.shadow_answered(self.answers)
        if self._admission.streamed:
            self._places.caught_up(self.answers, self.sent)
        self.deadline.shadow_answered(self.answers)
        if self._plan.learns_per_message:
            self._learning.shadow_message(index, payload, self._admission.first)

    def _shadow_sent(self, sent: int) -> None:
        if self._admission.streamed:
            self._places.shadow_sent(sent)

    async def _ready_to_send(self, index: int) -> bool:
        """A later message of a request stream: its turn in the lanes, and (for a write) its keys in the
        intent."""
        places = self._places
        if not await places.step_ready(index, self._fate.stop, self._side.over):
            return False
        if (steps := self._shared.steps) is not None:
            places.turn_taken(places.step_of(index), steps.reason)
        return not self._side.is_write or await self._admission.intent_written(self._fate.stop)
