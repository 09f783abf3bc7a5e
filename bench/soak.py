"""Soak: the shim in `shadow` mode under steady open-loop load; does its memory stay flat?

    python bench/soak.py [--minutes 10] [--rate 100] [--warmup 60] [--json FILE]

Starts the sample Bank and BK and one shim in `shadow` mode on the sample's
config, with its store in a SQLite file (every comparison is stored, as in
production), each in its own process. It first opens the accounts, then sends
`--rate` calls a second of the open-loop bench's mix (`bench/openloop.py`) for
`--minutes`, sampling the resident memory (VmRSS) of the shim and its
comparison worker every few seconds.

The figure is the growth after warm-up: the RSS at the end against the RSS once
`--warmup` seconds have passed (target: at most x1.10). A latency summary per
minute shows the shim kept up. Pick `--rate` at about half of what `shadow`
mode sustains on the machine (`python -m bench` prints it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.openloop import SAMPLE_CONFIG, Target, _free_ports, _start, memory_mib


def _rss_mib(pid: int) -> float:
    """VmRSS of `pid` and its live descendants (the comparison worker), in MiB."""
    return memory_mib(pid, "VmRSS")


async def _soak(args: argparse.Namespace, address: str, shim_pid: int) -> dict[str, Any]:
    target = Target("shadow", address, 0, channels=4)
    samples: list[tuple[float, float]] = []  # (seconds since the load began, RSS MiB)
    minutes: list[dict[str, Any]] = []
    try:
        await target.open_accounts()
        started = time.perf_counter()

        async def sample() -> None:
            while True:
                samples.append((time.perf_counter() - started, _rss_mib(shim_pid)))
                await asyncio.sleep(args.every)

        sampler = asyncio.get_running_loop().create_task(sample(), name="rss sampler")
        try:
            for minute in range(int(args.minutes * 60 // args.slice)):
                result = await target.load(args.rate, args.slice, seed=minute)
                summary = result.summary()
                minutes.append(summary)
                print(
                    f"  {time.perf_counter() - started:6.0f} s  achieved {summary['achieved_per_s']:6.1f}/s  "
                    f"p50 {summary['p50_ms']:6.2f} ms  p99 {summary['p99_ms']:7.2f} ms  "
                    f"errors {sum(summary['errors'].values())}  RSS {samples[-1][1]:6.1f} MiB",
                    flush=True,
                )
        finally:
            sampler.cancel()
    finally:
        for channel in target.channels:
            await channel.close()
    after_warmup = [rss for t, rss in samples if t >= args.warmup]
    if not after_warmup:
        raise SystemExit("the soak ended before the warm-up did: lengthen --minutes")
    return {
        "rate_per_s": args.rate,
        "minutes": args.minutes,
        "warmup_s": args.warmup,
        "rss_at_warmup_mib": round(after_warmup[0], 1),
        "rss_end_mib": round(samples[-1][1], 1),
        "rss_max_after_warmup_mib": round(max(after_warmup), 1),
        "growth_after_warmup": round(samples[-1][1] / after_warmup[0], 3),
        "max_growth_after_warmup": round(max(after_warmup) / after_warmup[0], 3),
        "slices": minutes,
        "samples": [(round(t, 1), round(rss, 1)) for t, rss in samples],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (default 10)")
    parser.add_argument("--rate", type=float, default=100.0, help="calls per second offered (default 100)")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before RSS counts (default 60)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples (default 5)")
    parser.add_argument("--slice", type=float, default=60.0, help="seconds per latency line (default 60)")
    parser.add_argument("--json", type=Path, help="write every figure to this file as JSON")
    args = parser.parse_args(argv)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"soak: {os.cpu_count()} cores, {command}")
    names = ("bank", "bk", "shim")
    addr = {n: f"127.0.0.1:{p}" for n, p in zip(names, _free_ports(len(names)), strict=True)}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="shim-soak-") as workdir:
        for kind in ("bank", "bk"):
            _start(stack, [sys.executable, "-m", "sample_ledger", kind, "--listen", addr[kind]], "listening")
        shim = _start(
            stack,
            [
                *(sys.executable, "-m", "shim", "serve", "--listen", addr["shim"]),
                *("--config", str(SAMPLE_CONFIG), "--mode", "shadow"),
                *("--bank", addr["bank"], "--bk", addr["bk"]),
                *("--store", str(Path(workdir) / "shim.db"), "--diff-log", os.devnull),
            ],
            '"ready"',
        )
        what = f"shadow mode at {args.rate:g}/s for {args.minutes:g} min; warm-up {args.warmup:g} s"
        print(what, flush=True)
        figures = asyncio.run(_soak(args, addr["shim"], shim.pid))
    figures["command"] = command
    print(
        f"\nRSS (shim + comparison worker): {figures['rss_at_warmup_mib']} MiB after warm-up, "
        f"{figures['rss_end_mib']} MiB at the end (x{figures['growth_after_warmup']}; "
        f"at most x{figures['max_growth_after_warmup']} on the way); target: at most x1.10 "
        f"{'met' if figures['growth_after_warmup'] <= 1.10 else 'MISSED'}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
