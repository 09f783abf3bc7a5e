"""The shim: serve a legacy gRPC service's exact interface, forward every call to
the primary, mirror it to the shadow, and record how the two answers differ.

    import shim
    running = await shim.start(shim.Config(bank=shim.Upstream("bank", "127.0.0.1:50052"), ...))

Attributes are imported on first use, so that `shim.cli` can configure grpc's
C core before grpc is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shim.app import Shim, start
    from shim.config import Config, Upstream
    from shim.errors import ConfigError, ShimError, StartupError
    from shim.pipeline import Sink

_EXPORTS = {
    "Shim": "shim.app",
    "start": "shim.app",
    "Config": "shim.config",
    "Upstream": "shim.config",
    "ConfigError": "shim.errors",
    "ShimError": "shim.errors",
    "StartupError": "shim.errors",
    "Sink": "shim.pipeline",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = ["Config", "ConfigError", "Shim", "ShimError", "Sink", "StartupError", "Upstream", "start"]
