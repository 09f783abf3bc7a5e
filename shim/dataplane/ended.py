"""Calls whose client went away before they ended, from Envoy's record of them.

The copy of a call whose client cancelled it, or whose deadline passed, or whose connection closed, before
the primary's status never gets that status: Envoy stops sending it, and closes its stream only once it has
held it `deferred_close_timeout` (the shadow's timeout). Until then the plane could not tell such a call from
a slow one, and a write held its keys' place all that time, the calls after it on its keys waiting behind it.

So Envoy also logs each call whose downstream reset its stream or closed its connection (`DR`, `DC`) to the
plane's gRPC access log service (`envoy_config.ended_log`), at once. A record names the call by its start,
its client's address and its path, which the copy carries too (`STARTED_HEADER`, `PEER_HEADER`, `:path`);
the copy is then ended as one Envoy ended (`_Copy.lost`), a short `GRACE` later: what Envoy had sent on the
copy's stream before the call ended (a watch's answers, say) is read first. A record that comes before its
copy's request headers waits for them, for up to `KEPT` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from shim._proto.shim.v1 import access_log_pb2 as pb

SERVICE = "envoy.service.accesslog.v3.AccessLogService"
GRACE = 0.2  # seconds a copy is given, after its call's record, for what Envoy had sent on its stream
KEPT = 60.0  # seconds a record whose copy has not come is kept for it
MOST_KEPT = 10_000  # records kept for copies not come yet, at most

Key = tuple[str, str, str]  # a call as both name it: its start ("seconds.micros"), its client's address, path


def _neither() -> None:
    """What a record of a call two copies being received both name ends: neither."""


def key_of(entry: pb.HTTPAccessLogEntry) -> Key:
    """The call an access log record names, as its copy names it."""
    common = entry.common_properties
    start = common.start_time
    socket = common.downstream_remote_address.socket_address
    host = f"[{socket.address}]" if ":" in socket.address else socket.address
    return f"{start.seconds}.{start.nanos // 1000:06d}", f"{host}:{socket.port_value}", entry.request.path


class EndedCalls:
    """The copies being received, by the call they are of, and the calls Envoy said ended early."""

    def __init__(self) -> None:
        self._open: dict[Key, Callable[[], None]] = {}  # each copy being received: what ends it
        self._early: dict[Key, float] = {}  # calls recorded before their copy came: when (monotonic)
        self.recorded = 0  # records received since start

    def opened(self, key: Key, end: Callable[[], None]) -> None:
        """A copy's request headers are in: `end` ends it, should its call have ended early. Two copies being
        received that name the same call (two calls of one connection, one method, that started in the same
        microsecond) are ended by no record: which one it names is not known, and ending the other would
        record a call that may yet be answered as lost. Envoy closes theirs as before."""
        if key in self._open:
            self._open[key] = _neither
        elif self._early.pop(key, None) is not None:
            asyncio.get_running_loop().call_later(GRACE, end)
        else:
            self._open[key] = end

    def closed(self, key: Key) -> None:
        """The copy is done with."""
        self._open.pop(key, None)

    def ended(self, key: Key) -> None:
        """Envoy's record: the call `key` ended before its primary's status."""
        self.recorded += 1
        end = self._open.pop(key, None)
        if end is not None:
            asyncio.get_running_loop().call_later(GRACE, end)
            return
        now = time.monotonic()
        self._early[key] = now
        while self._early and (len(self._early) > MOST_KEPT or next(iter(self._early.values())) < now - KEPT):
            del self._early[next(iter(self._early))]

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "StreamAccessLogs": grpc.stream_unary_rpc_method_handler(
                    self._stream,
                    request_deserializer=pb.StreamAccessLogsMessage.FromString,
                    response_serializer=pb.StreamAccessLogsResponse.SerializeToString,
                )
            },
        )

    async def _stream(
        self, messages: AsyncIterator[pb.StreamAccessLogsMessage], context: Any
    ) -> pb.StreamAccessLogsResponse:
        async for message in messages:
            for entry in message.http_logs.log_entry:
                self.ended(key_of(entry))
        return pb.StreamAccessLogsResponse()
