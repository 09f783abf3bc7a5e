"""Bank: the legacy ledger, a straightforward in-memory implementation of `bank.v1.Ledger`.

The state and rules are in `_bank_book`; this module is the gRPC servicer and
Bank's way of writing numbers: money with exactly two decimals, prices with at
least two, whole quantities as integers and average prices with four decimals.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from decimal import ROUND_HALF_UP, Decimal

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from sample_ledger._bank_book import CENT, BankAccount, BankBook, BankEntry, BankPosition, BankTrade, to_cents
from sample_ledger._decimal import (
    InvalidInput,
    LedgerError,
    Problem,
    answer,
    as_ledger_error,
    parse_amount,
    parse_open_account,
    parse_page_size,
    parse_symbol,
    parse_trade,
    words_for,
)
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc

_FOUR_PLACES = Decimal("0.0001")

WORDING = words_for(
    "invalid request",
    {
        Problem.REQUIRED: "is required",
        Problem.NOT_A_DECIMAL: "is not a decimal number",
        Problem.NOT_POSITIVE: "must be greater than zero",
        Problem.ZERO: "must not be zero",
        Problem.TOO_MANY_PLACES: "must have at most {limit} decimal places",
        Problem.OUT_OF_RANGE: "must not exceed {limit}",
        Problem.BAD_SYMBOL: "must be an upper-case ticker symbol",
        Problem.BAD_CURRENCY: "must be a 3-letter ISO 4217 code",
        Problem.UNSPECIFIED_SIDE: "must be BUY or SELL",
        Problem.NEGATIVE_PAGE_SIZE: "must not be negative",
        Problem.TOO_LONG: "must be at most {limit} characters",
    },
)


def _plain(value: Decimal) -> str:
    return format(abs(value) if value == 0 else value, "f")


def money(value: Decimal) -> str:
    """Exactly two decimals: "1005.00"."""
    return _plain(to_cents(value))


def price(value: Decimal) -> str:
    """At least two decimals: "100.50", "10.125"."""
    value = value.normalize()
    if value.as_tuple().exponent > -2:  # type: ignore[operator]  # finite: always an int
        value = value.quantize(CENT)
    return _plain(value)


def quantity(value: Decimal) -> str:
    """An integer when whole ("100"), otherwise as few decimals as needed ("2.5")."""
    whole = value.to_integral_value()
    return _plain(whole if whole == value else value.normalize())


def average(value: Decimal) -> str:
    """Four decimals, rounded half up: "12.3456"."""
    return _plain(value.quantize(_FOUR_PLACES, rounding=ROUND_HALF_UP))


def _timestamp(ns: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


class BankServicer(pb_grpc.LedgerServicer):
    """Bank's `bank.v1.Ledger` servicer; `book` holds the state."""

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self.book = BankBook(clock)

    # ---- messages -------------------------------------------------------------

    def _account(self, account: BankAccount) -> pb.Account:
        return pb.Account(
            account_id=account.account_id,
            owner_name=account.owner_name,
            currency=account.currency,
            opened_at=_timestamp(account.opened_at_ns),
        )

    def _balance(self, account: BankAccount) -> pb.Balance:
        return pb.Balance(
            account_id=account.account_id,
            currency=account.currency,
            cash=money(account.cash),
            unsettled_cash=money(account.unsettled_cash()),
            as_of=_timestamp(self.book.clock()),
        )

    def _trade(self, trade: BankTrade) -> pb.Trade:
        return pb.Trade(
            trade_id=trade.trade_id,
            account_id=trade.account_id,
            symbol=trade.symbol,
            side=trade.side,  # type: ignore[arg-type]
            quantity=quantity(trade.quantity),
            price=price(trade.price),
            fee=money(trade.fee),
            notional=money(trade.notional),
            client_order_id=trade.client_order_id,
            booked_at=_timestamp(trade.booked_at_ns),
            status=trade.status,  # type: ignore[arg-type]
        )

    def _position(self, account_id: str, symbol: str, position: BankPosition) -> pb.Position:
        rounded = position.average_price.quantize(_FOUR_PLACES, rounding=ROUND_HALF_UP)
        return pb.Position(
            account_id=account_id,
            symbol=symbol,
            quantity=quantity(position.quantity),
            average_price=average(rounded),
            cost_basis=money(position.quantity * rounded),
        )

    def _entry(self, account_id: str, sequence: int, entry: BankEntry) -> pb.LedgerEntry:
        return pb.LedgerEntry(
            sequence=sequence,
            account_id=account_id,
            kind=entry.kind,  # type: ignore[arg-type]
            amount=money(entry.amount),
            symbol=entry.symbol,
            quantity="" if entry.quantity is None else quantity(entry.quantity),
            trade_id=entry.trade_id,
            posted_at=_timestamp(entry.posted_at_ns),
        )

    # ---- unary methods --------------------------------------------------------

    async def OpenAccount(
        self, request: pb.OpenAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.Account:
        return await answer(
            context, lambda: self._account(self.book.open_account(parse_open_account(request))), WORDING
        )

    async def GetAccount(
        self, request: pb.GetAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.Account:
        return await answer(context, lambda: self._account(self.book.account(request.account_id)), WORDING)

    async def ListAccounts(
        self, request: pb.ListAccountsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAccountsResponse:
        def build() -> pb.ListAccountsResponse:
            accounts, token = self.book.list_accounts(parse_page_size(request.page_size), request.page_token)
            return pb.ListAccountsResponse(
                accounts=[self._account(a) for a in accounts], next_page_token=token
            )

        return await answer(context, build, WORDING)

    async def Deposit(self, request: pb.DepositRequest, context: grpc.aio.ServicerContext) -> pb.Balance:
        def build() -> pb.Balance:
            amount = parse_amount(request)
            return self._balance(self.book.deposit(request.account_id, amount))

        return await answer(context, build, WORDING)

    async def PostTrade(self, request: pb.PostTradeRequest, context: grpc.aio.ServicerContext) -> pb.Trade:
        return await answer(context, lambda: self._trade(self.book.post_trade(parse_trade(request))), WORDING)

    async def CancelTrade(
        self, request: pb.CancelTradeRequest, context: grpc.aio.ServicerContext
    ) -> pb.Trade:
        return await answer(
            context,
            lambda: self._trade(self.book.cancel_trade(request.account_id, request.trade_id)),
            WORDING,
        )

    async def GetPosition(
        self, request: pb.GetPositionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Position:
        def build() -> pb.Position:
            symbol = parse_symbol(request.symbol)
            return self._position(request.account_id, symbol, self.book.position(request.account_id, symbol))

        return await answer(context, build, WORDING)

    async def GetPortfolio(
        self, request: pb.GetPortfolioRequest, context: grpc.aio.ServicerContext
    ) -> pb.Portfolio:
        def build() -> pb.Portfolio:
            account = self.book.account(request.account_id)
            return pb.Portfolio(
                account_id=account.account_id,
                positions=[
                    self._position(account.account_id, symbol, position)
                    for symbol, position in account.positions.items()
                    if position.quantity != 0
                ],
                as_of=_timestamp(self.book.clock()),
            )

        return await answer(context, build, WORDING)

    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.Balance:
        return await answer(context, lambda: self._balance(self.book.account(request.account_id)), WORDING)

    async def ListTrades(
        self, request: pb.ListTradesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListTradesResponse:
        def build() -> pb.ListTradesResponse:
            size = parse_page_size(request.page_size)
            trades, token = self.book.list_trades(
                request.account_id, size, request.page_token, request.symbol
            )
            return pb.ListTradesResponse(trades=[self._trade(t) for t in trades], next_page_token=token)

        return await answer(context, build, WORDING)

    async def SettleTrades(
        self, request: pb.SettleTradesRequest, context: grpc.aio.ServicerContext
    ) -> pb.SettlementReport:
        def build() -> pb.SettlementReport:
            through = request.settle_through.ToNanoseconds() if request.HasField("settle_through") else None
            settled, net_cash, now = self.book.settle(request.account_id, through)
            return pb.SettlementReport(
                account_id=request.account_id,
                settled_trade_ids=[t.trade_id for t in settled],
                net_cash=money(net_cash),
                settled_count=len(settled),
                settled_at=_timestamp(now),
            )

        return await answer(context, build, WORDING)

    # ---- streaming methods ----------------------------------------------------

    async def StreamLedgerEntries(
        self, request: pb.StreamLedgerEntriesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.LedgerEntry]:
        entries = await answer(context, lambda: list(self.book.account(request.account_id).entries), WORDING)
        for sequence, entry in enumerate(entries, start=1):
            yield self._entry(request.account_id, sequence, entry)

    async def BookTrades(
        self, request_iterator: AsyncIterator[pb.PostTradeRequest], context: grpc.aio.ServicerContext
    ) -> pb.BookTradesSummary:
        booked: list[BankTrade] = []
        rejected = 0
        async for request in request_iterator:
            try:
                booked.append(self.book.post_trade(parse_trade(request)))
            except (InvalidInput, LedgerError):
                rejected += 1
        return pb.BookTradesSummary(
            booked=len(booked),
            rejected=rejected,
            trade_ids=[t.trade_id for t in booked],
            total_notional=money(sum((t.notional for t in booked), Decimal(0))),
            total_fees=money(sum((t.fee for t in booked), Decimal(0))),
        )

    async def TradeSession(
        self, request_iterator: AsyncIterator[pb.TradeSessionRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TradeSessionEvent]:
        async for request in request_iterator:
            try:
                trade = self.book.post_trade(parse_trade(request.order))
            except (InvalidInput, LedgerError) as error:
                failure = as_ledger_error(error, WORDING)
                yield pb.TradeSessionEvent(
                    rejected=pb.Rejection(
                        client_order_id=request.order.client_order_id,
                        code=failure.code.name,
                        reason=failure.message,
                    )
                )
            else:
                yield pb.TradeSessionEvent(booked=self._trade(trade))
