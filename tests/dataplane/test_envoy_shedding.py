"""A comparison plane far behind Envoy sheds reads, not writes: a read whose copy it takes up late in
Envoy's hold (`SHED_BEHIND` of it) after its call started is recorded not mirrored."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from grpc import aio

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger, serve
from shim.dataplane import envoy as envoy_process
from shim.dataplane.processor import SHED_BEHIND
from shim.dataplane.unseen import UNSEEN
from tests.helpers import ROOT, until
from tests.processes import shim_process

pytestmark = pytest.mark.skipif(envoy_process.binary() is None, reason="no Envoy binary on this platform")
HOLD = 8.0  # seconds Envoy holds a copy for the plane: the shadow's timeout
BALANCE, DEPOSIT = "/bank.v1.Ledger/GetBalance", "/bank.v1.Ledger/Deposit"


def _metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _count(figures: dict[str, float], family: str, **labels: str) -> float:
    """The sum of a family's samples whose labels include `labels`."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(
        v
        for k, v in figures.items()
        if (k == family or k.startswith(family + "{")) and all(w in k for w in wanted)
    )


def _envoy_stat(plane: int, name: str) -> float:
    """One of Envoy's stats, by its full name, from the admin address in the folder the plane shares."""
    environ = dict(e.partition(b"=")[::2] for e in Path(f"/proc/{plane}/environ").read_bytes().split(b"\0"))
    admin = (Path(environ[b"SHIM_COMPARISON_PLANE"].decode()) / "admin-address").read_text().strip()
    query = urllib.parse.urlencode({"filter": f"^{name}$"})
    with urllib.request.urlopen(f"http://{admin}/stats?{query}", timeout=5) as answer:
        lines = answer.read().decode().splitlines()
    return sum(float(line.rpartition(": ")[2]) for line in lines)


async def test_a_plane_far_behind_sheds_the_reads_it_takes_up_late_and_mirrors_the_writes(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    bank, bk = ledgers
    store = tmp_path / "shim.db"
    async with shim_process(
        *("--listen", "127.0.0.1:0", "--dataplane", "envoy", "--metrics", "127.0.0.1:0"),
        *("--config", ROOT / "sample_ledger" / "shim.toml", "--diff-log", os.devnull),
        *("--shadow-timeout", f"{HOLD:g}s", "--bank", bank.address, "--bk", bk.address, "--store", store),
    ) as shim:
        port, plane = int(shim.ready["metrics"].rpartition(":")[2]), shim.ready["pid"]
        compared = lambda: _count(_metrics(port), "shim_comparisons_total")  # noqa: E731
        async with aio.insecure_channel(shim.ready["listen"]) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="S1", owner_name="Ada"), timeout=10)
            await stub.GetBalance(pb.GetBalanceRequest(account_id="S1"), timeout=10)
            await until(lambda: compared() >= 2, "the first calls compared")
            # nothing is shed while the plane starts (copies come late for reasons that pass)
            await until(lambda: _count(_metrics(port), "shim_shedding_armed") == 1, "the start-up over", 30)
            os.kill(plane, signal.SIGSTOP)  # the plane takes up nothing: the copies wait in Envoy
            try:
                await asyncio.gather(
                    *(stub.GetBalance(pb.GetBalanceRequest(account_id="S1"), timeout=10) for _ in range(10)),
                    *(
                        stub.Deposit(pb.DepositRequest(account_id="S1", amount=f"{n}.00"), timeout=10)
                        for n in range(1, 6)
                    ),
                )
                # the condition is the copies' age itself: past the shedding point, well inside Envoy's hold
                await asyncio.sleep(HOLD * SHED_BEHIND + 0.3)
            finally:
                os.kill(plane, signal.SIGCONT)
            await until(lambda: compared() >= 2 + 15, "every call in the evidence", 30)
            # a plane caught up sheds nothing (once its event loop, stopped too, has stopped counting late)
            lag = "shim_event_loop_lag_seconds"
            await until(lambda: _count(_metrics(port), lag) < 0.01, "the event loop on time", 30)
            await stub.GetBalance(pb.GetBalanceRequest(account_id="S1"), timeout=10)
            await until(lambda: compared() >= 2 + 15 + 1, "the last read compared", 30)
            answered = await asyncio.to_thread(_envoy_stat, plane, "cluster.processor.upstream_rq_2xx")
            started = await asyncio.to_thread(_envoy_stat, plane, "http.shim.ext_proc.mirror.streams_started")
        figures = await asyncio.to_thread(_metrics, port)
    assert _count(figures, "shim_events_total", event="shadow_shed", method=BALANCE) == 10
    assert _count(figures, "shim_events_total", event="shadow_shed") == 10  # no write shed
    assert _count(figures, "shim_events_total", event="copies_lost") == 0
    assert _count(figures, "shim_comparisons_total", method=BALANCE, verdict="skipped") == 10
    assert _count(figures, "shim_comparisons_total", method=BALANCE, verdict="match") == 2
    # every write mirrored and compared (the sample's BK answers deposits differently: they mismatch)
    assert _count(figures, "shim_comparisons_total", method=DEPOSIT) == 5
    assert _count(figures, "shim_comparisons_total", method=DEPOSIT, verdict="skipped") == 0
    assert _count(figures, "shim_comparisons_total", method=UNSEEN) == 0
    assert answered == started == 2 + 15 + 1  # the processor ended every copy's stream: none cut off
    with contextlib.closing(sqlite3.connect(store)) as db:
        reasons = [r for (r,) in db.execute("SELECT reason FROM comparisons WHERE verdict = 'skipped'")]
    assert len(reasons) == 10
    assert all(r.startswith("not mirrored: the shim is behind") for r in reasons), reasons


async def test_a_read_taken_up_in_time_is_never_shed_however_slow_its_primary(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """Only how late the plane takes up a copy counts, not how long the call took: a read Bank answers
    later than the shedding point is taken up as it starts, and compared."""
    _, bk = ledgers
    bank = await serve("bank", delay=1.5)  # every call: past the shedding point of a 1 s hold
    try:
        async with shim_process(
            *("--listen", "127.0.0.1:0", "--dataplane", "envoy", "--metrics", "127.0.0.1:0"),
            *("--config", ROOT / "sample_ledger" / "shim.toml", "--diff-log", os.devnull),
            *("--shadow-timeout", "1s", "--bank", bank.address, "--bk", bk.address, "--store", ":memory:"),
        ) as shim:
            port = int(shim.ready["metrics"].rpartition(":")[2])
            async with aio.insecure_channel(shim.ready["listen"]) as channel:
                stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                await stub.OpenAccount(pb.OpenAccountRequest(account_id="S2", owner_name="Ada"), timeout=10)
                await until(
                    lambda: _count(_metrics(port), "shim_shedding_armed") == 1, "the start-up over", 30
                )
                began = time.monotonic()
                await stub.GetBalance(pb.GetBalanceRequest(account_id="S2"), timeout=10)
                assert time.monotonic() - began >= 1.0 * SHED_BEHIND
                await until(
                    lambda: _count(_metrics(port), "shim_comparisons_total") >= 2, "the read compared"
                )
                assert _count(_metrics(port), "shim_shedding_armed") == 1
            figures = await asyncio.to_thread(_metrics, port)
    finally:
        await bank.stop()
    assert _count(figures, "shim_events_total", event="shadow_shed") == 0
    assert _count(figures, "shim_comparisons_total", method=BALANCE, verdict="match") == 1
