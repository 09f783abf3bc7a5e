"""Service descriptions loaded from FileDescriptorSet files.

A FileDescriptorSet is what `protoc --include_imports --descriptor_set_out=FILE`
writes. Nothing here needs generated code: message classes are built from the
descriptors at run time, so the shim can decode the answers of any service.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor, MethodDescriptor

from comparators.files import read_regular


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


_PROTO_OPENINGS = ("syntax", "edition", "package", "import", "option", "//", "/*")


def _proto_source(path: str | Path, data: bytes) -> bool:
    """The file looks like .proto source: its name ends in .proto, or it is text that opens as one does
    (`syntax`, `package`, a comment, ...)."""
    if str(path).endswith(".proto"):
        return True
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    return text.lstrip().startswith(_PROTO_OPENINGS)


class DescriptorRegistry:
    """Methods and message classes of every service in some descriptor sets."""

    def __init__(self) -> None:
        self._pool = descriptor_pool.DescriptorPool()
        self._methods: dict[str, MethodInfo] = {}
        self._classes: dict[str, type[message.Message]] = {}
        self._files: set[str] = set()
        self._protos: list[descriptor_pb2.FileDescriptorProto] = []  # as added, dependencies first
        self._targets: dict[str, frozenset[str]] = {}
        self._add_rpc_types()

    def _add_rpc_types(self) -> None:
        """google.rpc.Status and the standard error details, to decode rich error details."""
        try:
            from google.rpc import error_details_pb2, status_pb2
        except ImportError:  # googleapis-common-protos absent: rich details compare as bytes
            return
        self.add_set(
            descriptor_set_of(status_pb2.DESCRIPTOR, error_details_pb2.DESCRIPTOR), source="google.rpc"
        )

    def descriptor_set(self) -> descriptor_pb2.FileDescriptorSet:
        """Every file this registry holds, dependencies first: enough to build it again elsewhere."""
        return descriptor_pb2.FileDescriptorSet(file=self._protos)

    @property
    def pool(self) -> descriptor_pool.DescriptorPool:
        return self._pool

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> DescriptorRegistry:
        registry = cls()
        for path in paths:
            registry.add_file(path)
        return registry

    def add_file(self, path: str | Path) -> None:
        try:
            data = read_regular(path)
        except OSError as exc:
            raise DescriptorError(f"cannot read descriptor set {path}: {exc.strerror}") from exc
        fds = descriptor_pb2.FileDescriptorSet()
        try:
            fds.ParseFromString(data)
        except message.DecodeError as exc:
            if _proto_source(path, data):
                raise DescriptorError(
                    f"{path} is .proto source, not a FileDescriptorSet: make one from it with `shim describe"
                    f" {path} -o FILE.binpb` (or protoc --include_imports --descriptor_set_out=FILE.binpb)"
                ) from exc
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
            self._protos.append(file_proto)
        for file_proto in fds.file:
            try:
                file_desc = self._pool.FindFileByName(file_proto.name)
            except KeyError as exc:  # missing dependency
                raise DescriptorError(
                    f"{source}: {file_proto.name} imports a file the set does not hold "
                    "(write it with protoc --include_imports)"
                ) from exc
            self._targets.clear()
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

    # -- what rules may name ---------------------------------------------------------

    def message_types(self) -> list[Descriptor]:
        """Every message type of the described files, nested ones too (map entries left out)."""
        return self._messages()

    def _messages(self) -> list[Descriptor]:
        found: list[Descriptor] = []

        def walk(desc: Descriptor) -> None:
            if desc.GetOptions().map_entry:
                return
            found.append(desc)
            for nested in desc.nested_types:
                walk(nested)

        for name in sorted(self._files):
            for desc in self._pool.FindFileByName(name).message_types_by_name.values():
                walk(desc)
        return found

    def extensions(self) -> list[FieldDescriptor]:
        """Every extension (proto2) the described files declare: at file level, or inside a message."""
        found = [fd for desc in self._messages() for fd in desc.extensions]
        for name in sorted(self._files):
            found.extend(self._pool.FindFileByName(name).extensions_by_name.values())
        return found

    def _compute_targets(self) -> None:
        fields, repeated = set(), set()
        declared = [(f"{desc.full_name}.{fd.name}", fd) for desc in self._messages() for fd in desc.fields]
        # an extension by its full name ("package.name", or "package.Message.name" declared in a message),
        # as the walk judges it
        for target, fd in [*declared, *((fd.full_name, fd) for fd in self.extensions())]:
            fields.add(target)
            is_map = fd.message_type is not None and fd.message_type.GetOptions().map_entry
            if fd.is_repeated and not is_map:
                repeated.add(target)
        fields.add("status.rich_details")
        self._targets["fields"] = frozenset(fields)
        self._targets["repeated"] = frozenset(repeated)
        self._targets["streams"] = frozenset(
            path.lstrip("/") for path, info in self._methods.items() if info.server_streaming
        )

    def _target_set(self, name: str) -> frozenset[str]:
        if name not in self._targets:
            self._compute_targets()
        return self._targets[name]

    def field_targets(self) -> frozenset[str]:
        """Every "package.Message.field" of the described messages, every extension by its full name, and
        "status.rich_details"."""
        return self._target_set("fields")

    def repeated_targets(self) -> frozenset[str]:
        """The repeated (non-map) fields among field_targets()."""
        return self._target_set("repeated")

    def stream_targets(self) -> frozenset[str]:
        """ "package.Service/Method" of every server-streaming method."""
        return self._target_set("streams")

    def element_type(self, target: str) -> Descriptor | None:
        """The message type of a repeated field's elements, or of a stream's messages."""
        if "/" in target:
            info = self._methods.get("/" + target)
            return self.find_message(info.output_type) if info is not None else None
        extension = self.find_extension(target)
        if extension is not None:
            return extension.message_type
        message_name, _, field_name = target.rpartition(".")
        desc = self.find_message(message_name)
        if desc is None or field_name not in desc.fields_by_name:
            return None
        element: Descriptor | None = desc.fields_by_name[field_name].message_type
        return element

    def missing_key_fields(self, target: str, key: Iterable[str]) -> str | None:
        """The first key field the elements of `target` do not have (None when all exist)."""
        element = self.element_type(target)
        for name in key:
            if element is None or name not in element.fields_by_name:
                return name
        return None

    def find_extension(self, full_name: str) -> FieldDescriptor | None:
        """The extension (proto2) of that full name, or None."""
        try:
            return self._pool.FindExtensionByName(full_name)
        except KeyError:
            return None

    def find_message(self, full_name: str) -> Descriptor | None:
        try:
            return self._pool.FindMessageTypeByName(full_name)
        except KeyError:
            return None


def held_type(fd: Any) -> Any:
    """The message type a field holds (a map's value type, for a map), or None."""
    element = fd.message_type
    if element is not None and element.GetOptions().map_entry:
        element = element.fields_by_name["value"].message_type
    return element


_CURRENCY_FIELDS = ("currency_code", "currency")
_INTEGERS = frozenset(
    getattr(FieldDescriptor, f"TYPE_{name}")
    for name in ("INT64", "INT32", "SINT64", "SINT32", "SFIXED64", "SFIXED32")
)
# per message type: (amount field names, currency field name or ""), or None when it is not money-like
_MONEY_SHAPES: dict[Any, tuple[tuple[str, ...], str] | None] = {}


def money_shape(desc: Any) -> tuple[tuple[str, ...], str] | None:
    """The fields a money-like message type holds its amount and currency in; None for any other type.

    Money-like: nothing but its amount, `units` + `nanos` (integers, as google.type.Money) or one
    string, and at most one currency string (`currency_code` or `currency`). Any other field (or a
    repeated one) makes a message a plain message, walked field by field.
    """
    if desc in _MONEY_SHAPES:
        return _MONEY_SHAPES[desc]
    shape: tuple[tuple[str, ...], str] | None = None
    fields = list(desc.fields)
    if all(not fd.is_repeated for fd in fields):
        currencies = [fd.name for fd in fields if fd.name in _CURRENCY_FIELDS and fd.type == fd.TYPE_STRING]
        rest = [fd for fd in fields if fd.name not in currencies]
        names = {fd.name for fd in rest}
        if len(currencies) <= 1:
            currency = currencies[0] if currencies else ""
            if names == {"units", "nanos"} and all(fd.type in _INTEGERS for fd in rest):
                shape = (("units", "nanos"), currency)
            elif len(rest) == 1 and rest[0].type == rest[0].TYPE_STRING:
                shape = ((rest[0].name,), currency)
    _MONEY_SHAPES[desc] = shape
    return shape


def reaches(desc: Any, names: Collection[str]) -> bool:
    """Whether messages of type `desc` can hold, at any depth, a message of one of the types `names`
    (recursive types included). A map's entry type counts as held: fields declared on it (a map's scalar
    values) are reached through the map."""
    seen = {desc.full_name}
    todo = [desc]
    while todo:
        current = todo.pop()
        if current.full_name in names:
            return True
        for fd in current.fields:
            entry = fd.message_type
            if entry is not None and entry.GetOptions().map_entry and entry.full_name in names:
                return True
            element = held_type(fd)
            if element is not None and element.full_name not in seen:
                seen.add(element.full_name)
                todo.append(element)
    return False


def descriptor_set_of(*files: FileDescriptor) -> descriptor_pb2.FileDescriptorSet:
    """A FileDescriptorSet holding `files` and everything they import, dependencies first."""
    fds = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        fds.file.append(proto)

    for file in files:
        add(file)
    return fds


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
