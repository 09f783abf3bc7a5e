"""A test service's interface from its .proto, compiled at import (no generated code is kept)."""

from __future__ import annotations

import functools
import tempfile
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2

from comparators import DescriptorRegistry


class CompileError(RuntimeError):
    """protoc refused a .proto file."""


@functools.cache
def descriptor_set(proto: Path) -> bytes:
    """`proto` and what it imports as a serialized FileDescriptorSet (what `protoc --include_imports
    --descriptor_set_out` writes), compiled once per process."""
    from grpc_tools import protoc  # imported here: only this needs protoc

    well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/timestamp.proto and the like
    with tempfile.TemporaryDirectory(prefix=f"{proto.stem}-proto-") as tmp:
        out = Path(tmp) / f"{proto.stem}.binpb"
        argv = [
            "protoc",
            f"-I{proto.parent}",
            f"-I{well_known}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            proto.name,
        ]
        if protoc.main(argv) != 0:
            raise CompileError(f"protoc failed on {proto}")
        return out.read_bytes()


def registry_of(proto: Path) -> DescriptorRegistry:
    """A registry that decodes the messages of `proto`."""
    registry = DescriptorRegistry()
    registry.add_set(descriptor_pb2.FileDescriptorSet.FromString(descriptor_set(proto)), source=str(proto))
    return registry
