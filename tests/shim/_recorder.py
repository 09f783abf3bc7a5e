"""Recordings for the replay tests, made without the shim: a recording proxy in front of a real Bank.

`RecordingProxy` serves every method of a registry on a free port, forwards each call to Bank as bytes
(naming it "req-SEQ" in the correlation header when the client did not), answers the client with
Bank's answer, and keeps the call; `write` then writes them with the recording format's own writer,
keys and correlation ids computed as the shim's config computes them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from comparators import DescriptorRegistry
from shim.config import Config
from shim.parts import Parts
from shim.recording.format import Header, RecordedCall, RecordingWriter, fingerprint

Metadata = tuple[tuple[str, str | bytes], ...]


def _identity(b: bytes) -> bytes:
    return b


def header_of(registry: DescriptorRegistry, origin: str = "empty", created_at: float = 0.0) -> Header:
    return Header(
        created_at=created_at or time.time(),
        methods={m: fingerprint(registry, m) for m in registry.methods},
        descriptors=registry.descriptor_set().SerializeToString(),
        mode="bank",
        origin=origin,
    )


class RecordingProxy:
    """A proxy in front of Bank that keeps every call (requests, Bank's answers) for a recording."""

    def __init__(self, bank: str, config: Config, registry: DescriptorRegistry) -> None:
        self.bank = bank
        self.registry = registry
        self.parts = Parts(config, registry)
        self.correlation_header = config.store.correlation_header
        self.calls: list[RecordedCall] = []
        self._seq = 0
        self._channel = aio.insecure_channel(bank)
        self._server = aio.server()
        self._server.add_generic_rpc_handlers([_Handler(self)])
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    async def start(self) -> RecordingProxy:
        await self._server.start()
        return self

    async def stop(self) -> None:
        await self._server.stop(None)
        await self._channel.close()

    def arrived(self) -> tuple[int, float]:
        seq, self._seq = self._seq, self._seq + 1
        return seq, time.time()

    def keep(
        self,
        seq: int,
        at: float,
        method: str,
        metadata: Metadata,
        requests: list[bytes],
        responses: list[bytes],
        code: int,
        details: str,
        trailing: Metadata,
        initial: Metadata,
    ) -> None:
        first = requests[0] if requests else None
        correlation = next((str(v) for k, v in metadata if k == self.correlation_header), "")
        self.calls.append(
            RecordedCall(
                seq=seq,
                at=at,
                method=method,
                is_write=self.parts.plans.of(method).write,
                keys=self.parts.router.keys(method, first),
                correlation_id=correlation,
                metadata=metadata,
                requests=tuple(requests),
                responses=tuple(responses),
                code=code,
                details=details,
                initial_metadata=initial,
                trailing_metadata=trailing,
                latency=time.time() - at,
            )
        )

    def write(self, path: Path, origin: str = "empty", lost: int = 0, end: bool = True) -> Path:
        """The calls kept, as a recording at `path` (its calls in the order they arrived)."""
        calls = sorted(self.calls, key=lambda c: c.seq)
        assert [c.seq for c in calls] == list(range(len(calls))), "a call has not ended"
        writer = RecordingWriter(path, header_of(self.registry, origin, calls[0].at if calls else 0.0))
        for call in calls:
            writer.add(call)
        if not end:
            writer.abandon()
            return writer.path.with_name(writer.path.name + ".partial")
        return writer.end("stopped", lost=lost)


def _metadata(context: aio.ServicerContext[Any, Any]) -> Metadata:
    return tuple((k, v) for k, v in (context.invocation_metadata() or ()) if not k.startswith(":"))


def _pairs(metadata: Any) -> Metadata:
    return tuple((k, v) for k, v in (metadata or ()))


class _Handler(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no type stubs
    def __init__(self, proxy: RecordingProxy) -> None:
        self.proxy = proxy

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        proxy = self.proxy
        info = proxy.registry.method(details.method)
        if info is None:
            return None
        method = details.method
        channel = proxy._channel
        streaming_in, streaming_out = info.client_streaming, info.server_streaming

        async def forward(
            requests: list[bytes],
            context: aio.ServicerContext[Any, Any],
            emit: Callable[[bytes], None] | None,
        ) -> list[bytes]:
            seq, at = proxy.arrived()
            metadata = _metadata(context)
            header = proxy.correlation_header
            if header and not any(k == header for k, _ in metadata):  # as if the client had named it
                metadata = (*metadata, (header, f"req-{seq}"))
            answers: list[bytes] = []
            kind = {
                (False, False): channel.unary_unary,
                (True, False): channel.stream_unary,
                (False, True): channel.unary_stream,
                (True, True): channel.stream_stream,
            }[streaming_in, streaming_out]
            stub = kind(method, request_serializer=_identity, response_deserializer=_identity)
            call = stub(iter(requests) if streaming_in else requests[0], metadata=metadata)
            code, text, trailing, initial = 0, "", (), ()
            try:
                if streaming_out:
                    async for answer in call:
                        answers.append(answer)
                else:
                    answers.append(await call)
            except aio.AioRpcError:
                pass
            code = (await call.code()).value[0]
            text = await call.details() or ""
            trailing = _pairs(await call.trailing_metadata())
            initial = _pairs(await call.initial_metadata())
            proxy.keep(seq, at, method, metadata, requests, answers, code, text, trailing, initial)
            if code != 0:
                await context.abort(_STATUS[code], text, trailing)
            return answers

        async def unary(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
            return (await forward([request], context, None))[0]

        async def client_stream(
            requests: AsyncIterator[bytes], context: aio.ServicerContext[Any, Any]
        ) -> bytes:
            return (await forward([r async for r in requests], context, None))[0]

        async def server_stream(
            request: bytes, context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            for answer in await forward([request], context, None):
                yield answer

        async def bidi(
            requests: AsyncIterator[bytes], context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            for answer in await forward([r async for r in requests], context, None):
                yield answer

        handler = {
            (False, False): grpc.unary_unary_rpc_method_handler(unary),
            (True, False): grpc.stream_unary_rpc_method_handler(client_stream),
            (False, True): grpc.unary_stream_rpc_method_handler(server_stream),
            (True, True): grpc.stream_stream_rpc_method_handler(bidi),
        }[streaming_in, streaming_out]
        return handler


_STATUS = {code.value[0]: code for code in grpc.StatusCode}
