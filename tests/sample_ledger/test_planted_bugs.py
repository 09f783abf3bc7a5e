"""The three bugs planted in BK, each pinned against Bank's answer (see `sample_ledger.__doc__`)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import grpc
import pytest

import sample_ledger
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from tests.sample_ledger._support import BUY, SELL, Connected, bad_fields, failure, order

D = Decimal


def _section(title: str) -> str:
    doc = sample_ledger.__doc__ or ""
    start = doc.index(title)
    following = re.search(r"\n\S[^\n]*\n-{3,}\n", doc[start + len(title) + 1 :])
    return doc[start : start + len(title) + 1 + following.start()] if following else doc[start:]


def test_docstring_numbers_the_three_planted_bugs() -> None:
    """The package docstring lists planted bugs 1-3 with their method, trigger and both answers."""
    section = _section("Planted bugs in BK")
    assert re.findall(r"^(\d+)\. ", section, re.MULTILINE) == ["1", "2", "3"]
    for words in ["HALF_UP", "HALF_EVEN", "NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"]:
        assert words in section


# ---- 1. fee rounding ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "bank_fee", "bk_fee"),
    [("1", "0.01", "0"), ("5", "0.03", "0.02"), ("9", "0.05", "0.04"), ("13", "0.07", "0.06")],
)
async def test_bug1_fee_of_a_half_cent_rounds_half_even_in_bk(
    bank: Connected, bk: Connected, quantity: str, bank_fee: str, bk_fee: str
) -> None:
    """Quantities 1, 5, 9, 13: Bank rounds quantity x 0.005 half up, BK half even."""
    fees = []
    for ledger in (bank, bk):
        await ledger.open("A1")
        fees.append((await ledger.trade("A1", "AAPL", BUY, quantity, "10")).fee)
    assert fees == [bank_fee, bk_fee]


@pytest.mark.parametrize("quantity", ["3", "7", "11", "2", "2.5", "0.1", "1.5"])
async def test_bug1_does_not_fire_for_other_quantities(bank: Connected, bk: Connected, quantity: str) -> None:
    """Quantities not congruent to 1 mod 4 (or fractional) get the same fee on both sides."""
    fees = []
    for ledger in (bank, bk):
        await ledger.open("A1")
        fees.append(D((await ledger.trade("A1", "AAPL", BUY, quantity, "10")).fee))
    assert fees[0] == fees[1]


async def test_bug1_propagates_to_cash_entries_settlement_and_batch_totals(
    bank: Connected, bk: Connected
) -> None:
    """The lost cent shows in cash, unsettled cash, the FEE entry, net_cash and BookTrades total_fees."""
    seen = {}
    for ledger in (bank, bk):
        await ledger.open("A1", deposit="1000")
        await ledger.trade("A1", "AAPL", BUY, "1", "10")
        balance = await ledger.balance("A1")
        fee_entry = (await ledger.entries("A1"))[-1]
        report = await ledger.stub.SettleTrades(pb.SettleTradesRequest(account_id="A1"))
        batch = await ledger.stub.BookTrades(iter([order("A1", "KO", BUY, "5", "1")]))
        seen[ledger.kind] = (balance, D(fee_entry.amount), D(report.net_cash), D(batch.total_fees))
    assert seen["bank"] == ((D("989.99"), D("-10.01")), D("-0.01"), D("-10.01"), D("0.03"))
    assert seen["bk"] == ((D("990"), D("-10")), D(0), D(-10), D("0.02"))


# ---- 2. unknown account ----------------------------------------------------------------

Call = Callable[[Any], Awaitable[Any]]


async def _drain(stream: Any) -> list[Any]:
    return [item async for item in stream]


UNKNOWN_ACCOUNT_CALLS: dict[str, Call] = {
    "GetAccount": lambda s: s.GetAccount(pb.GetAccountRequest(account_id="ghost")),
    "Deposit": lambda s: s.Deposit(pb.DepositRequest(account_id="ghost", amount="10")),
    "PostTrade": lambda s: s.PostTrade(order("ghost", "AAPL", BUY, "3", "10")),
    "CancelTrade": lambda s: s.CancelTrade(pb.CancelTradeRequest(account_id="ghost", trade_id="T00000001")),
    "GetPosition": lambda s: s.GetPosition(pb.GetPositionRequest(account_id="ghost", symbol="AAPL")),
    "GetPortfolio": lambda s: s.GetPortfolio(pb.GetPortfolioRequest(account_id="ghost")),
    "GetBalance": lambda s: s.GetBalance(pb.GetBalanceRequest(account_id="ghost")),
    "ListTrades": lambda s: s.ListTrades(pb.ListTradesRequest(account_id="ghost")),
    "SettleTrades": lambda s: s.SettleTrades(pb.SettleTradesRequest(account_id="ghost")),
    "StreamLedgerEntries": lambda s: _drain(
        s.StreamLedgerEntries(pb.StreamLedgerEntriesRequest(account_id="ghost"))
    ),
    "GetAccount(empty id)": lambda s: s.GetAccount(pb.GetAccountRequest(account_id="")),
}


@pytest.mark.parametrize("method", list(UNKNOWN_ACCOUNT_CALLS))
async def test_bug2_unknown_account_is_invalid_argument_in_bk(
    bank: Connected, bk: Connected, method: str
) -> None:
    """Every method on an account never opened: Bank NOT_FOUND, BK INVALID_ARGUMENT naming account_id."""
    bank_error = await failure(UNKNOWN_ACCOUNT_CALLS[method](bank.stub))
    bk_error = await failure(UNKNOWN_ACCOUNT_CALLS[method](bk.stub))
    assert (bank_error.code(), bk_error.code()) == (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(bk_error) == ["account_id"]


async def test_bug2_shows_in_trade_session_rejection_codes(bank: Connected, bk: Connected) -> None:
    """A TradeSession order for an unknown account is rejected NOT_FOUND by Bank, INVALID_ARGUMENT by BK."""
    codes = []
    for ledger in (bank, bk):
        request = pb.TradeSessionRequest(order=order("ghost", "AAPL", BUY, "3", "10", "o-1"))
        [event] = [e async for e in ledger.stub.TradeSession(iter([request]))]
        codes.append((event.rejected.client_order_id, event.rejected.code))
    assert codes == [("o-1", "NOT_FOUND"), ("o-1", "INVALID_ARGUMENT")]


async def test_bug2_is_invisible_in_book_trades(bank: Connected, bk: Connected) -> None:
    """BookTrades counts an order for an unknown account as rejected on both sides alike."""
    for ledger in (bank, bk):
        summary = await ledger.stub.BookTrades(iter([order("ghost", "AAPL", BUY, "3", "10")]))
        assert (summary.booked, summary.rejected) == (0, 1)


# ---- 3. oversell -------------------------------------------------------------------------


async def test_bug3_oversell_is_refused_by_bank_and_booked_by_bk(bank: Connected, bk: Connected) -> None:
    """Selling 10 of 4 held: Bank FAILED_PRECONDITION and no entry; BK books it and goes to -6."""
    for ledger in (bank, bk):
        await ledger.open("A1")
        await ledger.trade("A1", "AAPL", BUY, "4", "10")
    error = await failure(bank.trade("A1", "AAPL", SELL, "10", "11"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "insufficient position" in (error.details() or "")
    assert len(await bank.entries("A1")) == 3
    assert (await bank.position("A1", "AAPL"))[0] == D(4)
    trade = await bk.trade("A1", "AAPL", SELL, "10", "11")
    assert trade.status == pb.TRADE_STATUS_BOOKED
    assert (await bk.position("A1", "AAPL"))[0] == D(-6)
    assert (await bk.balance("A1"))[0] == D(100000) - D("40.02") + D("110") - D("0.05")


async def test_bug3_selling_a_symbol_never_bought(bank: Connected, bk: Connected) -> None:
    """A SELL of a symbol never held: Bank FAILED_PRECONDITION, BK a negative position."""
    for ledger in (bank, bk):
        await ledger.open("A1")
    assert (
        await failure(bank.trade("A1", "KO", SELL, "3", "10"))
    ).code() == grpc.StatusCode.FAILED_PRECONDITION
    await bk.trade("A1", "KO", SELL, "3", "10")
    assert (await bk.position("A1", "KO"))[0] == D(-3)


async def test_bug3_shows_in_trade_session(bank: Connected, bk: Connected) -> None:
    """In a TradeSession the oversell is a FAILED_PRECONDITION rejection from Bank and a booking from BK."""
    kinds = []
    for ledger in (bank, bk):
        await ledger.open("A1")
        request = pb.TradeSessionRequest(order=order("A1", "AAPL", SELL, "3", "10", "o-1"))
        [event] = [e async for e in ledger.stub.TradeSession(iter([request]))]
        kinds.append(event.rejected.code if event.HasField("rejected") else "booked")
    assert kinds == ["FAILED_PRECONDITION", "booked"]
