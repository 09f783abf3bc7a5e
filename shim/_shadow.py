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

With an id map (`[ids.KIND]`), a mirror also: orders a call that names an id
with the calls on that id's owner key; rewrites the ids in the requests it
sends into the shadow's (waiting, until its own timeout, for a minting call
still in flight; a request naming an id with no counterpart is not sent);
learns the pairs minted by the call from the two answers before the calls
behind it in its lanes may go; and gives the comparison the pairs of the ids
in the answers. A write both sides did not do alike marks its keys out of
step (`shim.steps`); later mismatches on them are `tainted`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import message
from grpc import aio

from comparators import Exchange, Outcome
from comparators.ids import Found, pair_up
from shim import _grpc_compat
from shim._breaker import Breaker
from shim._lanes import Lanes, Ticket
from shim._outcome import snapshot
from shim._overload import LoopLag
from shim.adapters import Channel
from shim.ids import IdBook, Pending, other
from shim.metrics import Counters
from shim.routing import Router
from shim.steps import REFUSED, Steps, effect, out_of_step_reason

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
        self._first: message.Message | None = None  # the first request, decoded when ids or keys need it
        self._head: bytes | None = None  # the first request as sent to the shadow (ids translated)
        self._expected: list[Pending] = []  # ids the primary minted, until the shadow's answer pairs them
        self._shutdown = False  # given up because the shim stops
        self._expect_done = False
        self.tainted = ""
        self.unmapped: list[Found] = []
        self.found: dict[int, list[Found]] = {}  # the ids in an answer, by id() of its Outcome
        self.correlation_id = ""
        self._again: asyncio.Task[Outcome | None] | None = None  # the primary asked again, for noise
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
        router = dispatcher.router
        keys: tuple[str, ...] = ()
        if router is not None:
            plan = dispatcher.id_plan(self.method)
            if plan.request or plan.mints or router.settings(self.method).key:
                self._first = router.decode(self.method, first)
            keys = router.keys_of(self.method, self._first)
            if plan.request and self._first is not None:
                keys = dispatcher.keys_with_owners(self.method, self._first, keys)
        if not self.is_write and router is not None and not router.sampled(keys):
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
        if outcome.code == 0 and self._dispatcher.id_plan(self.method).mints:
            # after admission (call_soon keeps order), before the client can name what was minted
            asyncio.get_running_loop().call_soon(self._expect, outcome)
        noise = self._dispatcher.noise
        if noise is not None and not self.is_write and not self.capture.exceeded and noise.sampled():
            self._again = asyncio.get_running_loop().create_task(
                self._ask_again(noise, self._dispatcher.lanes.write_seq), name=f"noise {self.method}"
            )
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

    async def _ask_again(self, noise: Noise, seq: int) -> Outcome | None:
        """The primary's answer to the same read, unless a write on its keys came in meanwhile: Bank's
        two answers could then differ by that write, which is no noise."""
        requests = tuple(self._dispatcher.to_primary(self.method, r) for r in self.requests)  # as first sent
        again = await noise.ask_again(self.method, self._metadata, requests)
        await self._admitted.wait()
        if self._dispatcher.lanes.written_since(self.keys, seq):
            self._dispatcher.counters.inc("noise_discarded", self.method)
            return None
        return again

    def _expect(self, primary: Outcome) -> None:
        """Register the ids the primary minted (once: from primary_done, or when the mirror gets
        to learning first, its shadow having answered before the primary)."""
        if self._expect_done or self._not_sampled:
            return
        self._expect_done = True
        self._expected = self._dispatcher.expect_minted(self, primary)
        if self.task.done():  # over already: nothing will pair them now
            IdBook.settle(self._expected)

    # -- the shadow call itself ----------------------------------------------------------

    def give_up(self) -> None:
        """The shim stops before the shadow answered: the call ends now, recorded as given up."""
        self._shutdown = True
        self._expire()

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
            IdBook.settle(self._expected)
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
        dispatcher = self._dispatcher
        if not self.is_write and self._ticket is not None:  # BK is done with it: later writes may go
            self._ticket.release()
        if not self._abandoned:  # a call the client cancelled says nothing of BK's health
            dispatcher.breaker.record(not shadow.local and shadow.code != _UNAVAILABLE)
        primary, cancelled = await self._primary
        try:
            if primary is not None and dispatcher.ids is not None:
                if primary.code == 0 and dispatcher.id_plan(self.method).mints:
                    self._expect(primary)  # primary_done's callback may not have run yet
                dispatcher.learn(self, primary, shadow)
            if self.is_write:
                dispatcher.judge_write(self, primary, shadow, cancelled)
        finally:
            # the ids it minted are learned and its keys marked: the calls behind it may go
            if self._ticket is not None:
                self._ticket.release()
            IdBook.settle(self._expected)
        if primary is None:
            return
        pairs = await dispatcher.known_pairs(self, primary, shadow) if dispatcher.ids is not None else ()
        unmapped = tuple((f.kind, _where(f), f.value) for f in self.unmapped)
        dispatcher.submit(
            Exchange(
                method=self.method,
                requests=tuple(self.requests),
                primary=primary,
                # too large to compare: not compared (the note says why), unless the shadow failed anyway
                shadow=None if unmapped or (self.capture.exceeded and not shadow.local) else shadow,
                primary_is_bank=dispatcher.primary_is_bank,
                is_write=self.is_write,
                routing_key=",".join(self.keys),
                started_at=self.started_at,
                cancelled=cancelled,
                note=_unmapped_note(self.unmapped)
                if unmapped
                else "too large to compare: more than shadow.max_capture bytes"
                if self.capture.exceeded
                else "",
                ids=pairs,
                tainted=self.tainted,
                unmapped=unmapped,
                correlation_id=self.correlation_id,
                secondary=await _again(self._again),
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
        dispatcher = self._dispatcher
        self.tainted = dispatcher.steps.reason(self.keys) if dispatcher.steps is not None else ""
        if dispatcher.id_plan(self.method).request:
            started = time.perf_counter()
            head = await self._queue.get()
            if head is None:
                self._queue.put_nowait(None)  # no request at all: the writer just closes the stream
            else:
                translated, self.unmapped = await dispatcher.translate(self, head)
                if self.unmapped:
                    return Outcome(
                        code=_CANCELLED,
                        latency=time.perf_counter() - started,
                        local="not sent: " + _unmapped_note(self.unmapped),
                    )
                self._queued -= len(head) - len(translated)
                self._head = translated
            if self._stop.is_set():
                return self._given_up(time.perf_counter() - started, waiting=True)
        return await self._call_shadow()

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
        if self._expired:
            return Outcome(
                code=_DEADLINE_EXCEEDED,
                latency=latency,
                local=f"shadow timeout: no answer within {self._dispatcher.timeout:g}s after the primary",
            )
        if self.unmapped:
            return Outcome(
                code=_CANCELLED, latency=latency, local="given up: " + _unmapped_note(self.unmapped)
            )
        assert self._call is not None
        return await snapshot(self._call, messages, latency)

    def _we_cancelled(self) -> bool:
        return self._expired or self._abandoned or self._overflowed or bool(self.unmapped)

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
                    if self._we_cancelled():
                        break  # we cancelled the call ourselves
                    raise
                if message is aio.EOF:
                    break
                if self.capture.take(message):
                    messages.append(message)
        finally:
            writer.cancel()
        return tuple(messages)

    async def _write(self, call: aio.StreamStreamCall[Any, Any]) -> None:
        translating = self._dispatcher.id_plan(self.method).request
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
                if translating:
                    size = len(payload)
                    payload, unmapped = await self._dispatcher.translate(self, payload)
                    if unmapped:  # a later message names an id BK has no counterpart for: stop there
                        self.unmapped = unmapped
                        self._stop.set()
                        call.cancel()
                        return
                    self._queued -= size - len(payload)
            sent = await _grpc_compat.send(call, payload)
            self._queued -= len(payload)
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
        steps: Steps | None = None,
        correlation_header: str = "",
        noise: Noise | None = None,
        overload: LoopLag | None = None,
        shed_lag: float = 0.0,
    ) -> None:
        self.overload = overload
        self.shed_lag = shed_lag
        self.router = router
        self.correlation_header = correlation_header
        self.noise = noise
        self.ids = ids if router is not None else None
        self.steps = steps
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
        self._plans: dict[str, _IdPlan] = {}
        self._unary: dict[str, bool] = {}
        # the id space the client speaks (the primary's), and the shadow's
        self.client_side = "bank" if primary_is_bank else "bk"
        self.shadow_side = other(self.client_side)

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
        if self.overload is not None and self.shed_lag > 0:
            lag = self.overload.lag
            if lag > self.shed_lag and not is_write:  # a write missed would put its keys out of step
                self.counters.inc("shadow_shed", method)
                late = f"{lag * 1000:.0f} ms"
                return None, f"not mirrored: the shim is overloaded (its event loop runs {late} late)"
        mirror = Mirror(self, method, metadata, client_timeout, is_write)
        if self.correlation_header:
            for key, value in metadata:
                if key == self.correlation_header:
                    mirror.correlation_id = (
                        value if isinstance(value, str) else value.decode(errors="replace")
                    )
                    break
        self._live.add(mirror)
        self._idle.clear()
        return mirror, ""

    @property
    def in_flight(self) -> int:
        return len(self._live)

    def give_up_all(self) -> int:
        """The shim stops: every mirrored call still running is given up (and recorded as such)."""
        for mirror in list(self._live):
            mirror.give_up()
        return len(self._live)

    def unary(self, method: str) -> bool:
        """Whether the descriptors say `method` is unary-unary (cached)."""
        unary = self._unary.get(method)
        if unary is None:
            registry = self.router.registry if self.router is not None else None
            info = registry.method(method) if registry is not None else None
            unary = info is not None and info.unary
            if len(self._unary) < 10_000:
                self._unary[method] = unary
        return unary

    def release(self, mirror: Mirror) -> None:
        self._live.discard(mirror)
        if not self._live:
            self._idle.set()

    async def drain(self) -> None:
        """Wait until no mirrored call is in flight."""
        await self._idle.wait()

    # -- ids and keys out of step ------------------------------------------------------------

    def id_plan(self, method: str) -> _IdPlan:
        """What the id map has to do for calls of `method` (cached)."""
        plan = self._plans.get(method)
        if plan is not None:
            return plan
        plan = _NO_IDS
        ids, router = self.ids, self.router
        registry = router.registry if router is not None else None
        info = registry.method(method) if registry is not None else None
        if ids is not None and router is not None and info is not None:
            write = router.is_write(method)
            minted = ids.fields.minted_kinds(method, info.output_type)
            learnable = frozenset(k for k in minted if write or ids.fields.kinds[k].learn_from == "all")
            plan = _IdPlan(
                request=ids.fields.in_request(method, info.input_type),
                response=ids.fields.in_response(method, info.output_type),
                mints=bool(learnable),
                learnable=learnable,
                output_type=info.output_type,
            )
        if len(self._plans) < 10_000:
            self._plans[method] = plan
        return plan

    def keys_with_owners(self, method: str, first: message.Message, keys: tuple[str, ...]) -> tuple[str, ...]:
        """`keys` and the owner keys of the ids the request names.

        A named id whose owner is not known in memory makes the call unkeyed
        (ordered against every call): it cannot be placed more precisely.
        """
        assert self.ids is not None
        fields = self.ids.fields
        derived: list[str] = []
        for found in fields.find(method, "request", [first], None):
            if not fields.kinds[found.kind].owner_key:
                continue
            owner = self.ids.owner(self.client_side, found.kind, found.value)
            if owner is None:
                self.counters.inc("ids_owner_unknown", method)
                return ()
            if owner:
                derived.append(owner)
        return tuple(dict.fromkeys((*keys, *derived))) if derived else keys

    def _decoded(self, plan: _IdPlan, outcome: Outcome) -> list[message.Message]:
        assert self.router is not None
        assert self.router.registry is not None
        cls = self.router.registry.message_class(plan.output_type)
        out = []
        for raw in outcome.messages:
            msg = cls()
            try:
                msg.ParseFromString(raw)
            except message.DecodeError:
                continue
            out.append(msg)
        return out

    def _ids_in(self, mirror: Mirror, plan: _IdPlan, outcome: Outcome) -> list[Found]:
        """The ids in one side's answer to a mirrored call (decoded once per call and side)."""
        found = mirror.found.get(id(outcome))
        if found is None:
            assert self.ids is not None
            answers = self._decoded(plan, outcome)
            found = mirror.found[id(outcome)] = self.ids.fields.find(
                mirror.method, "response", answers, mirror._first
            )
        return found

    def _scopes(self, method: str, first: message.Message | None, kinds: Any) -> dict[str, str]:
        assert self.ids is not None
        fields = self.ids.fields
        if first is None:
            return {}
        return {k: fields.scope(method, first, k) for k in kinds if fields.kinds[k].scope == "query"}

    def expect_minted(self, mirror: Mirror, primary: Outcome) -> list[Pending]:
        """The ids the primary just minted, pending until the shadow's answer pairs them."""
        if self.ids is None:
            return []
        plan = self.id_plan(mirror.method)
        found = [f for f in self._ids_in(mirror, plan, primary) if f.minted and f.kind in plan.learnable]
        if not found:
            return []
        scopes = self._scopes(mirror.method, mirror._first, {f.kind for f in found})
        return self.ids.expect(self.client_side, found, scopes)

    async def translate(self, mirror: Mirror, payload: bytes) -> tuple[bytes, list[Found]]:
        """A request with its ids in the shadow's id space, or the ids that have no counterpart."""
        assert self.ids is not None
        assert self.router is not None
        msg = self.router.decode(mirror.method, payload)
        if msg is None:  # undecodable: sent as it is, the answers will tell
            return payload, []
        fields = self.ids.fields
        found = fields.find(mirror.method, "request", [msg], None)
        if not found:
            return payload, []
        scopes = self._scopes(mirror.method, msg, {f.kind for f in found})
        mapping: dict[tuple[str, str], str | None] = {}
        for f in found:
            if (f.kind, f.value) in mapping:
                continue
            scope = scopes.get(f.kind, "")
            counterpart = await self.ids.counterpart(self.client_side, f.kind, f.value, mirror._stop, scope)
            if (
                counterpart is None
                and self.ids.remembered(self.shadow_side, f.kind, f.value, scope) is not None
            ):
                counterpart = f.value  # already the shadow's own id (a client keeps ids from another mode)
            mapping[(f.kind, f.value)] = counterpart
        left = fields.rewrite(mirror.method, "request", [msg], lambda f: mapping.get((f.kind, f.value)))
        if left:
            self.counters.inc("ids_unmapped", mirror.method)
            return payload, left
        self.counters.inc("ids_translated", mirror.method)
        return msg.SerializeToString(), []

    def to_primary(self, method: str, payload: bytes) -> bytes:
        """A request for the primary, with the ids known to be the shadow's replaced by the primary's.

        Clients keep the ids they got in another mode (Bank's ids after BK became primary, and the
        other way round); each id the id map holds in memory goes to each side in that side's own
        id space. Ids not known stay as they are. Never waits: not for the shadow, not for the store.
        """
        if self.ids is None or self.router is None or not self.id_plan(method).request:
            return payload
        msg = self.router.decode(method, payload)
        if msg is None:
            return payload
        fields = self.ids.fields
        found = fields.find(method, "request", [msg], None)
        scopes = self._scopes(method, msg, {f.kind for f in found}) if found else {}
        mapping = {
            (f.kind, f.value): self.ids.remembered(self.shadow_side, f.kind, f.value, scopes.get(f.kind, ""))
            for f in found
        }
        if not any(mapping.values()):
            return payload
        fields.rewrite(method, "request", [msg], lambda f: mapping.get((f.kind, f.value)))
        self.counters.inc("ids_translated_for_primary", method)
        return msg.SerializeToString()

    def learn(self, mirror: Mirror, primary: Outcome, shadow: Outcome) -> None:
        """Learn the pairs of the ids this call minted, from the two answers."""
        ids = self.ids
        assert ids is not None
        plan = self.id_plan(mirror.method)
        if not plan.mints or shadow.local or primary.code != 0 or shadow.code != 0 or mirror.unmapped:
            return
        method, first = mirror.method, mirror._first
        bank, bk = (primary, shadow) if self.primary_is_bank else (shadow, primary)
        bank_found, bk_found = self._ids_in(mirror, plan, bank), self._ids_in(mirror, plan, bk)
        pairs = [p for p in pair_up(bank_found, bk_found) if p[0].kind in plan.learnable]
        if pairs:
            ids.learn(pairs, self._scopes(method, first, {p[0].kind for p in pairs}))

    async def known_pairs(
        self, mirror: Mirror, primary: Outcome, shadow: Outcome
    ) -> tuple[tuple[str, str, str], ...]:
        """(kind, Bank id, BK id) of the ids in BK's answer that pair with a Bank id, for the comparison."""
        ids = self.ids
        assert ids is not None
        plan = self.id_plan(mirror.method)
        if not plan.response or shadow.local:
            return ()
        bk = shadow if self.primary_is_bank else primary
        found = self._ids_in(mirror, plan, bk)
        if not found:
            return ()
        scopes = self._scopes(mirror.method, mirror._first, {f.kind for f in found})
        pairs: dict[tuple[str, str, str], None] = {}
        for f in found:
            bank_id = await ids.counterpart("bk", f.kind, f.value, None, scopes.get(f.kind, ""))
            if bank_id is not None:
                pairs[(f.kind, bank_id, f.value)] = None
        return tuple(pairs)

    def judge_write(self, mirror: Mirror, primary: Outcome | None, shadow: Outcome, cancelled: bool) -> None:
        """Mark the write's keys out of step unless both sides did the same with it."""
        if self.steps is None:
            return
        if cancelled:
            reason = "the client cancelled it: whether either side applied it is unknown"
        elif mirror.unmapped:
            if effect(primary) == REFUSED:
                return
            reason = "BK was not sent it: " + _unmapped_note(mirror.unmapped)
        else:
            reason = out_of_step_reason(primary, shadow, self.primary_is_bank)
        if reason:
            self.steps.mark(mirror.keys, mirror.method, reason)

    def unmirrored(self, method: str, first: bytes | None, primary: Outcome, why: str) -> None:
        """A write that was not mirrored: its keys are out of step unless the primary refused it."""
        if self.steps is None or effect(primary) == REFUSED:
            return
        keys: tuple[str, ...] = ()
        router = self.router
        if router is not None:
            msg = router.decode(method, first)
            keys = router.keys_of(method, msg)
            if msg is not None and self.id_plan(method).request:
                keys = self.keys_with_owners(method, msg, keys)
        said = "applied it" if primary.code == 0 else "may have applied it"
        self.steps.mark(keys, method, f"{why}; the primary {said}")


async def _again(task: asyncio.Task[Outcome | None] | None) -> Outcome | None:
    if task is None:
        return None
    try:
        return await task
    except asyncio.CancelledError:
        return None


class Noise:
    """Asks the primary the same read again, for a share of mirrored reads: what differs between its
    two answers is noise (Diffy's idea). Never for writes."""

    def __init__(self, channel: Channel, share: float, timeout: float, counters: Counters) -> None:
        self.channel = channel
        self.share = share
        self.timeout = timeout
        self.counters = counters
        self._rng = random.Random()

    def sampled(self) -> bool:
        return self.share > 0 and (self.share >= 1 or self._rng.random() < self.share)

    async def ask_again(self, method: str, metadata: tuple[Any, ...], requests: tuple[bytes, ...]) -> Outcome:
        """The primary's answer to the same requests, or a local outcome saying why there is none."""
        self.counters.inc("noise_calls", method)
        started = time.perf_counter()
        call = self.channel.stream_stream(method)(metadata=metadata, timeout=self.timeout)
        messages: list[bytes] = []
        try:
            for request in requests:
                if not await _grpc_compat.send(call, request):
                    break
            await _grpc_compat.close_sending(call)
            while True:
                try:
                    message = await call.read()
                except aio.AioRpcError:
                    break
                if message is aio.EOF:
                    break
                messages.append(message)
            return await snapshot(call, tuple(messages), time.perf_counter() - started)
        except asyncio.CancelledError:
            call.cancel()
            raise
        except Exception as exc:  # recorded, never raised into the mirror
            call.cancel()
            return Outcome(code=_INTERNAL, local=f"asking the primary again failed: {exc!r}")


@dataclass(frozen=True, slots=True)
class _IdPlan:
    request: bool = False  # requests can name ids: translate them, order by their owners
    response: bool = False  # answers can hold ids: compare them through the map
    mints: bool = False  # answers mint ids this call may learn
    learnable: frozenset[str] = frozenset()
    output_type: str = ""


_NO_IDS = _IdPlan()


def _where(found: Found) -> str:
    index, *rest = found.path
    text = "request" if index == 0 else f"request[{index}]"
    for part in rest:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _unmapped_note(unmapped: list[Found]) -> str:
    named = ", ".join(f"{f.kind} {f.value!r} ({_where(f)})" for f in unmapped[:3])
    more = f" and {len(unmapped) - 3} more" if len(unmapped) > 3 else ""
    return f"the request names {named}{more}, with no known counterpart on the shadow (unmapped-id)"
