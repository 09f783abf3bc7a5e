"""The shim's own log: JSON lines on stderr (the diff log is separate, see sinks.DiffLog)."""

from __future__ import annotations

import sys

import structlog


def configure(stream: object = None) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,  # e.g. `worker` in a worker of `--workers N`
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=stream or sys.stderr),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
