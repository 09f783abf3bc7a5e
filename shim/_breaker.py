"""A circuit breaker for the shadow side: stop mirroring to a BK that keeps failing, probe later.

Closed: every call is mirrored. After `failures` shadow failures in a row it opens: calls are not
mirrored (each exchange says so) for `open_for` seconds. Then one call is let through as a probe
(half-open): if BK answers it, the breaker closes; if not, it opens again. Every change is counted
and logged.

Only what BK did is a verdict on its health: it answered (whatever its status), or it could not be
reached, or it did not answer within the shadow timeout (`Fate.verdict`). A call the shim did not send
(an id with no counterpart, a write the primary never received, its turn or its intent never came) or
cut short itself (the client cancelled, its place or its bytes ran out, the shim stopped) says nothing
of BK: it neither counts as a failure nor resets the count. A probe that ends so, or a probe's call that
is never mirrored at all (a read left out by sampling), is `release`d: the next call probes instead.
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
        self._probes = 0  # probes let through so far: the number of the one out, while `_probing`

    def allow(self) -> bool:
        """Whether the next call may be mirrored (in half-open: it is the probe, `probe` names it)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self._clock() - self._opened_at >= self.open_for:
            self._change(HALF_OPEN)
        if self.state == HALF_OPEN and not self._probing:
            self._probing = True
            self._probes += 1
            return True
        return False

    @property
    def probe(self) -> int:
        """The number of the probe out now; 0 when none is (closed, open, or half-open awaiting one)."""
        return self._probes if self._probing else 0

    def release(self, probe: int) -> None:
        """The probe `probe` ended without a verdict on BK's health: the next call probes instead. Nothing
        when it is no longer the probe out (a verdict came, or another call's changed the state)."""
        if probe and self._probing and probe == self._probes:
            self._probing = False

    def record(self, ok: bool) -> None:
        """A verdict on BK's health: did BK give an answer (True), or not (False: unreachable, too late)?"""
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
