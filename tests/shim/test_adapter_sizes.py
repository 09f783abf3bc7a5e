"""An adapted answer over `max_message_size`, in `bk-primary` mode: the call ends RESOURCE_EXHAUSTED, as
it would on a plain channel to a BK that sent that answer, and that is what the evidence records (not an
OK answer the client never got). Tested with the sample's own adapters over BK's native interface and
with adapters of tests/shim/_adapters.py, on both data planes."""

from __future__ import annotations

from dataclasses import replace

import grpc
import pytest
from grpc import aio

from comparators import Code
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger._proto.bk.v1 import journal_pb2 as jpb
from sample_ledger._proto.bk.v1 import journal_pb2_grpc as jpb_grpc
from sample_ledger.server import RunningLedger, serve
from shim import dataplane as dataplanes
from shim.routing import MethodSettings
from shim.testing import CapturingSink, running_shim
from tests.helpers import PLANES, until
from tests.sample_ledger.test_adapter import _config
from tests.shim.test_adapters import HERE, REGISTRY

TOO_LARGE = "Received message larger than max"


@pytest.mark.parametrize("dataplane", PLANES)
async def test_an_adapted_answer_over_the_size_limit_is_resource_exhausted_for_the_client_and_the_record(
    ledgers: tuple[RunningLedger, RunningLedger], dataplane: str
) -> None:
    """A read and a write whose adapters answer 8 KiB under a 4 KiB limit: the client gets
    RESOURCE_EXHAUSTED, the recorded BK outcome is RESOURCE_EXHAUSTED with no answer, and the write BK
    applied is mirrored to Bank with its key marked out of step."""
    bank, bk = ledgers
    methods = {
        "bank.v1.Ledger/GetBalance": MethodSettings(adapter=f"{HERE}:padded_balance"),
        "bank.v1.Ledger/Deposit": MethodSettings(adapter=f"{HERE}:padded_deposit", key=("account_id",)),
        "bank.v1.Ledger/OpenAccount": MethodSettings(key=("account_id",)),
    }
    async with running_shim(
        bank.address,
        bk.address,
        mode="bk-primary",
        registry=REGISTRY,
        methods=methods,
        max_message_size=4096,
        dataplane=dataplane,
    ) as (shim, sink):
        async with aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(
                pb.OpenAccountRequest(account_id="A1", currency="USD", initial_deposit="100")
            )
            with pytest.raises(aio.AioRpcError) as read:
                await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"), timeout=10)
            with pytest.raises(aio.AioRpcError) as write:
                await stub.Deposit(pb.DepositRequest(account_id="A1", amount="5", reference="r"), timeout=10)
        assert read.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert write.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        comparisons = await sink.wait_for(3)
        await shim.drain()
        assert shim.steps is not None
        await until(lambda: "A1" in shim.steps.keys, "A1 marked out of step")
    for method in ("/bank.v1.Ledger/GetBalance", "/bank.v1.Ledger/Deposit"):
        (recorded,) = [c.exchange.primary for c in comparisons if c.method == method]
        assert recorded.code == Code.RESOURCE_EXHAUSTED, method
        assert TOO_LARGE in recorded.details
        assert recorded.messages == ()
        assert not recorded.adapter_error
    assert str(bank.servicer.book.accounts["A1"].cash) == "105"  # Bank was sent the deposit


@pytest.mark.parametrize("dataplane", PLANES)
async def test_the_samples_adapted_listing_over_the_size_limit_is_resource_exhausted(dataplane: str) -> None:
    """The sample's ListAccounts adapter turns BK's page of two clients into Bank's page, 8 bytes longer
    (Bank's page token is text, "offset:2"; BK's offset a number). With the limit between the two, BK's
    page reaches the adapter and the adapted page is too large: the client gets RESOURCE_EXHAUSTED, and
    so does the recorded BK outcome."""
    bank, native = await serve("bank"), await serve("bk-native")
    try:
        async with aio.insecure_channel(native.address) as channel:
            journal = jpb_grpc.JournalStub(channel)  # type: ignore[no-untyped-call]
            for n in range(4):
                await journal.RegisterClient(
                    jpb.RegisterClientRequest(number=f"A{n}", holder="O" * 150, currency="USD"), timeout=10
                )
            page = await journal.ScanClients(jpb.ScanClientsRequest(limit=2), timeout=10)
        limit = page.ByteSize() + 4
        config = _config(bank.address, native.address, "bk-primary")
        config = replace(config, serving=replace(config.serving, dataplane=dataplane, max_message_size=limit))
        sink = CapturingSink()
        running = (await dataplanes.start(config, [sink], None)).shim
        try:
            async with aio.insecure_channel(running.address) as channel:
                stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                with pytest.raises(aio.AioRpcError) as listing:
                    await stub.ListAccounts(pb.ListAccountsRequest(page_size=2), timeout=10)
            assert listing.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            (compared,) = await sink.wait_for(1, within=15)
            await running.drain()
        finally:
            await running.stop(grace=1.0)
    finally:
        await native.stop(None)
        await bank.stop(None)
    assert compared.method == "/bank.v1.Ledger/ListAccounts"
    recorded = compared.exchange.primary
    assert recorded.code == Code.RESOURCE_EXHAUSTED
    assert recorded.details == f"Received message larger than max ({page.ByteSize() + 8} vs. {limit})"
