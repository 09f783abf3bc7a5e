"""BK's double-entry journal: balanced transactions of postings, and what derives from them.

Every movement is a `Transaction` whose postings sum to zero per asset (a
currency code or a ticker symbol). A client account owns four kinds of ledger
accounts:

* ``cash:settled`` and ``cash:pending`` in its currency; trades post to the
  pending one and a settlement moves the balance to the settled one, so cash is
  their sum and unsettled cash the pending balance;
* ``fees`` in its currency, the commission it paid;
* ``securities`` per symbol, in shares; each posting carries its unit price.

The counterparties are the house accounts ``@street`` (the market) and
``@funding`` (money coming in or out). Balances and holdings are kept as caches
updated by every posting; `derive` recomputes them from the transactions alone
and must always agree with the caches.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

CASH_SETTLED = "cash:settled"
CASH_PENDING = "cash:pending"
CASH_BOOKS = (CASH_SETTLED, CASH_PENDING)
FEES = "fees"
SECURITIES = "securities"
STREET = "@street"
FUNDING = "@funding"


class LedgerAccount(NamedTuple):
    owner: str  # a client account id, or a house account ("@street", "@funding")
    book: str
    asset: str  # currency code, or ticker symbol for securities


@dataclass(frozen=True)
class Posting:
    account: LedgerAccount
    amount: Decimal  # in units of the account's asset; positive is a debit
    unit_price: Decimal | None = None  # securities only: price per share


@dataclass(frozen=True)
class Transaction:
    number: int
    kind: int  # a bank.v1.EntryKind
    client: str  # the client account it is booked for
    posted_at: datetime
    postings: tuple[Posting, ...]
    trade_id: str = ""
    symbol: str = ""

    def client_cash(self) -> Decimal:
        """Net movement of the client's cash (settled and pending)."""
        return sum(
            (
                p.amount
                for p in self.postings
                if p.account.owner == self.client and p.account.book in CASH_BOOKS
            ),
            Decimal(0),
        )

    def client_shares(self) -> Decimal | None:
        """Net movement of the client's securities, None when the transaction moves none."""
        moves = [
            p.amount for p in self.postings if p.account.owner == self.client and p.account.book == SECURITIES
        ]
        return sum(moves, Decimal(0)) if moves else None


@dataclass(frozen=True)
class Holding:
    """Shares held in one symbol and their average cost."""

    quantity: Decimal = Decimal(0)
    average_price: Decimal = Decimal(0)

    def after(self, shares: Decimal, unit_price: Decimal) -> Holding:
        """The holding once `shares` (signed) more are posted at `unit_price`.

        Shares in at a price average in; shares out leave the average alone;
        an empty holding has no average.
        """
        quantity = self.quantity + shares
        if quantity == 0:
            return Holding()
        average = self.average_price
        if shares > 0 and self.quantity >= 0:
            # The same expression as Bank's, so that both round the same way.
            average = (self.quantity * self.average_price + shares * unit_price) / quantity
        elif shares > 0 and quantity > 0:  # a short covered and turned long
            average = unit_price
        return Holding(quantity, average)


def _is_client_securities(posting: Posting) -> bool:
    return posting.account.book == SECURITIES and not posting.account.owner.startswith("@")


class Journal:
    """The transactions, with balances and holdings cached as they are posted."""

    def __init__(self) -> None:
        self.transactions: list[Transaction] = []
        self._by_client: dict[str, list[Transaction]] = defaultdict(list)
        self._balances: dict[LedgerAccount, Decimal] = defaultdict(Decimal)
        self._holdings: dict[tuple[str, str], Holding] = {}
        self._symbols: dict[str, set[str]] = defaultdict(set)  # client -> symbols ever posted

    def record(
        self,
        kind: int,
        client: str,
        postings: Iterable[Posting],
        *,
        posted_at: datetime,
        trade_id: str = "",
        symbol: str = "",
    ) -> Transaction:
        """Append a balanced transaction and update the caches."""
        transaction = Transaction(
            len(self.transactions) + 1, kind, client, posted_at, tuple(postings), trade_id, symbol
        )
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for posting in transaction.postings:
            totals[posting.account.asset] += posting.amount
        unbalanced = {asset: total for asset, total in totals.items() if total != 0}
        if unbalanced:
            raise ValueError(f"unbalanced transaction {transaction}: {unbalanced}")
        self.transactions.append(transaction)
        self._by_client[client].append(transaction)
        _apply(transaction, self._balances, self._holdings)
        for posting in transaction.postings:
            if _is_client_securities(posting):
                self._symbols[posting.account.owner].add(posting.account.asset)
        return transaction

    def of_client(self, client: str) -> list[Transaction]:
        return self._by_client.get(client, [])

    def balance(self, account: LedgerAccount) -> Decimal:
        return self._balances.get(account, Decimal(0))

    def holding(self, client: str, symbol: str) -> Holding:
        return self._holdings.get((client, symbol), Holding())

    def holdings(self, client: str) -> dict[str, Holding]:
        """The client's non-empty holdings by symbol."""
        held = ((symbol, self._holdings[client, symbol]) for symbol in self._symbols.get(client, ()))
        return {symbol: holding for symbol, holding in held if holding.quantity != 0}

    def cached(self) -> tuple[dict[LedgerAccount, Decimal], dict[tuple[str, str], Holding]]:
        """Copies of the caches, to compare with `derive`."""
        return dict(self._balances), dict(self._holdings)


def _apply(
    transaction: Transaction,
    balances: dict[LedgerAccount, Decimal],
    holdings: dict[tuple[str, str], Holding],
) -> None:
    for posting in transaction.postings:
        balances[posting.account] += posting.amount
        if _is_client_securities(posting):
            assert posting.unit_price is not None
            key = (posting.account.owner, posting.account.asset)
            holdings[key] = holdings.get(key, Holding()).after(posting.amount, posting.unit_price)


def derive(
    transactions: Iterable[Transaction],
) -> tuple[dict[LedgerAccount, Decimal], dict[tuple[str, str], Holding]]:
    """Balances and holdings recomputed from nothing but the transactions."""
    balances: dict[LedgerAccount, Decimal] = defaultdict(Decimal)
    holdings: dict[tuple[str, str], Holding] = {}
    for transaction in transactions:
        _apply(transaction, balances, holdings)
    return dict(balances), holdings
