"""How late the event loop runs: the shim's measure of its own overload.

A probe sleeps `every` seconds and measures how late it wakes. `measured`
rises at once to a late wake-up and decays by a tenth per probe, so one slow
turn of the loop shows for about a quarter of a second, and a loop that keeps
being late keeps it high. The shadow dispatcher sheds mirrored reads while
`lag` is high (`[shadow] shed_lag`): the primary path shares this loop, and the
shadow must never slow it down. Writes are never shed: BK would miss them.

A loop that has just started is late for reasons that pass (the first calls,
a worker process starting on the other cores): `lag` stays 0 until the probe
has seen the loop on time (each wake-up less than `every` late) for `settle`
seconds in a row, or `warm_up` seconds have passed, whichever comes first.
From then on `lag` is `measured`.
"""

from __future__ import annotations

import asyncio


class LoopLag:
    def __init__(self, every: float = 0.01, settle: float = 1.0, warm_up: float = 10.0) -> None:
        self.every = every
        self.settle = settle
        self.warm_up = warm_up
        self.measured = 0.0  # seconds: how late the loop runs
        self.lag = 0.0  # seconds: what the shim acts on (0 until settled)
        self.settled = False

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        started = steady_since = loop.time()
        while True:
            before = loop.time()
            await asyncio.sleep(self.every)
            now = loop.time()
            late = max(now - before - self.every, 0.0)
            self.measured = max(late, self.measured * 0.9)
            if not self.settled:
                if late >= self.every:
                    steady_since = now
                self.settled = now - steady_since >= self.settle or now - started >= self.warm_up
            if self.settled:
                self.lag = self.measured
