"""Shedding mirrored calls while the shim's event loop runs late ([shadow] shed_lag)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

import sample_ledger
from comparators import DescriptorRegistry, Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim._overload import LoopLag
from shim.config import load_rules_file
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.helpers import NEEDS_ENVOY, until

REGISTRY = DescriptorRegistry.from_files([Path(sample_ledger.__file__).parent / "bank.binpb"])
KEYED = {
    name: MethodSettings(key=("account_id",))
    for name in ("bank.v1.Ledger/OpenAccount", "bank.v1.Ledger/GetBalance", "bank.v1.Ledger/Deposit")
}
RULES, LOCATIONS = load_rules_file(Path(sample_ledger.__file__).parent / "rules.toml")
SHED_LAG = 0.02  # reads are shed above 20 ms of lag, writes above 100 ms


async def _until_calm(lag: LoopLag, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not lag.settled or lag.lag > SHED_LAG / 2:
        assert time.monotonic() < deadline, "the event loop never caught up"
        await asyncio.sleep(0.01)


async def test_a_late_loop_sheds_mirrored_reads_never_writes_and_then_mirrors_again(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """While the loop runs late, a read is not mirrored (counted, recorded as skipped: overloaded)
    but a write still is, however late; on time again, reads are mirrored too. The client gets its
    answer every time, and BK misses no write."""
    bank, bk = ledgers
    async with running_shim(
        bank.address,
        bk.address,
        registry=REGISTRY,
        methods=KEYED,
        shadow={"shed_lag": SHED_LAG},
        rules=RULES,
        rule_locations=LOCATIONS,
    ) as (shim, sink):
        shim_channel = grpc.aio.insecure_channel(shim.address)
        stub = pb_grpc.LedgerStub(shim_channel)  # type: ignore[no-untyped-call]
        try:
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="A1", initial_deposit="10"))
            await _until_calm(shim.loop_lag)
            time.sleep(0.5)  # noqa: ASYNC251  # blocking the loop is the point: 25 times the limit
            balance = await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
            deposit = await stub.Deposit(pb.DepositRequest(account_id="A1", amount="5"))
            await sink.wait_for(3)
            # on time again, reads are mirrored again. A machine busy with other work can make the loop
            # late again between the probe's calm and the read: such a read is shed, as it should be,
            # and the next one is sent once the loop is calm again
            after = []
            while len(after) < 10 and (len(after) == 0 or sink.comparisons[-1].verdict is Verdict.SKIPPED):
                await _until_calm(shim.loop_lag)
                after.append(await stub.GetBalance(pb.GetBalanceRequest(account_id="A1")))
                await sink.wait_for(3 + len(after))
        finally:
            await shim_channel.close()
        await shim.drain()
        shed = {
            m: shim.counters.get("shadow_shed", f"/bank.v1.Ledger/{m}") for m in ("GetBalance", "Deposit")
        }
        out_of_step = dict(shim.steps.keys) if shim.steps is not None else {}
    assert (balance.cash, deposit.cash) == ("10.00", "15.00")
    assert {a.cash for a in after} == {"15.00"}
    verdicts = [(c.method.rsplit("/", 1)[-1], c.verdict) for c in sink.comparisons]
    assert verdicts[1:3] == [("GetBalance", Verdict.SKIPPED), ("Deposit", Verdict.MATCH)]
    assert verdicts[-1] == ("GetBalance", Verdict.MATCH)  # BK got the deposit: A1 is in step
    assert len(verdicts) == 3 + len(after)
    late_again = sink.comparisons[3:-1]
    assert all(c.verdict is Verdict.SKIPPED for c in late_again)
    for skipped in [sink.comparisons[1], *late_again]:
        assert "the shim is overloaded (its event loop runs" in skipped.reason
    assert shed == {"GetBalance": 1 + len(late_again), "Deposit": 0}
    assert out_of_step == {}


async def test_reads_sent_right_after_start_are_mirrored_not_shed(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """A burst of reads the moment a shim with a comparison process starts is mirrored and compared,
    none shed, however low shed_lag is: lag counts only once the loop has settled, and then it does."""
    bank, bk = ledgers
    for address in (bank.address, bk.address):
        async with grpc.aio.insecure_channel(address) as channel:
            opened = pb.OpenAccountRequest(account_id="A1", initial_deposit="10")
            await pb_grpc.LedgerStub(channel).OpenAccount(opened)  # type: ignore[no-untyped-call]
    async with running_shim(
        bank.address,
        bk.address,
        registry=REGISTRY,
        methods=KEYED,
        comparison={"executor": "process"},
        shadow={"shed_lag": 0.001},
        rules=RULES,
        rule_locations=LOCATIONS,
    ) as (shim, sink):
        async with grpc.aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            reads = [stub.GetBalance(pb.GetBalanceRequest(account_id="A1")) for _ in range(40)]
            balances = await asyncio.gather(*reads)
        comparisons = await sink.wait_for(40, within=30.0)
        shed = shim.counters.get("shadow_shed", "/bank.v1.Ledger/GetBalance")
        await _until_calm(shim.loop_lag)  # the probe does settle, and judges the loop from then on
    assert {b.cash for b in balances} == {"10.00"}
    assert shed == 0
    assert [c.verdict for c in comparisons] == [Verdict.MATCH] * 40


async def _keep_late(stop: asyncio.Event) -> None:
    """Keeps the event loop about 60 ms late until `stop`: each turn blocks it, as a loaded machine would."""
    while not stop.is_set():
        time.sleep(0.06)  # noqa: ASYNC251  # blocking the loop is the point
        await asyncio.sleep(0.005)


@pytest.mark.parametrize(
    ("strict", "shed"),
    [
        pytest.param(False, False, id="no-client-call-through-python"),
        pytest.param(True, True, id="strict-writes-through-python"),
    ],
)
@NEEDS_ENVOY
async def test_behind_envoy_a_late_loop_sheds_reads_only_while_clients_calls_go_through_it(
    ledgers: tuple[RunningLedger, RunningLedger], strict: bool, shed: bool
) -> None:
    """Behind Envoy the clients' calls go straight to the primary: a late event loop delays only the
    comparison plane, which catches up, so the reads it takes up meanwhile are mirrored and compared (Envoy
    sheds reads when the plane truly falls behind). While a method's calls take Python on the primary path
    (strict ordering of its writes, here), the loop serves clients again, and a late loop sheds reads as
    on the Python data plane."""
    bank, bk = ledgers
    methods = dict(KEYED)
    if strict:
        methods["bank.v1.Ledger/Deposit"] = MethodSettings(key=("account_id",), strict=True)
    async with running_shim(
        bank.address,
        bk.address,
        registry=REGISTRY,
        methods=methods,
        shadow={"shed_lag": SHED_LAG},
        rules=RULES,
        rule_locations=LOCATIONS,
        dataplane="envoy",
    ) as (shim, sink):
        async with grpc.aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="A1", initial_deposit="10"))
            await sink.wait_for(1)
            await _until_calm(shim.loop_lag)
            stop = asyncio.Event()
            late = asyncio.get_running_loop().create_task(_keep_late(stop))
            try:
                await until(lambda: shim.loop_lag.lag > SHED_LAG, "the loop runs late", within=10.0)
                balance = await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
                await until(lambda: len(sink.comparisons) >= 2, "the read recorded")
                lag = shim.loop_lag.lag
            finally:
                stop.set()
                await late
        await shim.drain()
        shed_count = shim.counters.get("shadow_shed", "/bank.v1.Ledger/GetBalance")
    assert balance.cash == "10.00"
    assert lag > SHED_LAG  # the loop was late all along
    read = sink.comparisons[1]
    assert read.method.endswith("/GetBalance")
    if shed:
        assert read.verdict is Verdict.SKIPPED
        assert "the shim is overloaded (its event loop runs" in read.reason
        assert shed_count == 1
    else:
        assert read.verdict is Verdict.MATCH
        assert shed_count == 0
