"""Settings declared next to the code that uses them: each TOML table is a frozen dataclass whose
fields are declared with `setting(default, kind, help)`; `read` takes the table's values out of the
parsed TOML, each error one line naming the key. `shim.config` assembles the tables.

    @dataclass(frozen=True, slots=True)
    class VerifySettings:
        SECTION: ClassVar[str] = "verify"
        attempts: int = setting(5, POSITIVE, "checks of a key before it is left out of step")
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol, TypeVar

from shim.errors import ConfigError
from shim.units import MAX_DURATION, SIZE_UNITS, is_number, is_whole, parse_duration, parse_size, short

T = TypeVar("T")
Resolve = Callable[[str], str]  # a path as written in the config file -> the path to open


class Section(Protocol):
    """A dataclass of the settings of one TOML table."""

    SECTION: ClassVar[str]  # the table's name: [shadow]
    __dataclass_fields__: ClassVar[dict[str, Any]]


class Group(Protocol):
    """A dataclass of top-level settings declared together, without a table of their own: the file
    names its keys at its top level (`listen`), the Config holds them as one attribute (`serving`)."""

    GROUP: ClassVar[str]  # its attribute of the Config
    __dataclass_fields__: ClassVar[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Kind:
    """What a setting's value is: its name in the reference, how a TOML value becomes one (or the error
    naming the key), how its default is shown, and how a path in it is resolved against the config's
    folder."""

    name: str
    parse: Callable[[str, object], Any]
    show: Callable[[Any], str] = lambda value: _toml(value)
    resolve: Callable[[Any, Resolve], Any] | None = None


@dataclass(frozen=True, slots=True)
class Setting:
    """A declared setting, as `setting` leaves it in its field's metadata."""

    kind: Kind
    help: str
    reloadable: bool = False  # a reloaded config (SIGHUP) changes it in a running shim
    shown: str = ""  # the default as the reference says it, when its value says too little


def setting(default: T, kind: Kind, help: str, *, reloadable: bool = False, shown: str = "") -> T:
    """A dataclass field declaring a setting: its default, its kind and what it does."""
    return field(default=default, metadata={Setting: Setting(kind, help, reloadable, shown)})


def declared(cls: type[Any]) -> Iterator[tuple[str, Setting, object]]:
    """(key, declaration, default) of each setting `cls` declares, in order."""
    for f in fields(cls):
        if (decl := f.metadata.get(Setting)) is not None:
            yield f.name, decl, f.default


def take(cls: type[Any], prefix: str, table: dict[str, Any], resolve: Resolve) -> dict[str, Any]:
    """The values `table` gives for the settings `cls` declares (taken out of it), each parsed."""
    found: dict[str, Any] = {}
    for key, decl, _ in declared(cls):
        if (value := table.pop(key, None)) is not None:
            parsed = decl.kind.parse(prefix + key, value)
            found[key] = decl.kind.resolve(parsed, resolve) if decl.kind.resolve else parsed
    return found


# settings no longer read, and what took their place: giving one is a start error that says so
RETIRED = {
    "ordering.replica_lease": "store.lease, the one lease of a replica's liveness (tickets, intents and"
    " switches alike; docs/fleet.md#when-a-replica-dies)",
}


def finish(prefix: str, table: dict[str, Any], known: Iterable[str] = ()) -> None:
    """Whatever is left in a table is a key nothing declares (or one retired: its replacement named); with
    the `known` keys of the table, the one a typo most likely meant is named."""
    for key in sorted(table):
        if prefix + key in RETIRED:
            raise ConfigError(f"{prefix}{key} is no longer read: use {RETIRED[prefix + key]}")
    if table:
        hint = ""
        choices = sorted(set(known))
        for key in sorted(table):
            close = difflib.get_close_matches(key, choices, n=1, cutoff=0.75)
            close = close or [choice for choice in choices if _one_slip(key, choice)]
            if close:
                hint = f" (did you mean {prefix}{close[0]}?)"
                break
        raise ConfigError(f"unknown setting {', '.join(prefix + k for k in sorted(table))}{hint}")


def _one_slip(typed: str, meant: str) -> bool:
    """Whether `typed` is `meant` with one slip of the keys: two letters swapped, one wrong, missing or
    extra (`kye` for `key`, which is too short for difflib's ratio to call close)."""
    if typed == meant or abs(len(typed) - len(meant)) > 1:
        return False
    if len(typed) == len(meant):
        wrong = [i for i, (a, b) in enumerate(zip(typed, meant, strict=True)) if a != b]
        swapped = len(wrong) == 2 and wrong[1] == wrong[0] + 1 and typed[wrong[0]] == meant[wrong[1]]
        return len(wrong) == 1 or (swapped and typed[wrong[1]] == meant[wrong[0]])
    shorter, longer = sorted((typed, meant), key=len)
    return any(longer[:i] + longer[i + 1 :] == shorter for i in range(len(longer)))


def as_table(key: str, value: object) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    raise ConfigError(f"{key}: expected a table ([{key}])")


def read(cls: type[Section], value: object, resolve: Resolve = str) -> dict[str, Any]:
    """The settings a [SECTION] table gives (those it leaves out keep their defaults)."""
    table = as_table(cls.SECTION, value)
    found = take(cls, f"{cls.SECTION}.", table, resolve)
    finish(f"{cls.SECTION}.", table, (key for key, _, _ in declared(cls)))
    return found


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, tuple):
        return f"[{', '.join(map(_toml, value))}]"
    return str(value)


def _check(name: str, ok: Callable[[Any], bool], says: str, then: Callable[[Any], Any] = lambda v: v) -> Kind:
    def parse(key: str, value: object) -> Any:
        if not ok(value):
            raise ConfigError(f"{key}: {value!r} {says}")
        return then(value)

    return Kind(name, parse)


BOOL = _check("bool", lambda v: isinstance(v, bool), "is not true or false")
TEXT = _check("string", lambda v: isinstance(v, str) and v != "", "is not a non-empty string")
POSITIVE = _check("positive integer", lambda v: is_whole(v) and v > 0, "is not a positive integer")
COUNT = _check("count (0 or more)", lambda v: is_whole(v) and v >= 0, "is not a count (0 or more)")
SHARE = _check(
    "share (0 to 1)",
    lambda v: is_number(v) and 0 <= v <= 1,
    "is not a share between 0 and 1 (e.g. 0.1)",
    float,
)
NON_NEGATIVE = _check(
    "number (0 or more)", lambda v: is_number(v) and v >= 0, "is not a number of 0 or more", float
)
PATH = Kind("path", TEXT.parse, resolve=lambda path, resolve: resolve(path))
ADDRESS = Kind("HOST:PORT", TEXT.parse)


def check_choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")


def one_of(*choices: str) -> Kind:
    def parse(key: str, value: object) -> str:
        check_choice(key, TEXT.parse(key, value), choices)
        return str(value)

    return Kind(" | ".join(f'"{c}"' for c in choices), parse)


def _locations(key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise ConfigError(f'{key}: expected a field ("package.Message.field") or a list of them')
    return tuple(value)


FIELDS = Kind("field or list of fields", _locations)


def check_address(key: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    malformed = not sep or not host or not port.isdigit() or int(port) > 65535
    if malformed and not value.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        raise ConfigError(f"{key}: {value!r} is not HOST:PORT")


def same_server(one: str, other: str) -> bool:
    """Whether two targets (HOST:PORT or a gRPC target) name one server as written: the same host and
    port, whatever the scheme (`dns:///`, `ipv4:`) or case, loopback being one host however named."""
    return _server(one) == _server(other)


def _server(target: str) -> str:
    target = target.strip().lower()
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target.removeprefix(scheme)
            break
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    if host in ("localhost", "::1") or host.startswith("127."):
        host = "loopback"
    return f"{host}:{port}"


def duration(at_least: float = 0.0, at_most: float = MAX_DURATION, why: str = "") -> Kind:
    return Kind(
        "duration",
        lambda key, value: parse_duration(key, value, at_least, at_most, why),
        lambda seconds: f'"{short(seconds)}"',
    )


def _show_size(size: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        if size > 0 and size % SIZE_UNITS[unit] == 0:
            return f'"{size // SIZE_UNITS[unit]}{unit}"'
    return '"unlimited"' if size < 0 else str(size)


SIZE = Kind("size", parse_size, _show_size)
