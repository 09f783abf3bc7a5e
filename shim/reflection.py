"""Bank's descriptors asked of Bank itself, by gRPC server reflection, instead of read from a file.

`fetch_descriptor_set` lists Bank's services over one `ServerReflectionInfo` stream
(grpc.reflection.v1alpha), fetches the file declaring each, then every file those
import, until the set is closed; it comes back dependencies first, as
`DescriptorRegistry.add_set` takes it. Every failure is a one-line `StartupError`,
and the whole exchange is bounded by a timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, message
from grpc import aio
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from comparators import DescriptorError, DescriptorRegistry
from shim._grpc_compat import close_sending, send
from shim._timeouts import bounded
from shim.config import Config
from shim.errors import StartupError
from shim.parts import load_registry

DEFAULT_TIMEOUT = 10.0  # seconds Bank may take to describe itself at start
AUTO_TIMEOUT = 3.0  # ... when it is only asked in case it serves reflection ("auto")

# services that are the server's plumbing, not its interface (their files may still come along)
_PLUMBING = frozenset(
    {
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
        "grpc.health.v1.Health",
    }
)

# grpc_reflection ships no type information: its messages are Any to mypy
_Request = reflection_pb2.ServerReflectionRequest
_Files = dict[str, descriptor_pb2.FileDescriptorProto]


async def fetch_descriptor_set(
    target: str,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - also the reflection call's deadline
) -> descriptor_pb2.FileDescriptorSet:
    """The FileDescriptorSet of every service `target` lists by reflection, with all it imports."""
    try:
        return await bounded(_fetch(target, timeout), timeout)
    except TimeoutError as exc:
        raise StartupError(_late(target, timeout)) from exc


async def resolve_registry(
    config: Config,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - passed on to fetch_descriptor_set
    on_none: Callable[[str], None] | None = None,
) -> DescriptorRegistry | None:
    """The registry `config` asks for: its descriptor-set files, or Bank's reflection plus those files; with
    "auto", the files, or with none Bank's reflection if Bank serves it, else none (`on_none` is told why)."""
    source = config.descriptors.descriptor_source
    if source == "files" or (source == "auto" and config.descriptors.descriptor_sets):
        return load_registry(config.descriptors.descriptor_sets)
    if source == "auto":
        try:
            fds = await fetch_descriptor_set(config.bank.target, min(timeout, AUTO_TIMEOUT))
        except StartupError as exc:
            if on_none is not None:
                on_none(str(exc))
            return None
    else:
        fds = await fetch_descriptor_set(config.bank.target, timeout)
    registry = DescriptorRegistry()
    try:
        registry.add_set(fds, source=f"reflection from Bank at {config.bank.target}")
        for path in config.descriptors.descriptor_sets:
            registry.add_file(path)
    except DescriptorError as exc:
        raise StartupError(str(exc)) from exc
    return registry


async def _fetch(target: str, deadline: float) -> descriptor_pb2.FileDescriptorSet:
    options = [("grpc.max_receive_message_length", -1)]  # a large schema is no reason to fail
    async with aio.insecure_channel(target, options=options) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo(timeout=deadline)
        try:
            session = _Session(call, target)
            files = await _closed_set(session, target)
            await close_sending(call)
        except aio.AioRpcError as exc:
            raise StartupError(_rpc_failure(target, deadline, exc)) from exc
        finally:
            call.cancel()  # no-op once finished; otherwise nothing is left running
    return _dependencies_first(files, target)


class _Session:
    """One request, one answer, in turn, on a ServerReflectionInfo stream."""

    def __init__(self, call: Any, target: str) -> None:
        self._call = call
        self._target = target

    async def ask(self, request: Any, answer: str) -> Any:
        """The answer to `request`, which must be of kind `answer` (an error_response is raised)."""
        # written through `send`: grpcio's own write can replace the status of a server that ends the
        # stream meanwhile (one that does not serve reflection) with INTERNAL (grpc/grpc#36066)
        await send(self._call, request.SerializeToString())
        response = await self._call.read()
        if response is aio.EOF:
            raise StartupError(f"Bank at {self._target} ended the gRPC reflection stream early")
        asked = _describe(request)
        if response is None:  # grpc's reading of bytes that do not decode
            raise StartupError(
                f"Bank at {self._target} answered gRPC reflection {asked} with bytes that do not decode as"
                " its answer (a grpc.reflection.v1alpha.ServerReflectionResponse)"
            )
        kind = response.WhichOneof("message_response")
        if kind == "error_response":
            error = response.error_response
            raise StartupError(
                f"Bank at {self._target} answered gRPC reflection {asked} with error "
                f"{_code_name(error.error_code)}: {_one_line(error.error_message)}"
            )
        if kind != answer:
            raise StartupError(
                f"Bank at {self._target} answered gRPC reflection {asked} with {kind or 'nothing'}"
            )
        return response


async def _closed_set(session: _Session, target: str) -> _Files:
    listed = await session.ask(_Request(list_services=""), "list_services_response")
    services = [s.name for s in listed.list_services_response.service if s.name not in _PLUMBING]
    if not services:
        raise StartupError(f"Bank at {target} lists no services by gRPC reflection")
    files: _Files = {}
    for service in services:
        answer = await session.ask(_Request(file_containing_symbol=service), "file_descriptor_response")
        _take(answer, files, target)
    while missing := sorted({d for f in files.values() for d in f.dependency} - files.keys()):
        for name in missing:
            answer = await session.ask(_Request(file_by_filename=name), "file_descriptor_response")
            _take(answer, files, target)
            if name not in files:
                raise StartupError(f"Bank at {target} answered gRPC reflection for {name} without that file")
    declared = {f"{f.package}.{s.name}" if f.package else s.name for f in files.values() for s in f.service}
    if undeclared := [s for s in services if s not in declared]:
        raise StartupError(
            f"Bank at {target} lists {', '.join(undeclared)} by gRPC reflection "
            "but no file it sent declares it"
        )
    return files


def _take(response: Any, files: _Files, target: str) -> None:
    for raw in response.file_descriptor_response.file_descriptor_proto:
        try:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        except message.DecodeError as exc:
            raise StartupError(
                f"Bank at {target} sent a file descriptor by gRPC reflection that cannot be decoded: {exc}"
            ) from exc
        if not proto.name:
            raise StartupError(f"Bank at {target} sent a file descriptor without a name by gRPC reflection")
        files.setdefault(proto.name, proto)  # the first answer for a file wins


def _dependencies_first(files: _Files, target: str) -> descriptor_pb2.FileDescriptorSet:
    fds = descriptor_pb2.FileDescriptorSet()
    done: set[str] = set()
    visiting: list[str] = []

    def add(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise StartupError(f"Bank at {target} sent descriptors that import each other: {cycle}")
        visiting.append(name)
        for dependency in files[name].dependency:
            add(dependency)
        visiting.pop()
        done.add(name)
        fds.file.append(files[name])

    for name in files:
        add(name)
    return fds


def _rpc_failure(target: str, timeout: float, error: aio.AioRpcError) -> str:
    code = error.code()
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return f"Bank at {target} does not serve gRPC reflection; give --descriptor-set FILE instead"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return _late(target, timeout)
    details = _one_line(error.details() or "")
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach Bank at {target} for gRPC reflection: {details}"
    return f"gRPC reflection from Bank at {target} failed: {code.name}: {details}"


def _late(target: str, timeout: float) -> str:
    return f"Bank at {target} did not answer gRPC reflection within {timeout:g}s"


def _describe(request: Any) -> str:
    kind = request.WhichOneof("message_request")
    value = getattr(request, kind) if kind else ""
    return f"{kind} {value}".strip() if isinstance(value, str) else str(kind)


def _code_name(number: int) -> str:
    return next((c.name for c in grpc.StatusCode if c.value[0] == number), str(number))


def _one_line(text: str) -> str:
    return " ".join(text.split())


__all__ = ["DEFAULT_TIMEOUT", "fetch_descriptor_set", "resolve_registry"]
