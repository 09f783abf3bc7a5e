"""Bank's book-keeping: dictionaries of accounts and a list of trade records.

This is the legacy model: each account keeps a running cash figure, a
dictionary of positions (in the order first acquired) and a list of ledger
entries; trades live in one dictionary by id. Every method is synchronous, so a
call is atomic under asyncio.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import TypeVar

import grpc

from sample_ledger._decimal import AccountInput, LedgerError, TradeInput
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb

FEE_PER_SHARE = Decimal("0.005")
CENT = Decimal("0.01")
T = TypeVar("T")
_OFFSET_TOKEN = re.compile(r"[1-9][0-9]{0,9}\Z")


def to_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class BankPosition:
    """Quantity held and the running weighted average cost of the buys."""

    quantity: Decimal = Decimal(0)
    average_price: Decimal = Decimal(0)

    def acquire(self, quantity: Decimal, price: Decimal) -> None:
        total = self.quantity + quantity
        # The same expression as BK's, so that both round the same way.
        self.average_price = (self.quantity * self.average_price + quantity * price) / total
        self.quantity = total

    def release(self, quantity: Decimal) -> None:
        self.quantity -= quantity
        if self.quantity == 0:
            self.average_price = Decimal(0)


@dataclass
class BankTrade:
    trade_id: str
    account_id: str
    symbol: str
    side: int
    quantity: Decimal
    price: Decimal
    fee: Decimal
    notional: Decimal
    client_order_id: str
    booked_at_ns: int
    status: int = pb.TRADE_STATUS_BOOKED

    @property
    def cash_effect(self) -> Decimal:
        """What the trade did to cash, fee included."""
        if self.side == pb.SIDE_BUY:
            return -(self.notional + self.fee)
        return self.notional - self.fee


@dataclass(frozen=True)
class BankEntry:
    kind: int
    amount: Decimal
    posted_at_ns: int
    symbol: str = ""
    quantity: Decimal | None = None
    trade_id: str = ""


@dataclass
class BankAccount:
    account_id: str
    owner_name: str
    currency: str
    opened_at_ns: int
    cash: Decimal = Decimal(0)
    positions: dict[str, BankPosition] = field(default_factory=dict)  # in order first acquired
    entries: list[BankEntry] = field(default_factory=list)
    trades: list[BankTrade] = field(default_factory=list)  # in booking order

    def unsettled_cash(self) -> Decimal:
        return sum((t.cash_effect for t in self.trades if t.status == pb.TRADE_STATUS_BOOKED), Decimal(0))


def _page(items: list[T], size: int, token: str) -> tuple[list[T], str]:
    if token and not _OFFSET_TOKEN.match(token):
        raise LedgerError(grpc.StatusCode.INVALID_ARGUMENT, f"bad page token {token!r}")
    start = int(token) if token else 0
    end = start + size
    return items[start:end], (str(end) if end < len(items) else "")


class BankBook:
    """All of Bank's state and rules."""

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self.clock = clock
        self.accounts: dict[str, BankAccount] = {}
        self.trades: dict[str, BankTrade] = {}
        self._trade_counter = 0

    def account(self, account_id: str) -> BankAccount:
        try:
            return self.accounts[account_id]
        except KeyError:
            raise LedgerError(grpc.StatusCode.NOT_FOUND, f"account {account_id!r} not found") from None

    def open_account(self, request: AccountInput) -> BankAccount:
        if request.account_id in self.accounts:
            raise LedgerError(
                grpc.StatusCode.ALREADY_EXISTS, f"account {request.account_id!r} already exists"
            )
        now = self.clock()
        account = BankAccount(request.account_id, request.owner_name, request.currency, now)
        self.accounts[account.account_id] = account
        if request.initial_deposit is not None:
            self._deposit(account, request.initial_deposit, now)
        return account

    def deposit(self, account_id: str, amount: Decimal) -> BankAccount:
        account = self.account(account_id)
        self._deposit(account, amount, self.clock())
        return account

    def _deposit(self, account: BankAccount, amount: Decimal, now: int) -> None:
        account.cash += amount
        account.entries.append(BankEntry(pb.ENTRY_KIND_DEPOSIT, amount, now))

    def post_trade(self, order: TradeInput) -> BankTrade:
        account = self.account(order.account_id)
        position = account.positions.get(order.symbol)
        if order.side == pb.SIDE_SELL:
            held = position.quantity if position else Decimal(0)
            if order.quantity > held:
                raise LedgerError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"insufficient position: holds {held} {order.symbol}, cannot sell {order.quantity}",
                )
        self._trade_counter += 1
        now = self.clock()
        trade = BankTrade(
            trade_id=f"T{self._trade_counter:08d}",
            account_id=account.account_id,
            symbol=order.symbol,
            side=order.side,
            quantity=order.quantity,
            price=order.price,
            fee=to_cents(order.quantity * FEE_PER_SHARE),
            notional=to_cents(order.quantity * order.price),
            client_order_id=order.client_order_id,
            booked_at_ns=now,
        )
        if trade.side == pb.SIDE_BUY:
            account.positions.setdefault(trade.symbol, BankPosition()).acquire(trade.quantity, trade.price)
            signed_quantity, notional_cash = trade.quantity, -trade.notional
        else:
            account.positions[trade.symbol].release(trade.quantity)
            signed_quantity, notional_cash = -trade.quantity, trade.notional
        account.cash += trade.cash_effect
        account.entries.append(
            BankEntry(pb.ENTRY_KIND_TRADE, notional_cash, now, trade.symbol, signed_quantity, trade.trade_id)
        )
        account.entries.append(
            BankEntry(pb.ENTRY_KIND_FEE, -trade.fee, now, trade.symbol, None, trade.trade_id)
        )
        self.trades[trade.trade_id] = trade
        account.trades.append(trade)
        return trade

    def cancel_trade(self, account_id: str, trade_id: str) -> BankTrade:
        account = self.account(account_id)
        trade = self.trades.get(trade_id)
        if trade is None or trade.account_id != account_id:
            raise LedgerError(grpc.StatusCode.NOT_FOUND, f"trade {trade_id!r} not found")
        if trade.status != pb.TRADE_STATUS_BOOKED:
            state = pb.TradeStatus.Name(trade.status).removeprefix("TRADE_STATUS_").lower()
            raise LedgerError(grpc.StatusCode.FAILED_PRECONDITION, f"trade {trade_id} is already {state}")
        position = account.positions[trade.symbol]
        if trade.side == pb.SIDE_BUY:
            if position.quantity < trade.quantity:
                raise LedgerError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"cannot cancel {trade_id}: only {position.quantity} {trade.symbol} left of the buy",
                )
            position.release(trade.quantity)
            signed_quantity = -trade.quantity
        else:
            position.acquire(trade.quantity, trade.price)
            signed_quantity = trade.quantity
        account.cash -= trade.cash_effect
        trade.status = pb.TRADE_STATUS_CANCELLED
        account.entries.append(
            BankEntry(
                pb.ENTRY_KIND_CANCELLATION,
                -trade.cash_effect,
                self.clock(),
                trade.symbol,
                signed_quantity,
                trade.trade_id,
            )
        )
        return trade

    def position(self, account_id: str, symbol: str) -> BankPosition:
        return self.account(account_id).positions.get(symbol) or BankPosition()

    def list_accounts(self, size: int, token: str) -> tuple[list[BankAccount], str]:
        ordered = [self.accounts[key] for key in sorted(self.accounts)]
        return _page(ordered, size, token)

    def list_trades(self, account_id: str, size: int, token: str, symbol: str) -> tuple[list[BankTrade], str]:
        trades = self.account(account_id).trades
        if symbol:
            trades = [t for t in trades if t.symbol == symbol]
        return _page(trades, size, token)

    def settle(self, account_id: str, through_ns: int | None) -> tuple[list[BankTrade], Decimal, int]:
        """Settle the account's booked trades; the settled trades, their net cash and the time."""
        account = self.account(account_id)
        now = self.clock()
        limit = now if through_ns is None else through_ns
        settled = [
            t for t in account.trades if t.status == pb.TRADE_STATUS_BOOKED and t.booked_at_ns <= limit
        ]
        for trade in settled:
            trade.status = pb.TRADE_STATUS_SETTLED
        if settled:
            account.entries.append(BankEntry(pb.ENTRY_KIND_SETTLEMENT, Decimal(0), now))
        return settled, sum((t.cash_effect for t in settled), Decimal(0)), now
