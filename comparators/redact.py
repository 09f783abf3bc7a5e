"""Sensitive fields whose values are never shown: replaced by a keyed hash before anything is compared.

`[redact] fields = ["pay.v1.Account.owner_name", ...]` names message fields
(wherever the message appears). Their values are replaced, in the decoded
messages of both sides, by `redacted:` and the first 16 hex digits of an
HMAC-SHA256 under a secret key, before the messages are compared. Equal values
give equal hashes, so a comparison still tells whether the two sides agree,
but no difference, log line, stored record or report ever holds the value.
The rules judge the values as sent: `Originals` gives back the value each hash
(or hashed free text) stands for, to the rules alone.
Strings and bytes can be redacted; other field types are refused. A map's
values are redacted when declared on its entry (`pay.v1.Account.NotesEntry.value`
for `map<string, string> notes`); its keys cannot be.

One step comes first: in a comparison with ids (comparators.ids), BK's ids in
its decoded answer are read as the Bank ids they pair with, then both answers
are redacted. A redacted field that holds ids thus hashes a mapped pair alike,
and an id with no pair is still told apart, shown as its hash.

A `google.protobuf.Any` (rich error details' `google.rpc.Status.details`, or
an Any field of a message) is reached too: when the descriptors know the
packed type, its message is unpacked, redacted and packed again. A packed type
they do not know, or bytes that do not decode as the type, could hold a
redacted value: the packed bytes are replaced whole by their hash (the
`type_url` is kept), so equal packed values still compare equal.

Bytes that do not decode could hold anything: with redaction on, an
`undecodable` or `bytes` difference shows their length, not their content.

Free text is not a field, but it may quote one: a refusal worded "owner 'Jane
Roe' already has an account" holds the very name the request's redacted field
carried. `FreeText` gathers the values of redacted fields one call's messages
hold (its requests, both answers, their rich error details) and replaces each,
where a text holds it as a whole word of at least `MIN_SCRUBBED` characters, by
its hash: the status details message, and `google.rpc.Status.message`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from google.protobuf import message
from google.protobuf.descriptor import FieldDescriptor

from comparators.descriptors import DescriptorRegistry, reaches
from comparators.message_api import copy_from, descriptor_of, has_field, parse, serialize

PREFIX = "redacted:"
_ANY = "google.protobuf.Any"
_RPC_STATUS = "google.rpc.Status"
_RPC_ONLY = DescriptorRegistry()  # google.rpc types alone
MIN_SCRUBBED = 3  # shorter values are not looked for in free text: they would hash common words


def keyed_hash(key: bytes, value: str | bytes) -> str:
    """The text that stands for a value under `key` (`Redactor.hash`)."""
    raw = value.encode() if isinstance(value, str) else value
    return PREFIX + hmac.new(key, raw, hashlib.sha256).hexdigest()[:16]


class RedactError(ValueError):
    """A redacted field is not a string or bytes field of the descriptors."""


# what replaces one value of a redacted field: (value, whether the field is bytes, whether the value is an
# Any's packed bytes hashed whole)
_Swap = Callable[..., str | bytes]


class Redactor:
    def __init__(self, fields: Sequence[str], registry: DescriptorRegistry, key: bytes) -> None:
        if not key:
            raise RedactError("redact: the key of the keyed hash is empty")
        self.key = key
        self.fields = tuple(fields)
        self._registry = registry
        self._by_type: dict[str, list[FieldDescriptor]] = {}
        for index, location in enumerate(fields):
            where = f"redact.fields[{index}]"
            type_name, _, field_name = location.rpartition(".")
            desc = registry.find_message(type_name) if type_name else None
            if desc is None:
                raise RedactError(f"{where}: {location!r} names no message field (package.Message.field)")
            fd = desc.fields_by_name.get(field_name)
            if fd is None:
                raise RedactError(f"{where}: {type_name} has no field {field_name!r}")
            if fd.type not in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
                raise RedactError(f"{where}: {location} is not a string or bytes field")
            if desc.GetOptions().map_entry and field_name == "key":
                raise RedactError(
                    f"{where}: {location} is a map's key: a map's values can be redacted"
                    f" ({type_name}.value), not its keys"
                )
            self._by_type.setdefault(type_name, []).append(fd)
        self._holds: dict[str, bool] = {}
        self._targets = {*self._by_type, _ANY}  # an Any may hold any message

    def hash(self, value: str | bytes) -> str:
        """The text that stands for a value: equal values, equal text."""
        return keyed_hash(self.key, value)

    def redact(
        self, msg: message.Message, seen: set[str] | None = None, originals: dict[Any, Any] | None = None
    ) -> None:
        """Replace, in place, every redacted field's value at any depth of `msg`; with `seen`, add to it the
        values replaced (as text: bytes that are not UTF-8 are left out); with `originals`, record each value
        replaced under the hash that stands for it (`Originals`)."""

        def swap(value: str | bytes, binary: bool, whole: bool = False) -> str | bytes:
            if not value:  # an empty value stays empty
                return value
            if seen is not None and not whole:
                _see(value, seen)
            hashed = self.hash(value).encode() if binary else self.hash(value)
            if originals is not None:
                originals[hashed] = value
            return hashed

        self._visit(msg, swap, restoring=False)

    def restore(self, msg: message.Message, originals: dict[Any, Any]) -> None:
        """Put back, in place, the values `redact` replaced in `msg` and recorded in `originals`."""

        def swap(value: str | bytes, binary: bool, whole: bool = False) -> str | bytes:
            back: str | bytes = originals.get(value, value)
            return back

        self._visit(msg, swap, restoring=True)

    def _visit(self, msg: message.Message, swap: _Swap, restoring: bool) -> None:
        """Each redacted field's value at any depth of `msg` replaced by `swap(value, binary)`."""
        desc = descriptor_of(msg)
        if desc.full_name == _ANY:
            self._visit_any(msg, swap, restoring)
            return
        if not self._reaches(desc):
            return
        for redacted in self._by_type.get(desc.full_name, ()):
            self._replace(msg, redacted, swap)
        for fd in desc.fields:
            element = fd.message_type
            if element is None:
                continue
            value = getattr(msg, fd.name)
            if element.GetOptions().map_entry:
                if self._by_type.get(element.full_name):  # the map's values themselves (never its keys)
                    binary = element.fields_by_name["value"].type == FieldDescriptor.TYPE_BYTES
                    for key in list(value):  # a snapshot: setting values while iterating may visit one twice
                        value[key] = swap(value[key], binary)
                value_type = element.fields_by_name["value"].message_type
                if value_type is not None and self._reaches(value_type):
                    for key in value:
                        self._visit(value[key], swap, restoring)
            elif self._reaches(element):
                if fd.is_repeated:
                    for item in value:
                        self._visit(item, swap, restoring)
                elif has_field(msg, fd.name):
                    self._visit(value, swap, restoring)

    def _replace(self, msg: message.Message, fd: FieldDescriptor, swap: _Swap) -> None:
        value = getattr(msg, fd.name)
        binary = fd.type == FieldDescriptor.TYPE_BYTES
        if fd.is_repeated:
            for i, item in enumerate(value):
                value[i] = swap(item, binary)
        elif value:
            setattr(msg, fd.name, swap(value, binary))

    def scrub(self, text: str, values: Collection[str]) -> str:
        """`text` with each of `values` (of `MIN_SCRUBBED` characters or more) it holds as a whole word (not
        inside a longer word) replaced by the value's hash; longer values first, so that a name is hashed
        whole rather than in part."""
        if not text or not values:
            return text
        wanted = sorted((v for v in values if len(v) >= MIN_SCRUBBED and v in text), key=len, reverse=True)
        if not wanted:
            return text
        pattern = re.compile(r"(?<!\w)(?:" + "|".join(map(re.escape, wanted)) + r")(?!\w)")
        return pattern.sub(lambda m: self.hash(m.group()), text)

    def _visit_any(self, packed: Any, swap: _Swap, restoring: bool) -> None:  # a google.protobuf.Any
        """An Any's packed message redacted: unpacked when its type is known, redacted and packed again;
        its bytes hashed whole when they cannot be read (an unknown type, or bytes that do not decode).
        `restoring`: the same, the other way round."""
        raw: bytes = packed.value
        if not raw:
            return
        if restoring and (back := swap(raw, True, True)) != raw:  # bytes that were hashed whole
            packed.value = back
            return
        type_name = packed.type_url.rpartition("/")[2]
        desc = self._registry.find_message(type_name)
        if desc is not None and not self._reaches(desc):
            return
        if desc is not None:
            inner = self._registry.message_class(type_name)()
            try:
                parse(inner, raw)
            except (message.DecodeError, RuntimeError, ValueError):
                pass
            else:
                self._visit(inner, swap, restoring)
                packed.value = serialize(inner, deterministic=True)
                return
        if not restoring:
            packed.value = swap(raw, True, True)

    def _reaches(self, desc: Any) -> bool:  # a Descriptor (python or upb)
        """Whether messages of this type can hold a redacted field, at any depth (an Any may hold any
        message: those holding an Any are visited)."""
        found = self._holds.get(desc.full_name)
        if found is None:
            found = self._holds[desc.full_name] = reaches(desc, self._targets)
        return found

    def redact_bytes(self, cls: type[message.Message], raw: bytes) -> bytes | None:
        """A serialized message with its redacted fields replaced (None when it does not decode)."""
        msg = cls()
        try:
            parse(msg, raw)
        except (message.DecodeError, RuntimeError, ValueError):
            return None
        self.redact(msg)
        return serialize(msg)


class Originals:
    """The values one comparison's redaction replaced, each under the text that now stands for it (its hash,
    or a free text with the values it quotes hashed): rules judge the values as they were sent, while what a
    difference shows, and so what is logged and stored, holds the hashes.

    Called with a value as the walk holds it, it gives the value as sent (a message: a copy, its values put
    back); any other value as it is.
    """

    __slots__ = ("_redactor", "values")

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self.values: dict[Any, Any] = {}

    def __call__(self, value: Any) -> Any:
        kind = type(value)
        if kind is str or kind is bytes:
            return self.values.get(value, value)
        if isinstance(value, message.Message):
            copy = type(value)()
            copy_from(copy, value)
            self._redactor.restore(copy, self.values)
            return copy
        if kind is list:
            return [self(item) for item in value]
        return value


class FreeText:
    """The values of redacted fields one call's messages hold, to be hashed where its free text quotes them
    (`Redactor.scrub`): its requests, both answers and their rich error details, as far as they decode."""

    __slots__ = ("_redactor", "values")

    def __init__(self, redactor: Redactor, values: Collection[str] = ()) -> None:
        self._redactor = redactor
        self.values: set[str] = set(values)

    @classmethod
    def of(
        cls,
        redactor: Redactor,
        registry: DescriptorRegistry,
        method: str,
        requests: Iterable[bytes],
        answers: Iterable[bytes],
        rich: Iterable[bytes | str | None],
    ) -> FreeText:
        """The values in one call's requests and answers (messages of `method`, as far as the descriptors
        know it) and its rich error details (`grpc-status-details-bin`: a google.rpc.Status)."""
        free = cls(redactor)
        info = registry.method(method)
        if info is not None:
            free.add(_class(registry, info.input_type), requests)
            free.add(_class(registry, info.output_type), answers)
        free.add(_class(registry, _RPC_STATUS) or _class(_RPC_ONLY, _RPC_STATUS), rich)
        return free

    def add(self, cls: type[message.Message] | None, raws: Iterable[bytes | str | None]) -> None:
        """The values in serialized messages of `cls` (those that do not decode add nothing)."""
        if cls is None:
            return
        for raw in raws:
            if raw is None:
                continue
            msg = cls()
            try:
                parse(msg, raw.encode() if isinstance(raw, str) else raw)
            except (message.DecodeError, RuntimeError, ValueError):
                continue
            self._redactor.redact(msg, self.values)

    def __call__(self, text: str) -> str:
        return self._redactor.scrub(text, self.values)

    def rich(self, raw: bytes) -> bytes:
        """Serialized rich error details (a google.rpc.Status) whose message hashes the values it quotes; as
        they were when they do not decode, or quote none."""
        cls = _class(_RPC_ONLY, _RPC_STATUS)
        if cls is None or not self.values:
            return raw
        status = cls()
        try:
            parse(status, raw)
        except (message.DecodeError, RuntimeError, ValueError):
            return raw
        text = status.message  # type: ignore[attr-defined]
        scrubbed = self(text)
        if scrubbed == text:
            return raw
        status.message = scrubbed  # type: ignore[attr-defined]
        return serialize(status)


# (method, requests, answers, rich error details) -> what hashes the values of redacted fields where the
# call's free text quotes them
FreeTextOf = Callable[[str, Sequence[bytes], Sequence[bytes], Sequence[bytes | str | None]], FreeText]


def _class(registry: DescriptorRegistry, name: str) -> type[message.Message] | None:
    try:
        return registry.message_class(name)
    except KeyError:  # not in the descriptors (googleapis-common-protos absent, for google.rpc.Status)
        return None


def _see(value: str | bytes, seen: set[str]) -> None:
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return
    seen.add(value)


def hidden(raw: bytes | str | None) -> str | None:
    """What an undecodable value shows when redaction is on: its size only."""
    if raw is None:
        return None
    return f"<{len(raw)} bytes, not shown: redaction is on>"
