"""Protobuf's message API, called through the message's class, so that a field may have any name.

A proto field may be named like any identifier, `DESCRIPTOR`, `HasField` or
`SerializeToString` included, and protobuf's runtime (upb) looks a name up
among a message's fields before its methods: on such a message, `msg.HasField`
is the field's value, not the method. The class's attributes are never fields,
so code that handles messages of any type reads the API through `type(msg)`,
and reads fields with `getattr(msg, name)` (a field may be named `from`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import message
from google.protobuf.descriptor import FieldDescriptor


def descriptor_of(msg: message.Message) -> Any:  # a Descriptor (python or upb)
    """The message's type (`msg.DESCRIPTOR` is a field's value when a field is named DESCRIPTOR)."""
    return type(msg).DESCRIPTOR


def has_field(msg: message.Message, name: str) -> bool:
    """msg.HasField(name), whatever the message's fields are named."""
    return type(msg).HasField(msg, name)


def list_fields(msg: message.Message) -> Sequence[tuple[FieldDescriptor, Any]]:
    """msg.ListFields(), whatever the message's fields are named."""
    return type(msg).ListFields(msg)


def parse(msg: message.Message, data: bytes) -> None:
    """msg.ParseFromString(data), whatever the message's fields are named."""
    type(msg).ParseFromString(msg, data)


def serialize(msg: message.Message, deterministic: bool = False) -> bytes:
    """msg.SerializeToString(), whatever the message's fields are named."""
    return type(msg).SerializeToString(msg, deterministic=deterministic)


def copy_from(msg: message.Message, other: message.Message) -> None:
    """msg.CopyFrom(other), whatever the message's fields are named."""
    type(msg).CopyFrom(msg, other)
