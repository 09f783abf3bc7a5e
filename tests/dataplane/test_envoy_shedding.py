"""A comparison plane far behind Envoy sheds reads, not writes: a read whose copy it takes up late in
Envoy's hold (`SHED_BEHIND` of it) after its call started is recorded not mirrored."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
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
from tests.helpers import ROOT, envoy_admin_get, until
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
    """Envoy's stats whose full names match `name` (a regular expression), summed, from the admin address
    in the folder the plane shares."""
    environ = dict(e.partition(b"=")[::2] for e in Path(f"/proc/{plane}/environ").read_bytes().split(b"\0"))
    admin = (Path(environ[b"SHIM_COMPARISON_PLANE"].decode()) / "admin-address").read_text().strip()
    query = urllib.parse.urlencode({"filter": f"^{name}$"})
    lines = envoy_admin_get(admin, f"/stats?{query}").splitlines()
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
            shedding = "shim_envoy_shedding_reads"  # and Envoy copies reads again (`read_shedding`)
            await until(lambda: _count(_metrics(port), shedding) == 0, "reads copied again", 30)
            # a machine busy with other work can make the plane late again between the calm and the read:
            # such a read is shed, as it should be, and the next one is sent once the plane is calm again
            again = 0
            while _count(_metrics(port), "shim_comparisons_total", method=BALANCE, verdict="match") < 2:
                assert again < 10, "no read mirrored once the plane was calm"
                if again:
                    await until(lambda: _count(_metrics(port), lag) < 0.01, "the event loop on time", 30)
                    await until(lambda: _count(_metrics(port), shedding) == 0, "reads copied again", 30)
                again += 1
                await stub.GetBalance(pb.GetBalanceRequest(account_id="S1"), timeout=10)
                total = 2 + 15 + again
                await until(lambda: compared() >= total, "the last read compared", 30)  # noqa: B023
            started = await asyncio.to_thread(_envoy_stat, plane, "http.shim.ext_proc.mirror.streams_started")
            ended = (
                "cluster.processor.upstream_rq_2xx"  # Envoy counts a stream the processor ended as it ends
            )
            await until(
                lambda: _envoy_stat(plane, ended) >= started, "every copy's stream ended by the processor"
            )
            answered = await asyncio.to_thread(_envoy_stat, plane, ended)
        figures = await asyncio.to_thread(_metrics, port)
    shed = 10 + again - 1  # the ten sent while the plane stood still, and any read shed again after the calm
    assert _count(figures, "shim_events_total", event="shadow_shed", method=BALANCE) == shed
    assert _count(figures, "shim_events_total", event="shadow_shed") == shed  # no write shed
    assert _count(figures, "shim_events_total", event="copies_lost") == 0
    assert _count(figures, "shim_comparisons_total", method=BALANCE, verdict="skipped") == shed
    assert _count(figures, "shim_comparisons_total", method=BALANCE, verdict="match") == 2
    # every write mirrored and compared (the sample's BK answers deposits differently: they mismatch)
    assert _count(figures, "shim_comparisons_total", method=DEPOSIT) == 5
    assert _count(figures, "shim_comparisons_total", method=DEPOSIT, verdict="skipped") == 0
    assert _count(figures, "shim_comparisons_total", method=UNSEEN) == 0
    assert answered == started == 2 + 15 + again  # the processor ended every copy's stream: none cut off
    with contextlib.closing(sqlite3.connect(store)) as db:
        reasons = [r for (r,) in db.execute("SELECT reason FROM comparisons WHERE verdict = 'skipped'")]
    assert len(reasons) == shed
    assert sum(r.startswith("not mirrored: the shim is behind") for r in reasons) >= 10, reasons
    assert all(r.startswith("not mirrored: the shim is ") for r in reasons), reasons  # behind, or overloaded


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


async def test_while_the_plane_is_behind_envoy_sheds_the_reads_copies_and_each_is_recorded(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A plane that took up many copies four fifths of Envoy's hold late (reads among them, which it shed
    itself) has Envoy shed the reads' copies (their routes copy nothing) until it has caught up: each read
    then is answered by Bank as ever, not mirrored, counted by Envoy and recorded under its method; every
    write is mirrored and compared; each call is in the evidence once; then reads are copied again."""
    bank, bk = ledgers
    store, hold = tmp_path / "shim.db", 10.0
    # the plane, once going on, takes up its 40 copies within the last 1.5 s of Envoy's hold: niced below the
    # suite's other workers (as it is by default) it did not, and writes' copies were lost, as they then are;
    # with a 6 s hold (0.9 s left) a loaded run of the whole suite lost some too
    for name in ("shim.toml", "bank.binpb", "rules.toml"):
        shutil.copyfile(ROOT / "sample_ledger" / name, tmp_path / name)
    config = tmp_path / "shim.toml"
    config.write_text(
        config.read_text(encoding="utf-8") + "\n[envoy]\ncomparison_nice = 0\n", encoding="utf-8"
    )
    async with shim_process(
        *("--listen", "127.0.0.1:0", "--dataplane", "envoy", "--metrics", "127.0.0.1:0"),
        *("--config", config, "--diff-log", os.devnull),
        *("--shadow-timeout", f"{hold:g}s", "--bank", bank.address, "--bk", bk.address, "--store", store),
    ) as shim:
        port, plane = int(shim.ready["metrics"].rpartition(":")[2]), shim.ready["pid"]
        figure = lambda name: _count(_metrics(port), name)  # noqa: E731
        async with aio.insecure_channel(shim.ready["listen"]) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            balance = lambda: stub.GetBalance(pb.GetBalanceRequest(account_id="R1"), timeout=10)  # noqa: E731
            deposit = lambda n: stub.Deposit(pb.DepositRequest(account_id="R1", amount=f"{n}.00"), timeout=10)  # noqa: E731
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="R1", owner_name="Ada"), timeout=10)
            await until(lambda: figure("shim_shedding_armed") == 1, "the start-up over", 30)
            assert figure("shim_envoy_shedding_reads") == 0
            os.kill(plane, signal.SIGSTOP)  # its copies wait in Envoy, past four fifths of the hold
            try:  # many of them: a few late copies are a blip (`read_shedding.MANY`)
                await asyncio.gather(*(balance() for _ in range(28)), *(deposit(n) for n in range(1, 13)))
                await asyncio.sleep(hold * (SHED_BEHIND + 0.05))  # the condition is the copies' age itself
            finally:
                os.kill(plane, signal.SIGCONT)
            await until(lambda: figure("shim_envoy_shedding_reads") == 1, "reads shed at Envoy", 30)
            await asyncio.gather(*(balance() for _ in range(6)), deposit(13), deposit(14))  # no client error
            await until(lambda: figure("shim_envoy_shedding_reads") == 0, "reads copied again", 30)
            await balance()
            calls = 1 + 40 + 6 + 2 + 1
            await until(lambda: figure("shim_comparisons_total") >= calls, "every call in the evidence", 30)
            shed_route = r"vhost\.all\.route\.shed-[0-9]+\.upstream_rq_total"  # its calls, while shedding
            shed_by_envoy = await asyncio.to_thread(_envoy_stat, plane, shed_route)
        figures = await asyncio.to_thread(_metrics, port)
    with contextlib.closing(sqlite3.connect(store)) as db:
        rows = db.execute("SELECT method, verdict, reason FROM comparisons ORDER BY at").fetchall()
    assert len(rows) == calls, rows  # each call once
    at_envoy = [m for m, _, r in rows if r.startswith("not mirrored: shed at Envoy")]
    assert 1 <= len(at_envoy) == shed_by_envoy <= 6, rows  # shed at Envoy: reads of the shedding's time alone
    assert set(at_envoy) == {BALANCE}
    deposits = [v for m, v, _ in rows if m == DEPOSIT]
    assert len(deposits) == 14, rows
    assert "skipped" not in deposits, [row for row in rows if row[0] == DEPOSIT]  # every write compared
    assert rows[-1][:2] == (BALANCE, "match")  # copied again, and compared
    assert _count(figures, "shim_events_total", event="shadow_shed", method=BALANCE) >= len(at_envoy)
    assert _count(figures, "shim_comparisons_total", method=UNSEEN) == 0
