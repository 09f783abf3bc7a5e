"""Serving any method of any service: raw bytes in, the primary's answer out.

The generic handler never decodes a message. For a method the descriptors say
is unary-unary it uses grpc's unary path (one batch each way); every other
method, including methods the shim has no descriptor for, goes through the
stream-stream path, which on the wire serves all four call kinds.

What the client gets is what the primary sent: initial metadata, messages,
trailing metadata (with `grpc-status-details-bin`), status code and details.
The client's deadline and cancellation propagate to the primary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import grpc
from grpc import aio

from comparators import Exchange, Outcome
from shim._lanes import Lanes
from shim._outcome import adapter_error, cancelled_by_client, forwardable, metadata_tuple
from shim._relay import pump_requests, relay_headers, relay_status
from shim.adapters import Channel
from shim.exporter import Latencies
from shim.metrics import Counters
from shim.modes import InFlight, Modes
from shim.plan import MethodPlan, Plans
from shim.recording.recorder import Recorder, Take
from shim.routing import Router
from shim.shadow.dispatcher import ShadowDispatcher, Unmirrored
from shim.shadow.fate import ended_by_deadline
from shim.shadow.mirror import Mirror

CUT = "the shim's channel to the upstream was closed under this call (its certificates were reloaded)"


def _cut_under_us() -> bool:
    """A CancelledError this handler's task was not asked for: the primary's call was cancelled under it
    (its channel closed), not the client's call; the client gets UNAVAILABLE, never silence."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


class Route:
    """Where calls go in a mode: the primary, the mirroring (if any), and the id map of the primary's
    side (`ids`: translates the ids a client kept from another mode into the primary's)."""

    def __init__(
        self, primary: Channel, shadow: ShadowDispatcher | None, ids: ShadowDispatcher | None = None
    ) -> None:
        self.primary = primary
        self.shadow = shadow
        self.ids = ids if ids is not None else shadow


class ProxyHandler(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type stubs
    def __init__(
        self,
        routes: Mapping[str, Route],
        modes: Modes,
        plans: Plans,
        counters: Counters,
        router: Router | None = None,
        latencies: Latencies | None = None,
    ) -> None:
        self.latencies = latencies if latencies is not None else Latencies()
        self.routes = routes  # by mode
        self.modes = modes
        self._plans = plans
        self._counters = counters
        self._router = router if router is not None else Router(None, {})
        self.primary_lanes = Lanes()  # strict ordering: the primary's writes, per key
        self.recorder: Recorder | None = None  # with [record] path: each call, as the primary answered it
        # the described methods' handlers, made once; a made-up method's are made for each call, never kept
        self._handlers = {plan.method: self._make(plan) for plan in plans}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        handler = self._handlers.get(method)
        return handler if handler is not None else self._make(self._plans.of(method))

    def _make(self, plan: MethodPlan) -> grpc.RpcMethodHandler:
        if plan.kind.unary:
            call = _UnaryCall(self, plan.method, plan.write, plan.strict)
            return grpc.unary_unary_rpc_method_handler(call.handle)
        return grpc.stream_stream_rpc_method_handler(_StreamCall(self, plan).handle)

    def take(self, method: str, metadata: tuple[Any, ...], is_write: bool) -> Take | None:
        """The call's recording (None when nothing is recorded)."""
        if self.recorder is None:
            return None
        answered_by = "bk" if self.modes.of(method) in ("bk-primary", "bk") else "bank"
        return self.recorder.begin(method, metadata, is_write, answered_by)

    def route_of(self, method: str) -> Route:
        """Where a call of `method` goes, in its mode now."""
        return self.routes[self.modes.of(method)]

    def over(self, call: InFlight) -> None:
        """A call's primary part is over: once its mirror is too, a switch of modes may proceed."""
        mirror = call.mirror
        if mirror is None or mirror.task.done():
            self.modes.leave(call)
        else:
            mirror.task.add_done_callback(lambda _: self.modes.leave(call))

    def mirror(
        self, route: Route, call: InFlight, metadata: tuple[Any, ...], timeout: float | None, is_write: bool
    ) -> tuple[Mirror | None, str]:
        """A mirror for this call (kept in `call`); or why a call that should have had one has none ("" when
        none is due)."""
        self._counters.inc("calls", call.method)
        dispatcher = route.shadow
        mirror, refused = (
            dispatcher.start(call.method, metadata, timeout, is_write) if dispatcher else (None, "")
        )
        call.mirror, call.decided = mirror, True
        return mirror, refused

    def record_unmirrored(
        self,
        route: Route,
        method: str,
        primary: Outcome,
        is_write: bool,
        started_at: float,
        why: str,
        first: bytes | Unmirrored | None,
        metadata: tuple[Any, ...] = (),
    ) -> None:
        dispatcher = route.shadow
        if dispatcher is not None:
            # off the answer's path: it may decode the request (after the stream's later messages' keys)
            asyncio.get_running_loop().call_soon(
                submit_unmirrored, dispatcher, method, primary, is_write, started_at, why, first, metadata
            )

    def keys(self, method: str, request: bytes) -> tuple[str, ...]:
        return self._router.keys(method, request)


def submit_unmirrored(
    dispatcher: ShadowDispatcher,
    method: str,
    primary: Outcome,
    is_write: bool,
    started_at: float,
    why: str,
    first: bytes | Unmirrored | None,
    metadata: tuple[Any, ...],
) -> None:
    """Record a call due a mirror that had none (a write's keys go out of step, every message's; a read only
    if sampled)."""
    if dispatcher.unimplemented(method, primary):
        return
    if is_write:
        dispatcher.unmirrored(method, first, primary, why)
    first = first.first if isinstance(first, Unmirrored) else first
    if not is_write and dispatcher.not_sampled(method, dispatcher.keys_of(method, first)):
        return
    dispatcher.shared.submit(
        Exchange(
            method=method,
            requests=(),
            primary=replace(primary, messages=()),  # not compared: none of it is kept
            shadow=None,
            primary_is_bank=dispatcher.shared.primary_is_bank,
            is_write=is_write,
            routing_key=",".join(dispatcher.keys_of(method, first)),
            started_at=started_at,
            correlation_id=dispatcher.correlation_id(metadata),
            note=why,
        ),
        None,
    )


class _UnaryCall:
    """unary-unary: one request, one answer."""

    def __init__(self, proxy: ProxyHandler, method: str, is_write: bool, strict: bool = False) -> None:
        self._proxy = proxy
        self._method = method
        self._is_write = is_write
        self._strict = strict
        self._callables: dict[Any, Any] = {}

    def _send(self, channel: Any) -> Any:
        """The method's callable on `channel`, made once per channel (the primary changes with the mode,
        and a certificate reload makes new channels)."""
        send = self._callables.get(channel)
        if send is None:
            if len(self._callables) > 8:
                self._callables.clear()
            send = self._callables[channel] = channel.unary_unary(self._method)
        return send

    async def handle(self, request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes | None:
        proxy = self._proxy
        call = await proxy.modes.enter(self._method)
        try:
            route = proxy.route_of(self._method)
            if not self._strict:
                return await self._forward(route, request, context, call)
            # strict ordering: this write reaches the primary after the earlier writes on its keys
            ticket = proxy.primary_lanes.enter(proxy.keys(self._method, request), write=True)
            try:
                await ticket.ready()
                return await self._forward(route, request, context, call)
            finally:
                ticket.release()
        finally:
            proxy.over(call)

    async def _forward(
        self, route: Route, request: bytes, context: aio.ServicerContext[bytes, bytes], in_flight: InFlight
    ) -> bytes | None:
        proxy, method = self._proxy, self._method
        metadata = forwardable(context.invocation_metadata())
        timeout = context.time_remaining()
        started_at = time.time()
        started = time.perf_counter()
        to_primary = request if route.ids is None else route.ids.to_primary(method, request)
        call = self._send(route.primary)(to_primary, metadata=metadata, timeout=timeout)
        take = proxy.take(method, metadata, self._is_write)
        if take is not None:
            take.request(request)
        mirror, refused = proxy.mirror(route, in_flight, metadata, timeout, self._is_write)
        if mirror is not None:
            mirror.feed(request)
            mirror.close_requests()
        try:
            try:
                response: bytes | None = await call
                cut = False
            except aio.AioRpcError:
                response, cut = None, False
            except asyncio.CancelledError:
                if not _cut_under_us():
                    raise
                response, cut = None, True
            initial = await call.initial_metadata()
            code = grpc.StatusCode.UNAVAILABLE if cut else await call.code()
            details = CUT if cut else await call.details()
            trailing = await call.trailing_metadata()
        except BaseException:  # cancelled by the client, or the client went away mid-answer
            call.cancel()
            if take is not None:
                take.abandon()
            if mirror is not None:
                mirror.abandon(cancelled_by_client())
            raise
        latency = time.perf_counter() - started
        proxy.latencies.observe(method, latency)
        # the primary's answer is known first to the recording and the mirror (which never wait): a client
        # that cancels while its headers are sent (the one await left) cannot leave the mirror untold
        if take is not None:
            if response is not None:
                take.response(response)
            _settle(take, code, details, initial, trailing, latency, context.time_remaining())
        if mirror is not None or refused:
            outcome = Outcome(
                code=code.value[0],
                details=details or "",
                initial_metadata=metadata_tuple(initial),
                trailing_metadata=metadata_tuple(trailing),
                messages=(response,) if response is not None else (),
                latency=latency,
                adapter_error=adapter_error(call),
            )
            if mirror is not None:
                mirror.primary_done(outcome, context.time_remaining())
            else:
                proxy.record_unmirrored(
                    route, method, outcome, self._is_write, started_at, refused, request, metadata
                )
        if initial:
            await context.send_initial_metadata(metadata_tuple(initial))
        await relay_status(context, code, details, trailing)
        return response if code is grpc.StatusCode.OK else None


def _settle(
    take: Take, code: Any, details: Any, initial: Any, trailing: Any, latency: float, left: Any
) -> None:
    """The primary's answer into the recording; or, when it is the DEADLINE_EXCEEDED of a client's deadline
    that had passed (`left`: its seconds left), nothing to replay: left out, as one the client gave up."""
    if ended_by_deadline(Outcome(code=code.value[0]), left) is not None:
        take.abandon()
        return
    take.finish(code.value[0], details or "", metadata_tuple(initial), metadata_tuple(trailing), latency)


class _StreamCall:
    """Any call kind, as a stream of requests and a stream of answers."""

    def __init__(self, proxy: ProxyHandler, plan: MethodPlan) -> None:
        self._proxy = proxy
        self._method = plan.method
        self._is_write = plan.write
        self._stream = plan.kind.described and not plan.kind.unary  # else perhaps a unary call, not told

    async def handle(self, requests: Any, context: aio.ServicerContext[bytes, bytes]) -> None:
        proxy = self._proxy
        call = await proxy.modes.enter(self._method, self._stream)
        try:
            await self._forward(proxy.route_of(self._method), requests, context, call)
        finally:
            proxy.over(call)

    async def _forward(
        self, route: Route, requests: Any, context: aio.ServicerContext[bytes, bytes], in_flight: InFlight
    ) -> None:
        proxy, method = self._proxy, self._method
        metadata = forwardable(context.invocation_metadata())
        timeout = context.time_remaining()
        started_at = time.time()
        started = time.perf_counter()
        call = route.primary.stream_stream(method)(metadata=metadata, timeout=timeout)
        take = proxy.take(method, metadata, self._is_write)
        mirror, refused = proxy.mirror(route, in_flight, metadata, timeout, self._is_write)
        unmirrored = Unmirrored(route.shadow, method, self._is_write)  # what a call not mirrored names
        pump = asyncio.get_running_loop().create_task(
            pump_requests(requests, call, mirror, unmirrored, route.ids, method, take),
            name=f"request pump {method}",
        )
        answers: list[bytes] = []
        keep = mirror is not None
        initial: Any = None
        cut = False
        try:
            try:
                initial = await relay_headers(call, context)  # at once, even empty: the client may wait
                while True:
                    try:
                        answer = await call.read()
                    except aio.AioRpcError:
                        break
                    if answer is aio.EOF:
                        break
                    if take is not None:
                        take.response(answer)
                    if mirror is None:
                        unmirrored.answers += 1
                    else:
                        mirror.primary_message(answer)
                        keep = keep and mirror.capture.take(answer)
                        if keep:
                            answers.append(answer)
                    await context.write(answer)
            except asyncio.CancelledError:
                if not _cut_under_us():
                    raise
                cut = True
            code = grpc.StatusCode.UNAVAILABLE if cut else await call.code()
            details = CUT if cut else await call.details()
            trailing = await call.trailing_metadata()
        except BaseException:  # cancelled by the client, or the client went away mid-answer
            call.cancel()
            if take is not None:
                take.abandon()
            if mirror is not None:  # with the answers so far: a read's stream is compared on them
                mirror.abandon(cancelled_by_client(initial, tuple(answers)))
            raise
        finally:
            if not pump.done():
                pump.cancel()
        latency = time.perf_counter() - started
        proxy.latencies.observe(method, latency)
        await relay_status(context, code, details, trailing)
        if take is not None:
            _settle(take, code, details, initial, trailing, latency, context.time_remaining())
        if mirror is not None or refused:
            outcome = Outcome(
                code=code.value[0],
                details=details or "",
                initial_metadata=metadata_tuple(initial),
                trailing_metadata=metadata_tuple(trailing),
                messages=tuple(answers),
                latency=latency,
                adapter_error=adapter_error(call),
            )
            if mirror is not None:
                mirror.primary_done(outcome, context.time_remaining())
            else:
                proxy.record_unmirrored(
                    route,
                    method,
                    outcome,
                    self._is_write,
                    started_at,
                    refused,
                    unmirrored,
                    metadata,
                )
