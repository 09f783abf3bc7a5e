"""BK going away in the middle of an adapted write, in `bk-primary` mode (BK answers, Bank is mirrored).

An adapter may call BK several times for one of Bank's calls. When BK becomes unavailable after one of
those calls went out, BK may have applied part of the write: the client is never told the bare
UNAVAILABLE that means "nothing was done, retry", and the mirror never reads it as a write BK never
received. Bank is sent the write, and its keys are marked out of step. Tested with the sample's own
adapters over BK's native interface (a batch of trades, one BK call per order), and with an adapter of
tests/shim/_adapters.py (a deposit, then a read of the balance), on both data planes.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import grpc
import pytest
from grpc import aio

from comparators import Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import serve
from shim import dataplane as dataplanes
from shim.routing import MethodSettings
from shim.testing import CapturingSink, running_shim
from tests.helpers import PLANES, until
from tests.sample_ledger.test_adapter import _config, _order
from tests.shim import _adapters
from tests.shim.test_adapters import HERE, REGISTRY

PART_WAY = "BK became unavailable part way through the adapted write"


@pytest.fixture(autouse=True)
def probe() -> _adapters.Probe:
    return _adapters.reset()


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_batch_bk_drops_after_its_first_order_reaches_bank_and_marks_its_keys(dataplane: str) -> None:
    """The sample's BookTrades adapter executes each order on BK: BK executed the first and is gone
    before the second. The client gets UNKNOWN (not UNAVAILABLE: a retry would book the first order
    twice on BK), Bank is sent the batch, and the account is out of step."""
    bank, native = await serve("bank"), await serve("bk-native")
    config = _config(bank.address, native.address, "bk-primary")
    config = replace(config, serving=replace(config.serving, dataplane=dataplane))
    sink = CapturingSink()
    running = (await dataplanes.start(config, [sink], None)).shim
    try:
        async with aio.insecure_channel(running.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(
                pb.OpenAccountRequest(
                    account_id="A2", owner_name="B", currency="USD", initial_deposit="10000"
                )
            )
            await sink.wait_for(1)
            call = stub.BookTrades(timeout=10)
            await call.write(_order("A2", "KO", pb.SIDE_BUY, "20", "61", "b1"))
            await until(lambda: native.servicer.book.trades, "BK executed the batch's first order")
            await native.stop(None)  # BK restarts, or its connection drops, mid-batch
            await call.write(_order("A2", "KO", pb.SIDE_BUY, "5", "61", "b2"))
            await call.done_writing()
            with pytest.raises(aio.AioRpcError) as failed:
                await call
            assert failed.value.code() is grpc.StatusCode.UNKNOWN
            assert PART_WAY in (failed.value.details() or "")
        comparisons = await sink.wait_for(2, within=15)
        await running.drain()
        batch = comparisons[1]
        assert batch.method == "/bank.v1.Ledger/BookTrades"
        assert batch.exchange.shadow is not None
        assert batch.exchange.shadow.code == 0  # Bank booked it
        assert len(bank.servicer.book.trades) == 2
        assert len(native.servicer.book.trades) == 1
        assert running.steps is not None
        await until(lambda: "A2" in running.steps.keys, "A2 marked out of step")
    finally:
        await running.stop(grace=1.0)
        await bank.stop(None)


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_deposit_bk_applied_before_dropping_reaches_bank_and_marks_its_key(
    probe: _adapters.Probe, dataplane: str
) -> None:
    """An adapter deposits on BK, then reads the balance: BK is gone by the read. The deposit is on BK,
    so it is mirrored to Bank (not dropped as one BK never received), and A1 is out of step."""
    bank, bk = await serve("bank"), await serve("bk")
    methods = {
        "bank.v1.Ledger/Deposit": MethodSettings(adapter=f"{HERE}:deposit_then_balance", key=("account_id",)),
        "bank.v1.Ledger/OpenAccount": MethodSettings(key=("account_id",)),
    }
    try:
        async with running_shim(
            bank.address,
            bk.address,
            mode="bk-primary",
            registry=REGISTRY,
            methods=methods,
            dataplane=dataplane,
        ) as (shim, sink):
            async with aio.insecure_channel(shim.address) as channel:
                stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                await stub.OpenAccount(
                    pb.OpenAccountRequest(account_id="A1", currency="USD", initial_deposit="100")
                )
                call = stub.Deposit(pb.DepositRequest(account_id="A1", amount="5", reference="r"), timeout=10)
                await probe.started.wait()
                await bk.stop(None)
                probe.go_on.set()
                with pytest.raises(aio.AioRpcError) as failed:
                    await call
                assert failed.value.code() is grpc.StatusCode.UNKNOWN
                assert PART_WAY in (failed.value.details() or "")
            comparisons = await sink.wait_for(2)
            await shim.drain()
            assert shim.steps is not None
            await until(lambda: "A1" in shim.steps.keys, "A1 marked out of step")
            marked = shim.steps.keys["A1"]
        deposit = comparisons[1]
        assert deposit.verdict is not Verdict.MATCH
        assert deposit.exchange.shadow is not None
        assert deposit.exchange.shadow.code == 0
        assert bank.servicer.book.accounts["A1"].cash == Decimal("105")
        assert "Deposit" in str(marked)
    finally:
        await bk.stop(None)
        await bank.stop(None)
