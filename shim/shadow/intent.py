"""A mirrored write's intent (`shim.intents`): written down and committed, naming its keys, before the write
goes to the shadow, so that a shim killed while the shadow had it leaves its keys to be marked out of step.
A stream's later messages may add keys: the intent is written again before one that does is sent."""

from __future__ import annotations

import asyncio

from shim.evidence.record import time_ordered_id
from shim.intents import Intents
from shim.shadow.fate import until


class WriteIntent:
    __slots__ = ("_keys", "_saved", "id")

    def __init__(self) -> None:
        self.id = ""  # its id in the store ("": none written)
        self._saved: asyncio.Task[None] | None = None  # its recording, begun when the call is placed
        self._keys = 0  # how many of the keys the recorded intent names

    def record(self, intents: Intents | None, method: str, keys: tuple[str, ...]) -> None:
        """Begin writing it down, naming `keys` (awaited before the write is sent to the shadow)."""
        if intents is None or not keys:  # a lost write with no key marks no key
            return
        self.id = self.id or time_ordered_id()
        self._keys = len(keys)
        self._saved = asyncio.get_running_loop().create_task(
            intents.record(self.id, method, keys), name=f"intent {method}"
        )

    async def written(
        self, intents: Intents | None, method: str, keys: tuple[str, ...], stop: asyncio.Event
    ) -> bool:
        """Wait until it names every one of `keys` (written again if it does not); False if the call is
        given up first."""
        if self._keys < len(keys):  # keys the intent does not name yet
            previous = self._saved
            if previous is not None and not await until(previous, stop):
                return False
            self.record(intents, method, keys)
        return self._saved is None or await until(self._saved, stop)
