"""The venue's interface, compiled from venue.proto when first imported (no generated code).

`DESCRIPTOR_SET` is the serialized FileDescriptorSet (what `protoc --include_imports
--descriptor_set_out` writes); `REGISTRY` decodes with it. Messages are dynamic classes:
`new("TradeRequest", account="A")`.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2

from comparators import DescriptorRegistry

HERE = Path(__file__).parent
PROTO = HERE / "venue.proto"
PACKAGE = "venue.v1"
SERVICE = f"{PACKAGE}.Venue"


class CompileError(RuntimeError):
    """protoc refused venue.proto."""


@functools.cache
def compile_descriptor_set() -> bytes:
    """venue.proto as a serialized FileDescriptorSet (compiled once per process)."""
    from grpc_tools import protoc  # imported here: only this needs protoc

    with tempfile.TemporaryDirectory(prefix="venue-proto-") as tmp:
        out = Path(tmp) / "venue.binpb"
        argv = ["protoc", f"-I{HERE}", "--include_imports", f"--descriptor_set_out={out}", PROTO.name]
        if protoc.main(argv) != 0:
            raise CompileError(f"protoc failed on {PROTO}")
        return out.read_bytes()


DESCRIPTOR_SET: bytes = compile_descriptor_set()


def _registry() -> DescriptorRegistry:
    registry = DescriptorRegistry()
    registry.add_set(descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET), source=str(PROTO))
    return registry


REGISTRY = _registry()


def _enum(name: str) -> dict[str, int]:
    return {v.name: v.number for v in REGISTRY.pool.FindEnumTypeByName(f"{PACKAGE}.{name}").values}


SIDES = _enum("Side")
STATUSES = _enum("Status")
BUY, SELL = SIDES["BUY"], SIDES["SELL"]
ACCEPTED, FILLED, PARTIALLY_FILLED, CANCELLED, MODIFIED, REJECTED = (
    STATUSES[name] for name in ("ACCEPTED", "FILLED", "PARTIALLY_FILLED", "CANCELLED", "MODIFIED", "REJECTED")
)
STATUS_NAMES = {number: name for name, number in STATUSES.items()}


def message_class(name: str) -> Any:
    """The class of `venue.v1.<name>` (typed Any: dynamic classes have no static attributes)."""
    return REGISTRY.message_class(f"{PACKAGE}.{name}")


def new(name: str, **fields: Any) -> Any:
    """A `venue.v1.<name>` message."""
    return message_class(name)(**fields)


class Refused(Exception):
    """A call a side refuses as a whole: the status it ends with. Raised by the books, turned into the
    call's status by the server."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
