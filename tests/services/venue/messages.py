"""The venue's interface, compiled from venue.proto when first imported (no generated code).

`DESCRIPTOR_SET` is the serialized FileDescriptorSet (what `protoc --include_imports
--descriptor_set_out` writes); `REGISTRY` decodes with it. Messages are dynamic classes:
`new("TradeRequest", account="A")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from tests.services._protoc import descriptor_set, registry_of

HERE = Path(__file__).parent
PROTO = HERE / "venue.proto"
PACKAGE = "venue.v1"
SERVICE = f"{PACKAGE}.Venue"


DESCRIPTOR_SET: bytes = descriptor_set(PROTO)
REGISTRY = registry_of(PROTO)


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
