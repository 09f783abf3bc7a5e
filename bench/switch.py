"""Mode switches under load: how long new calls wait, and what the clients see.

    python bench/switch.py [--rate 300] [--switches 6] [--dataplane envoy|python]

Starts the sample Bank and BK and one shim (the sample's config, a SQLite store,
its admin API and metrics), each in its own process on loopback. Sends an
open-loop load of the usual mix (bench/openloop.py) at `--rate` calls a second
while switching the default mode shadow -> bk-primary -> shadow ... every two
seconds through the admin API (forced: this measures switching, not the gate).
Prints how long each switch took end to end, the longest pause of new calls
the shim measured (`shim_switch_pause_max_seconds`), and the clients' errors
and latency during the run against a run without switches at the same rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from grpc import aio

from bench.openloop import SAMPLE_CONFIG, Result, Target, _free_ports, _start
from shim._proto.shim.v1 import admin_pb2 as apb
from shim._proto.shim.v1 import admin_pb2_grpc as apb_grpc

TOKEN = "bench-admin-token"


async def _switching(admin: str, switches: int, every: float) -> tuple[list[float], list[str]]:
    """Flip the default mode `switches` times, `every` seconds apart (a switch refused is tried again at
    the next turn); the seconds each applied SetMode took, and why each refused one was."""
    took: list[float] = []
    refused: list[str] = []
    async with aio.insecure_channel(admin) as channel:
        stub = apb_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        mode = "bk-primary"
        for _ in range(switches):
            await asyncio.sleep(every)
            started = time.perf_counter()
            try:
                await stub.SetMode(
                    apb.SetModeRequest(mode=mode, reason="bench", who="bench", force=True),
                    metadata=(("authorization", f"Bearer {TOKEN}"),),
                    timeout=30,
                )
            except aio.AioRpcError as exc:
                refused.append(exc.details() or str(exc.code()))
                continue
            took.append(time.perf_counter() - started)
            mode = "shadow" if mode == "bk-primary" else "bk-primary"
    return took, refused


async def _run(args: argparse.Namespace, addr: dict[str, str]) -> int:
    target = Target("shim", addr["shim"], 0, channels=4, metrics=addr["metrics"])
    await target.open_accounts()
    duration = args.switches * 2.0 + 2.0
    quiet = await target.load(args.rate, duration, seed=1)  # the baseline: the same load, no switch
    load = asyncio.ensure_future(target.load(args.rate, duration, seed=2))
    took, refused = await _switching(addr["admin"], args.switches, 2.0)
    busy: Result = await load
    figures = await target.figures()

    def line(name: str, r: Result) -> str:
        return (
            f"  {name:<16} {r.sent:6d} calls  errors {sum(r.errors.values()):4d}  "
            f"p50 {r.pct(50):7.2f} ms  p99 {r.pct(99):8.2f} ms  max {max(r.latencies) * 1000:8.1f} ms"
        )

    print(f"{args.switches} switches under {args.rate:.0f} calls/s ({args.dataplane} data plane):")
    applied = ", ".join(f"{t * 1000:.0f}" for t in took)
    print(f"  {len(took)} applied, {len(refused)} refused; each applied, end to end: {applied or '-'} ms")
    if took:
        print(f"  median {statistics.median(took) * 1000:.0f} ms")
    for why in refused:
        print(f"  refused: {why}")
    pause = figures.get("shim_switch_pause_max_seconds", float("nan"))
    print(
        "  longest pause of new calls, switches applied or refused (the shim's measure):"
        f" {pause * 1000:.1f} ms  (target <= 100 ms)"
    )
    print("clients:")
    print(line("no switch", quiet))
    print(line("switching", busy))
    for channel in target.channels:
        await channel.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=300.0, help="calls a second (default 300)")
    parser.add_argument("--switches", type=int, default=6, help="switches, two seconds apart (default 6)")
    parser.add_argument("--dataplane", choices=("envoy", "python"), default="envoy")
    parser.add_argument("--nice", type=int, help="[envoy] comparison_nice (default: the shim's)")
    args = parser.parse_args()
    names = ("bank", "bk", "shim", "metrics", "admin")
    addr = {name: f"127.0.0.1:{port}" for name, port in zip(names, _free_ports(len(names)), strict=True)}
    os.environ["SHIM_ADMIN_TOKEN"] = TOKEN
    with ExitStack() as stack, tempfile.TemporaryDirectory() as folder:
        for kind in ("bank", "bk"):
            _start(stack, [sys.executable, "-m", "sample_ledger", kind, "--listen", addr[kind]], "listening")
        config = Path(folder) / "shim.toml"
        config.write_text(
            SAMPLE_CONFIG.read_text(encoding="utf-8")
            + f'\n[admin]\nlisten = "{addr["admin"]}"\n'
            + (f"\n[envoy]\ncomparison_nice = {args.nice}\n" if args.nice is not None else ""),
            encoding="utf-8",
        )
        for name in ("bank.binpb", "rules.toml"):  # the sample's config names them relative to itself
            source = SAMPLE_CONFIG.parent / name
            if source.exists():
                (Path(folder) / name).write_bytes(source.read_bytes())
        _start(
            stack,
            [
                *(sys.executable, "-m", "shim", "serve", "--listen", addr["shim"], "--config", str(config)),
                *("--mode", "shadow", "--bank", addr["bank"], "--bk", addr["bk"]),
                *("--dataplane", args.dataplane, "--metrics", addr["metrics"]),
                *("--store", str(Path(folder) / "shim.db"), "--diff-log", os.devnull),
            ],
            '"ready"',
            log=os.environ.get("BENCH_SHIM_LOG", ""),
        )
        return asyncio.run(_run(args, addr))


if __name__ == "__main__":
    sys.exit(main())
