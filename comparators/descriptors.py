"""Service descriptions loaded from FileDescriptorSet files.

A FileDescriptorSet is what `protoc --include_imports --descriptor_set_out=FILE`
writes. Nothing here needs generated code: message classes are built from the
descriptors at run time, so the shim can decode the answers of any service.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor


class DescriptorError(Exception):
    """A descriptor source could not be read or is inconsistent."""


@dataclass(frozen=True, slots=True)
class MethodInfo:
    """What the descriptors say about one method."""

    path: str  # "/package.Service/Method", as on the wire
    input_type: str  # full message name
    output_type: str
    client_streaming: bool
    server_streaming: bool
    read_only: bool  # idempotency_level = NO_SIDE_EFFECTS

    @property
    def unary(self) -> bool:
        return not (self.client_streaming or self.server_streaming)


class DescriptorRegistry:
    """Methods and message classes of every service in some descriptor sets."""

    def __init__(self) -> None:
        self._pool = descriptor_pool.DescriptorPool()
        self._methods: dict[str, MethodInfo] = {}
        self._classes: dict[str, type[message.Message]] = {}
        self._files: set[str] = set()

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> DescriptorRegistry:
        registry = cls()
        for path in paths:
            registry.add_file(path)
        return registry

    def add_file(self, path: str | Path) -> None:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DescriptorError(f"cannot read descriptor set {path}: {exc.strerror}") from exc
        fds = descriptor_pb2.FileDescriptorSet()
        try:
            fds.ParseFromString(data)
        except message.DecodeError as exc:
            raise DescriptorError(f"{path} is not a FileDescriptorSet: {exc}") from exc
        if not fds.file:
            raise DescriptorError(f"{path} holds no file descriptors")
        self.add_set(fds, source=str(path))

    def add_set(self, fds: descriptor_pb2.FileDescriptorSet, source: str = "descriptor set") -> None:
        for file_proto in fds.file:
            if file_proto.name in self._files:
                continue
            try:
                self._pool.Add(file_proto)
            except (TypeError, ValueError) as exc:
                missing = [d for d in file_proto.dependency if d not in self._files]
                hint = (
                    f" (it imports {', '.join(missing)}: write the set with protoc --include_imports)"
                    if missing
                    else ""
                )
                raise DescriptorError(f"{source}: cannot add {file_proto.name}: {exc}{hint}") from exc
            self._files.add(file_proto.name)
        for file_proto in fds.file:
            try:
                file_desc = self._pool.FindFileByName(file_proto.name)
            except KeyError as exc:  # missing dependency
                raise DescriptorError(
                    f"{source}: {file_proto.name} imports a file the set does not hold "
                    "(write it with protoc --include_imports)"
                ) from exc
            for service in file_desc.services_by_name.values():
                for method in service.methods:
                    info = _method_info(service.full_name, method)
                    self._methods[info.path] = info

    def method(self, path: str) -> MethodInfo | None:
        return self._methods.get(path)

    @property
    def methods(self) -> dict[str, MethodInfo]:
        return dict(self._methods)

    def message_class(self, full_name: str) -> type[message.Message]:
        cls = self._classes.get(full_name)
        if cls is None:
            desc: Descriptor = self._pool.FindMessageTypeByName(full_name)
            cls = message_factory.GetMessageClass(desc)
            self._classes[full_name] = cls
        return cls

    def find_message(self, full_name: str) -> Descriptor | None:
        try:
            return self._pool.FindMessageTypeByName(full_name)
        except KeyError:
            return None


def _method_info(service: str, method: MethodDescriptor) -> MethodInfo:
    options = method.GetOptions()
    read_only = options.idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    return MethodInfo(
        path=f"/{service}/{method.name}",
        input_type=method.input_type.full_name,
        output_type=method.output_type.full_name,
        client_streaming=method.client_streaming,
        server_streaming=method.server_streaming,
        read_only=read_only,
    )
