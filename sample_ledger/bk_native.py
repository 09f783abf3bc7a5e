"""BK's native interface: a servicer of `bk.v1.Journal` over the same book as `sample_ledger.bk`.

State and rules are `_bk_book.BkBook`'s, exactly as behind BK's `bank.v1.Ledger`
servicer, planted bugs included (commission rounded half even; a sell of more
than is held is booked and the holding goes negative). This module speaks BK's
own words: clients, executions with signed shares, cash as `Money` and shares as
`Shares` (`_money`), offset pagination, and refusals that name this interface's
fields. An unknown client is INVALID_ARGUMENT, as in BK's book (planted bug 2,
Bank answers NOT_FOUND), with a violation on the request's client field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from sample_ledger._bk_book import CENTS, BkAccount, BkBook, BkTrade, utc_now
from sample_ledger._bk_journal import Holding, Transaction
from sample_ledger._decimal import (
    MAX_ACCOUNT_ID_LENGTH,
    MONEY_LIMIT,
    MONEY_PLACES,
    PRICE_LIMIT,
    PRICE_PLACES,
    QUANTITY_LIMIT,
    QUANTITY_PLACES,
    AccountInput,
    Checker,
    InvalidInput,
    LedgerError,
    Problem,
    TradeInput,
    Violation,
    answer,
    words_for,
)
from sample_ledger._money import from_money, from_shares, to_money, to_shares
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bk.v1 import journal_pb2 as jpb
from sample_ledger._proto.bk.v1 import journal_pb2_grpc as jpb_grpc

_AVERAGE_STEP = Decimal("0.0001")

HEADLINE = "invalid request"
WORDING = words_for(
    HEADLINE,
    {
        Problem.REQUIRED: "is required",
        Problem.NOT_A_DECIMAL: "is malformed: units and nanos need one sign, nanos within +/-999999999",
        Problem.NOT_POSITIVE: "must be greater than zero",
        Problem.ZERO: "must not be zero",
        Problem.TOO_MANY_PLACES: "takes at most {limit} decimal places",
        Problem.OUT_OF_RANGE: "must be at most {limit} in magnitude",
        Problem.BAD_SYMBOL: "is not a well-formed instrument code",
        Problem.BAD_CURRENCY: "must be a three-letter ISO 4217 code",
        Problem.NEGATIVE_PAGE_SIZE: "must not be negative",
        Problem.TOO_LONG: "must be at most {limit} characters",
    },
)

_STATES: dict[int, jpb.ExecutionState] = {
    pb.TRADE_STATUS_BOOKED: jpb.EXECUTION_STATE_LIVE,
    pb.TRADE_STATUS_CANCELLED: jpb.EXECUTION_STATE_REVERSED,
    pb.TRADE_STATUS_SETTLED: jpb.EXECUTION_STATE_CLEARED,
}
_KINDS: dict[int, jpb.TransactionKind] = {
    pb.ENTRY_KIND_DEPOSIT: jpb.TRANSACTION_KIND_FUNDING,
    pb.ENTRY_KIND_TRADE: jpb.TRANSACTION_KIND_EXECUTION,
    pb.ENTRY_KIND_FEE: jpb.TRANSACTION_KIND_COMMISSION,
    pb.ENTRY_KIND_CANCELLATION: jpb.TRANSACTION_KIND_REVERSAL,
    pb.ENTRY_KIND_SETTLEMENT: jpb.TRANSACTION_KIND_CLEARING,
}


def _stamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _invalid(described: Iterable[tuple[str, str]]) -> LedgerError:
    """INVALID_ARGUMENT naming every (field, description), worded as `WORDING` words field checks."""
    described = list(described)
    message = HEADLINE + ": " + "; ".join(f"{field} {text}" for field, text in described)
    return LedgerError(grpc.StatusCode.INVALID_ARGUMENT, message, described)


def _foreign(field: str, money: jpb.Money, currency: str) -> list[tuple[str, str]]:
    """A violation when `money` names a currency other than the client's `currency`."""
    if money.currency and money.currency != currency:
        return [(field, f"is in {money.currency}, not in the client's currency {currency}")]
    return []


class _Fields(Checker):
    """The shared field checks, plus those of Money, Shares and offset fields."""

    def amount(
        self,
        field: str,
        message: jpb.Money | jpb.Shares | None,
        *,
        places: int,
        limit: Decimal,
        positive: bool = False,
    ) -> Decimal:
        """The exact value of a Money or Shares field (None: unset), checked as `Checker.decimal` does."""
        if message is None:
            self.violations.append(Violation(field, Problem.REQUIRED))
            return Decimal(0)
        try:
            value = from_money(message) if isinstance(message, jpb.Money) else from_shares(message)
        except ValueError:
            self.violations.append(Violation(field, Problem.NOT_A_DECIMAL))
            return Decimal(0)
        return self.decimal(field, format(value, "f"), places=places, limit=limit, positive=positive)

    def offset(self, field: str, offset: int) -> int:
        if offset < 0:
            self.violations.append(Violation(field, Problem.NEGATIVE_PAGE_SIZE))
            return 0
        return offset

    def finish(self, extra: Iterable[tuple[str, str]] = ()) -> None:
        """Raise INVALID_ARGUMENT naming every bad field: those checked and the `extra` ones."""
        try:
            self.done()
        except InvalidInput as invalid:
            described = list(WORDING(invalid).violations)
        else:
            described = []
        described += extra
        if described:
            raise _invalid(described)


class BkNativeServicer(jpb_grpc.JournalServicer):
    """BK's `bk.v1.Journal` servicer; `book` holds the state (and `book.journal` the journal)."""

    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        self.book = BkBook(clock)

    # ---- lookups --------------------------------------------------------------

    def _client(self, number: str, field: str = "client") -> BkAccount:
        """The registered client `number`, or INVALID_ARGUMENT naming `field` (planted bug 2)."""
        account = self.book.accounts.get(number)
        if account is None:
            raise LedgerError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"client {number!r} is not registered",
                [(field, "does not name a registered client")],
            )
        return account

    # ---- messages -------------------------------------------------------------

    def _client_message(self, account: BkAccount) -> jpb.Client:
        return jpb.Client(
            number=account.account_id,
            holder=account.owner_name,
            currency=account.currency,
            registered_at=_stamp(account.opened_at),
        )

    def _cash(self, account: BkAccount) -> jpb.CashPosition:
        cash, pending = self.book.cash(account)
        return jpb.CashPosition(
            client=account.account_id,
            settled=to_money(cash - pending, account.currency),
            pending=to_money(pending, account.currency),
            as_of=_stamp(self.book.clock()),
        )

    def _execution(self, trade: BkTrade) -> jpb.Execution:
        currency = self.book.accounts[trade.account_id].currency
        direction = 1 if trade.side == pb.SIDE_BUY else -1
        return jpb.Execution(
            execution_id=trade.trade_id,
            client=trade.account_id,
            instrument=trade.symbol,
            shares=to_shares(direction * trade.quantity),
            price=to_money(trade.price, currency),
            gross=to_money(trade.notional, currency),
            commission=to_money(trade.fee, currency),
            client_ref=trade.client_order_id,
            executed_at=_stamp(trade.booked_at),
            state=_STATES[trade.status],
            venue=trade.venue,
        )

    def _holding(self, instrument: str, holding: Holding, currency: str) -> jpb.Holding:
        average = holding.average_price.quantize(_AVERAGE_STEP, rounding=ROUND_HALF_UP)
        book_value = (holding.quantity * average).quantize(CENTS, rounding=ROUND_HALF_UP)
        return jpb.Holding(
            instrument=instrument,
            shares=to_shares(holding.quantity),
            average_cost=to_money(average, currency),
            book_value=to_money(book_value, currency),
        )

    def _transaction(self, transaction: Transaction, currency: str) -> jpb.Transaction:
        shares = transaction.client_shares()
        return jpb.Transaction(
            number=transaction.number,
            client=transaction.client,
            kind=_KINDS[transaction.kind],
            cash=to_money(transaction.client_cash(), currency),
            instrument=transaction.symbol,
            shares=None if shares is None else to_shares(shares),
            execution_id=transaction.trade_id,
            posted_at=_stamp(transaction.posted_at),
        )

    # ---- clients and cash -----------------------------------------------------

    async def RegisterClient(
        self, request: jpb.RegisterClientRequest, context: grpc.aio.ServicerContext
    ) -> jpb.Client:
        def build() -> jpb.Client:
            check = _Fields()
            number = check.required("number", request.number, max_length=MAX_ACCOUNT_ID_LENGTH)
            known = len(check.violations)
            currency = check.currency("currency", request.currency)
            currency_ok = len(check.violations) == known
            opening_cash = request.opening_cash
            opening = None  # unset or zero: no opening cash
            if opening_cash.units or opening_cash.nanos:
                opening = check.amount(
                    "opening_cash", opening_cash, places=MONEY_PLACES, limit=MONEY_LIMIT, positive=True
                )
            foreign = _foreign("opening_cash", opening_cash, currency) if currency_ok else []
            check.finish(foreign)
            if number in self.book.accounts:
                raise LedgerError(grpc.StatusCode.ALREADY_EXISTS, f"client {number!r} is already registered")
            opened = self.book.open_account(AccountInput(number, request.holder, currency, opening))
            return self._client_message(opened)

        return await answer(context, build, WORDING)

    async def FetchClient(
        self, request: jpb.FetchClientRequest, context: grpc.aio.ServicerContext
    ) -> jpb.Client:
        return await answer(
            context, lambda: self._client_message(self._client(request.number, "number")), WORDING
        )

    async def ScanClients(
        self, request: jpb.ScanClientsRequest, context: grpc.aio.ServicerContext
    ) -> jpb.ClientPage:
        def build() -> jpb.ClientPage:
            check = _Fields()
            limit = check.page_size("limit", request.limit)
            offset = check.offset("offset", request.offset)
            check.finish()
            accounts, more = self.book.accounts_from(offset, limit)
            return jpb.ClientPage(
                clients=[self._client_message(a) for a in accounts],
                next_offset=offset + len(accounts) if more else 0,
            )

        return await answer(context, build, WORDING)

    async def Fund(self, request: jpb.FundRequest, context: grpc.aio.ServicerContext) -> jpb.CashPosition:
        def build() -> jpb.CashPosition:
            check = _Fields()
            amount = check.amount(
                "amount",
                request.amount if request.HasField("amount") else None,
                places=MONEY_PLACES,
                limit=MONEY_LIMIT,
            )
            check.finish()
            account = self._client(request.client)
            if foreign := _foreign("amount", request.amount, account.currency):
                raise _invalid(foreign)
            return self._cash(self.book.deposit(account.account_id, amount))

        return await answer(context, build, WORDING)

    async def Cash(self, request: jpb.CashRequest, context: grpc.aio.ServicerContext) -> jpb.CashPosition:
        return await answer(context, lambda: self._cash(self._client(request.client)), WORDING)

    # ---- executions -----------------------------------------------------------

    async def Execute(self, request: jpb.ExecuteRequest, context: grpc.aio.ServicerContext) -> jpb.Execution:
        def build() -> jpb.Execution:
            check = _Fields()
            instrument = check.symbol("instrument", request.instrument)
            shares = check.amount(
                "shares",
                request.shares if request.HasField("shares") else None,
                places=QUANTITY_PLACES,
                limit=QUANTITY_LIMIT,
            )
            price = check.amount(
                "price",
                request.price if request.HasField("price") else None,
                places=PRICE_PLACES,
                limit=PRICE_LIMIT,
                positive=True,
            )
            check.finish()
            account = self._client(request.client)
            if foreign := _foreign("price", request.price, account.currency):
                raise _invalid(foreign)
            side = pb.SIDE_BUY if shares > 0 else pb.SIDE_SELL
            order = TradeInput(account.account_id, instrument, side, abs(shares), price, request.client_ref)
            return self._execution(self.book.post_trade(order))

        return await answer(context, build, WORDING)

    async def Reverse(self, request: jpb.ReverseRequest, context: grpc.aio.ServicerContext) -> jpb.Execution:
        def build() -> jpb.Execution:
            account = self._client(request.client)
            return self._execution(self.book.cancel_trade(account.account_id, request.execution_id))

        return await answer(context, build, WORDING)

    async def Clear(self, request: jpb.ClearRequest, context: grpc.aio.ServicerContext) -> jpb.Clearing:
        def build() -> jpb.Clearing:
            account = self._client(request.client)
            through = request.through.ToDatetime(tzinfo=UTC) if request.HasField("through") else None
            cleared, net_cash, now = self.book.settle(account.account_id, through)
            return jpb.Clearing(
                client=account.account_id,
                execution_ids=[t.trade_id for t in cleared],
                net_cash=to_money(net_cash, account.currency),
                cleared_at=_stamp(now),
            )

        return await answer(context, build, WORDING)

    async def ScanExecutions(
        self, request: jpb.ScanExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> jpb.ExecutionPage:
        def build() -> jpb.ExecutionPage:
            check = _Fields()
            if request.instrument:
                check.symbol("instrument", request.instrument)
            limit = check.page_size("limit", request.limit)
            offset = check.offset("offset", request.offset)
            check.finish()
            account = self._client(request.client)
            trades, more = self.book.trades_from(account.account_id, request.instrument, offset, limit)
            return jpb.ExecutionPage(
                executions=[self._execution(t) for t in trades],
                next_offset=offset + len(trades) if more else 0,
            )

        return await answer(context, build, WORDING)

    # ---- holdings and the journal ---------------------------------------------

    async def Holdings(
        self, request: jpb.HoldingsRequest, context: grpc.aio.ServicerContext
    ) -> jpb.HoldingsView:
        def build() -> jpb.HoldingsView:
            check = _Fields()
            if request.instrument:
                check.symbol("instrument", request.instrument)
            check.finish()
            account = self._client(request.client)
            client, currency = account.account_id, account.currency
            if request.instrument:
                held = {request.instrument: self.book.holding(client, request.instrument)}
            else:
                held = self.book.journal.holdings(client)
            return jpb.HoldingsView(
                client=client,
                holdings=[self._holding(i, held[i], currency) for i in sorted(held)],
                as_of=_stamp(self.book.clock()),
            )

        return await answer(context, build, WORDING)

    async def Transactions(
        self, request: jpb.TransactionsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[jpb.Transaction]:
        def snapshot() -> tuple[list[Transaction], str]:
            account = self._client(request.client)
            return list(self.book.journal.of_client(account.account_id)), account.currency

        transactions, currency = await answer(context, snapshot, WORDING)
        for transaction in transactions:
            yield self._transaction(transaction, currency)
