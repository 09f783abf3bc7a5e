"""BK: the replacement ledger, a double-entry implementation of `bank.v1.Ledger`.

The journal is in `_bk_journal` and the rules in `_bk_book`; this module is the
gRPC servicer and BK's way of writing numbers: every decimal normalised, with
no trailing zeros and no exponent ("100.5", "1005", "0").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from sample_ledger._bk_book import CENTS, BkAccount, BkBook, BkTrade, utc_now
from sample_ledger._bk_journal import Holding, Transaction
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

_AVERAGE_STEP = Decimal("0.0001")

WORDING = words_for(
    "request failed validation",
    {
        Problem.REQUIRED: "is missing",
        Problem.NOT_A_DECIMAL: "expects a plain decimal string",
        Problem.NOT_POSITIVE: "expects a value above 0",
        Problem.ZERO: "expects a non-zero value",
        Problem.TOO_MANY_PLACES: "allows {limit} fractional digits at most",
        Problem.OUT_OF_RANGE: "exceeds the maximum magnitude {limit}",
        Problem.BAD_SYMBOL: "is not a valid ticker",
        Problem.BAD_CURRENCY: "is not an ISO 4217 alphabetic code",
        Problem.UNSPECIFIED_SIDE: "needs SIDE_BUY or SIDE_SELL",
        Problem.NEGATIVE_PAGE_SIZE: "cannot be negative",
        Problem.TOO_LONG: "is longer than {limit} characters",
    },
)


def dec(value: Decimal) -> str:
    """Normalised: no trailing zeros, no exponent, no negative zero."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def _stamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


class BkServicer(pb_grpc.LedgerServicer):
    """BK's `bank.v1.Ledger` servicer; `book` holds the state (and `book.journal` the journal)."""

    def __init__(self, clock: Callable[[], datetime] = utc_now, fixed: bool = False) -> None:
        self.book = BkBook(clock, fixed=fixed)  # fixed: the planted bugs 1-3 turned off

    # ---- messages -------------------------------------------------------------

    def _account(self, account: BkAccount) -> pb.Account:
        return pb.Account(
            account_id=account.account_id,
            owner_name=account.owner_name,
            currency=account.currency,
            opened_at=_stamp(account.opened_at),
        )

    def _balance(self, account: BkAccount) -> pb.Balance:
        cash, unsettled = self.book.cash(account)
        return pb.Balance(
            account_id=account.account_id,
            currency=account.currency,
            cash=dec(cash),
            unsettled_cash=dec(unsettled),
            as_of=_stamp(self.book.clock()),
        )

    def _trade(self, trade: BkTrade) -> pb.Trade:
        return pb.Trade(
            trade_id=trade.trade_id,
            account_id=trade.account_id,
            symbol=trade.symbol,
            side=trade.side,  # type: ignore[arg-type]
            quantity=dec(trade.quantity),
            price=dec(trade.price),
            fee=dec(trade.fee),
            notional=dec(trade.notional),
            client_order_id=trade.client_order_id,
            booked_at=_stamp(trade.booked_at),
            status=trade.status,  # type: ignore[arg-type]
            venue=trade.venue,
        )

    def _position(self, account_id: str, symbol: str, holding: Holding) -> pb.Position:
        average = holding.average_price.quantize(_AVERAGE_STEP, rounding=ROUND_HALF_UP)
        return pb.Position(
            account_id=account_id,
            symbol=symbol,
            quantity=dec(holding.quantity),
            average_price=dec(average),
            cost_basis=dec((holding.quantity * average).quantize(CENTS, rounding=ROUND_HALF_UP)),
        )

    def _entry(self, sequence: int, transaction: Transaction) -> pb.LedgerEntry:
        shares = transaction.client_shares()
        return pb.LedgerEntry(
            sequence=sequence,
            account_id=transaction.client,
            kind=transaction.kind,  # type: ignore[arg-type]
            amount=dec(transaction.client_cash()),
            symbol=transaction.symbol,
            quantity="" if shares is None else dec(shares),
            trade_id=transaction.trade_id,
            posted_at=_stamp(transaction.posted_at),
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
            return self._position(request.account_id, symbol, self.book.holding(request.account_id, symbol))

        return await answer(context, build, WORDING)

    async def GetPortfolio(
        self, request: pb.GetPortfolioRequest, context: grpc.aio.ServicerContext
    ) -> pb.Portfolio:
        def build() -> pb.Portfolio:
            account = self.book.account(request.account_id)
            holdings = self.book.journal.holdings(account.account_id)
            return pb.Portfolio(
                account_id=account.account_id,
                positions=[
                    self._position(account.account_id, symbol, holdings[symbol])
                    for symbol in sorted(holdings, reverse=True)
                ],
                as_of=_stamp(self.book.clock()),
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
            through = None
            if request.HasField("settle_through"):
                through = request.settle_through.ToDatetime(tzinfo=UTC)
            settled, net_cash, now = self.book.settle(request.account_id, through)
            return pb.SettlementReport(
                account_id=request.account_id,
                settled_trade_ids=[t.trade_id for t in settled],
                net_cash=dec(net_cash),
                settled_count=len(settled),
                settled_at=_stamp(now),
            )

        return await answer(context, build, WORDING)

    # ---- streaming methods ----------------------------------------------------

    async def StreamLedgerEntries(
        self, request: pb.StreamLedgerEntriesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.LedgerEntry]:
        def snapshot() -> list[Transaction]:
            self.book.account(request.account_id)
            return list(self.book.journal.of_client(request.account_id))

        transactions = await answer(context, snapshot, WORDING)
        for sequence, transaction in enumerate(transactions, start=1):
            yield self._entry(sequence, transaction)

    async def BookTrades(
        self, request_iterator: AsyncIterator[pb.PostTradeRequest], context: grpc.aio.ServicerContext
    ) -> pb.BookTradesSummary:
        booked: list[BkTrade] = []
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
            total_notional=dec(sum((t.notional for t in booked), Decimal(0))),
            total_fees=dec(sum((t.fee for t in booked), Decimal(0))),
        )

    async def TradeSession(
        self, request_iterator: AsyncIterator[pb.TradeSessionRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TradeSessionEvent]:
        async for request in request_iterator:
            order = request.order
            try:
                trade = self.book.post_trade(parse_trade(order))
            except (InvalidInput, LedgerError) as error:
                failure = as_ledger_error(error, WORDING)
                rejection = pb.Rejection(
                    client_order_id=order.client_order_id, code=failure.code.name, reason=failure.message
                )
                yield pb.TradeSessionEvent(rejected=rejection)
            else:
                yield pb.TradeSessionEvent(booked=self._trade(trade))
