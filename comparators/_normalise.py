"""Turn a decoded protobuf message into plain Python values for diffing.

- only fields that are set appear (proto3 implicit defaults equal unset);
- enums by name, 64-bit integers as ints, maps as dicts;
- google.protobuf.Timestamp / Duration as ISO-8601 text / seconds (their fields
  when out of the range that text can express);
- unknown fields under "#<number>" with their raw value (a list when the number
  repeats, a dict for a group), so they are never lost.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import message, unknown_fields
from google.protobuf.descriptor import FieldDescriptor

from comparators.message_api import list_fields

_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"


def to_python(msg: message.Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field, value in list_fields(msg):
        out[field.name] = _field_value(field, value)
    out.update(unknown_values(unknown_fields.UnknownFieldSet(msg)))
    return out


def unknown_values(fields: unknown_fields.UnknownFieldSet) -> dict[str, Any]:
    """Unknown fields as {"#<number>": value}; a number seen more than once gets a list
    of its values, and a group a dict of its own unknown fields."""
    grouped: dict[str, list[Any]] = {}
    for index in range(len(fields)):
        unknown = fields[index]
        data = unknown.data
        if isinstance(data, unknown_fields.UnknownFieldSet):
            data = unknown_values(data)
        grouped.setdefault(f"#{unknown.field_number}", []).append(data)
    return {key: values[0] if len(values) == 1 else values for key, values in grouped.items()}


def _field_value(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {k: _single(value_field, v) for k, v in value.items()}
    if _is_repeated(field):
        return [_single(field, v) for v in value]
    return _single(field, value)


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _single(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None:  # a message or a group
        if field.message_type.full_name in (_TIMESTAMP, _DURATION):
            try:
                return value.ToJsonString()
            except ValueError:  # out of the range JSON can express: keep its fields instead
                return to_python(value)
        return to_python(value)
    if field.enum_type is not None:
        enum_value = field.enum_type.values_by_number.get(value)
        return enum_value.name if enum_value is not None else value
    return value
