"""The floor of a comparison plane in Python: what grpc.aio alone costs per copied call, with no work of the
shim's, beside what the shim's comparison plane costs, in the same run.
Over 400 lines: one benchmark (its processor, its setups, its two measurements) read top to bottom.

    python bench/plane_floor.py [--rate R] [--duration S] [--nice N]

The sample's Bank and BK, and an Envoy in front of Bank with the ext_proc filter set as `shim serve` sets
it (observability mode, every part of a call streamed: five messages or more a call). The open-loop load
of `python -m bench` (60 % reads, 40 % writes) goes through it at `--rate` calls a second, three times:

    receive           the processor, a grpc.aio server, reads every message of each copy and does nothing
    receive + mirror  the same, and it also sends each call to BK as bytes (a generic unary call, no
                      decoding) and waits for BK's answer: the two gRPC operations a comparison plane
                      cannot do without
    the shim's plane  `shim serve` in `shadow` mode with the sample's config (`bench/plane_cpu.py`): the
                      same two, and the shim's work (keys and order, ids, comparison, the store)

For each, the CPU time (user and system, every thread) each process spent per call, against Bank's own
per call in the same measurement: what one answer costs the service itself. The processor's floor is
what no plane on grpc.aio can spend less than, whatever its own code does.

    python bench/plane_floor.py --search [--nice N]

Instead, the highest rate each keeps pace with: the comparison side's search of `python -m bench` (steps
of 3 s up a x1.25 ladder from a tenth of direct's saturation rate, then x1.1 steps), a step passing when
99 % of its calls were handled (the shim's: mirrored and compared) within 1 s of its end; printed as
ratios to direct's saturation rate, searched first in the same run. The processors run at the shim's
priority (`[envoy] comparison_nice`, 10 by default), or `--nice N`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc
from grpc import aio

from bench.latency import plain_bootstrap
from bench.openloop import (
    PACE,
    READY_LINES,
    SAMPLE_CONFIG,
    Result,
    Target,
    _compare_search,
    _free_ports,
    _start,
    guarded,
)
from bench.openloop import _search as _direct_search
from bench.plane_cpu import _measure as _shim_plane
from bench.plane_cpu import cpu_seconds
from shim._proto.shim.v1 import ext_proc_pb2 as pb
from shim.dataplane.envoy import binary as envoy_binary
from shim.dataplane.envoy_config import copying_filter, plane_cluster
from shim.dataplane.settings import EnvoySettings

SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
COPY_HOLD = (
    5.0  # seconds Envoy holds a copy for the processor (`deferred_close_timeout`): the sample's BK timeout
)
NICE = EnvoySettings().comparison_nice  # the shim's default


def bootstrap(listen: int, bank: str, processor: str) -> dict[str, Any]:
    """Envoy in front of `bank`, sending a copy of every call to `processor` with the filter `shim serve`
    uses (`copying_filter`)."""
    filters = [copying_filter(COPY_HOLD)]
    return plain_bootstrap(f"127.0.0.1:{listen}", bank, filters, [plane_cluster(processor)])


# the processor, run in a process of its own (`--processor PORT`)


class _Floor:
    """Reads each copy whole; with `bk`, sends its request to BK as bytes once the request is whole."""

    def __init__(self, bk: str) -> None:
        self.bk = aio.insecure_channel(bk) if bk else None
        self.copies = self.ended = self.mirrored = self.failed = 0
        self._callables: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def _mirror(self, path: str, request: bytes) -> None:
        assert self.bk is not None
        call = self._callables.get(path)
        if call is None:
            call = self._callables[path] = self.bk.unary_unary(path)  # bytes in, bytes out
        try:
            await call(request, timeout=5.0)
            self.mirrored += 1
        except aio.AioRpcError:
            self.failed += 1

    async def process(self, requests: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        self.copies += 1
        path, body = "", bytearray()
        async for request in requests:
            part = request.WhichOneof("request")
            if part == "request_headers":
                for header in request.request_headers.headers.headers:
                    if header.key == ":path":
                        path = header.raw_value.decode()
            elif part == "request_body":
                body += request.request_body.body
                if request.request_body.end_of_stream and self.bk is not None:
                    # one message, unframed (5 bytes: compressed flag, length)
                    task = asyncio.create_task(self._mirror(path, bytes(body[5:])))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            elif part == "response_trailers":
                break
        self.ended += 1
        return
        yield  # a generator that answers nothing, as the shim's processor


async def _serve_processor(port: int, bk: str) -> None:
    try:
        import uvloop  # the shim's event loop where it is installed

        uvloop.install()
    except ImportError:
        pass
    floor = _Floor(bk)
    server = aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Process": grpc.stream_stream_rpc_method_handler(
                        floor.process,
                        request_deserializer=pb.ProcessingRequest.FromString,
                        response_serializer=pb.ProcessingResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    loop = asyncio.get_running_loop()

    def counts() -> None:
        line = {"copies": floor.copies, "ended": floor.ended, "mirrored": floor.mirrored}
        print(json.dumps({**line, "failed": floor.failed}), flush=True)

    loop.add_signal_handler(signal.SIGUSR1, counts)
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    print("listening", file=sys.stderr, flush=True)
    await stopped.wait()
    await server.stop(0)


# the bench


def _counts(proc: Any) -> dict[str, int]:
    proc.send_signal(signal.SIGUSR1)
    return dict(json.loads(proc.stdout.readline()))


class _Popen:
    """A processor process whose stdout answers `_counts`, stopped (SIGTERM) on exit."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(guarded(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> subprocess.Popen[str]:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "listening" in line:
                return self.proc
        raise SystemExit(f"the processor exited before it was ready: {self.proc.wait()}")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class FloorTarget(Target):
    """The load through the floor's Envoy; a call counts handled once its copy has ended (and, with
    `mirror`, BK has answered its mirrored call), read from the processor's counts."""

    def __init__(self, address: str, index: int, processor: subprocess.Popen[str], mirror: bool) -> None:
        super().__init__("receive" + (" + mirror" if mirror else ""), address, index, 4)
        self.processor, self.mirror = processor, mirror

    def handled(self) -> int:
        counts = _counts(self.processor)
        return counts["mirrored"] if self.mirror else counts["ended"]

    async def settled(self, within: float = 20.0) -> dict[str, float]:
        """Once the processor's counts have not moved for a second (or after `within` s)."""
        deadline, last, still = time.monotonic() + within, -1, 0.0
        while time.monotonic() < deadline and still < 1.0:
            counts = _counts(self.processor)
            now = counts["ended"] + counts["mirrored"] + counts["failed"]
            still = still + 0.1 if now == last else 0.0
            last = now
            await asyncio.sleep(0.1)
        return {}

    async def compared(self, rate: float, duration: float, seed: int) -> tuple[Result, int]:
        """As `Target.compared`: the calls handled within `PACE` s of the load's end."""
        before = self.handled()
        result = await self.load(rate, duration, seed)
        await asyncio.sleep(PACE)
        handled = self.handled() - before
        await self.settled()
        return result, handled


@contextlib.contextmanager
def _floor(
    bank: str, bk: str, mirror: bool, index: int, nice: int
) -> Iterator[tuple[FloorTarget, dict[str, int]]]:
    """The floor's processor (at `nice`) and its Envoy in front of `bank`; the load's target and their
    pids."""
    executable = envoy_binary()
    if executable is None:
        raise SystemExit("no Envoy on this platform: this bench measures the Envoy data plane")
    listen, port = _free_ports(2)
    with ExitStack() as stack:
        processor = stack.enter_context(
            _Popen(
                [
                    *("nice", "-n", str(nice)),
                    *(sys.executable, __file__, "--processor", str(port), "--bk", bk if mirror else ""),
                ]
            )
        )
        folder = stack.enter_context(tempfile.TemporaryDirectory())
        config = Path(folder) / "envoy.json"
        config.write_text(json.dumps(bootstrap(listen, bank, f"127.0.0.1:{port}")))
        envoy = _start(
            stack,
            [executable, "-c", str(config), "--concurrency", "1", "-l", "info", "--disable-hot-restart"],
            "starting main dispatch loop",
        )
        yield (
            FloorTarget(f"127.0.0.1:{listen}", index, processor, mirror),
            {
                "processor": processor.pid,
                "Envoy": envoy.pid,
            },
        )


async def _cpu_per_call(
    target: Target, pids: dict[str, int], rate: float, duration: float
) -> dict[str, float]:
    """CPU time per call handled of each of `pids`, in ms, over a load at `rate` and its catch-up."""
    try:
        await target.open_accounts()
        await target.load(rate / 4, 1.0, seed=1)  # warm-up, not measured
        await target.settled()
        before = target.handled() if isinstance(target, FloorTarget) else 0
        cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
        result = await target.load(rate, duration, seed=2)
        await target.settled(within=60.0)
        spent = {name: cpu_seconds(pid) - cpu[name] for name, pid in pids.items()}
        handled = target.handled() - before if isinstance(target, FloorTarget) else 0
    finally:
        for channel in target.channels:
            await channel.close()
    return {
        "sent": result.sent,
        "handled": handled,
        **{k: 1e3 * v / max(handled, 1) for k, v in spent.items()},
    }


async def _search(target: Target, direct: float) -> float:
    try:
        await target.open_accounts()
        best, _ = await _compare_search(target, direct, 3.0, fine=True)
    finally:
        for channel in target.channels:
            await channel.close()
    return best


def shim_config(folder: Path, nice: int) -> Path:
    """The sample's config with `[envoy] comparison_nice = nice`, written in `folder`."""
    text = SAMPLE_CONFIG.read_text()
    for name in ("bank.binpb", "rules.toml"):
        assert f'"{name}"' in text, f"the sample's config names no {name}"
        text = text.replace(f'"{name}"', json.dumps(str(SAMPLE_CONFIG.parent / name)))
    assert "[envoy]" not in text, "the sample's config sets [envoy]: set comparison_nice there"
    path = folder / "shim.toml"
    path.write_text(f"{text}\n[envoy]\ncomparison_nice = {nice}\n")
    return path


async def _run(rate: float, duration: float, search: bool, nice: int) -> None:
    bank_port, bk_port = _free_ports(2)
    with ExitStack() as stack:
        config = shim_config(Path(stack.enter_context(tempfile.TemporaryDirectory())), nice)
        pids: dict[str, int] = {}
        for name, port in (("Bank", bank_port), ("BK", bk_port)):
            role = name.lower()
            command = [sys.executable, "-m", "sample_ledger", role, "--listen", f"127.0.0.1:{port}"]
            pids[name] = _start(stack, command, "listening").pid
        bank, bk = f"127.0.0.1:{bank_port}", f"127.0.0.1:{bk_port}"
        if search:
            direct = Target("direct", bank, 900, 4)
            await direct.open_accounts()
            base, _ = await _direct_search(direct, 3.0, seed=1)
            for channel in direct.channels:
                await channel.close()
            print(f"direct kept up with {base:.0f}/s", flush=True)
            found = {}
            for index, mirror in ((901, False), (902, True)):
                with _floor(bank, bk, mirror, index, nice) as (target, _):
                    found[target.name] = await _search(target, base)
            with _shim(bank, bk, config) as (shim_target, _):
                found["the shim's plane"] = await _search(shim_target, base)
            print(f"highest rate with 99 % handled within {PACE:g} s, against direct's {base:.0f}/s:")
            for name, best in found.items():
                print(f"  {name:<17} {best:7.0f}/s  x{best / max(base, 1e-9):.2f}")
            return
        print(f"plane floor: {rate:g} calls/s for {duration:g} s; CPU per call handled, Bank's the baseline")
        for index, mirror in ((901, False), (902, True)):
            with _floor(bank, bk, mirror, index, nice) as (target, own):
                _print(target.name, await _cpu_per_call(target, {**own, **pids}, rate, duration))
        _print("the shim's plane", await _shim_plane(rate, duration, config))


def _print(name: str, figures: dict[str, float]) -> None:
    sent, handled = int(figures.pop("sent")), int(figures.pop("handled", figures.pop("compared", 0)))
    if "comparison plane" in figures:  # bench/plane_cpu.py's figures: seconds, per compared call here
        figures = {who: 1e3 * seconds / max(handled, 1) for who, seconds in figures.items()}
    plane = figures.get("processor", figures.get("comparison plane", 0.0))
    bank = figures["Bank"]
    note = "" if handled >= 0.99 * sent else "  (fewer than 99 % handled: the plane fell behind)"
    print(f"  {name:<17} {handled}/{sent} handled{note}")
    print(
        f"    plane {plane:.3f} ms (x{plane / max(bank, 1e-9):.1f} of Bank's {bank:.3f} ms);"
        f" Envoy {figures['Envoy']:.3f} ms; BK {figures['BK']:.3f} ms",
        flush=True,
    )


@contextlib.contextmanager
def _shim(bank: str, bk: str, config: Path) -> Iterator[tuple[Target, int]]:
    """`shim serve` in `shadow` mode with `config`, in front of `bank` and `bk`."""
    with ExitStack() as stack:
        shim = _start(
            stack,
            [
                *(sys.executable, "-m", "shim", "serve", "--listen", "127.0.0.1:0", "--dataplane", "envoy"),
                *("--config", str(config), "--mode", "shadow", "--metrics", "127.0.0.1:0"),
                *("--bank", bank, "--bk", bk, "--store", ":memory:", "--diff-log", os.devnull),
            ],
            '"ready"',
        )
        ready = json.loads(READY_LINES[shim.pid])
        yield Target("the shim's plane", ready["listen"], 903, 4, ready["metrics"]), int(ready["pid"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=300.0, help="calls a second (default 300)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    parser.add_argument(
        "--search", action="store_true", help="the highest rate each keeps pace with, as a ratio to direct's"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=NICE,
        help=f"how much lower the processors run than the rest (default {NICE}: the shim's default)",
    )
    parser.add_argument("--processor", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--bk", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.processor is not None:
        asyncio.run(_serve_processor(args.processor, args.bk))
    else:
        asyncio.run(_run(args.rate, args.duration, args.search, args.nice))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
