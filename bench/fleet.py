"""A fleet of shims sharing one PostgreSQL store: comparison throughput with one and two replicas, and a
replica's death under load.

Over 400 lines: one benchmark in two parts (scaling, a death) read top to bottom, with the replicas'
processes they share.

    python bench/fleet.py [--duration 3] [--rounds 1] [--dataplane envoy|python] [--part scaling|death]
        [--postgres DSN]   (default: $SHIM_TEST_POSTGRES_DSN)

Starts the sample Bank and BK, and `shim serve` replicas in `shadow` mode on the sample's config, each
in its own processes, all storing into a new schema of one PostgreSQL database (dropped at the end).
Each replica's processes (on Envoy: the supervisor, Envoy, the comparison plane and its comparison
worker) are pinned to one CPU with os.sched_setaffinity where the machine has a core for each (replica
i to CPU i mod the cores; checked on every thread of the tree); Bank, BK, PostgreSQL and this process
(the load generator) are not pinned, and share every core with them. `--no-pin` pins nothing.

1. Scaling: the highest offered rate at which >= 99 % of the calls are mirrored and compared by
   `--grace` s after the load's last answer (the rate kept up with: the shim's queues and Envoy's copies
   would absorb seconds of a burst, compared after the load), and no more than 1 % of the clients'
   calls fail,
   (`bench/openloop.py`'s open-loop load, mix and search: x1.25 steps, then x1.1) through one replica,
   then through two, the load spread over the replicas (client connection n to replica n mod their
   number; an account's calls always on one connection, as a client's would be, so that the two
   setups compare the same calls in the same order). Prints two / one (target >= 1.7), and the CPU
   seconds per compared call of each replica's process tree (from /proc: utime + stime of every
   process of it, over each step and the catch-up after it), which shows whether a replica's cost per
   call stays the same with two when the machine cannot show the throughput.
2. A replica's death: three replicas, a client sending `--death-rate` calls a second spread the way a
   load balancer does (a channel per replica, round robin over those that are READY; a channel tries
   to reconnect within 0.5 s), `kill -9` of one replica's `shim serve` after `--before` s (its whole
   process tree must die with it: checked), and the same replica started again `--down` s later on
   the same ports. The kill waits (up to 2 s) for a moment the client has a call outstanding on it
   (`--in-flight`). Prints the client's errors against the calls in flight on the killed replica as it
   died: those outstanding at the kill, and those sent to it between the kill and the moment its
   processes were all gone that it did not answer (target: errors <= those); the errors apart by
   when they were sent; and the time until the restarted replica answered a call.

The death is measured first, on three replicas; the third is then stopped (SIGTERM) and the scaling
measured on the other two (its search ends by overloading them). Prints the load average with each
part, and for scaling the cores each process used and how busy the whole machine was: it is shared, and
its figures noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import shlex
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.openloop import (
    SAMPLE_CONFIG,
    Result,
    Target,
    _compare_search,
    _free_ports,
    _launch,
    _Launched,
    _ready,
    _start,
    _stop,
    compared_in,
    scrape,
)
from shim.testing import postgres_schema

TARGET_SCALING = 1.7  # two replicas compare at least this many times what one does
TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1
# a client's channel tries to reconnect to a replica within 0.5 s, as a load balancer's health check
RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
)
# pins this process to the CPU in argv[1], then becomes the command after it (which its children inherit)
PIN = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); os.execv(sys.argv[2], sys.argv[2:])"


# ---- a replica and its processes ----------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """`pid` and its live descendants, by the parent each process names (/proc/*/stat: the `children`
    files of /proc can leave a process out while others are being made or reaped)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])  # pid (comm) state ppid ...
            parents.setdefault(ppid, []).append(int(stat.parent.name))
    found, pending = [], [pid]
    while pending:
        p = pending.pop()
        found.append(p)
        pending += parents.get(p, [])
    return found


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (state first); [] when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def alive(pid: int) -> bool:
    return _stat(pid)[:1] not in ([], ["Z"], ["X"])


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids`, with their reaped children's (cutime + cstime), in seconds."""
    ticks = 0
    for pid in pids:
        fields = _stat(pid)
        if fields:
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / TICK


def machine_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine since boot (/proc/stat): other users' work included."""
    fields = [int(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return sum(fields) - fields[3] - fields[4], sum(fields)  # idle and iowait are not busy


def _comm(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/comm").read_text().strip()
    return "?"


@dataclass
class Replica:
    """One `shim serve`: its addresses, the CPU it is pinned to (None: not pinned), and its process."""

    name: str
    address: str
    metrics: str
    cpu: int | None
    args: list[str]
    proc: Any = None  # subprocess.Popen[str] of `shim serve` (the supervisor on Envoy)

    def start(self, stack: ExitStack) -> None:
        self.ready(stack, self.launch(stack))

    def launch(self, stack: ExitStack) -> _Launched:
        """Start it; `ready` waits for it to serve (several replicas start at once)."""
        pin = [] if self.cpu is None else [sys.executable, "-c", PIN, str(self.cpu)]
        return _launch(stack, [*pin, *self.args])

    def ready(self, stack: ExitStack, launched: _Launched) -> None:
        self.proc = _ready(stack, launched, '"ready"')

    def pids(self) -> list[int]:
        return tree(self.proc.pid)

    def envoy(self) -> list[int]:
        return [p for p in self.pids() if _comm(p) == "envoy"]

    def check_pinned(self) -> str:
        """Every thread of every process of the replica is on its CPU: how many were checked."""
        processes = threads = 0
        for pid in self.pids():
            processes += 1
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):  # a thread that ended meanwhile
                    cpus = os.sched_getaffinity(int(task.name))
                    threads += 1
                    if cpus != {self.cpu}:
                        raise SystemExit(
                            f"{self.name}: thread {task.name} of {_comm(pid)} runs on CPUs {cpus}"
                        )
        return f"{self.name}: CPU {self.cpu} ({processes} processes, {threads} threads checked)"


def _replicas(count: int, addr: dict[str, str], url: str, dataplane: str, pin: bool) -> list[Replica]:
    cores = sorted(os.sched_getaffinity(0))
    out = []
    for n in range(count):
        args = [
            *(sys.executable, "-m", "shim", "serve", "--listen", addr[f"replica {n}"]),
            *("--config", str(SAMPLE_CONFIG), "--mode", "shadow", "--dataplane", dataplane),
            *("--bank", addr["bank"], "--bk", addr["bk"], "--metrics", addr[f"metrics {n}"]),
            *("--store", url, "--diff-log", os.devnull),
        ]
        cpu = cores[n % len(cores)] if pin else None
        out.append(Replica(f"replica {n + 1}", addr[f"replica {n}"], addr[f"metrics {n}"], cpu, args))
    return out


def load_average() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


# ---- 1. scaling ---------------------------------------------------------------------------------------


class Fleet(Target):
    """The open-loop load spread over `replicas`; each measurement also takes each replica's CPU time and
    comparisons over it."""

    def __init__(
        self,
        name: str,
        replicas: list[Replica],
        index: int,
        channels: int,
        others: dict[str, int],
        grace: float,
    ) -> None:
        super().__init__(name, [r.address for r in replicas], index, channels, [r.metrics for r in replicas])
        self.replicas = replicas
        self.others = others  # the rest of the run's processes (Bank, BK, this one): where the cores went
        self.steps: list[dict[str, Any]] = []
        self.grace = grace

    def _elsewhere(self) -> dict[str, float]:
        """CPU s of the others, of PostgreSQL (every process of it), and the machine's busy and all ticks."""
        out = {
            name: cpu_seconds(tree(pid) if pid != os.getpid() else [pid]) for name, pid in self.others.items()
        }
        out["PostgreSQL"] = cpu_seconds(
            [
                int(p.parent.name)
                for p in Path("/proc").glob("[0-9]*/comm")
                if _comm(int(p.parent.name)) in ("postgres", "postmaster")
            ]
        )
        out["machine busy"], out["machine all"] = machine_ticks()
        out["time"] = time.perf_counter()
        return out

    async def _each(self) -> list[dict[str, float]]:
        return [await scrape(r.metrics) for r in self.replicas]

    async def _snapshot(self) -> list[tuple[float, float, float]]:
        """(CPU s of the tree, of its Envoy, comparisons) for each replica."""
        out = []
        for r in self.replicas:
            compared = compared_in(await scrape(r.metrics))
            out.append((cpu_seconds(r.pids()), cpu_seconds(r.envoy()), compared))
        return out

    async def compared(self, rate: float, duration: float, seed: int) -> tuple[Result, int]:
        """A load, and the calls compared by `grace` s after its last answer: the rate kept up with, not
        a burst absorbed (the shim's queues, and Envoy's copies, hold seconds of calls, compared once the
        load has stopped). Then the fleet catches up before the next measurement, its CPU time counted
        with this one's."""
        before, elsewhere = await self._snapshot(), self._elsewhere()
        result = await self.load(rate, duration, seed)
        await asyncio.sleep(self.grace)
        count = int(sum(compared_in(f) for f in await self._each()) - sum(b[2] for b in before))
        await self.settled()
        await asyncio.sleep(1)  # copies Envoy still held once the planes looked idle: not the next step's
        await self.settled()
        after, elsewhere_after = await self._snapshot(), self._elsewhere()
        spent = {k: elsewhere_after[k] - v for k, v in elsewhere.items()}
        seconds = spent.pop("time")
        busy, all_ = spent.pop("machine busy"), spent.pop("machine all")
        per_replica = []
        for r, (cpu0, envoy0, n0), (cpu1, envoy1, n1) in zip(self.replicas, before, after, strict=True):
            n = n1 - n0
            per_replica.append(
                {
                    "replica": r.name,
                    "compared": int(n),
                    "cpu_s": round(cpu1 - cpu0, 3),
                    "envoy_cpu_s": round(envoy1 - envoy0, 3),
                    "cpu_ms_per_compared": round((cpu1 - cpu0) / n * 1e3, 3) if n else None,
                    "envoy_cpu_ms_per_compared": round((envoy1 - envoy0) / n * 1e3, 3) if n else None,
                }
            )
        self.steps.append(
            {
                "offered_per_s": round(rate, 1),
                "sent": result.sent,
                "compared": count,  # within the grace
                "compared_after_catching_up": int(
                    sum(a[2] - b[2] for a, b in zip(after, before, strict=True))
                ),
                "client_errors": dict(result.errors),
                "replicas": per_replica,
                "seconds": round(seconds, 2),
                # the CPU time of the run's other processes per call sent, and how many of the machine's
                # cores were busy with other users' work meanwhile (the machine is shared)
                "others_cpu_ms_per_call": {k: round(v / result.sent * 1e3, 3) for k, v in spent.items()},
                "machine_busy": round(busy / all_, 3) if all_ else None,
                "other_users_cores": round(
                    busy / all_ * CORES
                    - (sum(spent.values()) + sum(r["cpu_s"] for r in per_replica)) / seconds,
                    2,
                )
                if all_
                else None,
            }
        )
        return result, count


async def _scaling(
    args: argparse.Namespace, replicas: list[Replica], others: dict[str, int]
) -> dict[str, Any]:
    setups = {"one": Fleet("one replica", replicas[:1], 0, args.channels, others, args.grace)}
    setups["two"] = Fleet("two replicas", replicas[:2], 1, args.channels, others, args.grace)
    found: dict[str, list[float]] = {"one": [], "two": []}
    at_best: dict[str, list[dict[str, Any]]] = {"one": [], "two": []}
    loads = []
    try:
        for fleet in setups.values():
            await fleet.open_accounts()
            await fleet.settled()
            await fleet.load(args.rate or args.start, 1.0, seed=1)  # warm-up, not measured
            await fleet.settled()
        for round_ in range(args.rounds):
            for key in ("one", "two") if round_ % 2 == 0 else ("two", "one"):
                fleet = setups[key]
                first = len(fleet.steps)
                if args.rate:
                    print(f"{fleet.name}: {args.rate:.0f}/s, {args.duration:g} s", flush=True)
                    result, count = await fleet.compared(args.rate, args.duration, seed=2000 + round_)
                    failed = sum(result.errors.values())
                    best = args.rate if count >= 0.99 * result.sent and failed <= 0.01 * result.sent else 0.0
                    print(f"  {fleet.name:<18} {args.rate:7.0f}/s  compared {count / result.sent:6.1%}")
                else:
                    # two starts at half what one kept up with (fewer steps), one at --start
                    other = found["two" if key == "one" else "one"]
                    start = max(args.start, 0.5 * other[-1] if key == "two" and other else args.start)
                    print(f"{fleet.name}: highest rate with >= 99 % compared, {args.duration:g} s a step:")
                    best = await _highest(fleet, args, start)
                found[key].append(best)
                steps = fleet.steps[first:]
                kept = [s for s in steps if s["offered_per_s"] == round(best, 1)]
                at_best[key].append(kept[-1] if kept else steps[0])
                loads.append(os.getloadavg())
    finally:
        for fleet in setups.values():
            for channel in fleet.channels:
                await channel.close()
    return {
        "rate_per_s": found,
        "at_highest_rate": at_best,
        "steps": {key: fleet.steps for key, fleet in setups.items()},
        "load_average": [list(x) for x in loads],
    }


async def _highest(fleet: Fleet, args: argparse.Namespace, start: float) -> float:
    """The highest rate with >= 99 % compared, up from `start` (`bench/openloop.py`'s search); down x1.25
    steps from it if it fails there at once (0: not even at a tenth of it)."""
    best, _ = await _compare_search(
        fleet, 0.0, args.duration, start=start, cap=args.cap, fine=True, clients_ok=True
    )
    rate = start
    while not best and rate > start / 10:
        rate /= 1.25
        best, _ = await _compare_search(fleet, 0.0, args.duration, start=rate, cap=rate, clients_ok=True)
    return best


def _mean_cpu_ms(step: dict[str, Any], key: str = "cpu_ms_per_compared") -> float:
    values = [r[key] for r in step["replicas"] if r[key] is not None]
    return sum(values) / len(values) if values else float("nan")


def _print_scaling(figures: dict[str, Any], args: argparse.Namespace, replicas: list[Replica]) -> None:
    one, two = figures["rate_per_s"]["one"], figures["rate_per_s"]["two"]
    print()
    how = "each at a fixed rate (--rate)" if args.rate else "x1.25 steps then x1.1 (a resolution of x1.1)"
    print(f"comparison throughput, `shadow` mode, {args.dataplane} data plane, one PostgreSQL store; {how}:")
    pins = [r.cpu for r in replicas[:2]]
    print(
        "  pinned: "
        + (
            "nothing (--no-pin)"
            if pins[0] is None
            else f"replica 1 to CPU {pins[0]}, replica 2 to CPU {pins[1]}"
        )
        + f"; Bank, BK, PostgreSQL and the load generator on all {os.cpu_count()} cores"
    )
    for n, (a, b) in enumerate(zip(one, two, strict=True)):
        ratio = b / a if a else float("nan")
        mark = "met" if ratio >= TARGET_SCALING else "MISSED"
        print(
            f"  round {n + 1}: one replica {a:6.0f}/s, two replicas {b:6.0f}/s: two/one {ratio:4.2f}"
            f"  (target >= {TARGET_SCALING}: {mark})"
        )
    print("  CPU time of each replica's process tree per compared call, at each setup's highest rate kept:")
    for key in ("one", "two"):
        for n, step in enumerate(figures["at_highest_rate"][key]):
            each = ", ".join(
                f"{r['replica']} {r['cpu_ms_per_compared'] or float('nan'):.2f} ms"
                + (f" (Envoy {r['envoy_cpu_ms_per_compared']:.2f})" if r["envoy_cpu_ms_per_compared"] else "")
                + f" ({r['compared']} compared)"
                for r in step["replicas"]
            )
            print(f"    round {n + 1}, {key} at {step['offered_per_s']:.0f}/s: {each}")
            used = ", ".join(f"{k} {v:.2f}" for k, v in step["others_cpu_ms_per_call"].items())
            print(
                f"      CPU ms per call: {used}; the machine {step['machine_busy']:.0%} busy, other users'"
                f" work {step['other_users_cores']:.2f} of its {CORES} cores"
            )
    for n, two in enumerate(figures["at_highest_rate"]["two"]):
        # one's step whose rate is nearest two's rate per replica: the same load on each replica's processes
        each = two["offered_per_s"] / 2
        one = min(figures["steps"]["one"], key=lambda s: abs(s["offered_per_s"] - each))
        ratio = _mean_cpu_ms(two) / _mean_cpu_ms(one)
        print(
            f"  round {n + 1}: CPU per compared call, two at {two['offered_per_s']:.0f}/s (mean of the"
            f" replicas) / one at {one['offered_per_s']:.0f}/s (its step nearest the same rate per replica):"
            f" {ratio:4.2f}"
        )
    print(f"  {load_average()} (1, 5, 15 min) at the end of the part")


# ---- 2. a replica's death -----------------------------------------------------------------------------


@dataclass
class Call:
    replica: int
    started: float
    ended: float = 0.0
    code: str = ""  # "OK" or the status code's name


async def _death(args: argparse.Namespace, replicas: list[Replica], stack: ExitStack) -> dict[str, Any]:
    """Steady load over `replicas`, the last one killed and started again while it runs."""
    victim = len(replicas) - 1
    target = Target(
        "death", [r.address for r in replicas], 9, len(replicas), [r.metrics for r in replicas], RECONNECT
    )
    stubs, rotation = target.stubs, itertools.count()
    calls: list[Call] = []
    in_flight: list[set[int]] = [set() for _ in replicas]
    stop = asyncio.Event()
    events: dict[str, float] = {}
    figures: dict[str, Any] = {}

    def pick() -> int | None:
        """The next replica, round robin, among those whose channel is READY (connecting the others)."""
        for _ in replicas:
            n = next(rotation) % len(replicas)
            if target.channels[n].get_state(try_to_connect=True) is grpc.ChannelConnectivity.READY:
                return n
        return None

    async def one(index: int, make: Callable[[], Any]) -> None:
        call = calls[index]
        try:
            await make()
            call.code = "OK"
        except aio.AioRpcError as error:
            call.code = error.code().name
        finally:
            call.ended = time.perf_counter()
            in_flight[call.replica].discard(index)

    async def send() -> None:
        tasks, t0, i, rng = [], time.perf_counter(), 0, random.Random(5)
        while not stop.is_set():
            while t0 + i / args.death_rate <= time.perf_counter():
                n = pick()
                if n is None:  # no replica READY: the call is not made, and counted as an error
                    calls.append(Call(-1, time.perf_counter(), time.perf_counter(), "NO_REPLICA_READY"))
                else:
                    target.stubs = [stubs[n]]  # the mix's next call, on that replica
                    make = target.call(rng)
                    target.stubs = stubs
                    calls.append(Call(n, time.perf_counter()))
                    in_flight[n].add(len(calls) - 1)  # outstanding from now: its task may start later
                    tasks.append(asyncio.ensure_future(one(len(calls) - 1, make)))
                i += 1
            await asyncio.sleep(max(0.0, t0 + i / args.death_rate - time.perf_counter()))
        await asyncio.gather(*tasks)

    try:
        await target.open_accounts()
        await target.settled()
        sender = asyncio.ensure_future(send())
        await asyncio.sleep(args.before)
        doomed = replicas[victim]
        pids = {pid: _comm(pid) for pid in doomed.pids()}
        # killed at a moment it has calls outstanding (the case the target is about), if one comes in 2 s
        deadline = time.monotonic() + 2
        while len(in_flight[victim]) < args.in_flight and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.0005)
        events["kill"] = time.perf_counter()
        os.kill(doomed.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:  # noqa: ASYNC110  (/proc)
            await asyncio.sleep(0.0005)  # the client sends on meanwhile, to a replica dying
        events["tree_gone"] = time.perf_counter()
        survivors = {p: name for p, name in pids.items() if alive(p)}
        for pid in survivors:  # not to leave them behind; reported below
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        figures["tree"] = {"processes": sorted(pids.values()), "survivors": sorted(survivors.values())}
        await asyncio.sleep(max(0.0, events["kill"] + args.down - time.perf_counter()))
        events["restart"] = time.perf_counter()
        await asyncio.to_thread(doomed.start, stack)
        events["ready"] = time.perf_counter()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            back = [
                c.ended
                for c in calls
                if c.replica == victim and c.code == "OK" and c.started > events["restart"]
            ]
            if back:
                events["back"] = min(back)
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(args.after)
        stop.set()
        await sender
    finally:
        stop.set()
        for channel in target.channels:
            await channel.close()
    kill = events["kill"]
    errors = [(i, c) for i, c in enumerate(calls) if c.code != "OK"]
    gone = events["tree_gone"]

    # in flight on it as it died: outstanding at the kill, and sent to it between the kill and the moment
    # its last process was gone without an answer (its Envoy took calls until it died, and answered some)
    mine = [(i, c) for i, c in enumerate(calls) if c.replica == victim]
    at_kill = {i for i, c in mine if c.started < kill and not (c.ended and c.ended < kill)}
    at_death = at_kill | {i for i, c in mine if kill <= c.started < gone and c.code != "OK"}
    kinds: Counter[str] = Counter()
    late: list[float] = []  # when calls sent to it once it was gone failed, after its death
    for i, c in errors:
        if i in at_kill:
            kinds["in flight on it at the kill"] += 1
        elif i in at_death:
            kinds["sent to it as it died (in flight at its death)"] += 1
        elif c.replica == victim and c.started >= gone:
            kinds["sent to it once its processes were gone"] += 1
            late.append(c.started - gone)
        else:
            kinds["on the other replicas"] += 1
    figures.update(
        {
            "rate_per_s": args.death_rate,
            "calls": len(calls),
            "ok": sum(c.code == "OK" for c in calls),
            "errors": len(errors),
            "error_codes": dict(Counter(c.code for _, c in errors)),
            "errors_by_kind": dict(kinds),
            "in_flight_at_kill": len(at_kill),
            "in_flight_at_death": len(at_death),
            "met": len(errors) <= len(at_death),
            "last_error_sent_ms_after_death": round(max(late) * 1e3, 1) if late else None,
            "tree_gone_ms": round((events["tree_gone"] - kill) * 1e3, 1),
            "ready_s_after_restart": round(events["ready"] - events["restart"], 3),
            "calls_again_s_after_restart": round(events["back"] - events["restart"], 3)
            if "back" in events
            else None,
            "calls_again_s_after_kill": round(events["back"] - kill, 3) if "back" in events else None,
            "calls_per_replica": dict(Counter(replicas[c.replica].name for c in calls if c.replica >= 0)),
            "load_average": list(os.getloadavg()),
        }
    )
    return figures


def _print_death(figures: dict[str, Any], args: argparse.Namespace, replicas: list[Replica]) -> None:
    victim = replicas[-1].name
    print()
    print(
        f"a replica's death: {len(replicas)} replicas ({args.dataplane} data plane),"
        f" {args.death_rate:g} calls/s round robin over the READY ones;"
        f" {victim}'s `shim serve` killed (SIGKILL) after {args.before:g} s,"
        f" started again {args.down:g} s after the kill"
    )
    tree_ = figures["tree"]
    gone = "all gone" if not tree_["survivors"] else f"SURVIVORS {', '.join(tree_['survivors'])} (killed)"
    print(
        f"  its process tree: {', '.join(tree_['processes'])}: {gone} {figures['tree_gone_ms']:.0f} ms after"
    )
    print(
        f"  calls in flight on it: {figures['in_flight_at_kill']} at the kill,"
        f" {figures['in_flight_at_death']} at its death"
        " (those, and the ones sent to it between the kill and its tree gone that it did not answer)"
    )
    kinds = "; ".join(f"{k}: {v}" for k, v in figures["errors_by_kind"].items()) or "none"
    print(
        f"  client errors: {figures['errors']} of {figures['calls']} calls ({kinds};"
        f" codes {figures['error_codes'] or '-'})"
    )
    mark = "met" if figures["met"] else "MISSED"
    errors, in_flight = figures["errors"], figures["in_flight_at_death"]
    print(f"  target: errors <= calls in flight on it: {errors} <= {in_flight}: {mark}")
    if figures["last_error_sent_ms_after_death"] is not None:
        print(
            "  calls sent to it after its death failed until"
            f" {figures['last_error_sent_ms_after_death']:.1f} ms after it: the client had not yet seen"
            " its connection close"
        )
    again = figures["calls_again_s_after_restart"]
    print(
        f"  started again: ready {figures['ready_s_after_restart']:.2f} s after its start; answered a call "
        + (
            "NEVER within 30 s"
            if again is None
            else f"{again:.2f} s after its start ({figures['calls_again_s_after_kill']:.2f} s after the kill)"
        )
    )
    print(f"  calls per replica: {figures['calls_per_replica']}")
    print(f"  {load_average()} (1, 5, 15 min) at the end of the part")


# ---- the run ------------------------------------------------------------------------------------------


def _services(stack: ExitStack, dsn: str) -> tuple[dict[str, str], str, dict[str, int]]:
    """Bank and BK started, a new schema made: the addresses of everything, the store's url, and the pids
    of Bank, BK and this process (the load generator)."""
    names = ("bank", "bk", *(f"replica {n}" for n in range(3)), *(f"metrics {n}" for n in range(3)))
    addr = {name: f"127.0.0.1:{port}" for name, port in zip(names, _free_ports(len(names)), strict=True)}
    url = stack.enter_context(postgres_schema(dsn, "fleetbench"))
    pids = {
        name: _start(
            stack, [sys.executable, "-m", "sample_ledger", kind, "--listen", addr[kind]], "listening"
        ).pid
        for kind, name in (("bank", "Bank"), ("bk", "BK"))
    }
    return addr, url, {**pids, "load generator": os.getpid()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--part", choices=("scaling", "death"), action="append", help="only this part (repeatable)"
    )
    parser.add_argument(
        "--postgres", default=os.environ.get("SHIM_TEST_POSTGRES_DSN", ""), help="PostgreSQL DSN"
    )
    parser.add_argument("--dataplane", choices=("envoy", "python"), default="envoy")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="pin no replica to a CPU")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of load per step (default 5)")
    parser.add_argument(
        "--grace",
        type=float,
        default=0.5,
        help="a call counts if compared by this many seconds after the load's last answer (default 0.5)",
    )
    parser.add_argument("--start", type=float, default=250.0, help="the search's first rate (default 250/s)")
    parser.add_argument(
        "--cap", type=float, default=5000.0, help="the search's highest rate (default 5000/s)"
    )
    parser.add_argument("--rate", type=float, default=0.0, help="no search: each setup once at this rate")
    parser.add_argument(
        "--rounds", type=int, default=1, help="one and two measured in turn, N times (default 1)"
    )
    parser.add_argument("--channels", type=int, default=4, help="client connections per setup (default 4)")
    parser.add_argument(
        "--death-rate", type=float, default=150.0, help="calls/s during the death (default 150)"
    )
    parser.add_argument(
        "--before", type=float, default=3.0, help="seconds of load before the kill (default 3)"
    )
    parser.add_argument(
        "--down", type=float, default=2.0, help="seconds from the kill to the restart (default 2)"
    )
    parser.add_argument(
        "--after", type=float, default=3.0, help="seconds of load once it is back (default 3)"
    )
    parser.add_argument(
        "--in-flight",
        type=int,
        default=1,
        help="kill once the client has this many calls outstanding on the replica (within 2 s; default 1)",
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file as JSON")
    args = parser.parse_args(argv)
    if not args.postgres:
        print("bench/fleet.py: give --postgres or set SHIM_TEST_POSTGRES_DSN", file=sys.stderr)
        return 2
    parts = args.part or ["scaling", "death"]

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the ExitStack, which stops every subprocess

    signal.signal(signal.SIGTERM, on_term)
    command = shlex.join(["python", "bench/fleet.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"fleet bench: {os.cpu_count()} cores, {command}; {load_average()}", flush=True)
    figures: dict[str, Any] = {"command": command, "cores": os.cpu_count(), "dataplane": args.dataplane}
    with ExitStack() as stack:
        addr, url, others = _services(stack, args.postgres)
        replicas = _replicas(3, addr, url, args.dataplane, args.pin and len(os.sched_getaffinity(0)) > 1)
        # three for the death, two for the scaling: started at once, on one store
        starting = replicas if "death" in parts else replicas[:2]
        for replica, launched in [(replica, replica.launch(stack)) for replica in starting]:
            replica.ready(stack, launched)
            if replica.cpu is not None:
                print(f"  pinned {replica.check_pinned()}", flush=True)
        if "death" in parts:  # first: the scaling search ends by overloading the replicas
            figures["death"] = asyncio.run(_death(args, replicas, stack))
            _print_death(figures["death"], args, replicas)
            _stop(replicas[2].proc)  # the scaling part measures one replica, then two
        if "scaling" in parts:
            figures["scaling"] = asyncio.run(_scaling(args, replicas, others))
            _print_scaling(figures["scaling"], args, replicas)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
