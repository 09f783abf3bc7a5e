"""Open-loop load on the sample ledger: direct to Bank and through shims, at fixed offered rates.

Over 400 lines: one benchmark (its processes, its load, its searches and its table) read top to
bottom; `bench/switch.py` reuses its load and processes.

    python bench/openloop.py [--duration 5] [--rounds 2] [--rate R] [--json FILE]
    python -m bench ...                       (the same)

Starts the sample Bank, BK, a slow BK (`python -m sample_ledger bk --delay
0.1`: +100 ms on every call, at no CPU cost) and the shims, each in its own
process on loopback:

    direct            straight to Bank
    direct + BK       straight to Bank, and each call also straight to BK at once
                      (no shim): the most any shim in `shadow` mode could keep up
                      with on this machine, where BK's work shares Bank's cores
    bank              shim in `bank` mode
    shadow            shim in `shadow` mode, sample config, BK healthy
    shadow, BK slow   the same, its --bk being the slow BK
    shadow, BK down   the same, its --bk a closed port
    shadow, shim hung     the same, its comparison plane stopped while measured
    shadow, plane killed  the same, its comparison plane killed as each measurement starts
    bank (N workers)  `bank` mode, `shim serve --workers N` (with --workers N > 1),
                      each worker with an Envoy of its own; `bank (python, N workers)`
                      the same on the Python data plane
    shadow (N workers) `shadow` mode, sample config, N workers (and `(python, N workers)`)

Requests are sent at a fixed rate (request i at t0 + i/rate, each its own
task, whatever the earlier ones are doing) over a few long-lived channels per
setup (--channels; each its own connection, as separate clients would be, so
that the workers of a multi-process shim all get some), and latency is
measured from each request's *scheduled* send time, so
a stall anywhere (server, shim, or this generator) shows up in the latency
instead of slowing the sender (no coordinated omission).

1. Saturation search: the offered rate goes up x1.5 from 100/s until fewer
   than 90% of the offered calls are answered OK per second, p90 explodes
   (> max(10 x p90 at 100/s, 50 ms): calls queue) or more than 1% fail; the highest rate
   that kept up is the setup's saturation rate, refined by x1.1 steps below the
   first rate that failed. Done for `direct` (needed) and by default for `bank`
   and `shadow` too (their throughput targets).
2. Every setup at 25% and 50% of direct's saturation rate, interleaved:
   rounds x rates x setups, setup order rotated each round. For the `shadow`
   setups, the share of the calls that were mirrored and compared (read from
   the shim's metrics once it has caught up).
3. The comparison side (`--compare`): the highest rate, up x1.25 steps from 10%
   of direct's saturation, at which at least 99% of the calls were compared.

The shims run on the Envoy data plane, and `bank (python)` and `shadow (python)`
on the Python one (the fallback). `shadow, shim hung` is measured with the
shim's comparison plane stopped (SIGSTOP): its processor hangs while Envoy serves;
`shadow, plane killed` with the plane killed (SIGKILL) as the measurement starts: the
supervisor starts it again while Envoy serves.
Peak memory is given for the shim (with its comparison process) and for its
Envoy apart.

The generator runs in this process on the same cores as the servers, so the
saturation rate is that of the whole loopback system, generator included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpc import aio

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CONFIG = ROOT / "sample_ledger" / "shim.toml"
BOTH = "direct + BK"
SETUPS = [
    "direct",
    BOTH,
    "bank",
    "shadow",
    "shadow, BK slow",
    "shadow, BK down",
    "shadow, shim hung",
    "shadow, plane killed",
    "bank (python)",
    "shadow (python)",
]
SHIMS = {  # setup: (mode, --bk target key, workers, data plane)
    "bank": ("bank", "bk", 1, "envoy"),
    "shadow": ("shadow", "bk", 1, "envoy"),
    "shadow, BK slow": ("shadow", "bk_slow", 1, "envoy"),
    "shadow, BK down": ("shadow", "closed", 1, "envoy"),
    # the shim's own process stopped (SIGSTOP) while it is measured: the processor hangs, Envoy serves on
    "shadow, shim hung": ("shadow", "bk", 1, "envoy"),
    # the comparison plane killed (SIGKILL) as the measurement starts: Envoy serves on, the supervisor
    # starts the plane again during it
    "shadow, plane killed": ("shadow", "bk", 1, "envoy"),
    "bank (python)": ("bank", "bk", 1, "python"),
    "shadow (python)": ("shadow", "bk", 1, "python"),
}


def _with_workers(workers: int) -> list[str]:
    """Add the multi-process setups (`shim serve --workers N`, on Envoy, each worker with an Envoy of its
    own, and on the Python data plane); their names."""
    names = []
    for mode in ("bank", "shadow"):
        for dataplane, name in (
            ("envoy", f"{mode} ({workers} workers)"),
            ("python", f"{mode} (python, {workers} workers)"),
        ):
            SETUPS.append(name)
            SHIMS[name] = (mode, "bk", workers, dataplane)
            names.append(name)
    return names


# Operation mix: 60% reads, 40% writes, unary calls only.
MIX = {"GetBalance": 35, "GetPortfolio": 25, "PostTrade": 30, "Deposit": 10}
TICKERS = {"AAPL": 189.5, "MSFT": 411.2, "AMZN": 178.15, "GOOGL": 152.8, "JPM": 198.6, "KO": 61.2}
ACCOUNTS = 50  # per setup, opened through that setup before any load
CALL_TIMEOUT = 5.0
SLOW_BK_DELAY = 0.100  # seconds a slow BK waits before every call
SEARCH_START, SEARCH_STEP, SEARCH_CAP = 100.0, 1.5, 20_000.0


# ---- subprocesses -------------------------------------------------------------------------------


def _store(stack: ExitStack, workers: int) -> str:
    """One shim process's store: in memory; the workers of one shim share a SQLite file, in which they
    order their writes across each other (`ordering.across_workers`)."""
    if workers == 1:
        return ":memory:"
    folder = tempfile.mkdtemp(prefix="shim-bench-workers-")
    stack.callback(shutil.rmtree, folder, True)
    return os.path.join(folder, "shim.db")


def _free_ports(count: int) -> list[int]:
    """`count` distinct free ports (all bound at once, so that none is handed out twice)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def _free_run(count: int) -> int:
    """The first of `count` consecutive free ports (a multi-worker shim's metrics: worker i on PORT + i)."""
    for base in range(20000, 30000, count):
        with ExitStack() as stack:
            try:
                for port in range(base, base + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise SystemExit(f"no {count} consecutive free ports")


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


READY_LINES: dict[int, str] = {}  # the line each process started by `_start` said it was ready with


def serving_pid(proc: subprocess.Popen[str]) -> int:
    """The process that serves behind `shim serve`: on Envoy, the comparison plane its ready line names
    (the process started is the supervisor, Envoy's parent); otherwise the process itself."""
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return int(json.loads(READY_LINES.get(proc.pid, ""))["pid"])
    return proc.pid


def guarded(args: list[str]) -> list[str]:
    """`args`, run so that the process gets SIGTERM when the bench dies (`setpriv --pdeathsig`, where
    it exists): a bench killed (a timeout, a Ctrl-C in another terminal) leaves no Bank, BK or shim
    running to slow what runs next."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *args] if setpriv else args


def _start(stack: ExitStack, args: list[str], ready: str, log: str = "") -> subprocess.Popen[str]:
    """Start `args`, wait for `ready` in its stderr, and keep reading it (into the file `log`, if given)."""
    return _ready(stack, _launch(stack, args), ready, log)


@dataclass(frozen=True)
class _Launched:
    proc: subprocess.Popen[str]
    args: list[str]
    at: float  # time.monotonic() as it started


def _launch(stack: ExitStack, args: list[str]) -> _Launched:
    """Start `args` (stopped as `stack` closes); `_ready` waits for it, so that several start at once."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        guarded(args), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    stack.callback(_stop, proc)
    return _Launched(proc, args, time.monotonic())


def _ready(
    stack: ExitStack, launched: _Launched, ready: str, log: str = "", within: float = 60.0
) -> subprocess.Popen[str]:
    """Wait for `ready` in the stderr of a process `_launch` started (within `within` seconds of its
    start), then keep reading it (into the file `log`, if given)."""
    proc, args = launched.proc, launched.args
    assert proc.stderr is not None
    deadline = launched.at + within
    seen: deque[str] = deque(maxlen=10)
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if not line:
            raise SystemExit(f"{shlex.join(args)} exited before it was ready:\n{''.join(seen)}")
        if ready in line:
            READY_LINES[proc.pid] = line
            break
    else:
        raise SystemExit(f"{shlex.join(args)} not ready within {within:g}s")
    # keep draining its stderr so that a chatty process never blocks on a full pipe
    sink = open(log, "w", encoding="utf-8") if log else None  # noqa: SIM115  (closed by the stack)
    if sink is not None:
        stack.callback(sink.close)

    def drain() -> None:
        for line in proc.stderr or ():
            if '"event": "ready"' in line:  # a comparison plane started again names its new pid
                READY_LINES[proc.pid] = line
            if sink is not None and not sink.closed:
                with contextlib.suppress(ValueError):  # closed meanwhile, at the end
                    sink.write(line)

    threading.Thread(target=drain, daemon=True).start()
    return proc


def _peak_rss_mib(pid: int) -> float:
    """VmHWM (peak RSS) of `pid` plus that of its live descendants (the shim's comparison worker), in MiB."""
    return memory_mib(pid, "VmHWM")


def envoy_pid(pid: int) -> int | None:
    """The Envoy process among `pid`'s children (the shim's data plane), if any."""
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                if Path(f"/proc/{child}/comm").read_text().strip() == "envoy":
                    return int(child)
    except OSError:
        return None
    return None


def memory_mib(pid: int, field: str) -> float:
    """A /proc/PID/status memory figure (VmRSS, VmHWM) of `pid` and its live descendants, in MiB."""
    total_kib, pending = 0, [pid]
    while pending:
        p = pending.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            for task in Path(f"/proc/{p}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith(f"{field}:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


# ---- load ---------------------------------------------------------------------------------------


PACE = 1.0  # seconds after a load's end by which its calls count compared (`Target.compared`)
SKIPPED = "comparisons:skipped"  # in `scrape`'s figures: the records that are no comparison


def compared_in(figures: Mapping[str, float]) -> float:
    """The calls mirrored and compared, in a shim's figures (`scrape`): its records less those of calls
    not mirrored."""
    return figures.get("shim_comparisons_total", 0.0) - figures.get(SKIPPED, 0.0)


async def scrape(endpoint: str) -> dict[str, float]:
    """A shim's metrics at `endpoint` (HOST:PORT), summed by name (labels dropped)."""
    import urllib.request

    def read() -> str:
        with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=10) as answer:
            return str(answer.read().decode())

    out: Counter[str] = Counter()
    for line in (await asyncio.to_thread(read)).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name.partition("{")[0]] += float(value)
            if name.startswith("shim_events_total{") and 'event="' in name:  # each event apart too
                out["event:" + name.split('event="', 1)[1].partition('"')[0]] += float(value)
            if name.startswith("shim_comparisons_total{") and 'verdict="skipped"' in name:
                out[SKIPPED] += float(value)  # recorded, not compared: not mirrored, lost, shed or unseen
    return dict(out)


@dataclass
class Result:
    offered: float
    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, OK answers and errors alike
    elapsed: float = 0.0  # from t0 to the last answer

    def merge(self, other: Result) -> None:
        self.sent += other.sent
        self.ok += other.ok
        self.errors.update(other.errors)
        self.latencies += other.latencies
        self.elapsed += other.elapsed

    @property
    def achieved(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        """Latency percentile `q` (0-100) in ms."""
        if len(self.latencies) < 2:
            return self.latencies[0] * 1e3 if self.latencies else float("nan")
        return statistics.quantiles(self.latencies, n=1000, method="inclusive")[round(q * 10) - 1] * 1e3

    def summary(self) -> dict[str, Any]:
        return {
            "offered_per_s": round(self.offered, 1),
            "achieved_per_s": round(self.achieved, 1),
            "sent": self.sent,
            "ok": self.ok,
            "errors": dict(self.errors),
            "p50_ms": round(self.pct(50), 3),
            "p99_ms": round(self.pct(99), 3),
            "max_ms": round(max(self.latencies) * 1e3, 3) if self.latencies else None,
        }


class Target:
    """One setup: long-lived channels (one connection each), its accounts, and a seeded request mix.

    `address` may be several (a fleet's replicas): channel n goes to the n-th mod their number, and so
    each account's calls to one of them; `metrics` the same, the figures summed over them."""

    def __init__(
        self,
        name: str,
        address: str | Sequence[str],
        index: int,
        channels: int = 1,
        metrics: str | Sequence[str] = "",
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.name = name
        addresses = [address] if isinstance(address, str) else list(address)
        # the shim's metrics endpoints (none: direct)
        self.endpoints = ([metrics] if metrics else []) if isinstance(metrics, str) else list(metrics)
        self.late = 0  # in the last `compared` load: calls placed in their keys' order after the answer
        # distinct options: grpc would otherwise share one connection between equal channels
        self.channels = [
            aio.insecure_channel(addresses[n % len(addresses)], options=[("bench.channel", n), *options])
            for n in range(channels)
        ]
        self.stubs = [pb_grpc.LedgerStub(c) for c in self.channels]  # type: ignore[no-untyped-call]
        self.stub = self.stubs[0]
        self.accounts = [f"ol{index}-{n:03d}" for n in range(ACCOUNTS)]
        self.orders = 0

    async def open_accounts(self) -> None:
        for account_id in self.accounts:
            await self.stub.OpenAccount(
                pb.OpenAccountRequest(
                    account_id=account_id, owner_name="Bench", initial_deposit="1000000000"
                ),
                timeout=CALL_TIMEOUT,
            )

    def call(self, rng: random.Random) -> Callable[[], Any]:
        method = rng.choices(list(MIX), list(MIX.values()))[0]
        account_id = rng.choice(self.accounts)
        stub = self.stubs[self.accounts.index(account_id) % len(self.stubs)]  # an account: one client
        if method == "GetBalance":
            return lambda: stub.GetBalance(pb.GetBalanceRequest(account_id=account_id), timeout=CALL_TIMEOUT)
        if method == "GetPortfolio":
            request_p = pb.GetPortfolioRequest(account_id=account_id)
            return lambda: stub.GetPortfolio(request_p, timeout=CALL_TIMEOUT)
        if method == "Deposit":
            amount = f"{rng.randint(100, 100_000)}.{rng.randint(0, 99):02d}"
            request_d = pb.DepositRequest(account_id=account_id, amount=amount, reference="wire")
            return lambda: stub.Deposit(request_d, timeout=CALL_TIMEOUT)
        symbol = rng.choice(list(TICKERS))
        self.orders += 1
        request_t = pb.PostTradeRequest(
            account_id=account_id,
            symbol=symbol,
            side=pb.SIDE_BUY,
            quantity=str(rng.randint(1, 20)),
            price=f"{TICKERS[symbol] * (1 + rng.randint(-100, 100) / 10_000):.2f}",
            client_order_id=f"{account_id}-o{self.orders}",
        )
        return lambda: stub.PostTrade(request_t, timeout=CALL_TIMEOUT)

    async def figures(self) -> dict[str, float]:
        """The shims' metrics, summed by name (labels dropped) over every endpoint."""
        out: Counter[str] = Counter()
        for endpoint in self.endpoints:
            out.update(await scrape(endpoint))
        return dict(out)

    async def compared(self, rate: float, duration: float, seed: int) -> tuple[Result, int]:
        """A load, then the calls it led to that were mirrored and compared (records of calls not mirrored
        are not counted) within `PACE` s of the load's end: the rate the shim keeps pace with. Envoy holds
        a copy for the plane up to the shadow's timeout (5 s for the sample), so a plane that falls behind
        for a step of a few seconds, and catches up once it ends, would count as keeping up. Then it waits
        until the shim has caught up (within 20 s), so that nothing weighs on the next measurement."""
        before = await self.figures()
        result = await self.load(rate, duration, seed)
        await asyncio.sleep(PACE)
        figures = await self.figures()
        await self.settled()
        # mirrored calls whose place in their keys' order across replicas came after Envoy had the answer
        late = ("event:tickets_late", "event:read_places_late")
        self.late = int(sum(figures.get(name, 0.0) - before.get(name, 0.0) for name in late))
        return result, int(compared_in(figures) - compared_in(before))

    async def settled(self, within: float = 20.0) -> dict[str, float]:
        """The shim's metrics once it has caught up (nothing in flight, nothing to compare, no read shed at
        Envoy, and no new comparison for 0.5 s: a plane that was stopped gets the copies Envoy held only once
        it runs again), or after `within` s: what a measurement left behind must not weigh on the next
        one's. Before reads shed at Envoy counted, a comparison search after a saturation search began while
        Envoy still shed them: 69 to 81 % compared at 171 to 207 calls/s, the step failed, and the search
        found nothing."""
        deadline = time.monotonic() + within
        figures: dict[str, float] = {}
        last: float | None = None
        while True:
            with contextlib.suppress(OSError):  # a comparison plane started again, not serving yet
                figures = await self.figures()
                idle = not any(  # ... and Envoy copies reads again: shedding them would weigh on the next
                    figures.get(name, 0)
                    for name in (
                        "shim_shadow_in_flight",
                        "shim_comparisons_pending",
                        "shim_envoy_shedding_reads",
                    )
                )
                total = figures.get("shim_comparisons_total", 0.0)
                if idle and total == last:
                    return figures
                last = total if idle else None
            if time.monotonic() > deadline:
                return figures
            await asyncio.sleep(0.5)

    async def load(self, rate: float, duration: float, seed: int) -> Result:
        """Send `rate` calls a second for `duration` s, open loop; wait for every answer."""
        rng = random.Random(seed)
        result = Result(offered=rate)
        count = max(1, round(rate * duration))
        last_done = 0.0

        async def one(scheduled: float, make: Callable[[], Any]) -> None:
            nonlocal last_done
            try:
                await make()
                result.ok += 1
            except aio.AioRpcError as error:
                result.errors[error.code().name] += 1
            now = time.perf_counter()
            result.latencies.append(now - scheduled)
            last_done = max(last_done, now)

        tasks = []
        t0 = time.perf_counter() + 0.01
        i = 0
        while i < count:
            now = time.perf_counter()
            while i < count and t0 + i / rate <= now:  # everything due, even if this loop woke late
                tasks.append(asyncio.create_task(one(t0 + i / rate, self.call(rng))))
                i += 1
            if i < count:
                await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        await asyncio.gather(*tasks)
        result.sent = count
        result.elapsed = max(last_done - t0, duration)
        return result


class PairedTarget(Target):
    """`direct + BK`: each call to Bank, and the same call to BK at once, as a shim in `shadow` mode makes
    the machine do with no shim's own cost. Its latency is Bank's answer; a call BK did not answer within
    the load counts as an error, so the rate kept up is one both ledgers keep up with."""

    def __init__(self, name: str, address: str, bk: str, index: int, channels: int = 1) -> None:
        super().__init__(name, address, index, channels)
        self.bk = [aio.insecure_channel(bk, options=[("bench.channel", n)]) for n in range(channels)]
        self.channels += self.bk
        self.bk_stubs = [pb_grpc.LedgerStub(c) for c in self.bk]  # type: ignore[no-untyped-call]
        self._copies: list[asyncio.Task[Any]] = []

    async def open_accounts(self) -> None:
        await super().open_accounts()
        for account_id in self.accounts:
            await self.bk_stubs[0].OpenAccount(
                pb.OpenAccountRequest(
                    account_id=account_id, owner_name="Bench", initial_deposit="1000000000"
                ),
                timeout=CALL_TIMEOUT,
            )

    def call(self, rng: random.Random) -> Callable[[], Any]:
        state, orders = rng.getstate(), self.orders
        bank = super().call(rng)
        stubs, self.stubs = self.stubs, self.bk_stubs
        try:
            self.orders = orders  # the same call, its copy
            rng.setstate(state)
            copy = super().call(rng)
        finally:
            self.stubs = stubs

        def both() -> Any:
            self._copies.append(asyncio.ensure_future(copy()))
            return bank()

        return both

    async def load(self, rate: float, duration: float, seed: int) -> Result:
        self._copies = []
        result = await super().load(rate, duration, seed)
        for outcome in await asyncio.gather(*self._copies, return_exceptions=True):
            if isinstance(outcome, aio.AioRpcError):
                result.errors[f"BK {outcome.code().name}"] += 1
        return result


def _kept_up(result: Result, first_p90: float) -> bool:
    # p90, not p99: a few seconds at a low rate hold too few calls for p99 to tell queueing from one
    # hiccup (a collection pause, the scheduler giving a core to another process)
    return (
        result.achieved >= 0.9 * result.offered
        and result.pct(90) <= max(10 * first_p90, 50.0)
        and sum(result.errors.values()) <= 0.01 * result.sent
    )


async def _search(target: Target, duration: float, seed: int) -> tuple[float, list[Result]]:
    """Highest offered rate that `target` kept up with (0: none): up a x1.5 ladder from 100/s, then, between
    the last step kept up and the first that was not, up x1.1 steps (a resolution of x1.1)."""
    steps: list[Result] = []
    best, first_p90 = 0.0, 0.0

    async def step(rate: float) -> bool:
        nonlocal first_p90
        result = await target.load(rate, duration, seed + len(steps))
        steps.append(result)
        first_p90 = first_p90 or result.pct(90)
        ok = _kept_up(result, first_p90)
        print(
            f"  search {target.name:<18} offered {rate:7.0f}/s  achieved {result.achieved:7.0f}/s  "
            f"p50 {result.pct(50):7.1f}  p99 {result.pct(99):7.1f} ms  errors {sum(result.errors.values())}"
            f"  {'kept up' if ok else 'did not keep up'}",
            flush=True,
        )
        await asyncio.sleep(1)
        return ok

    rate = SEARCH_START
    while rate <= SEARCH_CAP and await step(rate):
        best, rate = rate, rate * SEARCH_STEP
    fine = best * 1.1
    while best and fine < rate and await step(fine):
        best, fine = fine, fine * 1.1
    return best, steps


async def _compare_search(
    target: Target,
    base: float,
    duration: float,
    *,
    start: float = 0.0,
    cap: float = 0.0,
    fine: bool = False,
    clients_ok: bool = False,
) -> tuple[float, list[dict[str, Any]]]:
    """Highest offered rate, on a x1.25 ladder from 10% of direct's saturation (or `start`) up to 1.3x it
    (or `cap`), at which 99% of the calls were mirrored and compared (0: none); with `clients_ok`, and no
    more than 1% of the clients' calls failed. With `fine`, then up x1.1 steps between the last rate that
    did and the first that did not (a resolution of x1.1)."""
    steps: list[dict[str, Any]] = []

    async def step(rate: float) -> bool:
        result, compared = await target.compared(rate, duration, seed=2000 + len(steps))
        share = compared / result.sent
        steps.append(
            {
                "offered_per_s": round(rate, 1),
                "compared": compared,
                "sent": result.sent,
                "share": round(share, 4),
                "client_errors": sum(result.errors.values()),
            }
        )
        failed = sum(result.errors.values())
        print(
            f"  {target.name:<18} {rate:7.0f}/s  compared {share:6.1%}"
            + (f"  clients' calls failed {failed / result.sent:6.1%}" if clients_ok else "")
            # setups ordered across processes (workers, replicas) print it even when none was late
            + (
                f"  placed late {target.late / result.sent:6.1%}"
                if target.late or "worker" in target.name
                else ""
            ),
            flush=True,
        )
        return share >= 0.99 and (not clients_ok or failed <= 0.01 * result.sent)

    rate, best, ceiling = start or 0.1 * base, 0.0, cap or base * 1.3
    while rate <= ceiling:
        if not await step(rate):
            break
        best = rate
        rate *= 1.25
        await asyncio.sleep(1)
    finer = best * 1.1
    while fine and best and finer < min(rate, ceiling) and await step(finer):
        best, finer = finer, finer * 1.1
        await asyncio.sleep(1)
    return best, steps


def _fractions(text: str) -> tuple[float, ...]:
    """`--fractions`: rates as fractions of direct's saturation rate, each above 0 and at most 1."""
    try:
        fractions = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers such as 0.25,0.5") from None
    if not all(0 < fraction <= 1 for fraction in fractions):
        raise argparse.ArgumentTypeError(f"{text!r}: each fraction is above 0 and at most 1")
    return fractions


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


HUNG = "shadow, shim hung"
KILLED = "shadow, plane killed"


async def _hung_load(target: Target, pid: int, rate: float, duration: float, seed: int) -> Result:
    """A load while the shim's comparison plane (not its Envoy) is stopped; it goes on afterwards, and
    catches up before the next measurement."""
    os.kill(pid, signal.SIGSTOP)
    try:
        return await target.load(rate, duration, seed)
    finally:
        os.kill(pid, signal.SIGCONT)
        await target.settled()


async def _killed_load(
    target: Target, plane: Callable[[], int], rate: float, duration: float, seed: int
) -> Result:
    """A load that starts as the shim's comparison plane is killed; afterwards, the plane started again
    has caught up before the next measurement."""
    killed = plane()
    os.kill(killed, signal.SIGKILL)
    try:
        return await target.load(rate, duration, seed)
    finally:
        deadline = time.monotonic() + 60
        while plane() == killed and time.monotonic() < deadline:  # noqa: ASYNC110  (a pid another thread reads)
            await asyncio.sleep(0.05)
        await target.settled()


async def _bench(
    args: argparse.Namespace,
    addresses: dict[str, str],
    metrics: Mapping[str, str | Sequence[str]],
    pids: dict[str, Callable[[], int]],
) -> dict[str, Any]:
    targets = {
        name: PairedTarget(name, addresses["direct"], addresses["bk"], index, args.channels)
        if name == BOTH
        else Target(name, addresses[name], index, args.channels, metrics.get(name, ""))
        for index, name in enumerate(SETUPS)
    }
    figures: dict[str, Any] = {
        "mix": MIX,
        "accounts_per_setup": ACCOUNTS,
        "call_timeout_s": CALL_TIMEOUT,
        "channels_per_setup": args.channels,
    }
    try:
        for target in targets.values():
            await target.open_accounts()
        saturation: dict[str, float] = {}
        if args.rate:
            saturation["direct"] = args.rate
            print(f"direct saturation rate given: {args.rate:.0f}/s (no search)")
        search = (
            ["direct", *(s for s in args.search.split(",") if s and s != "direct")] if not args.rate else []
        )
        for name in search:
            if name not in targets:
                raise SystemExit(f"--search: unknown setup {name!r}")
            print(f"saturation search, {args.search_duration:g} s per step:", flush=True)
            saturation[name], steps = await _search(targets[name], args.search_duration, seed=1000)
            figures.setdefault("search", {})[name] = [s.summary() for s in steps]
            await asyncio.sleep(1)
        figures["saturation_per_s"] = saturation
        base = saturation["direct"]
        if not base:
            raise SystemExit("direct did not keep up even at the first rate")
        rates = [fraction * base for fraction in args.fractions]
        shares = ", ".join(f"{fraction:.0%}" for fraction in args.fractions)
        print(
            f"measuring at {', '.join(f'{r:.0f}/s' for r in rates)} ({shares} of direct's {base:.0f}/s), "
            f"{args.rounds} rounds x {args.duration:g} s, setup order rotated each round",
            flush=True,
        )
        for target in targets.values():  # warm-up, not measured
            await target.load(rates[0], args.warmup, seed=1)
        results = {(name, rate): Result(offered=rate) for name in SETUPS for rate in rates}
        compared: Counter[tuple[str, float]] = Counter()
        for round_ in range(args.rounds):
            order = SETUPS[round_ % len(SETUPS) :] + SETUPS[: round_ % len(SETUPS)]
            for rate in rates:
                for name in order:
                    if name == HUNG:
                        result = await _hung_load(targets[name], pids[name](), rate, args.duration, round_)
                    elif name == KILLED:
                        result = await _killed_load(targets[name], pids[name], rate, args.duration, round_)
                    elif SHIMS.get(name, ("",))[0] == "shadow":
                        result, count = await targets[name].compared(rate, args.duration, seed=round_)
                        compared[name, rate] += count
                    else:
                        result = await targets[name].load(rate, args.duration, seed=round_)
                    results[name, rate].merge(result)
                    await asyncio.sleep(0.5)
        figures["runs"] = []
        for rate in rates:
            direct = results["direct", rate]
            for name in SETUPS:
                r = results[name, rate]
                figures["runs"].append(
                    {
                        "setup": name,
                        "fraction_of_direct_saturation": rate / base,
                        **r.summary(),
                        "p50_x_direct": round(_ratio(r.pct(50), direct.pct(50)), 3),
                        "p99_x_direct": round(_ratio(r.pct(99), direct.pct(99)), 3),
                        "kept_up": r.achieved >= 0.9 * rate and sum(r.errors.values()) <= 0.01 * r.sent,
                        "compared_share": round(compared[name, rate] / r.sent, 4)
                        if (name, rate) in compared
                        else None,
                    }
                )
        figures["comparison_capacity_per_s"] = {}
        for name in [s for s in args.compare.split(",") if s]:
            print(f"comparison side: highest rate with >= 99% of calls compared, {name}:", flush=True)
            best, steps = await _compare_search(targets[name], base, args.search_duration)
            figures["comparison_capacity_per_s"][name] = {
                "rate": round(best, 1),
                "x_direct": round(best / base, 3),
                "steps": steps,
            }
    finally:
        for target in targets.values():
            for channel in target.channels:
                await channel.close()
    return figures


def _print_table(figures: dict[str, Any]) -> None:
    print()
    print(
        f"{'setup':<18} {'offered/s':>9} {'achieved/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'errors':>6} {'p50 xdir':>8} {'p99 xdir':>8} {'compared':>8}  kept up"
    )
    for run in figures["runs"]:
        share = "" if run["compared_share"] is None else f"{run['compared_share']:.1%}"
        print(
            f"{run['setup']:<18} {run['offered_per_s']:9.0f} {run['achieved_per_s']:10.1f} "
            f"{run['p50_ms']:8.2f} {run['p99_ms']:8.2f} {run['max_ms']:8.1f} "
            f"{sum(run['errors'].values()):6d} {run['p50_x_direct']:8.2f} {run['p99_x_direct']:8.2f} "
            f"{share:>8}  "
            f"{'yes' if run['kept_up'] else 'NO'}"
        )
    sat = figures["saturation_per_s"]
    if len(sat) > 1:
        print()
        print("saturation (highest rate kept up; resolution x1.1):")
        for name, rate in sat.items():
            target = {"bank": 0.9, "shadow": 0.9}.get(name)
            ratio = _ratio(rate, sat["direct"])
            mark = "" if target is None else f"  target ≥ {target}x {'met' if ratio >= target else 'MISSED'}"
            print(f"  {name:<18} {rate:7.0f}/s  {ratio:5.2f}x direct{mark}")
        if sat.get(BOTH) and "shadow" in sat:  # the ceiling: Bank's and BK's work, and no shim
            ceiling, shadow = _ratio(sat[BOTH], sat["direct"]), _ratio(sat["shadow"], sat[BOTH])
            print(
                f"  {BOTH} is the most a shim in shadow mode could keep up with here: {ceiling:.2f}x direct;"
            )
            print(f"  shadow kept up with {shadow:.2f}x of it")
    print()
    print("p99 against healthy shadow at the same rate (target ≤ 1.1x):")
    for rate in sorted({r["offered_per_s"] for r in figures["runs"]}):
        by = {r["setup"]: r for r in figures["runs"] if r["offered_per_s"] == rate}
        for name in ("shadow, BK slow", "shadow, BK down", HUNG, KILLED):
            if name not in by or "shadow" not in by:  # not measured (--setups)
                continue
            x = _ratio(by[name]["p99_ms"], by["shadow"]["p99_ms"])
            verdict = "met" if x <= 1.1 else "MISSED"
            if not by["shadow"]["kept_up"]:
                verdict = "not comparable: healthy shadow did not keep up at this rate"
            print(f"  {rate:6.0f}/s  {name:<18} {x:5.2f}x  {verdict}")
    capacity = figures.get("comparison_capacity_per_s", {})
    if capacity:
        print()
        print("comparison side: highest rate with >= 99% of calls mirrored and compared (target >= 0.35x):")
        for name, found in capacity.items():
            mark = "met" if found["x_direct"] >= 0.35 else "MISSED"
            print(f"  {name:<18} {found['rate']:7.0f}/s  {found['x_direct']:5.2f}x direct  {mark}")
    print()
    print("peak RSS (VmHWM, MiB; the shim with its comparison worker, and its Envoy apart):")
    for name, mib in figures["peak_rss_mib"].items():
        envoy = figures["envoy_peak_rss_mib"].get(name)
        print(f"  {name:<18} shim {mib:7.1f}" + (f"  envoy {envoy:7.1f}" if envoy is not None else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--rate", type=float, help="direct's saturation rate per second: skips the search")
    parser.add_argument("--json", type=Path, help="write every figure to this file as JSON")
    parser.add_argument(
        "--fractions",
        type=_fractions,
        default=(0.25, 0.5),
        help="the rates measured, as fractions of direct's saturation rate (default 0.25,0.5)",
    )
    parser.add_argument(
        "--search",
        default=f"direct,{BOTH},bank,shadow",
        help=f"setups whose saturation rate is searched (default direct,{BOTH},bank,shadow; direct always)",
    )
    parser.add_argument(
        "--search-duration", type=float, default=3.0, help="seconds per search step (default 3)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of load per setup before any is measured (default 1)",
    )
    parser.add_argument(
        "--channels", type=int, default=4, help="client channels (connections) per setup (default 4)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also measure `shim serve --workers N` on each data plane, bank and shadow (default 1: not)",
    )
    parser.add_argument(
        "--compare",
        default="shadow,shadow (python)",
        help="setups whose comparison capacity is searched (default shadow,shadow (python); empty: none)",
    )
    parser.add_argument(
        "--setup",
        action="append",
        dest="setups",
        help="only this setup (repeat for more; default: all; direct always, and every setup searched or "
        "compared)",
    )
    args = parser.parse_args(argv)
    if args.workers > 1:
        added = _with_workers(args.workers)
        if args.search == f"direct,{BOTH},bank,shadow":
            args.search += "," + ",".join(added)
        if args.compare == "shadow,shadow (python)":
            args.compare += "," + ",".join(name for name in added if name.startswith("shadow"))
    if args.setups:
        wanted = {"direct", *args.setups, *args.search.split(","), *args.compare.split(",")} - {""}
        unknown = wanted - set(SETUPS)
        if unknown:
            parser.error(f"--setup: unknown {'; '.join(sorted(unknown))}; the setups: {'; '.join(SETUPS)}")
        SETUPS[:] = [s for s in SETUPS if s in wanted]
        for name in list(SHIMS):
            if name not in wanted:
                del SHIMS[name]

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the ExitStack, which stops every subprocess

    signal.signal(signal.SIGTERM, on_term)
    script = ["-m", "bench"] if sys.argv[0].endswith("__main__.py") else sys.argv[:1]
    command = shlex.join([Path(sys.executable).name, *script, *sys.argv[1:]])
    print(f"open-loop bench: {os.cpu_count()} cores, {command}")
    print(f"mix: {', '.join(f'{m} {w}%' for m, w in MIX.items())} (60% reads, 40% writes), unary")
    names = (
        "bank",
        "bk",
        "bk_slow",
        "closed",
    )
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    addr = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    shim_pids: dict[str, int] = {}  # the processes started: with their children, the shim's memory
    # the process serving behind each (on Envoy, its comparison plane, which a kill replaces): stopped to
    # hang the shim, killed to kill it
    plane_pids: dict[str, Callable[[], int]] = {}
    with ExitStack() as stack:
        ledgers = [[kind, "--listen", addr[kind]] for kind in ("bank", "bk")]
        ledgers.append(["bk", "--listen", addr["bk_slow"], "--delay", str(SLOW_BK_DELAY)])
        for ledger in [_launch(stack, [sys.executable, "-m", "sample_ledger", *args]) for args in ledgers]:
            _ready(stack, ledger, "listening")
        worker_metrics: dict[str, list[str]] = {}
        launched: dict[str, tuple[_Launched, str]] = {}
        for name, (mode, bk, workers, dataplane) in SHIMS.items():  # all at once; then each one's ready line
            # each shim listens, and serves its metrics, on ports it picks itself (its ready line names them):
            # a port found free and then closed may be taken before the shim binds it
            metrics = "127.0.0.1:0"
            if workers > 1:  # worker i serves its metrics on PORT + i
                base = _free_run(workers)
                metrics = f"127.0.0.1:{base}"
                worker_metrics[name] = [f"127.0.0.1:{base + i}" for i in range(workers)]
            command = [
                *(sys.executable, "-m", "shim", "serve", "--listen", "127.0.0.1:0"),
                *("--config", str(SAMPLE_CONFIG), "--mode", mode, "--workers", str(workers)),
                *("--bank", addr["bank"], "--bk", addr[bk], "--dataplane", dataplane, "--metrics", metrics),
                *("--store", _store(stack, workers), "--diff-log", os.devnull),
            ]
            launched[name] = (_launch(stack, command), metrics)
        for name, (started, metrics) in launched.items():
            workers = SHIMS[name][2]
            # the supervisor's line: every worker serves
            shim = _ready(stack, started, '"workers"' if workers > 1 else '"ready"')
            ready = json.loads(READY_LINES[shim.pid])
            addr[f"shim {name}"] = str(ready["listen"])
            addr[f"metrics {name}"] = str(ready.get("metrics") or metrics)
            shim_pids[name] = shim.pid
            plane_pids[name] = functools.partial(serving_pid, shim)
        endpoints: dict[str, str | list[str]] = {n: addr[f"metrics {n}"] for n in SHIMS}
        endpoints.update(worker_metrics)
        envoys = {name: envoy_pid(pid) for name, pid in shim_pids.items()}
        figures = asyncio.run(
            _bench(
                args,
                {"direct": addr["bank"], "bk": addr["bk"], **{n: addr[f"shim {n}"] for n in SHIMS}},
                endpoints,
                plane_pids,
            )
        )
        figures["envoy_peak_rss_mib"] = {
            name: round(memory_mib(pid, "VmHWM"), 1) for name, pid in envoys.items() if pid is not None
        }
        figures["peak_rss_mib"] = {  # the shim and its comparison process, Envoy apart
            name: round(_peak_rss_mib(pid) - figures["envoy_peak_rss_mib"].get(name, 0.0), 1)
            for name, pid in shim_pids.items()
        }
    figures["cores"] = os.cpu_count()
    figures["command"] = command
    _print_table(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
