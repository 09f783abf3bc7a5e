"""What passes between the client's call and the primary's, beside the answer messages: the requests
(`pump_requests`), the primary's headers (`relay_headers`) and its status (`relay_status`).

The primary's headers reach the client as soon as they arrive, with no entry in them too: a client may
wait for the headers before it sends anything (a bidi session that opens with them), as it can with the
primary directly. Only an answer that ended before any headers gets none (grpc.aio gives such a call empty
initial metadata once its status is in: a Trailers-Only answer), so the client gets the status alone, as
directly. The one case the shim cannot tell apart: headers sent empty right before the call ended with no
message reach the client with the status, as one Trailers-Only answer (the same metadata, status and
messages for every grpc client).
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc import aio

from shim import _grpc_compat
from shim._outcome import metadata_tuple
from shim.recording.recorder import Take
from shim.shadow.dispatcher import ShadowDispatcher, Unmirrored
from shim.shadow.mirror import Mirror


async def relay_headers(call: aio.Call, context: aio.ServicerContext[bytes, bytes]) -> Any:
    """The primary's initial metadata, once it arrived, sent on to the client (unless the call ended
    before any: Trailers-Only)."""
    initial = await call.initial_metadata()
    if initial or not call.done():
        await context.send_initial_metadata(metadata_tuple(initial))
    return initial


async def relay_status(
    context: aio.ServicerContext[Any, Any], code: grpc.StatusCode, details: str | None, trailing: Any
) -> None:
    if trailing:
        context.set_trailing_metadata(metadata_tuple(trailing))
    if code is not grpc.StatusCode.OK:
        context.set_code(code)
        context.set_details(details or "")


async def pump_requests(
    requests: Any,
    call: aio.StreamStreamCall[bytes, bytes],
    mirror: Mirror | None,
    unmirrored: Unmirrored,
    ids: ShadowDispatcher | None,
    method: str,
    take: Take | None = None,
) -> None:
    """Client requests to the primary (and the mirror, and the recording) until either side is done."""
    async for request in requests:
        if take is not None:
            take.request(request)
        if mirror is not None:
            mirror.feed(request)
        else:
            unmirrored.request(request)
        to_primary = request if ids is None else ids.to_primary(method, request)
        if not await _grpc_compat.send(call, to_primary):
            return
    if mirror is not None:
        mirror.close_requests()
    await _grpc_compat.close_sending(call)
