"""`shim._timeouts.bounded`: a time limit that never swallows a cancellation. Python 3.11's
asyncio.wait_for returns the result of an awaitable that completed as the task awaiting it was cancelled,
and the cancellation is lost: a SIGTERM that cancelled a starting comparison plane as Envoy came up would
leave the plane serving, and its supervisor waiting for it, until killed (python/cpython#86296)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from shim._timeouts import bounded


async def _cancelled_as_it_completes(limit: Callable[[Awaitable[int], float], Awaitable[Any]]) -> Any:
    """Cancel a task the moment what it waits for (within `limit`) completes; what the task ends with."""
    ready = asyncio.Event()

    async def inner() -> int:
        await ready.wait()
        return 1

    task = asyncio.ensure_future(limit(inner(), 10.0))
    for _ in range(3):  # the task, and the inner awaitable, are waiting
        await asyncio.sleep(0)
    ready.set()  # the inner awaitable completes in the next turn of the loop ...
    task.cancel()  # ... as its waiter is cancelled
    return await task


async def test_a_cancellation_as_the_awaitable_completes_is_kept() -> None:
    with pytest.raises(asyncio.CancelledError):
        await _cancelled_as_it_completes(bounded)


async def test_the_result_or_a_timeout() -> None:
    assert await bounded(asyncio.sleep(0, result="done"), 1.0) == "done"
    with pytest.raises(TimeoutError):
        await bounded(asyncio.sleep(10), 0.01)
