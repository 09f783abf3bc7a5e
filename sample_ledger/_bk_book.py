"""BK's business rules on top of its journal (`_bk_journal`).

Accounts and trades are registries; every movement of cash or shares is a
journal transaction, and cash, unsettled cash, positions and ledger entries
are all read back from the journal. Every method is synchronous, so a call is
atomic under asyncio.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

import grpc

from sample_ledger._bk_journal import (
    CASH_PENDING,
    CASH_SETTLED,
    FEES,
    FUNDING,
    SECURITIES,
    STREET,
    Holding,
    Journal,
    LedgerAccount,
    Posting,
    Transaction,
)
from sample_ledger._decimal import AccountInput, LedgerError, TradeInput
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb

COMMISSION_PER_SHARE = Decimal("0.005")
CENTS = Decimal("0.01")
VENUE = "XNYS"


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class BkAccount:
    account_id: str
    owner_name: str
    currency: str
    opened_at: datetime
    trade_ids: list[str] = field(default_factory=list)  # booking order


@dataclass
class BkTrade:
    trade_id: str
    account_id: str
    symbol: str
    side: int
    quantity: Decimal
    price: Decimal
    fee: Decimal
    notional: Decimal
    client_order_id: str
    booked_at: datetime
    booking: tuple[Transaction, ...]  # the TRADE and FEE transactions
    status: int = pb.TRADE_STATUS_BOOKED
    venue: str = VENUE

    def cash_effect(self) -> Decimal:
        return sum((t.client_cash() for t in self.booking), Decimal(0))


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode("ascii")


def _decode_token(token: str) -> str:
    try:
        last_id = base64.urlsafe_b64decode(token.encode("ascii")).decode()
    except (UnicodeError, binascii.Error, ValueError):
        last_id = ""
    if not last_id or _encode_token(last_id) != token:
        raise LedgerError(grpc.StatusCode.INVALID_ARGUMENT, "page_token is malformed or expired")
    return last_id


class BkBook:
    """All of BK's state and rules."""

    def __init__(self, clock: Callable[[], datetime] = utc_now, fixed: bool = False) -> None:
        self.clock = clock
        # with the planted bugs 1-3 turned off: it answers as Bank does, benign differences aside
        self.fixed = fixed
        self.journal = Journal()
        self.accounts: dict[str, BkAccount] = {}
        self._account_ids: list[str] = []  # sorted
        self.trades: dict[str, BkTrade] = {}
        self._booking_index: dict[str, int] = {}  # trade id -> place in its account's trade_ids

    # ---- accounts and cash ----------------------------------------------------

    def account(self, account_id: str) -> BkAccount:
        account = self.accounts.get(account_id)
        if account is None and self.fixed:
            raise LedgerError(grpc.StatusCode.NOT_FOUND, f"account_id: no account {account_id!r}")
        if account is None:  # PLANTED BUG 2: INVALID_ARGUMENT where Bank says NOT_FOUND
            raise LedgerError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"account_id: no account is registered as {account_id!r}",
                [("account_id", "does not reference a registered account")],
            )
        return account

    def open_account(self, request: AccountInput) -> BkAccount:
        if request.account_id in self.accounts:
            raise LedgerError(grpc.StatusCode.ALREADY_EXISTS, f"account_id {request.account_id!r} is taken")
        account = BkAccount(request.account_id, request.owner_name, request.currency, self.clock())
        self.accounts[account.account_id] = account
        bisect.insort(self._account_ids, account.account_id)
        if request.initial_deposit is not None:
            self._fund(account, request.initial_deposit, account.opened_at)
        return account

    def deposit(self, account_id: str, amount: Decimal) -> BkAccount:
        account = self.account(account_id)
        self._fund(account, amount, self.clock())
        return account

    def _fund(self, account: BkAccount, amount: Decimal, when: datetime) -> None:
        cash = LedgerAccount(account.account_id, CASH_SETTLED, account.currency)
        funding = LedgerAccount(FUNDING, "cash", account.currency)
        self.journal.record(
            pb.ENTRY_KIND_DEPOSIT,
            account.account_id,
            [Posting(cash, amount), Posting(funding, -amount)],
            posted_at=when,
        )

    def cash(self, account: BkAccount) -> tuple[Decimal, Decimal]:
        """(cash, unsettled cash) from the journal balances."""
        settled = self.journal.balance(LedgerAccount(account.account_id, CASH_SETTLED, account.currency))
        pending = self.journal.balance(LedgerAccount(account.account_id, CASH_PENDING, account.currency))
        return settled + pending, pending

    def holding(self, account_id: str, symbol: str) -> Holding:
        self.account(account_id)
        return self.journal.holding(account_id, symbol)

    # ---- trades ---------------------------------------------------------------

    def _new_trade_id(self) -> str:
        while True:
            trade_id = "trd_" + secrets.token_hex(6)
            if trade_id not in self.trades:
                return trade_id

    def post_trade(self, order: TradeInput) -> BkTrade:
        account = self.account(order.account_id)
        if self.fixed and order.side == pb.SIDE_SELL:  # PLANTED BUG 3 (unless fixed): an oversell is booked
            held = self.journal.holding(order.account_id, order.symbol).quantity
            if order.quantity > held:
                raise LedgerError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"position of {held} {order.symbol} is short of the {order.quantity} sold",
                )
        trade_id = self._new_trade_id()
        now = self.clock()
        notional = (order.quantity * order.price).quantize(CENTS, rounding=ROUND_HALF_UP)
        # PLANTED BUG 1 (unless fixed): the fee is rounded half even, Bank's half up
        rounding = ROUND_HALF_UP if self.fixed else ROUND_HALF_EVEN
        fee = (order.quantity * COMMISSION_PER_SHARE).quantize(CENTS, rounding=rounding)
        direction = 1 if order.side == pb.SIDE_BUY else -1
        currency, client = account.currency, account.account_id
        pending = LedgerAccount(client, CASH_PENDING, currency)
        shares = direction * order.quantity
        exchange = self.journal.record(
            pb.ENTRY_KIND_TRADE,
            client,
            [
                Posting(LedgerAccount(client, SECURITIES, order.symbol), shares, order.price),
                Posting(LedgerAccount(STREET, SECURITIES, order.symbol), -shares, order.price),
                Posting(pending, -direction * notional),
                Posting(LedgerAccount(STREET, "cash", currency), direction * notional),
            ],
            posted_at=now,
            trade_id=trade_id,
            symbol=order.symbol,
        )
        commission = self.journal.record(
            pb.ENTRY_KIND_FEE,
            client,
            [Posting(pending, -fee), Posting(LedgerAccount(client, FEES, currency), fee)],
            posted_at=now,
            trade_id=trade_id,
            symbol=order.symbol,
        )
        trade = BkTrade(
            trade_id,
            client,
            order.symbol,
            order.side,
            order.quantity,
            order.price,
            fee,
            notional,
            order.client_order_id,
            now,
            (exchange, commission),
        )
        self.trades[trade_id] = trade
        self._booking_index[trade_id] = len(account.trade_ids)
        account.trade_ids.append(trade_id)
        return trade

    def cancel_trade(self, account_id: str, trade_id: str) -> BkTrade:
        self.account(account_id)
        trade = self.trades.get(trade_id)
        if trade is None or trade.account_id != account_id:
            raise LedgerError(grpc.StatusCode.NOT_FOUND, f"no trade {trade_id!r} on account {account_id!r}")
        if trade.status != pb.TRADE_STATUS_BOOKED:
            status = pb.TradeStatus.Name(trade.status)
            raise LedgerError(grpc.StatusCode.FAILED_PRECONDITION, f"trade is in state {status}")
        held = self.journal.holding(account_id, trade.symbol).quantity
        if trade.side == pb.SIDE_BUY and held < trade.quantity:
            raise LedgerError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"reversal would take {trade.symbol} below zero (holding {held})",
            )
        reversal = [
            Posting(p.account, -p.amount, p.unit_price) for booking in trade.booking for p in booking.postings
        ]
        self.journal.record(
            pb.ENTRY_KIND_CANCELLATION,
            account_id,
            reversal,
            posted_at=self.clock(),
            trade_id=trade_id,
            symbol=trade.symbol,
        )
        trade.status = pb.TRADE_STATUS_CANCELLED
        return trade

    def settle(self, account_id: str, through: datetime | None) -> tuple[list[BkTrade], Decimal, datetime]:
        """Settle the account's booked trades; the settled trades (by id), their net cash and the time."""
        account = self.account(account_id)
        now = self.clock()
        limit = now if through is None else through
        due = [self.trades[i] for i in account.trade_ids]
        due = [t for t in due if t.status == pb.TRADE_STATUS_BOOKED and t.booked_at <= limit]
        net = sum((t.cash_effect() for t in due), Decimal(0))
        if due:
            pending = LedgerAccount(account_id, CASH_PENDING, account.currency)
            settled = LedgerAccount(account_id, CASH_SETTLED, account.currency)
            self.journal.record(
                pb.ENTRY_KIND_SETTLEMENT,
                account_id,
                [Posting(pending, -net), Posting(settled, net)],
                posted_at=now,
            )
        for trade in due:
            trade.status = pb.TRADE_STATUS_SETTLED
        return sorted(due, key=lambda t: t.trade_id), net, now

    # ---- listings -------------------------------------------------------------

    def list_accounts(self, size: int, token: str) -> tuple[list[BkAccount], str]:
        start = 0
        if token:
            last = _decode_token(token)
            if last not in self.accounts:
                raise LedgerError(grpc.StatusCode.INVALID_ARGUMENT, "page_token is malformed or expired")
            start = bisect.bisect_right(self._account_ids, last)
        ids = self._account_ids[start : start + size]
        more = start + size < len(self._account_ids)
        return [self.accounts[i] for i in ids], (_encode_token(ids[-1]) if more else "")

    def list_trades(self, account_id: str, size: int, token: str, symbol: str) -> tuple[list[BkTrade], str]:
        account = self.account(account_id)
        after = -1
        if token:
            last = _decode_token(token)
            trade = self.trades.get(last)
            if trade is None or trade.account_id != account_id or (symbol and trade.symbol != symbol):
                raise LedgerError(grpc.StatusCode.INVALID_ARGUMENT, "page_token is malformed or expired")
            after = self._booking_index[last]
        page: list[BkTrade] = []
        for trade_id in account.trade_ids[after + 1 :]:
            trade = self.trades[trade_id]
            if symbol and trade.symbol != symbol:
                continue
            if len(page) == size:
                return page, _encode_token(page[-1].trade_id)
            page.append(trade)
        return page, ""

    def accounts_from(self, offset: int, limit: int) -> tuple[list[BkAccount], bool]:
        """Up to `limit` accounts in account-id order after the first `offset`, and whether more follow."""
        ids = self._account_ids[offset : offset + limit]
        return [self.accounts[i] for i in ids], offset + limit < len(self._account_ids)

    def trades_from(
        self, account_id: str, symbol: str, offset: int, limit: int
    ) -> tuple[list[BkTrade], bool]:
        """Up to `limit` of the account's trades after the first `offset`, and whether more follow.

        Trades are in booking order, and only those in `symbol` count unless it is "".
        """
        account = self.account(account_id)
        trades = [self.trades[i] for i in account.trade_ids]
        matching = [t for t in trades if not symbol or t.symbol == symbol]
        return matching[offset : offset + limit], offset + limit < len(matching)
