"""How late the event loop runs: the shim's measure of its own overload.

A probe sleeps `every` seconds and measures how late it wakes. `lag` rises at
once to a late wake-up and decays by a tenth per probe, so one slow turn of
the loop shows for about a quarter of a second, and a loop that keeps being
late keeps it high. The shadow dispatcher sheds mirrored reads while it is
high (`[shadow] shed_lag`): the primary path shares this loop, and the shadow
must never slow it down. Writes are never shed: BK would miss them.
"""

from __future__ import annotations

import asyncio


class LoopLag:
    def __init__(self, every: float = 0.01) -> None:
        self.every = every
        self.lag = 0.0  # seconds

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.every)
            late = max(loop.time() - before - self.every, 0.0)
            self.lag = max(late, self.lag * 0.9)
