"""The benign differences between Bank and BK, each pinned (see `sample_ledger.__doc__`)."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import grpc

import sample_ledger
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from tests.sample_ledger._support import BUY, SELL, Connected, failure, order, violations


def test_docstring_numbers_the_seven_benign_differences() -> None:
    """The package docstring lists benign differences 1-7 before the planted bugs."""
    doc = sample_ledger.__doc__ or ""
    section = doc[doc.index("Benign differences between Bank and BK") : doc.index("Planted bugs in BK")]
    assert re.findall(r"^(\d+)\. ", section, re.MULTILINE) == [str(n) for n in range(1, 8)]


async def test_1_trade_ids_are_a_counter_in_bank_and_random_hex_in_bk(bank: Connected, bk: Connected) -> None:
    """Bank mints T00000001, T00000002, ...; BK mints trd_ + 12 lowercase hex digits."""
    ids: dict[str, list[str]] = {}
    for ledger in (bank, bk):
        await ledger.open("A1")
        ids[ledger.kind] = [(await ledger.trade("A1", "AAPL", BUY, "3", "10")).trade_id for _ in range(3)]
    assert ids["bank"] == ["T00000001", "T00000002", "T00000003"]
    assert all(re.fullmatch(r"trd_[0-9a-f]{12}", i) for i in ids["bk"])
    assert len(set(ids["bk"])) == 3


async def test_2_bank_pads_decimals_and_bk_normalises_them(bank: Connected, bk: Connected) -> None:
    """Money with 2 decimals, prices with at least 2, averages with 4 in Bank; everything normalised in BK."""
    seen = {}
    for ledger in (bank, bk):
        await ledger.open("A1", deposit="1000")
        trade = await ledger.trade("A1", "AAPL", BUY, "10.00", "100.5")
        odd = await ledger.trade("A1", "KO", BUY, "2.5", "10.125")
        position = await ledger.stub.GetPosition(pb.GetPositionRequest(account_id="A1", symbol="AAPL"))
        empty = await ledger.stub.GetPosition(pb.GetPositionRequest(account_id="A1", symbol="XOM"))
        balance = await ledger.stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
        report = await ledger.stub.SettleTrades(pb.SettleTradesRequest(account_id="A1"))
        entries = await ledger.entries("A1")
        seen[ledger.kind] = [
            (trade.quantity, trade.price, trade.fee, trade.notional),
            (odd.quantity, odd.price, odd.fee, odd.notional),
            (position.quantity, position.average_price, position.cost_basis),
            (empty.quantity, empty.average_price, empty.cost_basis),
            (balance.cash, balance.unsettled_cash, report.net_cash),
            [(e.amount, e.quantity) for e in entries],
        ]
    assert seen["bank"] == [
        ("10", "100.50", "0.05", "1005.00"),
        ("2.5", "10.125", "0.01", "25.31"),
        ("10", "100.5000", "1005.00"),
        ("0", "0.0000", "0.00"),
        ("-30.37", "-1030.37", "-1030.37"),
        [("1000.00", ""), ("-1005.00", "10"), ("-0.05", ""), ("-25.31", "2.5"), ("-0.01", ""), ("0.00", "")],
    ]
    assert seen["bk"] == [
        ("10", "100.5", "0.05", "1005"),
        ("2.5", "10.125", "0.01", "25.31"),
        ("10", "100.5", "1005"),
        ("0", "0", "0"),
        ("-30.37", "-1030.37", "-1030.37"),
        [("1000", ""), ("-1005", "10"), ("-0.05", ""), ("-25.31", "2.5"), ("-0.01", ""), ("0", "")],
    ]


async def test_3_unordered_lists_come_in_different_orders(bank: Connected, bk: Connected) -> None:
    """Portfolio: Bank first-acquired order, BK symbol descending; settled ids: booking order vs by BK id."""
    portfolios, settled, booked = {}, {}, {}
    for ledger in (bank, bk):
        await ledger.open("A1")
        trades = [
            await ledger.trade("A1", symbol, BUY, "3", "10") for symbol in ["KO", "AAPL", "XOM", "MSFT"]
        ]
        await ledger.trade("A1", "AAPL", BUY, "3", "10")
        portfolio = await ledger.stub.GetPortfolio(pb.GetPortfolioRequest(account_id="A1"))
        portfolios[ledger.kind] = [p.symbol for p in portfolio.positions]
        report = await ledger.stub.SettleTrades(pb.SettleTradesRequest(account_id="A1"))
        settled[ledger.kind] = list(report.settled_trade_ids)
        booked[ledger.kind] = [t.trade_id for t in trades]
    assert portfolios == {"bank": ["KO", "AAPL", "XOM", "MSFT"], "bk": ["XOM", "MSFT", "KO", "AAPL"]}
    assert settled["bank"][:4] == booked["bank"]
    assert settled["bk"] == sorted(settled["bk"])
    assert set(booked["bk"]) <= set(settled["bk"])


async def test_4_timestamps_come_from_each_sides_own_clock(bank: Connected, bk: Connected) -> None:
    """opened_at, booked_at, as_of, settled_at and posted_at are read from the answering side's clock."""
    bank.running.servicer.book.clock = lambda: 1_700_000_000_123_456_789
    bk.running.servicer.book.clock = lambda: datetime(2024, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    stamps = {}
    for ledger in (bank, bk):
        account = await ledger.open("A1")
        trade = await ledger.trade("A1", "AAPL", BUY, "3", "10")
        balance = await ledger.stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
        portfolio = await ledger.stub.GetPortfolio(pb.GetPortfolioRequest(account_id="A1"))
        report = await ledger.stub.SettleTrades(pb.SettleTradesRequest(account_id="A1"))
        entries = await ledger.entries("A1")
        found = [account.opened_at, trade.booked_at, balance.as_of, portfolio.as_of, report.settled_at]
        found += [e.posted_at for e in entries]
        stamps[ledger.kind] = {(t.seconds, t.nanos) for t in found}
    assert stamps == {"bank": {(1_700_000_000, 123_456_789)}, "bk": {(1_704_164_645, 678_000_000)}}


async def test_5_bk_sets_the_venue_and_bank_does_not(bank: Connected, bk: Connected) -> None:
    """Trade.venue is "XNYS" from BK and empty from Bank, in every answer carrying a Trade."""
    venues = {}
    for ledger in (bank, bk):
        await ledger.open("A1")
        trade = await ledger.trade("A1", "AAPL", BUY, "3", "10")
        listed = await ledger.stub.ListTrades(pb.ListTradesRequest(account_id="A1"))
        cancelled = await ledger.stub.CancelTrade(
            pb.CancelTradeRequest(account_id="A1", trade_id=trade.trade_id)
        )
        venues[ledger.kind] = {trade.venue, listed.trades[0].venue, cancelled.venue}
    assert venues == {"bank": {""}, "bk": {"XNYS"}}


async def test_6_page_tokens_are_offsets_in_bank_and_opaque_in_bk(bank: Connected, bk: Connected) -> None:
    """Bank's token is the next offset, BK's the base64 of the last id; each refuses the other's."""
    tokens = {}
    for ledger in (bank, bk):
        for account_id in ["A", "B", "C"]:
            await ledger.open(account_id)
        accounts = await ledger.stub.ListAccounts(pb.ListAccountsRequest(page_size=2))
        for _ in range(3):
            await ledger.trade("A", "AAPL", BUY, "3", "10")
        trades = await ledger.stub.ListTrades(pb.ListTradesRequest(account_id="A", page_size=2))
        tokens[ledger.kind] = (accounts.next_page_token, trades.next_page_token, trades.trades[1].trade_id)
    assert tokens["bank"][:2] == ("2", "2")
    assert tokens["bk"][0] == base64.urlsafe_b64encode(b"B").decode()
    assert tokens["bk"][1] == base64.urlsafe_b64encode(tokens["bk"][2].encode()).decode()
    for ledger, other in ((bank, "bk"), (bk, "bank")):
        accounts_token, trades_token, _ = tokens[other]
        wrong = [
            ledger.stub.ListAccounts(pb.ListAccountsRequest(page_token=accounts_token)),
            ledger.stub.ListTrades(pb.ListTradesRequest(account_id="A", page_token=trades_token)),
        ]
        for call in wrong:
            assert (await failure(call)).code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_7_error_messages_are_worded_differently_with_the_same_code(
    bank: Connected, bk: Connected
) -> None:
    """The same refusals carry the same codes and BadRequest fields but different human-readable words."""
    answers = {}
    for ledger in (bank, bk):
        await ledger.open("A1")
        await ledger.trade("A1", "AAPL", BUY, "3", "10")
        errors = [
            await failure(
                ledger.stub.PostTrade(pb.PostTradeRequest(account_id="A1", symbol="x", quantity="1"))
            ),
            await failure(ledger.open("A1")),
            await failure(ledger.stub.CancelTrade(pb.CancelTradeRequest(account_id="A1", trade_id="nope"))),
        ]
        events = ledger.stub.TradeSession(
            iter([pb.TradeSessionRequest(order=order("A1", "", SELL, "1", "1"))])
        )
        [rejection] = [e.rejected async for e in events]
        answers[ledger.kind] = (
            [(e.code(), e.details(), violations(e)) for e in errors],
            (rejection.code, rejection.reason),
        )
    bank_errors, bank_rejection = answers["bank"]
    bk_errors, bk_rejection = answers["bk"]
    for (bank_code, bank_text, bank_bad), (bk_code, bk_text, bk_bad) in zip(
        bank_errors, bk_errors, strict=True
    ):
        assert bank_code == bk_code
        assert bank_text != bk_text
        assert [f for f, _ in bank_bad] == [f for f, _ in bk_bad]
        assert all(a != b for (_, a), (_, b) in zip(bank_bad, bk_bad, strict=True))
    assert bank_rejection[0] == bk_rejection[0] == "INVALID_ARGUMENT"
    assert bank_rejection[1] != bk_rejection[1]
