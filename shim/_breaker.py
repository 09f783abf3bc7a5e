"""A circuit breaker for the shadow side: stop mirroring to a BK that keeps failing, probe later.

Closed: every call is mirrored. After `failures` shadow failures in a row
(no answer in time, unreachable, given up) it opens: calls are not mirrored
(each exchange says so) for `open_for` seconds. Then one call is let through
as a probe (half-open): if BK answers it, the breaker closes; if not, it
opens again. Every change is counted and logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from shim.metrics import Counters

_log = structlog.get_logger("shim.breaker")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class Breaker:
    def __init__(
        self,
        counters: Counters,
        failures: int = 5,
        open_for: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counters = counters
        self.failures = failures
        self.open_for = open_for
        self._clock = clock
        self.state = CLOSED
        self._in_a_row = 0
        self._opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        """Whether the next call may be mirrored."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self._clock() - self._opened_at >= self.open_for:
            self._change(HALF_OPEN)
        if self.state == HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def record(self, ok: bool) -> None:
        """The outcome of a mirrored call: did BK give a usable answer?"""
        if ok:
            self._in_a_row = 0
            if self.state != CLOSED:
                self._change(CLOSED)
            return
        self._in_a_row += 1
        if self.state == HALF_OPEN or (self.state == CLOSED and self._in_a_row >= self.failures):
            self._opened_at = self._clock()
            self._change(OPEN)

    def _change(self, state: str) -> None:
        previous, self.state = self.state, state
        self._probing = False
        self._counters.inc(f"breaker_{state.replace('-', '_')}")
        _log.warning("shadow breaker", change=f"{previous} -> {state}", failures_in_a_row=self._in_a_row)
