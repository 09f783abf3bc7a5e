"""A bounded soak: hostile inputs of every kind found so far, while normal clients call through the shim.

Normal clients get exact answers and their calls are mirrored and compared; the shim's memory stays under
a stated bound; its terminal commands print hostile names as text; SIGTERM ends it with exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import sqlite3
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from grpc import aio

from tests._proto.grpc.testing import interop_pb2 as pb
from tests._proto.grpc.testing import interop_pb2_grpc as pb_grpc
from tests.backends import interop_server
from tests.helpers import descriptor_set, shim_command
from tests.processes import shim_process

MiB = 1024 * 1024
SOAK = 8.0  # seconds of hostile traffic beside the normal one
RSS_BOUND = 600 * MiB  # the shim's resident memory may not exceed this, hostile inputs and all
STREAMS = 100  # idle streams, and slow readers of 8 MiB answers, kept open at once
CAPTURE_TOTAL = "64MiB"  # shadow.max_capture_total: what the shadow side may hold for comparison
HOSTILE_NAMES = ["/x.Y/[/b]", "/x.Y/\x1b[31mred\x1b[0m", "/[bold]b[/bold].S/M", "/e.E/\x07\x08"]
ESC = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _rss(pid: int) -> int:
    """The resident memory of process `pid`, in bytes (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def _scrape(address: str) -> bytes:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as answer:
        body: bytes = answer.read()
    return body


async def _forever(action: Callable[[], Awaitable[Any]], until: asyncio.Event) -> int:
    """Run `action` again and again until `until` is set; how many times it ran."""
    count = 0
    while not until.is_set():
        with contextlib.suppress(aio.AioRpcError, TimeoutError):
            await action()
        count += 1
    return count


async def test_hostile_inputs_beside_normal_traffic_leave_answers_exact_memory_bounded_and_a_clean_exit(
    tmp_path: Path,
) -> None:
    """For a bounded time: oversized requests, garbage bytes, made-up methods with markup and escape codes,
    thousands of made-up method names, idle streams, slow readers and cancelled calls, beside normal
    clients. Every normal answer is exact, every normal call is mirrored and matches, the shim's RSS stays
    under its bound, its report prints hostile names as text, and SIGTERM stops it with exit 0."""
    bank, bk = await interop_server(), await interop_server()
    (tmp_path / "interop.binpb").write_bytes(descriptor_set(pb.DESCRIPTOR).SerializeToString())
    store = tmp_path / "shim.db"
    args = [
        *("--listen", "127.0.0.1:0", "--bank", bank.address, "--bk", bk.address, "--mode", "shadow"),
        *(
            "--descriptor-set",
            tmp_path / "interop.binpb",
            "--store",
            store,
            "--diff-log",
            tmp_path / "diff.log",
        ),
        *("--metrics", "127.0.0.1:0", "--config", tmp_path / "shim.toml"),
        # the shim's own server in front: its message limit is part of what is tested (Envoy enforces
        # none; see docs/dataplane.md)
        *("--dataplane", "python"),
    ]
    (tmp_path / "shim.toml").write_text(
        f'[upstreams.bank]\ntarget = "{bank.address}"\n[shadow]\nmax_capture_total = "{CAPTURE_TOTAL}"\n'
        # the normal calls are writes, each size its own key; the slow readers read
        '[methods."grpc.testing.TestService/UnaryCall"]\nkey = ["response_size"]\n'
        '[methods."grpc.testing.TestService/StreamingOutputCall"]\nread = true\n',
        encoding="utf-8",
    )
    stop = asyncio.Event()
    peak = 0
    normal: list[tuple[int, bytes]] = []
    try:
        async with shim_process(*args) as shim:
            address = shim.ready["listen"]
            options = [
                ("grpc.max_send_message_length", 128 * MiB),
                ("grpc.max_receive_message_length", 128 * MiB),
            ]
            async with aio.insecure_channel(address, options=options) as channel:
                stub = pb_grpc.TestServiceStub(channel)
                rng = random.Random(18)
                big = b"x" * (65 * MiB)

                async def normal_call() -> None:
                    size = rng.randrange(1, 4096)
                    answer = await stub.UnaryCall(pb.SimpleRequest(response_size=size), timeout=10)
                    normal.append((size, answer.payload.body))

                async def oversized() -> None:
                    await asyncio.sleep(0.5)  # a 65 MiB request twice a second (made in this very process)
                    await channel.unary_unary("/grpc.testing.TestService/UnaryCall")(big, timeout=10)

                async def garbage() -> None:
                    await asyncio.sleep(0.02)
                    await channel.unary_unary("/grpc.testing.TestService/UnaryCall")(
                        b"\xff\xff\xff\xff", timeout=5
                    )

                async def made_up() -> None:
                    await asyncio.sleep(0.005)  # a few hundred made-up names a second, thousands in all
                    name = (
                        rng.choice(HOSTILE_NAMES)
                        if rng.random() < 0.2
                        else f"/made.Up{rng.randrange(10**6)}/M"
                    )
                    await channel.unary_unary(name)(b"", timeout=5)

                async def idle_stream() -> None:
                    if len(idle) < STREAMS:
                        idle.append(stub.FullDuplexCall())  # opened, never written to: it stays until the end
                    await asyncio.sleep(0.05)

                async def slow_reader() -> None:
                    if len(slow) < STREAMS:
                        params = [pb.ResponseParameters(size=MiB) for _ in range(8)]
                        call = stub.StreamingOutputCall(
                            pb.StreamingOutputCallRequest(response_parameters=params)
                        )
                        await call.read()  # one message, then never again: the rest waits on the shim
                        slow.append(call)
                    await asyncio.sleep(0.05)

                async def cancelled() -> None:
                    await asyncio.sleep(0.02)
                    call = stub.UnaryCall(pb.SimpleRequest(response_size=10), timeout=10)
                    await asyncio.sleep(0)
                    call.cancel()

                idle: list[Any] = []
                slow: list[Any] = []

                async def watch() -> None:
                    nonlocal peak
                    while not stop.is_set():
                        peak = max(peak, _rss(shim.proc.pid))
                        await asyncio.sleep(0.1)

                tasks = [
                    asyncio.ensure_future(_forever(action, stop))
                    for action in (
                        normal_call,
                        normal_call,
                        oversized,
                        garbage,
                        made_up,
                        made_up,
                        idle_stream,
                        slow_reader,
                        cancelled,
                    )
                ]
                watcher = asyncio.ensure_future(watch())
                await asyncio.sleep(SOAK)  # the soak's length: what this test is about
                stop.set()
                counts = await asyncio.gather(*tasks)
                await watcher
                for call in (*idle, *slow):
                    call.cancel()
                metrics = await asyncio.to_thread(_scrape, shim.ready["metrics"])
            code = await shim.stop()
        report = await shim_command("report", "--store", store, "--calls")
    finally:
        await bank.stop()
        await bk.stop()
    series = [line for line in metrics.decode().splitlines() if line and not line.startswith("#")]
    print(  # the figures the docs quote (pytest -s)
        f"soak {SOAK:.0f}s: normal calls {counts[0] + counts[1]}, hostile calls {sum(counts[2:])},"
        f" peak RSS {peak / MiB:.0f} MiB (bound {RSS_BOUND / MiB:.0f}), metric series {len(series)}"
    )
    assert code == 0
    assert peak < RSS_BOUND, f"peak RSS {peak / MiB:.0f} MiB"
    assert counts[0] + counts[1] > 100  # the normal clients were not starved
    assert all(body == b"\0" * size for size, body in normal)  # exact answers
    with contextlib.closing(sqlite3.connect(store)) as db:
        verdicts = dict(
            db.execute(
                "SELECT verdict, COUNT(*) FROM comparisons WHERE method = ? AND bank_code = 0"
                " GROUP BY verdict",
                ("/grpc.testing.TestService/UnaryCall",),
            ).fetchall()
        )
        reasons = db.execute(
            "SELECT verdict, reason, COUNT(*) FROM comparisons WHERE bank_code = 0 AND verdict <> 'match'"
            " GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5"
        ).fetchall()
    assert verdicts.get("match", 0) >= len(normal), reasons  # every normal call mirrored and matched
    assert set(verdicts) <= {"match"}, reasons
    assert len(series) < 2_000, f"{len(series)} metric series"
    assert report[0] == 0, report[2]
    assert not ESC.search(report[1]), "a control character reached the terminal"
