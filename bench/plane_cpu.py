"""The comparison plane's CPU per call mirrored and compared, against Bank's own CPU per call, measured in
the same run.

    python bench/plane_cpu.py [--rate R] [--duration S]

`shim serve` in `shadow` mode on Envoy, with the sample's config and an in-memory store, in front of
the sample's Bank and BK. The open-loop load of `python -m bench` (its mix: 60 % reads, 40 % writes)
goes through it at `--rate` calls a second. Once the shim has caught up, it prints the CPU time (user
and system, every thread) each process spent per call mirrored and compared: the comparison plane with
its comparison worker, Envoy, Bank and BK. Bank's, which answers each call once, is the baseline: the
comparison plane's cost is printed as a multiple of it. A rate the plane cannot keep up with leaves
calls not compared, and the figure per compared call then says little: the bench says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.openloop import (
    READY_LINES,
    SAMPLE_CONFIG,
    Target,
    _free_ports,
    _start,
    compared_in,
    envoy_pid,
)

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of `pid` and its children (the plane's comparison worker), in seconds."""
    total, pending = 0.0, [pid]
    while pending:
        p = pending.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
            for task in Path(f"/proc/{p}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


async def _measure(rate: float, duration: float, config: Path = SAMPLE_CONFIG) -> dict[str, float]:
    bank_port, bk_port = _free_ports(2)
    with ExitStack() as stack:
        servers = {
            name: _start(
                stack,
                [sys.executable, "-m", "sample_ledger", name, "--listen", f"127.0.0.1:{port}"],
                "listening",
            )
            for name, port in (("bank", bank_port), ("bk", bk_port))
        }
        shim = _start(
            stack,
            [
                *(sys.executable, "-m", "shim", "serve", "--listen", "127.0.0.1:0", "--dataplane", "envoy"),
                *("--config", str(config), "--mode", "shadow", "--metrics", "127.0.0.1:0"),
                *("--bank", f"127.0.0.1:{bank_port}", "--bk", f"127.0.0.1:{bk_port}"),
                *("--store", ":memory:", "--diff-log", os.devnull),
            ],
            '"ready"',
        )
        ready = json.loads(READY_LINES[shim.pid])
        envoy = envoy_pid(shim.pid)
        if envoy is None:
            raise SystemExit("the shim runs no Envoy: this bench measures the Envoy data plane")
        pids = {"comparison plane": int(ready["pid"]), "Envoy": envoy, "Bank": servers["bank"].pid}
        pids["BK"] = servers["bk"].pid
        target = Target("shadow", ready["listen"], 0, 4, ready["metrics"])
        try:
            await target.open_accounts()
            await target.load(rate / 4, 1.0, seed=1)  # warm-up, not measured
            before = await target.settled()
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            result = await target.load(rate, duration, seed=2)
            after = await target.settled(within=60.0)
            spent = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
        finally:
            for channel in target.channels:
                await channel.close()
    compared = compared_in(after) - compared_in(before)
    return {"sent": result.sent, "compared": compared, **spent}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=800.0, help="calls a second (default 800)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    parser.add_argument(
        "--config", type=Path, default=SAMPLE_CONFIG, help="the shim's config (default: the sample's)"
    )
    args = parser.parse_args(argv)
    figures = asyncio.run(_measure(args.rate, args.duration, args.config))
    sent, compared = int(figures.pop("sent")), int(figures.pop("compared"))
    print(
        f"plane CPU: {sent} calls at {args.rate:g}/s for {args.duration:g} s; {compared} mirrored, compared"
    )
    if compared < 0.99 * sent:
        print(
            "  fewer than 99 % compared: the plane did not keep up; the figures per call overstate its cost"
        )
    per_call = {name: 1e3 * seconds / max(compared, 1) for name, seconds in figures.items()}
    for name, ms in per_call.items():
        print(f"  {name:<17} {ms:7.3f} ms of CPU per compared call")
    print(f"  comparison plane / Bank: x{per_call['comparison plane'] / max(per_call['Bank'], 1e-9):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
