"""[store]: where the evidence is kept, for how long, and what each comparison keeps (`shim.store`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from comparators import carries_credentials
from shim.errors import ConfigError
from shim.settings import BOOL, POSITIVE, SIZE, TEXT, Kind, Resolve, duration, setting
from shim.units import parse_duration

MIN_REFRESH = 0.01  # store.refresh: re-reading the store more often keeps an idle shim busy
MIN_RETAIN = 3600.0  # store.retain: a shorter one deletes the evidence as it is written


def parse_retain(key: str, value: object) -> float:
    """`store.retain` (or `--retain`): at least an hour, however it is given."""
    return parse_duration(
        key,
        value,
        at_least=MIN_RETAIN,
        why="; a shorter retention deletes the evidence as it is written (leave it out to keep it all)",
    )


def _url(url: str, resolve: Resolve) -> str:
    """A file is relative to the config file; a URL or :memory: is kept as given."""
    return url if "://" in url or url.startswith(("sqlite:", ":memory:")) else resolve(url)


def correlation_id(header: str, metadata: Sequence[tuple[str, str | bytes]]) -> str:
    """The value of the client's request metadata `header` (store.correlation_header): "" without."""
    if header:
        for key, value in metadata:
            if key == header:
                return value if isinstance(value, str) else value.decode(errors="replace")
    return ""


_METADATA_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")  # what a gRPC metadata key can be: an HTTP token


def _correlation_header(key: str, value: object) -> str:
    name = str(TEXT.parse(key, value)).lower()
    if not _METADATA_NAME.fullmatch(name):
        raise ConfigError(
            f"{key}: {value!r} is not a metadata name (letters, digits and -_.: no space), so no call has it"
        )
    if carries_credentials(name):
        raise ConfigError(
            f"{key}: {value!r} names metadata that carries credentials, never stored; "
            "use a request id such as x-request-id or traceparent"
        )
    return name


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """The evidence store: comparisons, keys out of step, id pairs, intents and modes (`docs/store.md`)."""

    SECTION: ClassVar[str] = "store"
    url: str = setting(
        "shim.db",
        Kind("path or URL", TEXT.parse, resolve=_url),
        'a SQLite file (relative to the config file), ":memory:", or "postgresql://..." for a fleet',
    )
    id_cache: int = setting(
        1_000_000, POSITIVE, "id pairs kept in memory; older ones are read from the store"
    )
    refresh: float = setting(
        1.0,
        duration(at_least=MIN_REFRESH, why="; re-reading the store more often keeps an idle shim busy"),
        "how often keys out of step are re-read (resyncs, other replicas); at least 10ms",
    )
    lease: float = setting(
        3.0,
        duration(at_least=0.1),
        "a replica whose heartbeat (every refresh) is this old is taken for gone: no fleet switch waits for"
        " it, its tickets on keys are released and its mirrored writes' keys marked out of step (raised to"
        " three times refresh); keep it under grace_period",
    )
    retain: float | None = setting(
        None,
        Kind("duration", parse_retain),
        "comparisons older than this are deleted; at least 1h",
        shown="kept for ever",
    )
    payloads: bool = setting(False, BOOL, "true: also keep each call's request and answers")
    max_buffer: int = setting(
        100_000, POSITIVE, "comparisons waiting for the store; beyond, dropped and counted"
    )
    max_buffer_bytes: int = setting(
        256 * 1024**2,
        SIZE,
        "... and the bytes they hold (differences, kept payloads); beyond, dropped and counted",
    )
    correlation_header: str = setting(
        "",
        Kind("metadata key", _correlation_header),
        "request metadata naming the client's call (e.g. x-request-id), stored with each comparison; "
        "never one that carries credentials",
        shown="none",
    )
