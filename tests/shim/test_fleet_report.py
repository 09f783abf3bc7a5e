"""A fleet's report: `shim report`, `shim gate` and `shim reconcile` on a store that several replicas wrote,
each figure about a process's health named with the replica behind it (the sample ledger).

Three shims in front of the sample Bank share one SQLite store, each under a replica name of its own
(`tests.helpers.replica_of_a_fleet`): `east` mirrors to a live BK, `west` to a BK that is down, and
`north` stores nothing (its store sink keeps no comparison waiting: each is dropped and counted).
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from grpc import aio
from rich.console import Console

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger, serve
from shim.evidence import ReplicaShare, Report, build_report
from shim.gate import evaluate
from shim.metrics import Counters
from shim.report import html, terminal, to_json
from shim.steps import Steps
from shim.store import Store
from tests.helpers import postgres_schema_url, replica_of_a_fleet, shim_command
from tests.processes import shim_process
from tests.sample_ledger.test_reconcile import CONFIG
from tests.shim.test_evidence_store import _shadow_args

OPEN = "bank.v1.Ledger/OpenAccount"
EAST, WEST, NORTH = "east:101", "west:202", "north:303"
CALLS = {EAST: 6, WEST: 4, NORTH: 3}  # accounts each replica's clients open


async def _open_accounts(address: str, prefix: str, count: int) -> None:
    async with aio.insecure_channel(address) as channel:
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        for n in range(count):
            await stub.OpenAccount(pb.OpenAccountRequest(account_id=f"{prefix}{n}", initial_deposit="10"))


async def _fill(store: Store, bank: RunningLedger, bk: RunningLedger, down: str) -> None:
    """East, west (its BK at `down`, where nothing listens) and north write to `store`."""
    for name, to, max_buffer in ((EAST, bk.address, 100_000), (WEST, down, 100_000), (NORTH, bk.address, 0)):
        async with replica_of_a_fleet(store, name, bank.address, to, max_buffer=max_buffer) as (shim, _):
            await _open_accounts(shim.address, name.partition(":")[0], CALLS[name])


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[Path, RunningLedger, RunningLedger]]:
    """The store three replicas filled, and the sample Bank and BK (still serving)."""
    bank, bk, gone = await serve("bank"), await serve("bk"), await serve("bk")
    down = gone.address
    await gone.stop(None)
    path = tmp_path / "fleet.db"
    store = Store.open(str(path))
    await store.start()
    try:
        await _fill(store, bank, bk, down)
    finally:
        await store.close()
    try:
        yield path, bank, bk
    finally:
        await bk.stop(None)
        await bank.stop(None)


async def _report(path: Path) -> Report:
    store = Store.open(str(path))
    await store.start()
    try:
        return await build_report(store, since=0.0, until=4e9, relative=0.2, absolute=0.0003, min_sampled=20)
    finally:
        await store.close()


def _share(report: Report, replica: str) -> ReplicaShare:
    method = report.method(OPEN)
    assert method is not None
    return next(s for s in method.by_replica if s.replica == replica)


async def test_the_report_names_each_replica_with_its_own_figures(
    fleet: tuple[Path, RunningLedger, RunningLedger],
) -> None:
    """The replicas seen are listed with their calls; the method's unproven and dropped calls are broken
    down by replica: west's are its shadow's failures, north's its dropped comparisons, east has none."""
    report = await _report(fleet[0])
    assert [(r.name, r.calls, r.compared) for r in report.replicas] == [
        (EAST, 6, 6),
        (NORTH, 0, 0),
        (WEST, 4, 0),
    ]
    assert all(r.first_seen <= r.last_seen for r in report.replicas)
    method = report.method(OPEN)
    assert method is not None
    assert (method.calls, method.compared, method.dropped) == (10, 6, 3)
    assert [s.replica for s in method.by_replica] == [WEST, NORTH, EAST]  # most not compared first
    west, north, east = method.by_replica
    assert (west.calls, west.compared, west.shadow_errors + west.skipped, west.dropped) == (4, 0, 4, 0)
    assert (north.calls, north.dropped_by_name, north.unproven) == (0, (("store_dropped", 3),), 0)
    assert (east.calls, east.compared, east.not_compared) == (6, 6, 0)

    data = json.loads(json.dumps(to_json(report)))
    assert [r["name"] for r in data["replicas"]] == [EAST, NORTH, WEST]
    (opened,) = data["methods"]
    by_replica = {s["replica"]: s for s in opened["by_replica"]}
    assert by_replica[NORTH]["dropped_by_name"] == {"store_dropped": 3}
    assert by_replica[WEST]["unproven"] == 4
    assert by_replica[EAST]["unproven"] == by_replica[EAST]["dropped"] == 0

    out = io.StringIO()
    terminal(report, Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    assert "Replicas (3 wrote in the window)" in text
    rows = {line.split("│")[2].strip(): line for line in text.splitlines() if "Ledger/OpenAccount" in line
            and line.count("│") > 9}  # fmt: skip
    assert [cell.strip() for cell in rows[NORTH].split("│")[3:-1]] == ["0", "0", "0", "0", "0", "0", "3", "0"]
    assert [cell.strip() for cell in rows[EAST].split("│")[3:-1]] == ["6", "6", "0", "0", "0", "0", "0", "0"]
    page = html(report)
    assert 'id="replicas"' in page
    assert f"<code>{WEST}</code>" in page


async def test_the_gate_names_the_replicas_behind_a_failure(
    fleet: tuple[Path, RunningLedger, RunningLedger],
) -> None:
    """Too few clean comparisons: the gate names west (calls unproven) and north (dropped), most first, and
    not east; too many unproven calls: the same two, north's dropped comparisons being unproven too.
    `shim gate` on the store prints the same."""
    report = await _report(fleet[0])
    result = evaluate(
        report,
        min_compared=10,
        min_answered=10,
        max_mismatch_rate=0.0,
        max_unproven_rate=0.01,
        required_methods=(),
    )
    measured = {c.name: c.measured for c in result.failed}
    assert (
        measured["compared"]
        == f"not proven: 6 clean of 10 calls; not compared, by replica: {WEST} 4, {NORTH} 3"
    )
    assert measured["unproven"].endswith(f"; by replica: {WEST} 4, {NORTH} 3")
    code, out, err = await shim_command(
        "gate", "--store", str(fleet[0]), "--window", "1h", "--min-compared", "10"
    )
    assert code == 1, out + err
    assert f"not compared, by replica: {WEST} 4, {NORTH} 3" in out


async def test_one_replica_s_report_is_what_it_was(tmp_path: Path) -> None:
    """A store one replica wrote: the report lists that replica and no breakdown, and the terminal, the page
    and the gate say exactly what they said before replicas were counted."""
    bank, bk = await serve("bank"), await serve("bk")
    path = tmp_path / "one.db"
    store = Store.open(str(path))
    await store.start()
    try:
        async with replica_of_a_fleet(store, EAST, bank.address, bk.address) as (shim, _):
            await _open_accounts(shim.address, "east", 3)
    finally:
        await store.close()
        await bk.stop(None)
        await bank.stop(None)
    report = await _report(path)
    assert [(r.name, r.calls) for r in report.replicas] == [(EAST, 3)]
    assert not report.fleet
    assert all(not m.by_replica for m in report.methods)
    before = replace(report, replicas=())  # a report as it was made before replicas were counted

    def shown(r: Report) -> str:
        out = io.StringIO()
        terminal(r, Console(file=out, width=160, color_system=None))
        return out.getvalue()

    assert shown(report) == shown(before)
    assert html(report) == html(before)
    assert to_json(report)["methods"] == to_json(before)["methods"]
    assert to_json(report)["methods"][0]["by_replica"] == []


def _marked(key_result: dict[str, Any]) -> tuple[str, str]:
    return key_result["key"], key_result["marked_by"]


async def test_reconcile_names_the_replica_that_marked_each_key(tmp_path: Path) -> None:
    """Keys out of step marked by two replicas (their `Steps`): `shim reconcile` lists each differing key with
    the replica that marked it, in its JSON and in its table and verdict line."""
    bank, bk = await serve("bank"), await serve("bk")
    try:
        async with aio.insecure_channel(bank.address) as to_bank, aio.insecure_channel(bk.address) as to_bk:
            stubs = [pb_grpc.LedgerStub(to_bank), pb_grpc.LedgerStub(to_bk)]  # type: ignore[no-untyped-call]
            for account in ("K1", "K2", "K3"):
                for stub in stubs:
                    await stub.OpenAccount(pb.OpenAccountRequest(account_id=account, initial_deposit="100"))
            await stubs[1].Deposit(pb.DepositRequest(account_id="K1", amount="5"))  # BK alone
            await stubs[0].Deposit(pb.DepositRequest(account_id="K2", amount="7"))  # Bank alone
        store = Store.open(str(tmp_path / "shim.db"))
        await store.start()
        Steps(store, Counters(), replica=EAST).mark(["K1"], "/bank.v1.Ledger/Deposit", "Bank refused it")
        Steps(store, Counters(), replica=WEST).mark(["K2"], "/bank.v1.Ledger/Deposit", "BK timed out")
        await store.close()
        args = ["reconcile", "--config", str(CONFIG), "--bank", bank.address, "--bk", bk.address]
        args += ["--store", str(tmp_path / "shim.db")]
        code, out, err = await shim_command(*args, "--json")
        assert code == 1, err
        assert sorted(map(_marked, json.loads(out)["differing"])) == [("K1", EAST), ("K2", WEST)]
        code, out, err = await shim_command(*args)
    finally:
        await bk.stop(None)
        await bank.stop(None)
    assert code == 1, err
    text = " ".join(out.split())
    assert "marked by" in text
    assert f"(2 already known to be out of step; marked by {EAST} 1, {WEST} 1)" in text
    (k2,) = [line for line in out.splitlines() if "│ K2" in line]
    assert WEST in k2
    assert EAST not in k2


async def test_two_shim_processes_on_postgres_each_named_behind_its_figures(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """Two `shim serve` processes on one PostgreSQL store, the second mirroring to a BK that is down: `shim
    gate` names the second (by the name it gives itself) behind the calls not compared, `shim report --json`
    gives each its share, and `shim reconcile` says the second marked the accounts it opened out of step."""
    bank, bk = ledgers
    gone = await serve("bk")
    down = gone.address
    await gone.stop(None)
    with postgres_schema_url() as url:
        async with shim_process(*_shadow_args(bank, bk, url, "--config", CONFIG)) as first:
            await _open_accounts(first.ready["listen"], "P", 5)
            assert await first.stop() == 0, first.stderr
        async with shim_process(*_shadow_args(bank, bk, url, "--config", CONFIG, "--bk", down)) as second:
            await _open_accounts(second.ready["listen"], "Q", 3)
            assert await second.stop() == 0, second.stderr
        code, out, err = await shim_command("gate", "--store", url, "--window", "1h", "--min-compared", "10")
        assert code == 1, out + err
        assert f"not proven: 5 clean of 8 calls; not compared, by replica: {second.replica} 3" in out
        code, out, err = await shim_command("report", "--store", url, "--since", "1h", "--json")
        assert code == 0, err
        data = json.loads(out)
        assert [(r["name"], r["calls"]) for r in data["replicas"]] == sorted(
            [(first.replica, 5), (second.replica, 3)]
        )
        ((method, shares),) = [(m["method"], m["by_replica"]) for m in data["methods"]]
        assert method == OPEN
        assert {s["replica"]: (s["compared"], s["unproven"]) for s in shares} == {
            first.replica: (5, 0),
            second.replica: (0, 3),
        }
        args = ["--config", str(CONFIG), "--bank", bank.address, "--bk", bk.address, "--store", url]
        code, out, err = await shim_command("reconcile", *args, "--json")
        assert code == 1, err
        differing = json.loads(out)["differing"]
        assert sorted(map(_marked, differing)) == [(f"Q{n}", second.replica) for n in range(3)]
