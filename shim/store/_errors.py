"""The store's one exception, and how a driver's error becomes one line of its message."""

from __future__ import annotations

from shim.errors import ShimError


class StoreError(ShimError):
    """The store failed; str(error) is one line: what failed and where."""


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__
