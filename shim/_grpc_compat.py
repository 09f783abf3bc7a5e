"""Where grpcio's defaults would change what the clients get: client-stream writes that never hide the
upstream's real status (`send`), servers that take up every call (`TAKE_EVERY_CALL`), and clients'
keepalive pings (`ANY_PINGS`).

grpcio's asyncio client has a race (grpc/grpc#36066): when a server finishes a
call before reading the whole request stream (an early UNIMPLEMENTED, an abort,
an early answer), a write still in flight fails, and `StreamStreamCall.write`
then *overwrites* the status the server sent with `INTERNAL: Internal error
from Core`. A proxy that writes with the public API would pass that INTERNAL on
to its client instead of the server's status.

`send` writes through the call's Core object directly, without the status
overwrite: a failed write only means "the upstream has finished", and the real
status arrives by itself through the call's status watcher. When a future
grpcio drops the private attribute, `send` falls back to the public API (and
the race comes back, which `tests/shim/test_early_status.py` would show).
"""

from __future__ import annotations

from typing import Any

from grpc import aio

# a server of the shim takes up every call that arrives, however many at once: beyond grpc's defaults (1,000
# to 3,000 calls not yet taken up) grpc would hold back or cancel the rest itself, unseen by the shim, where
# the primary alone might have taken them
TAKE_EVERY_CALL = [
    ("grpc.server.max_pending_requests", 1_000_000),
    ("grpc.server.max_pending_requests_hard_limit", 1_000_000),
]
# the shim's servers and channels take a call's (or an answer's) headers up to 8 MiB in all, as Envoy does
# (`envoy_config.HEADERS_KB`): grpc's default, 8 KiB (16 KiB at most), would refuse calls and answers that
# the primary and its clients take
LARGE_METADATA = [("grpc.max_metadata_size", 8 << 20), ("grpc.absolute_max_metadata_size", 8 << 20)]
# the shim's server lets clients send keepalive pings as often as they like, as Envoy does: grpc's default
# (one ping in 5 minutes without data, two strikes) closes the connection of a client pinging more often,
# calls in flight on it included ("Too many pings"), where the primary may allow it
ANY_PINGS = [
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 10),
    ("grpc.keepalive_permit_without_calls", 1),
]

try:
    from grpc._cython.cygrpc import InternalError as _CoreInternalError
except ImportError:  # pragma: no cover - grpcio without the Cython core
    _CoreInternalError = RuntimeError


async def send(call: aio.StreamStreamCall[Any, Any], payload: bytes) -> bool:
    """Write one raw message; False when the upstream has already finished the call."""
    if call.done():
        return False
    core = getattr(call, "_cython_call", None)
    if core is None:  # pragma: no cover - future grpcio
        try:
            await call.write(payload)
        except (aio.AioRpcError, Exception):
            return False
        return True
    try:
        await call.wait_for_connection()
    except aio.AioRpcError:
        return False
    if call.done():
        return False
    try:
        await core.send_serialized_message(payload)
    except _CoreInternalError:
        return False
    return True


async def close_sending(call: aio.StreamStreamCall[Any, Any]) -> None:
    """Half-close the request stream; a no-op when the upstream has finished."""
    if call.done():
        return
    try:
        await call.done_writing()
    except (aio.AioRpcError, _CoreInternalError):
        return
