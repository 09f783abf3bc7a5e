"""The event loop's CPU per comparison handed to the comparison worker process: exchanges each handed over
alone (the baseline), one a turn of the loop, and many a turn, measured in the same run.

    python bench/handover.py [--exchanges N] [--per-turn K]

The comparison pipeline (`shim.pipeline`, `[comparison] executor = "process"`) hands the exchanges
submitted within a few milliseconds (`GATHER`) to its worker at once, up to 64: one pickling, one trip
through the pool's threads and one wake-up of the loop for them all. Under load the loop turns often,
with a mirrored call or two ending each time. This measures what the shim's own process spends per
comparison (its CPU time, all its threads), and the wall time until every comparison is back. The
baseline leaves more than the gathering time between exchanges, so that each goes alone. The exchanges
are small unary ones with no descriptors: the worker's own work is not what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from comparators import Exchange, Outcome
from shim.metrics import Counters
from shim.pipeline import GATHER, ComparisonPipeline, WorkerSetup


async def _run(exchanges: int, per_turn: int, pause: float = 0.0) -> tuple[float, float]:
    """(CPU seconds of this process per comparison, wall seconds in all) for `exchanges` submitted
    `per_turn` at a time, `pause` seconds apart (0: the loop turns once between)."""
    compared: list[object] = []
    pipeline = ComparisonPipeline(
        None,
        [compared.append],
        Counters(),
        executor="process",
        setup=WorkerSetup(None, (), ()),
        max_pending=exchanges + 1,
    )
    await pipeline.start()
    exchange = Exchange(
        method="/bench.v1.Bench/Call",
        requests=(b"r" * 60,),
        primary=Outcome(code=0, messages=(b"a" * 80,)),
        shadow=Outcome(code=0, messages=(b"b" * 80,)),
    )
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(exchanges):
        pipeline.submit(exchange)
        if (n + 1) % per_turn == 0:
            await asyncio.sleep(pause)  # the loop turns
    await pipeline.drain()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    pipeline.close()
    assert len(compared) == exchanges
    return cpu / exchanges, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=2000, help="comparisons per run (default 2000)")
    parser.add_argument(
        "--per-turn", type=int, default=32, help="submitted per turn of the loop (default 32)"
    )
    options = parser.parse_args()
    runs = {
        "each alone": asyncio.run(_run(options.exchanges, 1, pause=2 * GATHER)),
        "one a turn": asyncio.run(_run(options.exchanges, 1)),
        f"{options.per_turn} a turn": asyncio.run(_run(options.exchanges, options.per_turn)),
    }
    print(
        f"{options.exchanges} comparisons: each handed over alone (baseline), one a turn, "
        f"{options.per_turn} a turn"
    )
    alone_cpu = runs["each alone"][0]
    for name, (cpu, wall) in runs.items():
        print(
            f"  {name + ':':<18} {cpu * 1e6:7.1f} us of CPU each (x{cpu / alone_cpu:.2f}), "
            f"{options.exchanges / wall:8.0f}/s"
        )
    together = min(cpu for cpu, _ in list(runs.values())[1:])
    print(f"handed over together: x{together / alone_cpu:.2f} of the CPU per comparison at most")


if __name__ == "__main__":
    main()
