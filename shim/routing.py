"""What the shim knows of each method: read or write, its routing keys, whether a read is mirrored.

- A method is a read when its descriptor says `idempotency_level = NO_SIDE_EFFECTS`,
  unless `[methods."pkg.Svc/Method"] read = true|false` says otherwise. A
  method without a descriptor is a write (the safe guess: writes are never sampled).
- Its routing keys are the values of the request fields named by `key`
  (dotted paths into the first request message; a repeated field gives one key
  per value, a map's `key` its keys and its `value` its values). A field with
  presence (a message, a member of a oneof, an `optional` scalar) that the request
  leaves unset gives no key. Calls with the same key value reach the shadow in
  order (see `shim._lanes`). Key values of different fields that are equal are
  the same key. A key that cannot be read (a bug in reading it) never fails the
  call: the call is ordered as one without a key, counted (`keys_not_read`) and
  logged once per method and path.
- One key space: a key is the same key whichever field it came from (a `key`
  path, an id's owner, a key alias). So when any field keys come from is
  redacted, every key is hashed (`key_space`), whatever its field: equal values
  stay one key, and no raw value of a redacted field reaches a log or the store.
- Reads are mirrored at `sampling.reads` (0 to 1); with `sampling.by_key`,
  the decision is a hash of the keys, so the same account is always or never
  sampled. Writes are always mirrored.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog
from google.protobuf import message

from comparators import DescriptorRegistry
from comparators.message_api import descriptor_of, has_field, parse
from shim.errors import ConfigError, NeedsDescriptors
from shim.metrics import Counters
from shim.settings import BOOL, SHARE, TEXT, as_table, finish, setting

_log = structlog.get_logger("shim.routing")


@dataclass(frozen=True, slots=True)
class SamplingSettings:
    """Which reads are mirrored; writes always are."""

    SECTION: ClassVar[str] = "sampling"
    reads: float = setting(1.0, SHARE, "share of reads mirrored (0 to 1)", reloadable=True)
    by_key: bool = setting(False, BOOL, "true: the same keys are always or never sampled", reloadable=True)

    def __post_init__(self) -> None:
        if not 0.0 <= self.reads <= 1.0:
            raise ConfigError(f"sampling.reads: {self.reads!r} is not a share between 0 and 1")


@dataclass(frozen=True, slots=True)
class MethodSettings:
    key: tuple[str, ...] = ()  # request field paths whose values are the routing keys
    read: bool | None = None  # None: from the descriptor's idempotency level
    strict: bool | None = None  # None: the [ordering] default
    adapter: str = ""  # dotted path of the adapter serving this method from BK's own interface


class Router:
    def __init__(
        self,
        registry: DescriptorRegistry | None,
        methods: Mapping[str, MethodSettings],
        read_rate: float = 1.0,
        by_key: bool = False,
        strict: bool = False,
        rng: random.Random | None = None,
        hide: Callable[[str], str] | None = None,
        hidden_fields: frozenset[str] = frozenset(),
        counters: Counters | None = None,
        key_sources: tuple[str, ...] = (),
    ) -> None:
        self._registry = registry
        self._methods = {"/" + name.lstrip("/"): settings for name, settings in methods.items()}
        self.read_rate = read_rate
        self.by_key = by_key
        self._strict = strict
        self._rng = rng or random.Random()
        self._counters = counters
        self._not_read: set[tuple[str, str]] = set()  # (method, path) whose key could not be read: logged
        self.redacting = hide is not None  # the log lines of a call's faults then say no message of theirs
        self._validate()
        # with a field keys come from redacted ("pkg.Message.field": a key path's, an id's `owner_key`, a
        # key alias's `key`), every key is replaced by `hide(value)`: equal values stay one key
        redacted = self._sources(key_sources) & hidden_fields if hide is not None else set()
        self._hide = hide if redacted else None
        self.hashed_key_fields = frozenset(redacted)  # the redacted fields keys come from: keys hashed

    def _validate(self) -> None:
        for method, settings in self._methods.items():
            where = f'methods."{method.lstrip("/")}"'
            if self._registry is None:
                if settings.key:
                    raise NeedsDescriptors(f"{where}: a routing key needs descriptors (--descriptor-set)")
                continue
            info = self._registry.method(method)
            if info is None:
                raise ConfigError(f"{where}: unknown method (not in the descriptors)")
            for path in settings.key:
                if not self._field_path_exists(info.input_type, path):
                    kind = "holding a string or a number"
                    raise ConfigError(f"{where}: key {path!r} names no field of {info.input_type} {kind}")

    def _sources(self, key_sources: tuple[str, ...]) -> set[str]:
        """The fields ("pkg.Message.field") keys come from: the `key` paths' and the `key_sources` given (an
        id's `owner_key`, "pkg.Message.field" or "pkg.Svc/Method:response.path", or a key alias's `key`)."""
        if self._registry is None:
            return set()
        fields: set[str] = set()
        for method, settings in self._methods.items():
            info = self._registry.method(method)
            fields.update(self._leaf(info.input_type, path) for path in settings.key if info is not None)
        for location in key_sources:
            method, sep, path = location.partition(":")
            if not sep:
                fields.add(location)
                continue
            side, _, rest = path.partition(".")
            info = self._registry.method("/" + method.lstrip("/"))
            if info is not None:
                fields.add(self._leaf(info.input_type if side == "request" else info.output_type, rest))
        return fields

    def key_space(self, values: Iterable[str]) -> tuple[str, ...]:
        """Keys as the lanes, the marks and the store name them: distinct, none empty, each hashed when a
        field keys come from is redacted."""
        hide = self._hide
        keys = (v for v in values if v)
        return tuple(dict.fromkeys(keys if hide is None else (hide(v) for v in keys)))

    def _leaf(self, type_name: str, path: str) -> str:
        """ "pkg.Message.field" of the field a key path ends on."""
        assert self._registry is not None
        desc = self._registry.find_message(type_name)
        name = ""
        for part in path.split("."):
            if desc is None or part not in desc.fields_by_name:
                return ""
            name = f"{desc.full_name}.{part}"
            desc = desc.fields_by_name[part].message_type
        return name

    def _field_path_exists(self, type_name: str, path: str) -> bool:
        assert self._registry is not None
        desc = self._registry.find_message(type_name)
        for part in path.split("."):
            if desc is None or part not in desc.fields_by_name:
                return False
            desc = desc.fields_by_name[part].message_type
        return desc is None  # a key is a value (a string, a number), not a message

    @property
    def registry(self) -> DescriptorRegistry | None:
        return self._registry

    def settings(self, method: str) -> MethodSettings:
        return self._methods.get(method, _DEFAULT)

    def is_write(self, method: str) -> bool:
        read = self.settings(method).read
        if read is not None:
            return not read
        info = self._registry.method(method) if self._registry is not None else None
        return info is None or not info.read_only

    def strict(self, method: str) -> bool:
        strict = self.settings(method).strict
        return self._strict if strict is None else strict

    def keys(self, method: str, request: bytes | None) -> tuple[str, ...]:
        """The routing keys of a call, from its first request message (none when undecodable)."""
        if not self.settings(method).key or request is None:
            return ()
        return self.keys_of(method, self.decode(method, request))

    def decode(self, method: str, request: bytes | None) -> message.Message | None:
        """A request message of `method`, decoded (None without a descriptor, or when undecodable)."""
        if request is None or self._registry is None:
            return None
        info = self._registry.method(method)
        if info is None:
            return None
        msg = self._registry.message_class(info.input_type)()
        try:
            parse(msg, request)
        except message.DecodeError:
            return None
        return msg

    def keys_of(self, method: str, msg: message.Message | None) -> tuple[str, ...]:
        """The routing keys named by the method's `key` paths in a decoded first request (`key_space`)."""
        return self.key_space(self.values_of(method, msg) or ())

    def values_of(self, method: str, msg: message.Message | None) -> list[str] | None:
        """The values the method's `key` paths name in a decoded first request, as the request holds them;
        None when one of them cannot be read (the call is then ordered as one without a key)."""
        paths = self.settings(method).key
        if not paths or msg is None:
            return []
        values: list[str] = []
        for path in paths:
            read = self._read(method, msg, path)
            if read is None:
                return None
            values.extend(read)
        return values

    def _read(self, method: str, msg: message.Message, path: str) -> list[str] | None:
        """The values a key path names in a request; None, counted and logged (once a method and path), when
        reading them fails: a call is never failed by its keys."""
        try:
            return _values(msg, path.split("."))
        except Exception as exc:  # whatever went wrong, the call goes on without its keys
            if self._counters is not None:
                self._counters.inc("keys_not_read", method)
            if (method, path) not in self._not_read:
                self._not_read.add((method, path))
                _log.error(
                    "a routing key could not be read: the call is ordered as one without a key",
                    method=method,
                    path=path,
                    error=repr(exc),
                )
            return None

    def sampled(self, keys: tuple[str, ...]) -> bool:
        """Whether a read with these keys is mirrored."""
        if self.read_rate >= 1.0:
            return True
        if self.read_rate <= 0.0:
            return False
        if self.by_key and keys:
            return zlib.crc32("\x1f".join(keys).encode()) / 2**32 < self.read_rate
        return self._rng.random() < self.read_rate


def parse_methods(table: dict[str, Any]) -> dict[str, MethodSettings]:
    """The [methods."package.Service/Method"] tables: key, read, strict, adapter (shim.config reads them)."""
    methods = {}
    for name, entry in table.items():
        prefix = f'methods."{name}".'
        if "/" not in name or name.startswith("/") or name.endswith("/"):
            raise ConfigError(f'methods."{name}": a method is named "package.Service/Method"')
        settings = as_table(prefix.rstrip("."), entry)
        key = settings.pop("key", None)
        if isinstance(key, str):
            key = [key]
        if key is not None and (not isinstance(key, list) or not all(isinstance(k, str) and k for k in key)):
            raise ConfigError(f"{prefix}key: expected a request field path or a list of them")
        read_, strict, adapter = (settings.pop(k, None) for k in ("read", "strict", "adapter"))
        methods[name] = MethodSettings(
            key=tuple(key or ()),
            read=BOOL.parse(prefix + "read", read_) if read_ is not None else None,
            strict=BOOL.parse(prefix + "strict", strict) if strict is not None else None,
            adapter=TEXT.parse(prefix + "adapter", adapter) if adapter is not None else "",
        )
        finish(prefix, settings, ("key", "read", "strict", "adapter"))
    return methods


_DEFAULT = MethodSettings()


def _values(msg: Any, parts: list[str]) -> list[str]:
    if not parts:
        return [str(msg)] if not isinstance(msg, message.Message) else []
    head, rest = parts[0], parts[1:]
    value = getattr(msg, head)
    field = descriptor_of(msg).fields_by_name[head]
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:  # `.key`: the map's keys; `.value`: its values
        items = list(value.keys() if rest[0] == "key" else value.values())
        rest = rest[1:]
    elif field.is_repeated:
        items = list(value)
    elif field.has_presence and not has_field(msg, head):  # unset: a message, a oneof's member, `optional`
        return []
    else:
        items = [value]
    out: list[str] = []
    for item in items:
        out.extend(_values(item, rest))
    return out
