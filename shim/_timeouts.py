"""A time limit on an awaitable, for every wait the shim bounds.

`asyncio.wait_for` on Python 3.11 loses a cancellation that arrives as the awaitable completes: it returns
the awaitable's result instead (python/cpython#86296, fixed in 3.12). A SIGTERM that cancelled a starting
comparison plane at the moment Envoy came up would be lost that way: the plane would serve on, and its
supervisor wait for it, until killed. `asyncio.timeout` keeps the cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def bounded(awaitable: Awaitable[T], seconds: float) -> T:
    """`awaitable`'s result, or TimeoutError after `seconds`; a cancellation is never lost."""
    async with asyncio.timeout(seconds):
        return await awaitable
