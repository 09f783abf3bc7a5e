"""The custody interface, compiled from custody.proto when first imported (no generated code).

`DESCRIPTOR_SET` is the serialized FileDescriptorSet (what `protoc --include_imports
--descriptor_set_out` writes); `REGISTRY` decodes with it. Messages are dynamic classes:
`new("DepositRequest", account_id="A1", amount="10.50")`.
"""

from __future__ import annotations

import functools
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from comparators import DescriptorRegistry

HERE = Path(__file__).parent
PROTO = HERE / "custody.proto"
PACKAGE = "custody.v1"
SERVICE = f"{PACKAGE}.Custody"


class CompileError(RuntimeError):
    """protoc refused custody.proto."""


@functools.cache
def compile_descriptor_set() -> bytes:
    """custody.proto as a serialized FileDescriptorSet (compiled once per process)."""
    from grpc_tools import protoc  # imported here: only this needs protoc

    well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/timestamp.proto
    with tempfile.TemporaryDirectory(prefix="custody-proto-") as tmp:
        out = Path(tmp) / "custody.binpb"
        argv = [
            "protoc",
            f"-I{HERE}",
            f"-I{well_known}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            PROTO.name,
        ]
        if protoc.main(argv) != 0:
            raise CompileError(f"protoc failed on {PROTO}")
        return out.read_bytes()


DESCRIPTOR_SET: bytes = compile_descriptor_set()


def _registry() -> DescriptorRegistry:
    registry = DescriptorRegistry()
    registry.add_set(descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET), source=str(PROTO))
    return registry


REGISTRY = _registry()
METHODS = tuple(path.rpartition("/")[2] for path in REGISTRY.methods if path.startswith(f"/{SERVICE}/"))


def path(method: str) -> str:
    """The wire path of a method: "/custody.v1.Custody/Deposit"."""
    return f"/{SERVICE}/{method}"


def message_class(name: str) -> Any:
    """The class of `custody.v1.<name>` (typed Any: dynamic classes have no static attributes)."""
    return REGISTRY.message_class(f"{PACKAGE}.{name}")


def new(name: str, **fields: Any) -> Any:
    """A `custody.v1.<name>` message."""
    return message_class(name)(**fields)
