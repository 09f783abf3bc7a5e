"""Durations and sizes as the config file and the flags write them: "250ms", "30d", "64MiB"."""

from __future__ import annotations

import math
import re
from typing import TypeGuard

from shim.errors import ConfigError


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or a float, and not a bool (TOML's true is no number)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION = 3650 * 86400.0  # ten years: any longer duration is a mistake


def parse_duration(
    key: str, value: object, at_least: float = 0.0, at_most: float = MAX_DURATION, why: str = ""
) -> float:
    """Seconds, finite and between the bounds; `why` ends the error of a value out of them.

    A duration has its unit ("50ms"): a number without one is refused, as the flags refuse "50", whatever
    it would be taken for (`tolerance = 50` meant 50ms, and was 50 s). 0 alone needs none."""
    seconds = None
    if is_number(value) and value > 0 and math.isfinite(value):
        raise ConfigError(
            f'{key}: {value!r} has no unit: write "{value:g}ms" or "{value:g}s" (a duration such as "250ms",'
            ' "2s", "1m", "24h" or "30d")'
        )
    if is_number(value) and value >= 0:
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    if seconds is None:
        raise ConfigError(f'{key}: {value!r} is not a duration such as "250ms", "2s", "1m", "24h" or "30d"')
    if not math.isfinite(seconds):  # TOML's inf, or 400 digits
        raise ConfigError(f"{key}: {value!r} is not a finite duration")
    if not at_least <= seconds <= at_most:
        bound = f"at least {short(at_least)}" if seconds < at_least else f"at most {short(at_most)}"
        raise ConfigError(f"{key}: {value!r} is out of bounds: it must be {bound}{why}")
    return seconds


def short(seconds: float) -> str:
    """A duration as the config would write it: "10ms", "1h", "3650d"."""
    for unit, size in reversed(DURATION_UNITS.items()):
        count = seconds / size
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"


_SIZE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
}
_GRPC_MAX = 2**31 - 1


def parse_size(key: str, value: object) -> int:
    """Bytes ("unlimited": -1), at most the largest size gRPC accepts."""
    if value == "unlimited":
        return -1
    if is_whole(value) and value > 0:
        return min(value, _GRPC_MAX)
    if isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(match.group(1)) * SIZE_UNITS[match.group(2)]
        if size > 0:
            return min(size, _GRPC_MAX)
    raise ConfigError(f'{key}: {value!r} is not a size such as "4MiB" or "unlimited"')
