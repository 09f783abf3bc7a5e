"""Bank's interface (`bank.v1.Ledger`) served by BK's native interface (`bk.v1.Journal`).

The shim's adapters for the sample ledger, one per Bank method (`ADAPTERS`);
run them with ``shim serve --config sample_ledger/shim.toml --adapters
sample_ledger.adapter`` in front of ``python -m sample_ledger bk-native``, or see
``shim demo --bk native``. Each adapter turns Bank's request into BK calls and
BK's answers into Bank's response:

* requests are checked as Bank's interface defines them (the field checks every
  implementation in this package shares), so BK only ever sees valid input;
* decimal strings become Money and Shares messages and back; a side and a
  quantity become signed shares; page tokens become offsets;
* BK's refusals keep their status code, and BK's field names in a BadRequest
  become Bank's (`client` is `account_id`, `shares` is `quantity`, ...).

PLANTED ADAPTER BUG (for the demo to find): ledger entry amounts are converted
from Money by hand, and an amount between -1 and 0 loses its sign (a fee of
0.35 is posted as -0.35, and the entry says "0.35").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

from sample_ledger._decimal import (
    InvalidInput,
    LedgerError,
    as_ledger_error,
    parse_amount,
    parse_open_account,
    parse_page_size,
    parse_symbol,
    parse_trade,
)
from sample_ledger._money import from_money, from_shares, to_money, to_shares
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bk.v1 import journal_pb2 as bk
from sample_ledger._proto.bk.v1 import journal_pb2_grpc as bk_grpc
from sample_ledger.bk import WORDING, dec
from shim.adapters import Abort, Backend

_STATUS_DETAILS = "grpc-status-details-bin"
# BK's field names in its BadRequest details, as Bank's
_BANK_FIELDS = {
    "client": "account_id",
    "number": "account_id",
    "holder": "owner_name",
    "opening_cash": "initial_deposit",
    "instrument": "symbol",
    "shares": "quantity",
    "client_ref": "client_order_id",
    "execution_id": "trade_id",
    "limit": "page_size",
    "offset": "page_token",
}
_STATES = {
    bk.EXECUTION_STATE_LIVE: pb.TRADE_STATUS_BOOKED,
    bk.EXECUTION_STATE_REVERSED: pb.TRADE_STATUS_CANCELLED,
    bk.EXECUTION_STATE_CLEARED: pb.TRADE_STATUS_SETTLED,
}
_KINDS = {
    bk.TRANSACTION_KIND_FUNDING: pb.ENTRY_KIND_DEPOSIT,
    bk.TRANSACTION_KIND_EXECUTION: pb.ENTRY_KIND_TRADE,
    bk.TRANSACTION_KIND_COMMISSION: pb.ENTRY_KIND_FEE,
    bk.TRANSACTION_KIND_REVERSAL: pb.ENTRY_KIND_CANCELLATION,
    bk.TRANSACTION_KIND_CLEARING: pb.ENTRY_KIND_SETTLEMENT,
}
# refusals a batch or a session counts as a rejected order (anything else ends the call)
_REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


# ---- errors -----------------------------------------------------------------------------------


def _abort(error: LedgerError) -> Abort:
    """A refusal in Bank's terms (rich details when it names fields)."""
    if not error.violations:
        return Abort(error.code, error.message)
    status = error.to_status()
    return Abort(status.code, status.details, trailing_metadata=tuple(status.trailing_metadata))


def _checked(error: InvalidInput) -> Abort:
    return _abort(as_ledger_error(error, WORDING))


def _bank_error(error: aio.AioRpcError) -> LedgerError:
    """BK's refusal as Bank's: the same code, with Bank's field names."""
    code, message = error.code(), error.details() or ""
    violations: list[tuple[str, str]] = []
    for key, value in error.trailing_metadata() or ():
        if key != _STATUS_DETAILS or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                violations += [
                    (_BANK_FIELDS.get(v.field, v.field), v.description) for v in bad_request.field_violations
                ]
    return LedgerError(code, message, violations)


async def _ask(call: Any) -> Any:
    """BK's answer to one call, or Bank's refusal."""
    try:
        return await call
    except aio.AioRpcError as error:
        if error.code() in _REFUSALS:
            raise _abort(_bank_error(error)) from error
        raise


def _journal(backend: Backend) -> bk_grpc.JournalStub:
    return backend.stub(bk_grpc.JournalStub)


# ---- messages ---------------------------------------------------------------------------------


def _account(client: bk.Client) -> pb.Account:
    account = pb.Account(account_id=client.number, owner_name=client.holder, currency=client.currency)
    account.opened_at.CopyFrom(client.registered_at)
    return account


def _balance(cash: bk.CashPosition) -> pb.Balance:
    settled, pending = from_money(cash.settled), from_money(cash.pending)
    balance = pb.Balance(
        account_id=cash.client,
        currency=cash.settled.currency or cash.pending.currency,
        cash=dec(settled + pending),
        unsettled_cash=dec(pending),
    )
    balance.as_of.CopyFrom(cash.as_of)
    return balance


def _trade(execution: bk.Execution) -> pb.Trade:
    shares = from_shares(execution.shares)
    trade = pb.Trade(
        trade_id=execution.execution_id,
        account_id=execution.client,
        symbol=execution.instrument,
        side=pb.SIDE_BUY if shares > 0 else pb.SIDE_SELL,
        quantity=dec(abs(shares)),
        price=dec(from_money(execution.price)),
        fee=dec(from_money(execution.commission)),
        notional=dec(from_money(execution.gross)),
        client_order_id=execution.client_ref,
        status=_STATES.get(execution.state, pb.TRADE_STATUS_UNSPECIFIED),
        venue=execution.venue,
    )
    trade.booked_at.CopyFrom(execution.executed_at)
    return trade


def _position(account_id: str, holding: bk.Holding) -> pb.Position:
    return pb.Position(
        account_id=account_id,
        symbol=holding.instrument,
        quantity=dec(from_shares(holding.shares)),
        average_price=dec(from_money(holding.average_cost)),
        cost_basis=dec(from_money(holding.book_value)),
    )


def _entry_amount(money: bk.Money) -> str:
    # PLANTED ADAPTER BUG: written by hand instead of from_money; between -1 and 0 the sign is lost
    text = f"{money.units}.{abs(money.nanos):09d}".rstrip("0").rstrip(".")
    return text or "0"


def _entry(sequence: int, transaction: bk.Transaction) -> pb.LedgerEntry:
    entry = pb.LedgerEntry(
        sequence=sequence,
        account_id=transaction.client,
        kind=_KINDS.get(transaction.kind, pb.ENTRY_KIND_UNSPECIFIED),
        amount=_entry_amount(transaction.cash),
        symbol=transaction.instrument,
        quantity=dec(from_shares(transaction.shares)) if transaction.HasField("shares") else "",
        trade_id=transaction.execution_id,
    )
    entry.posted_at.CopyFrom(transaction.posted_at)
    return entry


def _token(offset: int) -> str:
    return f"offset:{offset}" if offset else ""


def _offset(token: str) -> int:
    if not token:
        return 0
    prefix, _, number = token.partition(":")
    if prefix != "offset" or not number.isdigit() or str(int(number)) != number:
        raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token is malformed or expired")
    return int(number)


# ---- adapters ---------------------------------------------------------------------------------


async def open_account(request: pb.OpenAccountRequest, backend: Backend) -> pb.Account:
    try:
        checked = parse_open_account(request)
    except InvalidInput as invalid:
        raise _checked(invalid) from invalid
    register = bk.RegisterClientRequest(
        number=checked.account_id, holder=checked.owner_name, currency=checked.currency
    )
    if checked.initial_deposit is not None:
        register.opening_cash.CopyFrom(to_money(checked.initial_deposit, checked.currency))
    return _account(await _ask(_journal(backend).RegisterClient(register)))


async def get_account(request: pb.GetAccountRequest, backend: Backend) -> pb.Account:
    client = await _ask(_journal(backend).FetchClient(bk.FetchClientRequest(number=request.account_id)))
    return _account(client)


async def list_accounts(request: pb.ListAccountsRequest, backend: Backend) -> pb.ListAccountsResponse:
    try:
        size = parse_page_size(request.page_size)
    except InvalidInput as invalid:
        raise _checked(invalid) from invalid
    scan = bk.ScanClientsRequest(limit=size, offset=_offset(request.page_token))
    page = await _ask(_journal(backend).ScanClients(scan))
    return pb.ListAccountsResponse(
        accounts=[_account(c) for c in page.clients], next_page_token=_token(page.next_offset)
    )


async def deposit(request: pb.DepositRequest, backend: Backend) -> pb.Balance:
    try:
        amount = parse_amount(request)
    except InvalidInput as invalid:
        raise _checked(invalid) from invalid
    fund = bk.FundRequest(client=request.account_id, amount=to_money(amount, ""), memo=request.reference)
    return _balance(await _ask(_journal(backend).Fund(fund)))


async def post_trade(request: pb.PostTradeRequest, backend: Backend) -> pb.Trade:
    return _trade(await _execute(request, backend))


async def _execute(order: pb.PostTradeRequest, backend: Backend) -> bk.Execution:
    try:
        checked = parse_trade(order)
    except InvalidInput as invalid:
        raise _checked(invalid) from invalid
    shares = checked.quantity if checked.side == pb.SIDE_BUY else -checked.quantity
    execute = bk.ExecuteRequest(
        client=checked.account_id,
        instrument=checked.symbol,
        shares=to_shares(shares),
        price=to_money(checked.price, ""),
        client_ref=checked.client_order_id,
    )
    execution: bk.Execution = await _ask(_journal(backend).Execute(execute))
    return execution


async def cancel_trade(request: pb.CancelTradeRequest, backend: Backend) -> pb.Trade:
    reverse = bk.ReverseRequest(client=request.account_id, execution_id=request.trade_id, memo=request.reason)
    return _trade(await _ask(_journal(backend).Reverse(reverse)))


async def get_position(request: pb.GetPositionRequest, backend: Backend) -> pb.Position:
    try:
        symbol = parse_symbol(request.symbol)
    except InvalidInput as invalid:
        raise _checked(invalid) from invalid
    ask = bk.HoldingsRequest(client=request.account_id, instrument=symbol)
    view = await _ask(_journal(backend).Holdings(ask))
    held = [h for h in view.holdings if h.instrument == symbol]
    return _position(request.account_id, held[0] if held else bk.Holding(instrument=symbol))


async def get_portfolio(request: pb.GetPortfolioRequest, backend: Backend) -> pb.Portfolio:
    view = await _ask(_journal(backend).Holdings(bk.HoldingsRequest(client=request.account_id)))
    portfolio = pb.Portfolio(
        account_id=request.account_id, positions=[_position(request.account_id, h) for h in view.holdings]
    )
    portfolio.as_of.CopyFrom(view.as_of)
    return portfolio


async def get_balance(request: pb.GetBalanceRequest, backend: Backend) -> pb.Balance:
    return _balance(await _ask(_journal(backend).Cash(bk.CashRequest(client=request.account_id))))


async def list_trades(request: pb.ListTradesRequest, backend: Backend) -> pb.ListTradesResponse:
    try:
        size = parse_page_size(request.page_size)
    except InvalidInput as invalid:
        raise _checked(invalid) from invalid
    scan = bk.ScanExecutionsRequest(
        client=request.account_id,
        instrument=request.symbol,
        limit=size,
        offset=_offset(request.page_token),
    )
    page = await _ask(_journal(backend).ScanExecutions(scan))
    return pb.ListTradesResponse(
        trades=[_trade(e) for e in page.executions], next_page_token=_token(page.next_offset)
    )


async def settle_trades(request: pb.SettleTradesRequest, backend: Backend) -> pb.SettlementReport:
    clear = bk.ClearRequest(client=request.account_id)
    if request.HasField("settle_through"):
        clear.through.CopyFrom(request.settle_through)
    clearing = await _ask(_journal(backend).Clear(clear))
    report = pb.SettlementReport(
        account_id=request.account_id,
        settled_trade_ids=list(clearing.execution_ids),
        net_cash=dec(from_money(clearing.net_cash)),
        settled_count=len(clearing.execution_ids),
    )
    report.settled_at.CopyFrom(clearing.cleared_at)
    return report


async def stream_ledger_entries(
    request: pb.StreamLedgerEntriesRequest, backend: Backend
) -> AsyncIterator[pb.LedgerEntry]:
    call = _journal(backend).Transactions(bk.TransactionsRequest(client=request.account_id))
    sequence = 0
    try:
        async for transaction in call:
            sequence += 1
            yield _entry(sequence, transaction)
    except aio.AioRpcError as error:
        if error.code() in _REFUSALS:
            raise _abort(_bank_error(error)) from error
        raise


async def _booked(order: pb.PostTradeRequest, backend: Backend) -> bk.Execution | LedgerError:
    """The execution of one order of a batch or session, or Bank's refusal of it."""
    try:
        return await _execute(order, backend)
    except Abort as refused:
        return LedgerError(refused.code, refused.details)


async def book_trades(requests: AsyncIterator[pb.PostTradeRequest], backend: Backend) -> pb.BookTradesSummary:
    booked: list[bk.Execution] = []
    rejected = 0
    async for order in requests:
        outcome = await _booked(order, backend)
        if isinstance(outcome, LedgerError):
            rejected += 1
        else:
            booked.append(outcome)
    return pb.BookTradesSummary(
        booked=len(booked),
        rejected=rejected,
        trade_ids=[e.execution_id for e in booked],
        total_notional=dec(sum((from_money(e.gross) for e in booked), Decimal(0))),
        total_fees=dec(sum((from_money(e.commission) for e in booked), Decimal(0))),
    )


async def trade_session(
    requests: AsyncIterator[pb.TradeSessionRequest], backend: Backend
) -> AsyncIterator[pb.TradeSessionEvent]:
    async for request in requests:
        outcome = await _booked(request.order, backend)
        if isinstance(outcome, LedgerError):
            rejection = pb.Rejection(
                client_order_id=request.order.client_order_id, code=outcome.code.name, reason=outcome.message
            )
            yield pb.TradeSessionEvent(rejected=rejection)
        else:
            yield pb.TradeSessionEvent(booked=_trade(outcome))


ADAPTERS: Mapping[str, Any] = {
    "bank.v1.Ledger/OpenAccount": open_account,
    "bank.v1.Ledger/GetAccount": get_account,
    "bank.v1.Ledger/ListAccounts": list_accounts,
    "bank.v1.Ledger/Deposit": deposit,
    "bank.v1.Ledger/PostTrade": post_trade,
    "bank.v1.Ledger/CancelTrade": cancel_trade,
    "bank.v1.Ledger/GetPosition": get_position,
    "bank.v1.Ledger/GetPortfolio": get_portfolio,
    "bank.v1.Ledger/GetBalance": get_balance,
    "bank.v1.Ledger/ListTrades": list_trades,
    "bank.v1.Ledger/SettleTrades": settle_trades,
    "bank.v1.Ledger/StreamLedgerEntries": stream_ledger_entries,
    "bank.v1.Ledger/BookTrades": book_trades,
    "bank.v1.Ledger/TradeSession": trade_session,
}
