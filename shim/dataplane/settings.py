"""[envoy]: the Envoy data plane's process (`docs/dataplane.md`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shim.errors import ConfigError
from shim.serving_settings import WORKERS
from shim.settings import Kind, setting
from shim.units import is_whole


def _nice(key: str, value: object) -> int:
    if not is_whole(value) or not 0 <= value <= 19:
        raise ConfigError(f"{key}: {value!r} is not a whole number from 0 to 19")
    return value


@dataclass(frozen=True, slots=True)
class EnvoySettings:
    """Envoy, where it carries the clients' calls (`dataplane = "auto"` or `"envoy"`)."""

    SECTION: ClassVar[str] = "envoy"
    concurrency: int = setting(
        1,
        WORKERS,
        "Envoy's worker threads (1: each key's writes are copied in their order)",
    )
    comparison_nice: int = setting(
        10,
        Kind("whole number 0 to 19", _nice),
        "how much lower the comparison plane runs than Envoy's CPU priority",
    )
