"""The shadow side: mirrored calls that never delay the primary.

The handler serving a client call asks the dispatcher for a `Mirror` and feeds
it the client's request messages as they arrive (without awaiting anything the
shadow does). The mirror calls the shadow upstream in a task of its own; when
both the primary's and the shadow's outcomes are known it hands an `Exchange`
to the comparison pipeline.

Bounds: at most `max_in_flight` mirrored calls at once (beyond that a call is
not mirrored, and the exchange says so); a shadow call may take `timeout`
seconds after the primary answered, then it is cancelled and recorded as a
shadow timeout; at most `max_capture` bytes of requests and answers are kept
per exchange.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from grpc import aio

from comparators import Exchange, Outcome
from shim import _grpc_compat
from shim._breaker import Breaker
from shim._lanes import Lanes, Ticket
from shim._outcome import snapshot
from shim.metrics import Counters
from shim.routing import Router

_CANCELLED = 1
_DEADLINE_EXCEEDED = 4
_INTERNAL = 13
_UNAVAILABLE = 14

Submit = Callable[[Exchange], None]


class Capture:
    """A byte budget for what one exchange keeps for comparison."""

    __slots__ = ("exceeded", "left")

    def __init__(self, limit: int) -> None:
        self.left = limit if limit > 0 else 2**62
        self.exceeded = False

    def take(self, payload: bytes) -> bool:
        self.left -= len(payload)
        if self.left < 0:
            self.exceeded = True
        return not self.exceeded


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
        self.capture = Capture(dispatcher.max_capture)
        self.requests: list[bytes] = []
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._primary: asyncio.Future[tuple[Outcome | None, bool]] = (
            asyncio.get_running_loop().create_future()
        )
        self._call: aio.Call | None = None
        self._expired = False
        self._abandoned = False
        self._overflowed = False
        self._queued = 0  # request bytes handed over and not yet written to the shadow
        self._timer: asyncio.TimerHandle | None = None
        self._admitted = asyncio.Event()  # its place in the lanes is known
        self._admission_asked = False
        self._ticket: Ticket | None = None
        self._not_sampled = False
        self._stop = asyncio.Event()  # the call is given up while it waits in its lanes
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._run(), name=f"shadow {method}"
        )

    # -- fed by the primary handler; none of these wait --------------------------------

    def feed(self, payload: bytes) -> None:
        """A request message the client sent.

        When the shadow falls so far behind that more than `max_capture` request
        bytes wait for it, the shadow call is given up (and recorded as such)
        rather than buffering without bound.
        """
        if not self._admission_asked:
            self._ask_admission(payload)
        if self._overflowed:
            return
        if self.capture.take(payload):
            self.requests.append(payload)
        self._queued += len(payload)
        if self._queued > self._dispatcher.max_capture > 0:
            self._overflowed = True
            self._stop.set()
            if self._call is not None:
                self._call.cancel()
            return
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
        asyncio.get_running_loop().call_soon(self._admit, first)

    def _admit(self, first: bytes | None) -> None:
        if self.task.done():  # over already (cancelled before its turn came): nothing to order
            self._admitted.set()
            return
        dispatcher = self._dispatcher
        keys = dispatcher.router.keys(self.method, first) if dispatcher.router is not None else ()
        if not self.is_write and dispatcher.router is not None and not dispatcher.router.sampled(keys):
            self._not_sampled = True
        else:
            self._ticket = dispatcher.lanes.enter(keys, self.is_write)
            self.keys = keys
        self._admitted.set()

    def primary_done(self, outcome: Outcome) -> None:
        """The primary answered; the shadow now has `timeout` seconds left."""
        if self._primary.done():
            return
        if not self._admission_asked:  # the primary answered before the client sent anything
            self._ask_admission(None)
        self._primary.set_result((outcome, False))
        self._queue.put_nowait(None)  # a primary that finished early read no more requests
        if not self.task.done():
            timeout = self._dispatcher.timeout
            self._timer = asyncio.get_running_loop().call_later(timeout, self._expire)

    def abandon(self, primary: Outcome | None) -> None:
        """The client cancelled (or its deadline passed) before the primary answered."""
        if self._primary.done():
            return
        self._primary.set_result((primary, True))
        self._abandoned = True
        self._stop.set()
        if self._call is not None:
            self._call.cancel()
        elif not self.task.done():
            self.task.cancel()

    # -- the shadow call itself ----------------------------------------------------------

    def _expire(self) -> None:
        self._expired = True
        self._stop.set()
        if self._call is not None:
            self._call.cancel()

    async def _run(self) -> None:
        try:
            await self._mirror()
        finally:
            if self._ticket is not None:
                self._ticket.release()
            self._dispatcher.release(self)

    async def _mirror(self) -> None:
        try:
            await self._admitted.wait()
            if self._not_sampled:
                self._dispatcher.counters.inc("reads_not_sampled", self.method)
                return
            shadow = await self._in_turn()
        except asyncio.CancelledError:
            shadow = Outcome(code=_CANCELLED, local="shadow call cancelled with the client's call")
        except Exception as exc:  # a bug of ours must not lose the record
            self._dispatcher.counters.inc("shadow_internal_errors", self.method)
            shadow = Outcome(code=_INTERNAL, local=f"shim error while calling the shadow: {exc!r}")
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if self._ticket is not None:  # BK is done with it: the calls that follow may go
                self._ticket.release()
        if not self._abandoned:  # a call the client cancelled says nothing of BK's health
            self._dispatcher.breaker.record(not shadow.local and shadow.code != _UNAVAILABLE)
        primary, cancelled = await self._primary
        if primary is None:
            return
        self._dispatcher.submit(
            Exchange(
                method=self.method,
                requests=tuple(self.requests),
                primary=primary,
                shadow=shadow,
                primary_is_bank=self._dispatcher.primary_is_bank,
                is_write=self.is_write,
                routing_key=",".join(self.keys),
                started_at=self.started_at,
                cancelled=cancelled,
                note="too large to compare: more than shadow.max_capture bytes"
                if self.capture.exceeded
                else "",
            )
        )

    async def _in_turn(self) -> Outcome:
        """The shadow call, once the calls it follows in its lanes are done (or a stand-in outcome)."""
        ticket = self._ticket
        if ticket is not None and ticket.waiting_for:
            started = time.perf_counter()
            ready = asyncio.ensure_future(ticket.ready())
            stop = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait((ready, stop), return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
                stop.cancel()
            if not ready.done() or ready.cancelled():
                return self._given_up(time.perf_counter() - started, waiting=True)
        if self._stop.is_set():
            return self._given_up(0.0, waiting=False)
        return await self._call_shadow()

    def _given_up(self, latency: float, waiting: bool) -> Outcome:
        where = "while it waited behind earlier calls on its keys" if waiting else "before it was sent"
        if self._abandoned:
            return Outcome(
                code=_CANCELLED,
                latency=latency,
                local=f"shadow call cancelled with the client's call {where}",
            )
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
        channel = self._dispatcher.channel
        started = time.perf_counter()
        call = channel.stream_stream(self.method)(metadata=self._metadata, timeout=self._client_timeout)
        self._call = call
        if self._overflowed or self._abandoned:
            call.cancel()
        writer = asyncio.get_running_loop().create_task(
            self._write(call), name=f"shadow writer {self.method}"
        )
        messages: list[bytes] = []
        try:
            while True:
                try:
                    message = await call.read()
                except aio.AioRpcError:
                    break
                except asyncio.CancelledError:
                    if self._expired or self._abandoned or self._overflowed:
                        break  # we cancelled the call ourselves
                    raise
                if message is aio.EOF:
                    break
                if self.capture.take(message):
                    messages.append(message)
        finally:
            writer.cancel()
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
        if self._expired:
            return Outcome(
                code=_DEADLINE_EXCEEDED,
                latency=latency,
                local=f"shadow timeout: no answer within {self._dispatcher.timeout:g}s after the primary",
            )
        return await snapshot(call, tuple(messages), latency)

    async def _write(self, call: aio.StreamStreamCall[Any, Any]) -> None:
        while True:
            payload = await self._queue.get()
            if payload is None:
                await _grpc_compat.close_sending(call)
                return
            sent = await _grpc_compat.send(call, payload)
            self._queued -= len(payload)
            if not sent:
                return


class ShadowDispatcher:
    """Starts mirrors within bounds and counts what it could not mirror."""

    def __init__(
        self,
        channel: aio.Channel,
        submit: Submit,
        counters: Counters,
        *,
        timeout: float,
        max_in_flight: int,
        max_capture: int,
        primary_is_bank: bool = True,
        router: Router | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        self.router = router
        self.breaker = breaker if breaker is not None else Breaker(counters)
        self.lanes = Lanes()
        self.channel = channel
        self.submit = submit
        self.counters = counters
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.max_capture = max_capture
        self.primary_is_bank = primary_is_bank
        self._live: set[Mirror] = set()  # strong references: a running mirror is never collected
        self._idle = asyncio.Event()
        self._idle.set()

    def start(
        self,
        method: str,
        metadata: tuple[Any, ...],
        client_timeout: float | None,
        is_write: bool,
    ) -> tuple[Mirror | None, str]:
        """A mirror for a call, or none and why."""
        if len(self._live) >= self.max_in_flight:
            self.counters.inc("shadow_dropped", method)
            return None, "not mirrored: shadow.max_in_flight calls already in flight"
        if not self.breaker.allow():
            self.counters.inc("shadow_breaker_skipped", method)
            return None, "not mirrored: the shadow breaker is open after repeated shadow failures"
        mirror = Mirror(self, method, metadata, client_timeout, is_write)
        self._live.add(mirror)
        self._idle.clear()
        return mirror, ""

    @property
    def in_flight(self) -> int:
        return len(self._live)

    def release(self, mirror: Mirror) -> None:
        self._live.discard(mirror)
        if not self._live:
            self._idle.set()

    async def drain(self) -> None:
        """Wait until no mirrored call is in flight."""
        await self._idle.wait()
