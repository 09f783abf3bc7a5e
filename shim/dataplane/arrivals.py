"""Waiting until the first N copies received have their place in the lanes, for many waiters at once.

A read asked of Bank again (noise) waits until every copy Envoy had sent by then has its place, so that
a write on its keys is known before it checks for one. Under load dozens of such reads wait at once,
each for a count of its own. One ticker serves them all: each tick it finds how many of the first
copies have their place (`through`, one look at the copies being received) and releases every waiter
whose count is within it, so that waiting costs one look a tick, however many wait.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

TICK = 0.002  # seconds between looks while anyone waits
T = TypeVar("T")


class Arrivals:
    """Waiters on `through()`: how many of the first copies received have their place (it only grows)."""

    def __init__(self, through: Callable[[], int]) -> None:
        self._through = through
        self._waiting: list[tuple[int, int, asyncio.Future[bool]]] = []  # a heap by count
        self._order = itertools.count()  # ties broken by arrival, never by comparing futures
        self._ticker: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Waiters not yet released nor given up."""
        return sum(1 for _, _, future in self._waiting if not future.done())

    def reached(self, count: int) -> bool:
        """Whether each of the first `count` copies has its place now."""
        return count <= self._through()

    async def through(self, count: int, within: float) -> bool:
        """Whether each of the first `count` copies has its place, waiting up to `within` seconds."""
        if self.reached(count):
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (count, next(self._order), future))
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="copies' places")
        try:
            async with asyncio.timeout(within):
                return await future
        except TimeoutError:
            return False
        finally:
            future.cancel()  # a waiter given up on leaves the heap at the next look that reaches it

    async def _tick(self) -> None:
        waiting = self._waiting
        while waiting:
            through = self._through()
            while waiting and (waiting[0][0] <= through or waiting[0][2].done()):
                future = heapq.heappop(waiting)[2]
                if not future.done():
                    future.set_result(True)
            if waiting:
                await asyncio.sleep(TICK)

    def close(self) -> None:
        """Stop looking: the waiters left are answered no."""
        if self._ticker is not None:
            self._ticker.cancel()
        for _, _, future in self._waiting:
            if not future.done():
                future.set_result(False)
        self._waiting.clear()


class FreshReads(Generic[T]):
    """A figure read afresh for each caller, the reads shared: each caller is answered by a read that began
    after it asked (so the figure is at least what it was then), and callers that ask while a read is
    under way share the next one. At most one read is under way and one waits, however many ask.

    A read asked again of Bank (noise) asks how many copies Envoy has sent by now: four reads of Envoy's
    admin each. Under load dozens ask at once; one read after another serves them all."""

    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read
        self._reading: asyncio.Task[T] | None = None  # began before some callers asked: serves none of them
        self._next: asyncio.Task[T] | None = None  # to begin once `_reading` ends: serves all who asked

    async def get(self) -> T:
        """The figure, read after this call began (the read's own errors are raised to each caller)."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_task(self._after(self._reading))
            self._next.add_done_callback(_retrieved)  # its error is no one's when every caller gave up
        return await asyncio.shield(self._next)  # a caller given up on leaves the read to the others

    async def _after(self, before: asyncio.Task[T] | None) -> T:
        if before is not None:
            await asyncio.wait([before])
        me = asyncio.current_task()
        self._next, self._reading = None, me  # callers from now on need a read of their own
        try:
            return await self._read()
        finally:
            if self._reading is me:
                self._reading = None


def _retrieved(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
