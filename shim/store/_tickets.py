"""A write's tickets on its keys, as `key_order.KeyOrder` issues them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Held:
    """One ticket on one key; `wait` is False when ticket - 1 needs no waiting for in the store."""

    key: str
    ticket: int
    wait: bool


Finish = Callable[[tuple[Held, ...]], None]  # marks tickets done


class Tickets:
    """One write's tickets, one per key: `taken` once the store issued them (or failed: `error`)."""

    __slots__ = ("_finish", "_released", "error", "held", "keys", "method", "taken")

    def __init__(self, keys: tuple[str, ...], method: str, finish: Finish) -> None:
        self._finish = finish
        self.keys = keys
        self.method = method
        self.held: tuple[Held, ...] = ()
        self.error = ""
        self.taken = asyncio.Event()
        self._released = False

    def release(self) -> None:
        """The write is over on the shadow (or given up): its tickets are done, now or once issued."""
        if not self._released:
            self._released = True
            self._finish(self.held)

    def _issued(self, held: tuple[Held, ...], error: str = "") -> None:
        self.held, self.error = held, error
        self.taken.set()
        if self._released:
            self._finish(held)
