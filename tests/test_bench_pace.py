"""The benches count a call compared only if it was compared within `PACE` of its load's end: Envoy holds the
copies for a plane that falls behind, which then catches up after a short step and looked as if it kept up."""

from __future__ import annotations

import asyncio
import time

import pytest

from bench import openloop
from bench.openloop import Result, Target


class Behind(Target):
    """A shim whose comparisons of a load come in two parts: half within the pace, half 3 s later."""

    def __init__(self) -> None:
        super().__init__("behind", "127.0.0.1:1", 0)
        self.ended = 0.0

    async def load(self, rate: float, duration: float, seed: int) -> Result:
        self.ended = time.monotonic()
        result = Result(offered=rate)
        result.sent = result.ok = 100
        return result

    async def figures(self) -> dict[str, float]:
        if not self.ended:
            return {"shim_comparisons_total": 0.0}
        late = time.monotonic() - self.ended >= 0.3
        return {"shim_comparisons_total": 100.0 if late else 50.0}


async def test_calls_compared_after_the_pace_do_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openloop, "PACE", 0.05)
    target = Behind()
    try:
        result, compared = await target.compared(100.0, 1.0, seed=1)
        assert (result.sent, compared) == (100, 50)
        assert (await target.figures())["shim_comparisons_total"] == 100.0  # the rest came, later
    finally:
        await asyncio.gather(*(channel.close() for channel in target.channels))
