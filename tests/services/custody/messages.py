"""The custody interface, compiled from custody.proto when first imported (no generated code).

`DESCRIPTOR_SET` is the serialized FileDescriptorSet (what `protoc --include_imports
--descriptor_set_out` writes); `REGISTRY` decodes with it. Messages are dynamic classes:
`new("DepositRequest", account_id="A1", amount="10.50")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.services._protoc import descriptor_set, registry_of

HERE = Path(__file__).parent
PROTO = HERE / "custody.proto"
PACKAGE = "custody.v1"
SERVICE = f"{PACKAGE}.Custody"


DESCRIPTOR_SET: bytes = descriptor_set(PROTO)
REGISTRY = registry_of(PROTO)
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
