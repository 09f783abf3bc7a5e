"""`shim replay` throughput and memory, against the same calls sent straight to BK in the same run.

    python bench/replay.py [--calls N] [--in-flight W] [--keep DIR]

Generates a recording of N calls (default 1,000,000) of the sample ledger: accounts opened, then deposits
(writes) and balance reads (reads) on them, seeded, with Bank's answers from a real sample Bank. Then,
each against a fresh sample BK (fixed: every call should match) in a process of its own, and each run in
a process of its own:

- baseline: the recorded requests sent straight to BK, W at a time, each account's calls in order;
- replay: `shim replay` of the recording (the sample's config), into a new store.

Prints each one's calls/s and peak RSS (the replay's with its comparison worker's; BK's book, which
grows with every deposit, is in BK's process and not counted), and the replay's as a ratio of the
baseline's. While the replay runs, its memory (the replay process and its comparison worker) is read
each time another 10 % of the calls are compared: memory is bounded when the last tenths grow by no
more than the first did.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from grpc import aio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comparators import Comparison  # noqa: E402
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb  # noqa: E402
from sample_ledger.server import serve  # noqa: E402
from shim.parts import load_registry  # noqa: E402
from shim.recording.format import Header, RecordedCall, Recording, RecordingWriter, fingerprint  # noqa: E402
from shim.replay.run import Options, load_config, replay  # noqa: E402

CONFIG = ROOT / "sample_ledger" / "shim.toml"
SERVICE = "/bank.v1.Ledger/"


def _plan(calls: int, seed: int = 7) -> list[tuple[str, str, bytes]]:
    """(account, method, request) for each call, in order."""
    rng = random.Random(seed)
    accounts = [f"B-{n:06d}" for n in range(max(10, calls // 100))][:calls]
    out = [
        (
            a,
            "OpenAccount",
            pb.OpenAccountRequest(account_id=a, owner_name="x", currency="USD").SerializeToString(),
        )
        for a in accounts
    ]
    while len(out) < calls:
        a = rng.choice(accounts)
        if rng.random() < 0.5:
            out.append((a, "Deposit", pb.DepositRequest(account_id=a, amount="10.25").SerializeToString()))
        else:
            out.append((a, "GetBalance", pb.GetBalanceRequest(account_id=a).SerializeToString()))
    return out


async def _send(
    address: str, plan: list[tuple[str, str, bytes]], lanes: int
) -> list[tuple[float, int, bytes, str]]:
    """Each call sent to `address`, `lanes` accounts' calls at once, each account's in order: when it was
    sent, and its answer."""
    answers: list[tuple[float, int, bytes, str]] = [(0.0, 0, b"", "")] * len(plan)
    async with aio.insecure_channel(address) as channel:
        stubs = {m: channel.unary_unary(SERVICE + m) for m in ("OpenAccount", "Deposit", "GetBalance")}
        groups: list[list[int]] = [[] for _ in range(lanes)]
        for i, (account, _, _) in enumerate(plan):
            groups[hash(account) % lanes].append(i)

        async def lane(indexes: list[int]) -> None:
            for i in indexes:
                _, method, request = plan[i]
                at = time.time()
                try:
                    answers[i] = (at, 0, await stubs[method](request), "")
                except aio.AioRpcError as exc:
                    answers[i] = (at, exc.code().value[0], b"", exc.details() or "")

        await asyncio.gather(*(lane(g) for g in groups))
    return answers


async def generate(path: Path, calls: int) -> None:
    config = load_config(CONFIG, "127.0.0.1:1", str(path.with_suffix(".unused")))
    registry = load_registry(config.descriptors.descriptor_sets)
    assert registry is not None
    plan = _plan(calls)
    bank = await serve("bank")
    try:
        answers = await _send(bank.address, plan, 64)
    finally:
        await bank.stop(None)
    header = Header(
        created_at=answers[0][0] if answers else time.time(),
        methods={m: fingerprint(registry, m) for m in registry.methods},
        origin="empty",
    )
    writer = RecordingWriter(path, header)
    for seq, ((account, method, request), (at, code, answer, details)) in enumerate(
        zip(plan, answers, strict=True)
    ):
        writer.add(
            RecordedCall(
                seq=seq,
                at=at,
                method=SERVICE + method,
                is_write=method != "GetBalance",
                keys=(account,),
                correlation_id=f"g{seq}",
                metadata=(("x-request-id", f"g{seq}"),),
                requests=(request,),
                responses=(answer,) if code == 0 else (),
                code=code,
                details=details,
            )
        )
    writer.end()


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def _rss_mb(pid: int) -> float:
    """The resident memory of `pid` and of its children, now (Linux /proc)."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            kids = [int(k) for k in children.read().split()]
    except OSError:
        return total
    return total + sum(_rss_mb(k) for k in kids)


class _Progress:
    """A sink: each time another tenth of `calls` is compared, the replay's memory then."""

    def __init__(self, calls: int) -> None:
        self._step = max(1, calls // 10)
        self._seen = 0
        self._lock = threading.Lock()
        self.samples: list[tuple[int, float]] = []

    def __call__(self, comparison: Comparison) -> None:
        with self._lock:
            self._seen += 1
            if self._seen % self._step == 0:
                self.samples.append((self._seen, _rss_mb(os.getpid())))


async def child(mode: str, recording: Path, in_flight: int, bk: str) -> None:
    """One measurement, in this process: prints {"calls": n, "seconds": s, "rss_mb": m, "samples": ...}."""
    samples: list[tuple[int, float]] = []
    verdicts: dict[str, int] = {}
    if mode == "direct":
        plan = [
            (c.keys[0], c.method.removeprefix(SERVICE), c.requests[0]) for c in Recording(recording).calls()
        ]
        started = time.perf_counter()
        await _send(bk, plan, in_flight)
        calls, seconds = len(plan), time.perf_counter() - started
    else:
        total = Recording(recording).check().calls
        progress = _Progress(total)
        store = recording.with_name("replay.db")  # kept beside the recording, for `shim report`
        store.unlink(missing_ok=True)
        options = Options(recording, CONFIG, str(store), bk=bk, in_flight=in_flight)
        done = await replay(options, sinks=[progress])
        calls, seconds = done.summary.sent, done.summary.seconds
        verdicts = dict(done.summary.by_verdict())
        samples = progress.samples
    result = {
        "calls": calls,
        "seconds": seconds,
        "rss_mb": _peak_rss_mb(),
        "samples": samples,
        "verdicts": verdicts,
    }
    print(json.dumps(result))


@contextmanager
def _bk() -> Iterator[str]:
    """A fixed sample BK in a process of its own; its address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sample_ledger", "bk", "--fixed"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            found = re.search(r"listening on (\S+)", line)
            if found:
                break
        else:
            sys.exit(f"bench/replay.py: the sample BK did not start (exit {process.wait()})")
        threading.Thread(target=process.stderr.read, daemon=True).start()  # never let it block on a pipe
        yield found.group(1)
    finally:
        process.terminate()
        process.wait()


def _measure(mode: str, recording: Path, in_flight: int) -> dict[str, object]:
    log = recording.with_name(f"{mode}.log")  # the run's stderr, kept beside the recording
    with _bk() as bk, log.open("w") as err:
        done = subprocess.run(
            [
                *(sys.executable, __file__, "--child", mode, "--recording", str(recording)),
                *("--in-flight", str(in_flight), "--bk", bk),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            check=False,
            cwd=ROOT,
        )
    if done.returncode != 0:
        text = log.read_text()
        first = max(text.find("Traceback"), 0)  # the first error, not what followed from it
        sys.exit(f"bench/replay.py: the {mode} run failed (its log: {log}):\n{text[first : first + 4000]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--in-flight", type=int, default=256, help="calls in flight (both runs)")
    parser.add_argument("--child", choices=("direct", "replay"), help=argparse.SUPPRESS)
    parser.add_argument("--recording", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bk", help=argparse.SUPPRESS)
    parser.add_argument(
        "--keep", type=Path, help="keep the recording and the runs' logs in this folder (and reuse it)"
    )
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.recording, args.in_flight, args.bk))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        recording = folder / f"bench-{args.calls}.jsonl"
        if not recording.exists():  # kept from an earlier run with --keep: the same seeded calls
            started = time.perf_counter()
            asyncio.run(generate(recording, args.calls))
            print(f"recording of {args.calls} calls generated in {time.perf_counter() - started:.1f}s")
        direct = _measure("direct", recording, args.in_flight)
        replayed = _measure("replay", recording, args.in_flight)
    rate = {k: _f(r["calls"]) / _f(r["seconds"]) for k, r in (("direct", direct), ("replay", replayed))}
    print(f"direct to BK: {rate['direct']:.0f} calls/s, peak RSS {_f(direct['rss_mb']):.0f} MB")
    print(
        f"shim replay:  {rate['replay']:.0f} calls/s (x{rate['replay'] / rate['direct']:.2f} of direct),"
        f" peak RSS {_f(replayed['rss_mb']):.0f} MB (x{_f(replayed['rss_mb']) / _f(direct['rss_mb']):.2f}"
        " of direct)"
    )
    samples = replayed["samples"]
    assert isinstance(samples, list)
    if samples:
        print("replay memory (process + comparison worker) as calls were compared:")
        for seen, mb in samples:
            print(f"  {seen:>9} calls: {mb:.0f} MB")
    print(json.dumps({"calls": args.calls, "direct": direct, "replay": replayed}))
    verdicts = replayed["verdicts"]
    if verdicts != {"match": replayed["calls"]}:  # the BK is fixed: every call should match
        sys.exit(
            f"bench/replay.py: not every call matched: {verdicts}"
            f" (with --keep: shim report --store {folder}/replay.db --calls)"
        )


def _f(value: object) -> float:
    assert isinstance(value, int | float)
    return float(value)


if __name__ == "__main__":
    main()
