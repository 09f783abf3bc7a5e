"""[record]: recording the clients' calls to a file or into the store (`shim.recording`,
`docs/recording.md`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from shim.errors import ConfigError
from shim.settings import PATH, POSITIVE, SIZE, TEXT, Kind, duration, one_of, setting
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


def _recording_id(key: str, value: object) -> str:
    text = str(TEXT.parse(key, value))
    if text and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}", text):
        raise ConfigError(
            f"{key}: {value!r} is not a recording id (letters, digits, '.', '_', ':', '-'; at most 100)"
        )
    return text


INTO = ("file", "store")


@dataclass(frozen=True, slots=True)
class RecordSettings:
    """Each call the clients make, as the primary answered it, written to a file or into the store
    (`docs/recording.md`)."""

    SECTION: ClassVar[str] = "record"
    into: str = setting(
        "file",
        one_of(*INTO),
        '"store": into the evidence store ([store] url), read back with `shim record export`; '
        '"file": to `path`; `shim serve --record store` sets "store"',
    )
    id: str = setting(
        "",
        Kind("recording id", _recording_id),
        'the store recording\'s id: replicas given one id record into one recording (into = "store")',
        shown="a new one at each start, shared by the workers of one shim serve",
    )
    path: str = setting(
        "",
        PATH,
        'the file to write (a name ending ".gz" is compressed); `shim serve --record FILE`',
        shown="none: nothing is recorded",
    )
    max_bytes: int = setting(
        1024**3,
        Kind("size", _max_bytes, SIZE.show),
        "the recording ends before it grows beyond this (bytes before compression; into the store: "
        "each process's part)",
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

    @property
    def on(self) -> bool:
        """Whether anything is recorded."""
        return self.into == "store" or bool(self.path)

    def check(self, workers: int, store_url: str) -> None:
        """With the settings of other tables: a ConfigError naming what does not go together."""
        if self.path and workers > 1:
            raise ConfigError(
                "record.path: recording to a file needs one shim process (workers = 1);"
                ' record.into = "store" takes the calls of several'
            )
        if self.into == "store" and store_url == ":memory:":
            raise ConfigError(
                'record.into: "store" with store.url ":memory:" keeps nothing once the shim stops: give a'
                " SQLite file or postgresql://..."
            )

    def __post_init__(self) -> None:
        if self.into == "store" and self.path:
            raise ConfigError('record.path: not used with record.into = "store" (leave one of them out)')
        if self.into == "file" and self.id:
            raise ConfigError('record.id: names a recording in the store: set record.into = "store"')
