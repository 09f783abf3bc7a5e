"""A call's copy sent to the comparison plane's processor as Envoy sends it, part by part, when a test says:
so that two calls' copies can reach the plane in an order a busy Envoy may give them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpc import aio

from shim._proto.shim.v1 import ext_proc_pb2 as pb
from shim.dataplane.envoy_config import METHOD_HEADER, ROUTE_HEADER
from shim.dataplane.processor import SERVICE


class EnvoyCopy:
    """One call's copy sent to the comparison plane's processor as Envoy sends it, part by part, when the test
    says: so that two calls' copies can reach the plane in an order a busy Envoy may give them."""

    def __init__(self, channel: aio.Channel, method: str) -> None:
        self._parts: asyncio.Queue[pb.ProcessingRequest | None] = asyncio.Queue()
        process = channel.stream_stream(
            f"/{SERVICE}/Process",
            request_serializer=pb.ProcessingRequest.SerializeToString,
            response_deserializer=pb.ProcessingResponse.FromString,
        )
        self._method = method
        self._call = process(
            self._send(), metadata=((ROUTE_HEADER, "bk"), (METHOD_HEADER, method)), timeout=30
        )

    async def _send(self) -> AsyncIterator[pb.ProcessingRequest]:
        while (part := await self._parts.get()) is not None:
            yield part

    def request(self, *payloads: bytes) -> None:
        """The request's headers and its messages (several: a stream of requests), then its end."""
        headers = _header_map((":path", self._method), ("content-type", "application/grpc"))
        self._parts.put_nowait(pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=headers)))
        body = b"".join(_framed(payload) for payload in payloads)
        self._parts.put_nowait(pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)))

    def begin(self, payload: bytes, sent: int) -> bytes:
        """The request's headers and the first `sent` bytes of its one message (the rest still on its way, as
        a large request under flow control); the rest, for `rest`."""
        headers = _header_map((":path", self._method), ("content-type", "application/grpc"))
        self._parts.put_nowait(pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=headers)))
        body = _framed(payload)
        self._parts.put_nowait(pb.ProcessingRequest(request_body=pb.HttpBody(body=body[:sent])))
        return body[sent:]

    def rest(self, rest: bytes) -> None:
        """The rest of the request `begin` began, and its end."""
        self._parts.put_nowait(pb.ProcessingRequest(request_body=pb.HttpBody(body=rest, end_of_stream=True)))

    def answer(self, payload: bytes) -> None:
        headers = _header_map((":status", "200"), ("content-type", "application/grpc"))
        self._parts.put_nowait(pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=headers)))
        self._parts.put_nowait(pb.ProcessingRequest(response_body=pb.HttpBody(body=_framed(payload))))
        trailers = pb.HttpTrailers(trailers=_header_map(("grpc-status", "0")))
        self._parts.put_nowait(pb.ProcessingRequest(response_trailers=trailers))
        self._parts.put_nowait(None)

    async def over(self) -> None:
        assert [
            answer async for answer in self._call
        ] == []  # observability mode: the processor answers nothing


def _header_map(*pairs: tuple[str, str]) -> pb.HeaderMap:
    return pb.HeaderMap(headers=[pb.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs])


def _framed(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload
