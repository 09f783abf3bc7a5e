"""Every Bank method through the shim, with BK serving only its native interface behind the sample's
adapters (`sample_ledger.adapter`), in shadow mode and in bk-primary mode."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from importlib import resources
from typing import Any

import grpc
import pytest
from grpc import aio

import shim
from comparators import Comparison, Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger._proto.bk.v1 import journal_pb2 as jpb
from sample_ledger._proto.bk.v1 import journal_pb2_grpc as jpb_grpc
from sample_ledger.demo import ADAPTERS, _books, _native_books
from sample_ledger.server import RunningLedger, serve
from shim.config import build, load_file
from shim.testing import CapturingSink

D = Decimal


@pytest.fixture
async def sides() -> AsyncIterator[tuple[RunningLedger, RunningLedger]]:
    """The sample Bank, and a BK that serves bk.v1.Journal only."""
    bank = await serve("bank")
    try:
        native = await serve("bk-native")
        try:
            yield bank, native
        finally:
            await native.stop(None)
    finally:
        await bank.stop(None)


def _config(bank: str, bk: str, mode: str) -> shim.Config:
    with resources.as_file(resources.files("sample_ledger") / "shim.toml") as path:
        settings = load_file(path)
    return build(
        {
            **settings,
            "bank": shim.Upstream("bank", bank),
            "bk": shim.Upstream("bk", bk, timeout=10.0),
            "listen": "127.0.0.1:0",
            "mode": mode,
            "serving": {"forced_start": True},  # in the mode the test names, no evidence (shim serve --force)
            "adapters": ADAPTERS,
            "store": {"url": ":memory:"},
            "comparison": {"executor": "thread"},
            "noise": {"reads": 0.0},
            "shadow": {"shed_lag": 0.0},  # every read compared, however busy the test machine
        }
    )


async def _every_method(stub: Any) -> dict[str, Any]:
    """One of each Bank method (fees are whole cents: BK's fee rounding bug stays out of it)."""
    seen: dict[str, Any] = {}
    seen["open"] = await stub.OpenAccount(
        pb.OpenAccountRequest(account_id="A1", owner_name="Ada", currency="USD", initial_deposit="1000")
    )
    await stub.OpenAccount(pb.OpenAccountRequest(account_id="A2", owner_name="Bob", currency="USD"))
    seen["account"] = await stub.GetAccount(pb.GetAccountRequest(account_id="A1"))
    first = await stub.ListAccounts(pb.ListAccountsRequest(page_size=1))
    second = await stub.ListAccounts(pb.ListAccountsRequest(page_size=1, page_token=first.next_page_token))
    seen["accounts"] = [a.account_id for a in (*first.accounts, *second.accounts)]
    seen["deposit"] = await stub.Deposit(pb.DepositRequest(account_id="A1", amount="500.25", reference="w"))
    await stub.Deposit(pb.DepositRequest(account_id="A2", amount="100", reference="w"))
    buy = await stub.PostTrade(_order("A1", "AAPL", pb.SIDE_BUY, "100", "10.5", "o1"))
    msft = await stub.PostTrade(_order("A1", "MSFT", pb.SIDE_BUY, "40", "20", "o2"))
    await stub.PostTrade(_order("A1", "AAPL", pb.SIDE_SELL, "30", "11", "o3"))
    seen["trade"] = buy
    with pytest.raises(aio.AioRpcError) as invalid:
        await stub.PostTrade(_order("A1", "AAPL", pb.SIDE_BUY, "abc", "10", "o4"))
    seen["invalid"] = invalid.value.code()
    seen["cancel"] = await stub.CancelTrade(
        pb.CancelTradeRequest(account_id="A1", trade_id=msft.trade_id, reason="client request")
    )
    seen["position"] = await stub.GetPosition(pb.GetPositionRequest(account_id="A1", symbol="AAPL"))
    seen["flat"] = await stub.GetPosition(pb.GetPositionRequest(account_id="A1", symbol="TSLA"))
    seen["portfolio"] = await stub.GetPortfolio(pb.GetPortfolioRequest(account_id="A1"))
    seen["balance"] = await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
    page = await stub.ListTrades(pb.ListTradesRequest(account_id="A1", page_size=2))
    rest = await stub.ListTrades(
        pb.ListTradesRequest(account_id="A1", page_size=2, page_token=page.next_page_token)
    )
    seen["trades"] = [t.client_order_id for t in (*page.trades, *rest.trades)]
    seen["settled"] = await stub.SettleTrades(pb.SettleTradesRequest(account_id="A1"))
    seen["entries"] = [
        e async for e in stub.StreamLedgerEntries(pb.StreamLedgerEntriesRequest(account_id="A1"))
    ]
    batch = [_order("A2", "KO", pb.SIDE_BUY, "20", "61", "b1"), pb.PostTradeRequest(account_id="A2")]
    seen["batch"] = await stub.BookTrades(iter([*batch, _order("A2", "KO", pb.SIDE_SELL, "2", "62", "b2")]))
    session = [
        pb.TradeSessionRequest(order=_order("A2", "PG", pb.SIDE_BUY, "4", "161", "s1")),
        pb.TradeSessionRequest(order=_order("A2", "PG", pb.SIDE_BUY, "-4", "161", "s2")),
    ]
    seen["session"] = [event async for event in stub.TradeSession(iter(session))]
    return seen


def _order(account: str, symbol: str, side: int, quantity: str, price: str, ref: str) -> pb.PostTradeRequest:
    return pb.PostTradeRequest(
        account_id=account, symbol=symbol, side=side, quantity=quantity, price=price, client_order_id=ref
    )


@pytest.mark.parametrize("mode", ["shadow", "bk-primary"])
async def test_every_bank_method_through_the_adapters_keeps_both_ledgers_in_step(
    sides: tuple[RunningLedger, RunningLedger], mode: str
) -> None:
    """Clients get Bank-shaped answers; both books, asked directly, end equal; every comparison matches
    but the ledger-entry stream, where the adapter's planted bug (and nothing else) shows."""
    bank, native = sides
    sink = CapturingSink()
    running = await shim.start(_config(bank.address, native.address, mode), sinks=[sink])
    try:
        async with aio.insecure_channel(running.address) as channel:
            seen = await _every_method(pb_grpc.LedgerStub(channel))  # type: ignore[no-untyped-call]
        await sink.wait_for(22)
        await running.drain()
    finally:
        await running.stop(grace=1.0)
    # Bank-shaped answers, with the primary's ids
    trade = seen["trade"]
    assert trade.trade_id.startswith("T" if mode == "shadow" else "trd_")
    assert (trade.side, D(trade.quantity), D(trade.price), D(trade.fee)) == (
        pb.SIDE_BUY,
        100,
        D("10.5"),
        D("0.5"),
    )
    assert seen["cancel"].status == pb.TRADE_STATUS_CANCELLED
    assert seen["accounts"] == ["A1", "A2"]
    assert seen["account"].owner_name == "Ada"
    assert seen["invalid"] is grpc.StatusCode.INVALID_ARGUMENT
    assert (D(seen["position"].quantity), D(seen["flat"].quantity)) == (70, 0)
    assert {p.symbol for p in seen["portfolio"].positions} == {"AAPL"}
    assert seen["trades"] == ["o1", "o2", "o3"]
    assert seen["settled"].settled_count == 2
    assert (seen["batch"].booked, seen["batch"].rejected) == (2, 1)
    assert [e.WhichOneof("event") for e in seen["session"]] == ["booked", "rejected"]
    assert seen["session"][1].rejected.code == "INVALID_ARGUMENT"
    fees = [D(e.amount) for e in seen["entries"] if e.kind == pb.ENTRY_KIND_FEE]
    # Bank writes a fee entry as minus the fee; through the adapter's planted bug it comes out positive
    assert fees == (
        [D("-0.5"), D("-0.2"), D("-0.15")] if mode == "shadow" else [D("0.5"), D("0.2"), D("0.15")]
    )
    # the books, asked of each ledger directly (BK in its own interface)
    assert await _books(bank.address) == await _native_books(native.address)
    async with aio.insecure_channel(bank.address) as to_bank, aio.insecure_channel(native.address) as to_bk:
        bank_stub = pb_grpc.LedgerStub(to_bank)  # type: ignore[no-untyped-call]
        journal = jpb_grpc.JournalStub(to_bk)  # type: ignore[no-untyped-call]
        for account in ("A1", "A2"):
            balance = await bank_stub.GetBalance(pb.GetBalanceRequest(account_id=account))
            cash = await journal.Cash(jpb.CashRequest(client=account))
            settled = D(cash.settled.units) + D(cash.settled.nanos) / 10**9
            pending = D(cash.pending.units) + D(cash.pending.nanos) / 10**9
            assert (D(balance.cash), D(balance.unsettled_cash)) == (settled + pending, pending)
    # the comparisons: all match, but the stream of ledger entries
    by_verdict: dict[Verdict, list[Comparison]] = {}
    for comparison in sink.comparisons:
        by_verdict.setdefault(comparison.verdict, []).append(comparison)
    assert set(by_verdict) == {Verdict.MATCH, Verdict.MISMATCH}, [
        (c.method, c.verdict, c.reason)
        for c in sink.comparisons
        if c.verdict not in (Verdict.MATCH, Verdict.MISMATCH)
    ]
    (mismatch,) = by_verdict[Verdict.MISMATCH]
    assert mismatch.method == "/bank.v1.Ledger/StreamLedgerEntries"
    assert {(D(str(d.bank)), D(str(d.bk))) for d in mismatch.real_differences} == {
        (D("-0.5"), D("0.5")),
        (D("-0.2"), D("0.2")),
        (D("-0.15"), D("0.15")),
    }
    assert all(d.path.endswith("].amount") for d in mismatch.real_differences)
    assert len(sink.comparisons) == 22
    assert running.steps is not None
    assert not running.steps.keys
