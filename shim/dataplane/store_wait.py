"""A comparison plane started again while its store is out: it waits for the store, and answers the health
checks meanwhile.

The first plane of `shim serve` that cannot open its store stops with a start error: a store misnamed or
refused is best said at once. A plane the supervisor starts again (after a crash, an out-of-memory kill)
finds Envoy serving the clients, and a store that opened before: one it cannot open now is out (PostgreSQL
restarted, unreachable, blackholed). Stopping then would only be started again, and again, each time in
vain; and since the health checks go through Envoy to the plane, they would fail all along, though Envoy
carries the clients' calls: a liveness probe would restart the pod, and the pod started again could not
start either. So the plane waits for its store, trying again every `RETRY_EVERY` seconds, and serves the
shim's own socket meanwhile (`stand_in`): the overall health `SERVING` (the clients are served), and every
other call it gets (a named service's health, the methods that take Python on their primary path)
`UNAVAILABLE`, never sent on, as while no plane runs. Once the store opens, the plane starts as usual;
the copies Envoy could not hand over meanwhile are then recorded as calls the shim did not see.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError
from grpc import aio
from grpc_health.v1 import health_pb2

from shim.store import Store, StoreError

RETRY_EVERY = 2.0  # seconds between two tries of the store (each may take its connect timeout too)
WAITING = "the shim's comparison plane waits for its store: the call was not sent on"
_HEALTH = "/grpc.health.v1.Health/"
_SERVING = bytes(
    health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()
)
_log = structlog.get_logger("shim.dataplane")


async def until_the_store_opens(url: str, listen: str) -> None:
    """Return once the store at `url` opens; until then, answer on `listen` (the shim's own socket) as
    `StandIn` says, from the first try on (a store that does not answer takes its connect timeout to
    fail). A signal's cancellation ends the wait, and the stand-in with it."""
    server, standing = aio.server(), True
    server.add_generic_rpc_handlers([StandIn()])
    try:
        server.add_insecure_port(listen)
        await server.start()
    except RuntimeError as exc:  # the socket cannot be bound: the wait goes on without it
        _log.warning("the comparison plane cannot answer the health checks while it starts", error=str(exc))
        standing = False
    waited = asyncio.get_running_loop().time()
    try:
        error = await _opening(url)
        if not error:
            return
        _log.error(
            "the comparison plane started again cannot open its store: it waits for it, answering the"
            " health checks; Envoy serves the clients on",
            error=error,
            every_s=RETRY_EVERY,
        )
        while error:
            await asyncio.sleep(RETRY_EVERY)
            error = await _opening(url)
    finally:
        if standing:
            await server.stop(0)  # a health Watch held open ends too
    waited = asyncio.get_running_loop().time() - waited
    _log.warning("the store opens again: the comparison plane starts", waited_s=round(waited, 1))


async def _opening(url: str) -> str:
    """Why the store at `url` cannot be opened ("": it opens, and is closed again)."""
    try:
        store = Store.open(url)
        await store.start()
    except StoreError as exc:
        return str(exc)
    await store.close()
    return ""


class StandIn(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type stubs
    """The shim's own server while the plane waits: the overall health SERVING, anything else UNAVAILABLE."""

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        method: str = handler_call_details.method
        if method == _HEALTH + "Check":
            return grpc.unary_unary_rpc_method_handler(_check)
        if method == _HEALTH + "Watch":
            return grpc.unary_stream_rpc_method_handler(_watch)
        return grpc.stream_stream_rpc_method_handler(_refuse)


def _overall(request: bytes) -> bool:
    """Whether a health request asks for the overall health (service "")."""
    try:
        return str(health_pb2.HealthCheckRequest.FromString(request).service) == ""
    except DecodeError:
        return False


async def _check(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> bytes:
    if not _overall(request):
        await context.abort(grpc.StatusCode.UNAVAILABLE, WAITING)
    return _SERVING


async def _watch(request: bytes, context: aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
    if not _overall(request):
        await context.abort(grpc.StatusCode.UNAVAILABLE, WAITING)
    yield _SERVING
    await asyncio.Event().wait()  # open until the plane starts (or stops)


async def _refuse(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> None:
    await context.abort(grpc.StatusCode.UNAVAILABLE, WAITING)
