"""The shim's exceptions: one tree, all rooted at ShimError.

ShimError
├── ConfigError     a config file or flag is wrong; the message names the key
└── StartupError    the shim could not start (port busy, descriptor unreadable)

gRPC failures are never raised: they become `Outcome` values at the boundary.
"""

from __future__ import annotations


class ShimError(Exception):
    """Base of every error the shim raises on purpose."""


class ConfigError(ShimError):
    """The configuration is invalid; str(error) is one line naming the problem."""


class StartupError(ShimError):
    """The shim could not start serving."""
