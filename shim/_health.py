"""gRPC health checking (`grpc.health.v1.Health`) as the clients get it through the shim.

The overall check (service "") is the shim's own: SERVING while it runs, NOT_SERVING from the moment it
starts to drain. A check naming a service (`svc.v1.Accounts`: what a client with client-side health
checking asks) is the primary's: forwarded to the primary of the mode in force, as the call would be,
never mirrored nor compared, so the client gets what it would get directly (SERVING, NOT_SERVING, or
NOT_FOUND for a service the primary does not know). While the shim drains, no service is SERVING through
it: a Check naming one gets NOT_SERVING, and a Watch gets NOT_SERVING and nothing more of the primary's.
Any other method of the service goes to the primary alone too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio
from grpc_health.v1 import health, health_pb2

SERVICE = "/grpc.health.v1.Health/"
_CHECK, _WATCH = SERVICE + "Check", SERVICE + "Watch"
_NOT_SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)


def _serialized(message: Any) -> bytes:
    """The shim's own answers are messages; the primary's arrive, and leave, as bytes."""
    return message if isinstance(message, bytes) else bytes(message.SerializeToString())


def _service_named(request: bytes | None) -> str | None:
    """The service a check names ("": the overall health); None when the request is none or not one."""
    if request is None:
        return None
    try:
        return str(health_pb2.HealthCheckRequest.FromString(request).service)
    except DecodeError:
        return None


async def _again(first: bytes | None, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first is not None:
        yield first
    async for request in rest:
        yield request


class Health(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type stubs
    """Serves `grpc.health.v1.Health`: the overall health from `own`, a named service's from the primary
    (`primary`: the handler forwarding a call to the primary of its mode alone)."""

    def __init__(self, own: health.aio.HealthServicer, primary: grpc.GenericRpcHandler) -> None:
        self._own = own
        self._primary = primary
        self._draining = asyncio.Event()

    async def drain(self) -> None:
        """From now on nothing is SERVING: the overall health, and a named service's watched or checked."""
        self._draining.set()
        await self._own.enter_graceful_shutdown()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method: str = handler_call_details.method
        if not method.startswith(SERVICE):
            return None
        if method not in (_CHECK, _WATCH):
            return self._primary.service(handler_call_details)
        forward = self._primary.service(handler_call_details).stream_stream
        watch = method == _WATCH

        async def handle(requests: AsyncIterator[bytes], context: aio.ServicerContext[Any, Any]) -> None:
            await self._answer(watch, forward, requests, context)

        # a stream either way, as the primary's answer is relayed (on the wire it serves a unary call too)
        return grpc.stream_stream_rpc_method_handler(handle, response_serializer=_serialized)

    async def _answer(
        self,
        watch: bool,
        forward: Any,
        requests: AsyncIterator[bytes],
        context: aio.ServicerContext[Any, Any],
    ) -> None:
        rest = aiter(requests)
        first = await anext(rest, None)
        service = _service_named(first)
        if service == "":  # the shim's own
            request = health_pb2.HealthCheckRequest()
            if watch:
                await self._own.Watch(request, context)
            else:
                await context.write(await self._own.Check(request, context))
            return
        if not self._draining.is_set():
            forwarding = asyncio.get_running_loop().create_task(
                forward(_again(first, rest), context), name="health check forwarded to the primary"
            )
            draining = asyncio.get_running_loop().create_task(self._draining.wait(), name="health drain")
            try:
                await asyncio.wait({forwarding, draining}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                draining.cancel()
                if not forwarding.done():
                    forwarding.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await forwarding
            if not forwarding.cancelled():
                forwarding.result()
                return
        await context.write(_NOT_SERVING)  # the shim drains: the primary's SERVING would be no longer true
        if watch:  # open until the shim stops, as a watch of the overall health
            await asyncio.Event().wait()
