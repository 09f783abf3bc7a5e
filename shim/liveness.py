"""This replica's heartbeat: the one sign of life the fleet reads (`shim.store.liveness`).

The replica writes it when it opens its store, before it mirrors anything, then every
`store.refresh`, on a connection of its own on PostgreSQL (never behind the comparisons' writes),
until its writes are judged at its stop; then it removes it. A replica silent for `store.lease`
(at least three heartbeats) is taken for gone by the others, for everything at once: a fleet switch
stops waiting for it, its tickets on keys are released and its mirrored writes' intents are claimed,
their keys marked out of step. A replica merely slow that long (a pause of its process, a partition
from the store) is taken for gone too: what it held is then marked, never lost; its own writes,
when they finish, are judged as usual.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from shim.store import Store, StoreError

_log = structlog.get_logger("shim.liveness")


def lease_of(refresh: float, lease: float) -> float:
    """The lease in force: `store.lease`, raised to three heartbeats."""
    return max(lease, 3 * refresh)


class Liveness:
    """Beats for `replica` into `store` every `refresh` seconds from `start` to `stop`."""

    def __init__(self, store: Store, replica: str, refresh: float) -> None:
        self.replica = replica
        self.refresh = refresh
        self._store = store
        self._task: asyncio.Task[None] | None = None
        self.failures = 0  # heartbeats not written in a row

    async def start(self) -> None:
        """Write the first heartbeat (StoreError if the store cannot be reached), then keep beating."""
        await self._store.liveness.beat(self.replica)
        self._task = asyncio.get_running_loop().create_task(self._beating(), name="heartbeat")

    async def stop(self, within: float = 1.0) -> None:
        """Stop beating and remove the heartbeat, waiting at most `within` seconds for the store (one that
        fails or does not answer leaves it to the lease)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(StoreError, TimeoutError):
            async with asyncio.timeout(within):
                await self._store.liveness.forget(self.replica)

    async def _beating(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self._store.liveness.beat(self.replica)
                self.failures = 0
            except StoreError as exc:
                self.failures += 1
                _log.warning("heartbeat not written", error=str(exc), in_a_row=self.failures)
