"""[record]: recording the clients' calls to a file (`shim.recording`, `docs/recording.md`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shim.errors import ConfigError
from shim.settings import PATH, POSITIVE, SIZE, Kind, duration, one_of, setting
from shim.units import is_number


def _share(key: str, value: object) -> float:
    if not is_number(value) or not 0 < value <= 1:
        raise ConfigError(f"{key}: {value!r} is not a share above 0 and at most 1 (e.g. 0.1)")
    return float(value)


def _max_bytes(key: str, value: object) -> int:
    size = int(SIZE.parse(key, value))
    if size < 0:
        raise ConfigError(f'{key}: a recording is bounded: give a size such as "1GiB"')
    return size


@dataclass(frozen=True, slots=True)
class RecordSettings:
    """Each call the clients make, as the primary answered it, written to a file (`docs/recording.md`)."""

    SECTION: ClassVar[str] = "record"
    path: str = setting(
        "",
        PATH,
        'the file to write (a name ending ".gz" is compressed); `shim serve --record FILE`',
        shown="none: nothing is recorded",
    )
    max_bytes: int = setting(
        1024**3,
        Kind("size", _max_bytes, SIZE.show),
        "the recording ends before it grows beyond this (bytes before compression)",
    )
    max_duration: float = setting(
        24 * 3600.0, duration(at_least=1.0), "the recording ends this long after it began"
    )
    sample: float = setting(
        1.0,
        Kind("share (above 0, at most 1)", _share),
        "the share of keys recorded: a call is recorded when any of its keys is (each key's history "
        "whole); calls with no key always are",
    )
    origin: str = setting(
        "running",
        one_of("running", "empty"),
        '"empty": the primary held nothing when recording began (a replay may start from empty)',
    )
    queue: int = setting(
        10_000, POSITIVE, "finished calls waiting to be written; beyond, a call is lost (and counted)"
    )
    max_call_bytes: int = setting(
        64 * 1024**2,
        Kind("size", _max_bytes, SIZE.show),
        "a call whose messages are larger in all is not recorded (counted as lost)",
    )
