"""The shim's own log: JSON lines on stderr (the diff log is separate, see sinks.DiffLog).

What a client chose (a method's name, a key from a request) is cut to `CLIENT_MOST` characters in an
event: a client's call cannot make the shim write a line of any length.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import MutableMapping
from typing import Any

import structlog

CLIENT_SUPPLIED = ("method", "key")  # the events' fields whose values a client chose
CLIENT_MOST = 512  # characters kept of each: a gRPC method's name is far shorter


def cut_client_strings(
    _logger: object, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """The event with each value a client chose (`CLIENT_SUPPLIED`) cut to `CLIENT_MOST` characters, saying
    how long it was."""
    for field in CLIENT_SUPPLIED:
        value = event.get(field)
        if isinstance(value, str) and len(value) > CLIENT_MOST:
            event[field] = f"{value[:CLIENT_MOST]}... ({len(value)} characters)"
    return event


def configure(stream: object = None) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,  # e.g. `worker` in a worker of `--workers N`
            structlog.processors.add_log_level,
            cut_client_strings,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stderr),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def raised(exc: BaseException | None, redacting: bool) -> dict[str, Any]:
    """What a log line says of an exception met on a client's call: the exception itself (`exc_info`, its
    traceback rendered); with redaction on, its type and where it was raised alone, as a traceback quotes
    the exception's message, and those of its chain, as they were (the line's own message says what went
    wrong, scrubbed: `comparators.redact.FreeText`)."""
    if exc is None:
        return {}
    if not redacting:
        return {"exc_info": exc}
    said: dict[str, Any] = {"exception_type": type(exc).__name__}
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        said["raised_at"] = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}"
    return said
