"""BK's double-entry model: balanced transactions, and balances and positions derived from postings."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from sample_ledger._bk_journal import (
    CASH_PENDING,
    CASH_SETTLED,
    FEES,
    Holding,
    Journal,
    LedgerAccount,
    Posting,
    derive,
)
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from tests.sample_ledger._support import BUY, SELL, Connected

D = Decimal


def test_journal_refuses_an_unbalanced_transaction() -> None:
    """A transaction whose postings do not sum to zero per asset is refused and not recorded."""
    journal = Journal()
    cash = LedgerAccount("A1", CASH_SETTLED, "USD")
    with pytest.raises(ValueError, match="unbalanced"):
        journal.record(pb.ENTRY_KIND_DEPOSIT, "A1", [Posting(cash, D(5))], posted_at=datetime.now(UTC))
    assert journal.transactions == []
    assert journal.balance(cash) == 0


def test_holding_averages_acquisitions_and_keeps_the_average_on_disposals() -> None:
    """Buys average in, shares out keep the average, empty resets, a covered short restarts."""
    holding = Holding().after(D(10), D(100)).after(D(30), D("101.5"))
    assert holding == Holding(D(40), D("101.125"))
    assert holding.after(D(-15), D(120)) == Holding(D(25), D("101.125"))
    assert holding.after(D(-40), D(1)) == Holding()
    short = Holding().after(D(-5), D(10))
    assert short == Holding(D(-5), D(0))
    assert short.after(D(8), D(12)) == Holding(D(3), D(12))


async def test_every_transaction_balances_and_caches_match_a_replay(bk: Connected) -> None:
    """After trades, an oversell, a cancel, deposits and a settlement, caches equal a fresh derivation."""
    await bk.open("A1", deposit="5000")
    await bk.open("A2", deposit="100", currency="EUR")
    await bk.trade("A1", "AAPL", BUY, "7", "10.125")
    sell = await bk.trade("A1", "AAPL", SELL, "2", "11")
    await bk.trade("A2", "KO", SELL, "4", "60")  # planted bug 3: BK books the oversell
    await bk.stub.CancelTrade(pb.CancelTradeRequest(account_id="A1", trade_id=sell.trade_id))
    await bk.trade("A1", "MSFT", BUY, "3", "400")
    await bk.stub.SettleTrades(pb.SettleTradesRequest(account_id="A1"))
    await bk.stub.Deposit(pb.DepositRequest(account_id="A1", amount="-20"))
    journal = bk.running.servicer.book.journal
    for transaction in journal.transactions:
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for posting in transaction.postings:
            totals[posting.account.asset] += posting.amount
        assert set(totals.values()) == {0}, transaction
    assert derive(journal.transactions) == journal.cached()
    _, holdings = derive(journal.transactions)
    assert holdings["A1", "AAPL"] == Holding(D(7), D("10.375"))
    assert holdings["A2", "KO"].quantity == D(-4)


async def test_balance_and_entries_are_read_from_the_journal(bk: Connected) -> None:
    """Cash is settled plus pending, unsettled cash is the pending balance; fees go to the fees account."""
    await bk.open("A1", deposit="1000")
    await bk.trade("A1", "AAPL", BUY, "3", "10")
    await bk.trade("A1", "AAPL", BUY, "7", "10")
    journal = bk.running.servicer.book.journal
    pending = journal.balance(LedgerAccount("A1", CASH_PENDING, "USD"))
    settled = journal.balance(LedgerAccount("A1", CASH_SETTLED, "USD"))
    assert (settled, pending) == (D(1000), D("-100.06"))
    assert journal.balance(LedgerAccount("A1", FEES, "USD")) == D("0.06")
    assert await bk.balance("A1") == (settled + pending, pending)
    await bk.stub.SettleTrades(pb.SettleTradesRequest(account_id="A1"))
    assert journal.balance(LedgerAccount("A1", CASH_PENDING, "USD")) == 0
    entries = await bk.entries("A1")
    assert len(entries) == len(journal.of_client("A1")) == 6
