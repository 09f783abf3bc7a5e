"""The `[reconcile]` table: what `shim reconcile` lists and reads, parsed and checked against the
descriptors (the table itself is described in `shim.reconcile` and docs/reconcile.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

from comparators import DescriptorRegistry
from shim.errors import ConfigError, NeedsDescriptors
from shim.settings import finish


@dataclass(frozen=True, slots=True)
class Read:
    method: str  # "pkg.Svc/Method"
    key: str  # request field the key goes in (dotted for a nested field)


KEY_SOURCES = ("list", "store")
_F = FieldDescriptor
# the types of a listing's items that are keys themselves: strings and integers
_KEYS = frozenset({_F.TYPE_STRING, _F.TYPE_INT32, _F.TYPE_INT64, _F.TYPE_UINT32, _F.TYPE_UINT64})
_KEYS |= {
    _F.TYPE_SINT32,
    _F.TYPE_SINT64,
    _F.TYPE_FIXED32,
    _F.TYPE_FIXED64,
    _F.TYPE_SFIXED32,
    _F.TYPE_SFIXED64,
}
# a listing answer's text field that looks like the next page's token (next_page_token, cursor, ...); a
# name alone is a guess, so only text fields with such names are taken for one (not next_review_at)
_PAGE_TOKEN = re.compile(r"token|cursor|continuation", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ReconcileSettings:
    list: str  # "" without a listing read
    items: str
    key: str  # "": the items are the keys themselves (strings or integers)
    reads: tuple[Read, ...]
    page_size: str = ""
    page_token: str = ""
    next_page_token: str = ""
    size: int = 100
    keys: str = "list"  # where the keys come from: the listing read, or the store (every key of the traffic)


def parse(table: Mapping[str, Any]) -> ReconcileSettings:
    """The [reconcile] table (shim.config reads it)."""
    known = {"list", "items", "key", "reads", "page_size", "page_token", "next_page_token", "size", "keys"}
    finish("reconcile.", {key: table[key] for key in set(table) - known}, known)
    keys = table.get("keys", "list" if "list" in table else "store")
    if keys not in KEY_SOURCES:
        raise ConfigError(f"reconcile.keys: {keys!r} is not one of {', '.join(KEY_SOURCES)}")
    listing = ("list", "items", "key")
    if keys == "list" or any(name in table for name in listing):
        for name in listing:
            if name == "key" and name not in table:  # items that are the keys themselves (checked in `check`)
                continue
            if not isinstance(table.get(name), str) or not table[name]:
                why = "" if keys == "store" else ' (or keys = "store": every key the traffic named)'
                raise ConfigError(f"reconcile.{name}: expected a non-empty string{why}")
    reads = table.get("reads")
    if not isinstance(reads, list) or not reads:
        raise ConfigError('reconcile.reads: expected a list of { method = "pkg.Svc/Method", key = "field" }')
    parsed = []
    for index, read in enumerate(reads):
        where = f"reconcile.reads[{index}]"
        if not isinstance(read, dict) or set(read) != {"method", "key"}:
            raise ConfigError(f'{where}: expected {{ method = "pkg.Svc/Method", key = "field" }}')
        if not all(isinstance(read[k], str) and read[k] for k in ("method", "key")):
            raise ConfigError(f"{where}: method and key are non-empty strings")
        parsed.append(Read(read["method"].lstrip("/"), read["key"]))
    strings = {}
    for name in ("page_size", "page_token", "next_page_token"):
        value = table.get(name, "")
        if not isinstance(value, str):
            raise ConfigError(f"reconcile.{name}: expected a field name")
        strings[name] = value
    if bool(strings["page_token"]) != bool(strings["next_page_token"]):
        raise ConfigError("reconcile: page_token and next_page_token go together")
    size = table.get("size", 100)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"reconcile.size: {size!r} is not a positive integer")
    return ReconcileSettings(
        list=table.get("list", "").lstrip("/"),
        items=table.get("items", ""),
        key=table.get("key", ""),
        reads=tuple(parsed),
        size=size,
        keys=keys,
        **strings,
    )


def check(settings: ReconcileSettings, registry: DescriptorRegistry | None) -> None:
    """Every method and field the settings name, against the descriptors."""
    if registry is None:
        raise NeedsDescriptors("reconcile: needs the descriptors of Bank's interface (descriptor_sets)")
    for index, read in enumerate(settings.reads):
        info = _method(registry, read.method, f"reconcile.reads[{index}].method")
        _field(registry.message_class(info.input_type).DESCRIPTOR, read.key, f"reconcile.reads[{index}].key")
    if not settings.list:
        return
    listing = _method(registry, settings.list, "reconcile.list")
    request = registry.message_class(listing.input_type).DESCRIPTOR
    answer = registry.message_class(listing.output_type).DESCRIPTOR
    items = answer.fields_by_name.get(settings.items)
    if items is None or not items.is_repeated or (items.message_type is None and items.type not in _KEYS):
        what = f"no repeated message field {settings.items!r}, nor a repeated string or integer one"
        raise ConfigError(f"reconcile.items: {listing.output_type} has {what}")
    if items.message_type is None:  # the items are the keys themselves
        if settings.key:
            kind = "string" if items.type == items.TYPE_STRING else "integer"
            raise ConfigError(
                f"reconcile.key: {items.full_name} holds the keys themselves ({kind}): leave key out"
            )
    elif not settings.key:
        holder = items.message_type.full_name
        raise ConfigError(
            f"reconcile.key: expected the field of {holder} holding the key (its items are messages)"
        )
    elif settings.key not in items.message_type.fields_by_name:
        raise ConfigError(f"reconcile.key: {items.message_type.full_name} has no field {settings.key!r}")
    named = (
        (settings.page_size, request),
        (settings.page_token, request),
        (settings.next_page_token, answer),
    )
    for name, where in named:
        if name and name not in where.fields_by_name:
            raise ConfigError(f"reconcile: {where.full_name} has no field {name!r}")
    if not settings.page_token:  # a listing that pages, read without its tokens, stops after one page
        for found in answer.fields:
            text = found.type in (found.TYPE_STRING, found.TYPE_BYTES)
            if (
                found.name != settings.items
                and not found.is_repeated
                and text
                and _PAGE_TOKEN.search(found.name)
            ):
                raise ConfigError(
                    f"reconcile.page_token: {answer.full_name} has {found.name!r}, which looks like the "
                    "next page's token: name page_token and next_page_token, or only the first page is read"
                )


def _method(registry: DescriptorRegistry, name: str, where: str) -> Any:
    info = registry.method("/" + name)
    if info is None:
        raise ConfigError(f"{where}: {name} is not a method of the descriptors")
    if not info.unary:
        raise ConfigError(f"{where}: {name} is not a unary method")
    return info


def _field(descriptor: Any, path: str, where: str) -> None:
    for part in path.split("."):
        field_ = descriptor.fields_by_name.get(part) if descriptor is not None else None
        if field_ is None or field_.is_repeated:
            raise ConfigError(f"{where}: {path!r} names no single field of the request")
        descriptor = field_.message_type
