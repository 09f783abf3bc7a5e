"""What the shim knows of each method: read or write, its routing keys, whether a read is mirrored.

- A method is a read when its descriptor says `idempotency_level = NO_SIDE_EFFECTS`,
  unless `[methods."pkg.Svc/Method"] read = true|false` says otherwise. A
  method without a descriptor is a write (the safe guess: writes are never sampled).
- Its routing keys are the values of the request fields named by `key`
  (dotted paths into the first request message; a repeated field gives one key
  per value). Calls with the same key value reach the shadow in order (see
  `shim._lanes`). Key values of different fields that are equal are the same key.
- Reads are mirrored at `sampling.reads` (0 to 1); with `sampling.by_key`,
  the decision is a hash of the keys, so the same account is always or never
  sampled. Writes are always mirrored.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from google.protobuf import message

from comparators import DescriptorRegistry
from comparators.message_api import descriptor_of, has_field, parse
from shim.errors import ConfigError
from shim.settings import BOOL, SHARE, TEXT, as_table, finish, setting


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
    ) -> None:
        self._registry = registry
        self._methods = {"/" + name.lstrip("/"): settings for name, settings in methods.items()}
        self.read_rate = read_rate
        self.by_key = by_key
        self._strict = strict
        self._rng = rng or random.Random()
        # key values read from redacted fields ("pkg.Message.field") are replaced by `hide(value)`:
        # equal values stay equal keys, and no raw value reaches a log or the store
        self._hide = hide
        self._hidden_paths: set[tuple[str, str]] = set()
        self._validate()
        if hide is not None and hidden_fields and self._registry is not None:
            for method, settings in self._methods.items():
                info = self._registry.method(method)
                for path in settings.key if info is not None else ():
                    if self._leaf(info.input_type, path) in hidden_fields:  # type: ignore[union-attr]
                        self._hidden_paths.add((method, path))

    def _validate(self) -> None:
        for method, settings in self._methods.items():
            where = f'methods."{method.lstrip("/")}"'
            if self._registry is None:
                if settings.key:
                    raise ConfigError(f"{where}: a routing key needs descriptors (--descriptor-set)")
                continue
            info = self._registry.method(method)
            if info is None:
                raise ConfigError(f"{where}: unknown method (not in the descriptors)")
            for path in settings.key:
                if not self._field_path_exists(info.input_type, path):
                    kind = "holding a string or a number"
                    raise ConfigError(f"{where}: key {path!r} names no field of {info.input_type} {kind}")

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
        """The routing keys named by the method's `key` paths in a decoded first request."""
        paths = self.settings(method).key
        if not paths or msg is None:
            return ()
        keys: list[str] = []
        for path in paths:
            values = _values(msg, path.split("."))
            if self._hidden_paths and (method, path) in self._hidden_paths and self._hide is not None:
                values = [self._hide(v) for v in values if v]
            keys.extend(values)
        return tuple(dict.fromkeys(k for k in keys if k))

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
    items = list(value) if field.is_repeated else [value]
    if not field.is_repeated and field.message_type is not None and not has_field(msg, head):
        return []
    out: list[str] = []
    for item in items:
        out.extend(_values(item, rest))
    return out
