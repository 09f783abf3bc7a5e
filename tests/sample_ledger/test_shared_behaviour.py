"""Behaviour Bank and BK share: every test runs against each (values compared as decimals)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from sample_ledger._decimal import AccountInput
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from tests.sample_ledger._support import BUY, SELL, Connected, bad_fields, failure, order

D = Decimal


# ---- accounts ------------------------------------------------------------------


async def test_open_account_defaults_to_usd_and_credits_the_initial_deposit(ledger: Connected) -> None:
    """OpenAccount defaults the currency to USD, stamps opened_at and books the deposit as cash."""
    account = await ledger.open("A1", deposit="2500.50")
    assert (account.account_id, account.owner_name, account.currency) == ("A1", "Owner of A1", "USD")
    assert account.opened_at.seconds > 0
    assert await ledger.balance("A1") == (D("2500.50"), D(0))
    [entry] = await ledger.entries("A1")
    assert (entry.sequence, entry.kind, D(entry.amount)) == (1, pb.ENTRY_KIND_DEPOSIT, D("2500.50"))
    assert (entry.symbol, entry.quantity, entry.trade_id) == ("", "", "")


async def test_open_account_without_deposit_writes_no_entry(ledger: Connected) -> None:
    """An account opened without an initial deposit has zero cash and an empty ledger."""
    await ledger.open("A1", deposit="", currency="EUR")
    assert (await ledger.stub.GetAccount(pb.GetAccountRequest(account_id="A1"))).currency == "EUR"
    assert await ledger.balance("A1") == (D(0), D(0))
    assert await ledger.entries("A1") == []


async def test_open_account_rejects_bad_fields_with_one_violation_each(ledger: Connected) -> None:
    """An empty id, a lower-case currency and a bad deposit are each named in the BadRequest details."""
    request = pb.OpenAccountRequest(account_id="", currency="usd", initial_deposit="12.345")
    error = await failure(ledger.stub.OpenAccount(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["account_id", "currency", "initial_deposit"]


async def test_open_account_refuses_a_duplicate_id(ledger: Connected) -> None:
    """Opening an id twice answers ALREADY_EXISTS and keeps the first account."""
    await ledger.open("A1", deposit="10")
    error = await failure(ledger.open("A1", deposit="99"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await ledger.balance("A1") == (D(10), D(0))


async def test_list_accounts_pages_in_id_order(ledger: Connected) -> None:
    """ListAccounts returns accounts by id, page by page, following the side's own tokens."""
    for account_id in ["C", "A", "E", "B", "D"]:
        await ledger.open(account_id)
    seen, token, pages = [], "", 0
    while True:
        page = await ledger.stub.ListAccounts(pb.ListAccountsRequest(page_size=2, page_token=token))
        seen += [a.account_id for a in page.accounts]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert (seen, pages) == (["A", "B", "C", "D", "E"], 3)


async def test_list_accounts_page_size_defaults_to_50_and_is_capped_at_500(ledger: Connected) -> None:
    """Page size 0 means 50 and anything above 500 means 500."""
    for n in range(501):
        ledger.running.servicer.book.open_account(AccountInput(f"A{n:04d}", "", "USD", None))
    default = await ledger.stub.ListAccounts(pb.ListAccountsRequest())
    capped = await ledger.stub.ListAccounts(pb.ListAccountsRequest(page_size=10_000))
    assert (len(default.accounts), len(capped.accounts)) == (50, 500)
    assert default.next_page_token
    assert capped.next_page_token


async def test_list_accounts_refuses_bad_paging(ledger: Connected) -> None:
    """A negative page size and an unparseable page token both answer INVALID_ARGUMENT."""
    negative = await failure(ledger.stub.ListAccounts(pb.ListAccountsRequest(page_size=-1)))
    garbage = await failure(ledger.stub.ListAccounts(pb.ListAccountsRequest(page_token="!!")))
    assert negative.code() == garbage.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(negative) == ["page_size"]


# ---- cash ----------------------------------------------------------------------


async def test_deposit_credits_and_debits_cash(ledger: Connected) -> None:
    """Deposit adds a positive amount, subtracts a negative one, and answers the new balance."""
    await ledger.open("A1", deposit="100")
    credited = await ledger.stub.Deposit(pb.DepositRequest(account_id="A1", amount="50.25"))
    debited = await ledger.stub.Deposit(pb.DepositRequest(account_id="A1", amount="-200"))
    assert (D(credited.cash), D(debited.cash), debited.currency) == (D("150.25"), D("-49.75"), "USD")
    amounts = [D(e.amount) for e in await ledger.entries("A1")]
    assert amounts == [D(100), D("50.25"), D(-200)]


async def test_deposit_refuses_zero_and_sub_cent_amounts(ledger: Connected) -> None:
    """A zero, sub-cent or non-decimal amount answers INVALID_ARGUMENT naming the amount field."""
    await ledger.open("A1")
    for amount in ["0", "-0.00", "1.001", "1e3", "abc", ""]:
        error = await failure(ledger.stub.Deposit(pb.DepositRequest(account_id="A1", amount=amount)))
        assert (error.code(), bad_fields(error)) == (grpc.StatusCode.INVALID_ARGUMENT, ["amount"]), amount


# ---- trades --------------------------------------------------------------------


async def test_post_trade_names_every_bad_field_in_bad_request_details(ledger: Connected) -> None:
    """Symbol, side, quantity and price violations come back together, in field order, as BadRequest."""
    request = pb.PostTradeRequest(account_id="A1", symbol="aapl", quantity="1.00001", price="-3")
    error = await failure(ledger.stub.PostTrade(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["symbol", "side", "quantity", "price"]


async def test_post_trade_checks_fields_one_by_one(ledger: Connected) -> None:
    """Each bad field is reported alone: empty symbol, zero quantity, 5 decimals, bad price."""
    await ledger.open("A1")
    cases = [
        ("symbol", order("A1", "", BUY, "1", "1")),
        ("side", order("A1", "AAPL", pb.SIDE_UNSPECIFIED, "1", "1")),
        ("quantity", order("A1", "AAPL", BUY, "0", "1")),
        ("quantity", order("A1", "AAPL", BUY, "0.00001", "1")),
        ("price", order("A1", "AAPL", BUY, "1", "0")),
        ("price", order("A1", "AAPL", BUY, "1", "1.5x")),
    ]
    for field, request in cases:
        error = await failure(ledger.stub.PostTrade(request))
        assert bad_fields(error) == [field], request


async def test_buy_books_fee_notional_and_cash_effects(ledger: Connected) -> None:
    """A BUY charges 0.005 per share rounded to cents, notional rounded half up, and debits both."""
    await ledger.open("A1", deposit="1000")
    trade = await ledger.trade("A1", "AAPL", BUY, "3", "10.125", client_order_id="c-1")
    assert (trade.symbol, trade.side, trade.status, trade.client_order_id) == (
        "AAPL",
        BUY,
        pb.TRADE_STATUS_BOOKED,
        "c-1",
    )
    assert (D(trade.quantity), D(trade.price), D(trade.fee), D(trade.notional)) == (
        D(3),
        D("10.125"),
        D("0.02"),
        D("30.38"),
    )
    assert trade.booked_at.seconds > 0
    assert await ledger.balance("A1") == (D("969.60"), D("-30.40"))
    entries = await ledger.entries("A1")
    assert [(e.kind, D(e.amount), e.quantity and D(e.quantity), e.trade_id) for e in entries[1:]] == [
        (pb.ENTRY_KIND_TRADE, D("-30.38"), D(3), trade.trade_id),
        (pb.ENTRY_KIND_FEE, D("-0.02"), "", trade.trade_id),
    ]


async def test_sell_credits_notional_less_fee(ledger: Connected) -> None:
    """A SELL credits notional minus fee, writes a negative quantity entry, and reduces the position."""
    await ledger.open("A1", deposit="")
    await ledger.trade("A1", "MSFT", BUY, "10", "100")
    sell = await ledger.trade("A1", "MSFT", SELL, "4", "110")
    assert (D(sell.notional), D(sell.fee)) == (D(440), D("0.02"))
    assert (await ledger.balance("A1"))[0] == D(-1000) - D("0.05") + D(440) - D("0.02")
    trade_entry = (await ledger.entries("A1"))[-2]
    assert (D(trade_entry.amount), D(trade_entry.quantity)) == (D(440), D(-4))
    assert (await ledger.position("A1", "MSFT"))[0] == D(6)


async def test_average_price_is_weighted_by_buys_and_kept_by_sells(ledger: Connected) -> None:
    """Buys average in, sells keep the average, selling out resets it, and cost_basis uses the average."""
    await ledger.open("A1")
    await ledger.trade("A1", "IBM", BUY, "10", "100")
    await ledger.trade("A1", "IBM", BUY, "30", "101.5")
    assert await ledger.position("A1", "IBM") == (D(40), D("101.125"), D("4045"))
    await ledger.trade("A1", "IBM", SELL, "15", "120")
    assert await ledger.position("A1", "IBM") == (D(25), D("101.125"), D("2528.13"))
    await ledger.trade("A1", "IBM", SELL, "25", "90")
    assert await ledger.position("A1", "IBM") == (D(0), D(0), D(0))
    await ledger.trade("A1", "IBM", BUY, "2", "50")
    assert await ledger.position("A1", "IBM") == (D(2), D(50), D(100))


async def test_average_price_is_rounded_half_up_to_four_decimals(ledger: Connected) -> None:
    """An average of 10.00666... reads 10.0067, and cost_basis is quantity x 10.0067 in cents."""
    await ledger.open("A1")
    await ledger.trade("A1", "KO", BUY, "3", "10")
    await ledger.trade("A1", "KO", BUY, "6", "10.01")
    assert await ledger.position("A1", "KO") == (D(9), D("10.0067"), D("90.06"))


async def test_position_of_a_symbol_never_held_is_zero(ledger: Connected) -> None:
    """GetPosition on a symbol never traded answers a zero position, not an error."""
    await ledger.open("A1")
    assert await ledger.position("A1", "ZZZ") == (D(0), D(0), D(0))
    error = await failure(ledger.stub.GetPosition(pb.GetPositionRequest(account_id="A1", symbol="zz")))
    assert (error.code(), bad_fields(error)) == (grpc.StatusCode.INVALID_ARGUMENT, ["symbol"])


async def test_portfolio_lists_only_non_zero_positions(ledger: Connected) -> None:
    """GetPortfolio lists every symbol held and leaves out positions sold to zero."""
    await ledger.open("A1")
    for symbol in ["AAPL", "KO", "XOM"]:
        await ledger.trade("A1", symbol, BUY, "10", "20")
    await ledger.trade("A1", "KO", SELL, "10", "21")
    portfolio = await ledger.stub.GetPortfolio(pb.GetPortfolioRequest(account_id="A1"))
    assert sorted((p.symbol, D(p.quantity)) for p in portfolio.positions) == [("AAPL", D(10)), ("XOM", D(10))]
    assert portfolio.account_id == "A1"
    assert portfolio.as_of.seconds > 0


async def test_concurrent_trades_on_one_account_all_count(ledger: Connected) -> None:
    """Fifty concurrent BUYs on one account leave exactly fifty trades' worth of shares and cash."""
    await ledger.open("A1", deposit="100000")
    await asyncio.gather(*(ledger.trade("A1", "AAPL", BUY, "2", "10") for _ in range(50)))
    assert (await ledger.position("A1", "AAPL"))[0] == D(100)
    assert (await ledger.balance("A1"))[0] == D(100000) - 50 * (D(20) + D("0.01"))


# ---- cancellation --------------------------------------------------------------


async def test_cancel_reverses_position_and_cash_with_the_fee(ledger: Connected) -> None:
    """CancelTrade restores cash (fee refunded) and position and writes one CANCELLATION entry."""
    await ledger.open("A1", deposit="1000")
    trade = await ledger.trade("A1", "AAPL", BUY, "3", "10")
    cancelled = await ledger.stub.CancelTrade(pb.CancelTradeRequest(account_id="A1", trade_id=trade.trade_id))
    assert (cancelled.trade_id, cancelled.status) == (trade.trade_id, pb.TRADE_STATUS_CANCELLED)
    assert await ledger.balance("A1") == (D(1000), D(0))
    assert await ledger.position("A1", "AAPL") == (D(0), D(0), D(0))
    last = (await ledger.entries("A1"))[-1]
    assert (last.kind, D(last.amount), D(last.quantity), last.trade_id, last.symbol) == (
        pb.ENTRY_KIND_CANCELLATION,
        D("30.02"),
        D(-3),
        trade.trade_id,
        "AAPL",
    )


async def test_cancel_of_a_sell_buys_the_shares_back_at_its_price(ledger: Connected) -> None:
    """Cancelling a SELL restores the quantity and averages it in at the sell's price."""
    await ledger.open("A1")
    await ledger.trade("A1", "AAPL", BUY, "10", "10")
    sell = await ledger.trade("A1", "AAPL", SELL, "10", "12")
    await ledger.stub.CancelTrade(pb.CancelTradeRequest(account_id="A1", trade_id=sell.trade_id))
    assert await ledger.position("A1", "AAPL") == (D(10), D(12), D(120))


async def test_cancel_refuses_unknown_foreign_and_finished_trades(ledger: Connected) -> None:
    """Unknown or foreign trades: NOT_FOUND; cancelled, settled or sold-out buys: FAILED_PRECONDITION."""
    await ledger.open("A1")
    await ledger.open("A2")
    cancel = ledger.stub.CancelTrade
    first = await ledger.trade("A1", "AAPL", BUY, "3", "10")
    assert (await failure(cancel(pb.CancelTradeRequest(account_id="A1", trade_id="nope")))).code() == (
        grpc.StatusCode.NOT_FOUND
    )
    foreign = pb.CancelTradeRequest(account_id="A2", trade_id=first.trade_id)
    assert (await failure(cancel(foreign))).code() == grpc.StatusCode.NOT_FOUND
    await cancel(pb.CancelTradeRequest(account_id="A1", trade_id=first.trade_id))
    again = pb.CancelTradeRequest(account_id="A1", trade_id=first.trade_id)
    assert (await failure(cancel(again))).code() == grpc.StatusCode.FAILED_PRECONDITION
    settled = await ledger.trade("A1", "AAPL", BUY, "3", "10")
    await ledger.stub.SettleTrades(pb.SettleTradesRequest(account_id="A1"))
    late = pb.CancelTradeRequest(account_id="A1", trade_id=settled.trade_id)
    assert (await failure(cancel(late))).code() == grpc.StatusCode.FAILED_PRECONDITION
    sold = await ledger.trade("A1", "KO", BUY, "3", "10")
    await ledger.trade("A1", "KO", SELL, "2", "10")
    undo = pb.CancelTradeRequest(account_id="A1", trade_id=sold.trade_id)
    assert (await failure(cancel(undo))).code() == grpc.StatusCode.FAILED_PRECONDITION


# ---- listing, settlement, streams -------------------------------------------------


async def test_list_trades_pages_in_booking_order_with_a_symbol_filter(ledger: Connected) -> None:
    """ListTrades returns the account's trades in booking order, filtered by symbol, page by page."""
    await ledger.open("A1")
    booked = [await ledger.trade("A1", s, BUY, "3", "10") for s in ["A", "B", "A", "A", "B", "A"]]
    ids, token = [], ""
    while True:
        request = pb.ListTradesRequest(account_id="A1", page_size=2, page_token=token, symbol="A")
        page = await ledger.stub.ListTrades(request)
        ids += [t.trade_id for t in page.trades]
        token = page.next_page_token
        if not token:
            break
    assert ids == [t.trade_id for t in booked if t.symbol == "A"]
    everything = await ledger.stub.ListTrades(pb.ListTradesRequest(account_id="A1"))
    assert [t.trade_id for t in everything.trades] == [t.trade_id for t in booked]
    assert not everything.next_page_token
    bad = await failure(ledger.stub.ListTrades(pb.ListTradesRequest(account_id="A1", page_token="x")))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_settle_trades_settles_booked_trades_up_to_a_time(ledger: Connected) -> None:
    """A past settle_through settles nothing; unset settles every booked trade with its net cash."""
    await ledger.open("A1", deposit="1000")
    await ledger.trade("A1", "AAPL", BUY, "3", "10")
    await ledger.trade("A1", "AAPL", SELL, "2", "11")
    cancelled = await ledger.trade("A1", "KO", BUY, "3", "1")
    await ledger.stub.CancelTrade(pb.CancelTradeRequest(account_id="A1", trade_id=cancelled.trade_id))
    past = pb.SettleTradesRequest(account_id="A1", settle_through=Timestamp(seconds=1))
    nothing = await ledger.stub.SettleTrades(past)
    assert (nothing.settled_count, list(nothing.settled_trade_ids), D(nothing.net_cash)) == (0, [], D(0))
    assert await ledger.balance("A1") == (D("991.97"), D("-8.03"))
    report = await ledger.stub.SettleTrades(pb.SettleTradesRequest(account_id="A1"))
    assert (report.settled_count, len(report.settled_trade_ids), D(report.net_cash)) == (2, 2, D("-8.03"))
    assert report.settled_at.seconds > 0
    assert await ledger.balance("A1") == (D("991.97"), D(0))
    kinds = [e.kind for e in await ledger.entries("A1")]
    assert kinds.count(pb.ENTRY_KIND_SETTLEMENT) == 1
    last = (await ledger.entries("A1"))[-1]
    assert (last.kind, D(last.amount), last.quantity) == (pb.ENTRY_KIND_SETTLEMENT, D(0), "")


async def test_stream_ledger_entries_numbers_entries_from_one_in_posting_order(ledger: Connected) -> None:
    """StreamLedgerEntries replays deposit, trade, fee, cancellation and settlement entries in order."""
    await ledger.open("A1", deposit="500")
    first = await ledger.trade("A1", "AAPL", BUY, "3", "10")
    await ledger.stub.CancelTrade(pb.CancelTradeRequest(account_id="A1", trade_id=first.trade_id))
    await ledger.trade("A1", "AAPL", BUY, "3", "10")
    await ledger.stub.SettleTrades(pb.SettleTradesRequest(account_id="A1"))
    entries = await ledger.entries("A1")
    assert [e.sequence for e in entries] == list(range(1, 8))
    assert [e.kind for e in entries] == [
        pb.ENTRY_KIND_DEPOSIT,
        pb.ENTRY_KIND_TRADE,
        pb.ENTRY_KIND_FEE,
        pb.ENTRY_KIND_CANCELLATION,
        pb.ENTRY_KIND_TRADE,
        pb.ENTRY_KIND_FEE,
        pb.ENTRY_KIND_SETTLEMENT,
    ]
    assert {e.account_id for e in entries} == {"A1"}
    assert sum(D(e.amount) for e in entries) == (await ledger.balance("A1"))[0]


async def test_book_trades_counts_rejections_without_aborting(ledger: Connected) -> None:
    """BookTrades books valid orders, counts invalid ones as rejected and sums notional and fees."""
    await ledger.open("A1")
    orders = [
        order("A1", "AAPL", BUY, "3", "10"),
        order("A1", "AAPL", BUY, "0", "10"),
        order("A1", "KO", BUY, "7", "2.5"),
        pb.PostTradeRequest(),
    ]
    summary = await ledger.stub.BookTrades(iter(orders))
    assert (summary.booked, summary.rejected, len(summary.trade_ids)) == (2, 2, 2)
    assert (D(summary.total_notional), D(summary.total_fees)) == (D("47.50"), D("0.06"))
    listed = await ledger.stub.ListTrades(pb.ListTradesRequest(account_id="A1"))
    assert [t.trade_id for t in listed.trades] == list(summary.trade_ids)
    empty = await ledger.stub.BookTrades(iter([]))
    assert (empty.booked, empty.rejected, D(empty.total_notional)) == (0, 0, D(0))


async def test_trade_session_answers_each_order_in_order(ledger: Connected) -> None:
    """TradeSession answers a booked Trade or a Rejection (with the status code name) per order, in order."""
    await ledger.open("A1")
    requests = [
        pb.TradeSessionRequest(order=order("A1", "AAPL", BUY, "3", "10", "o-1")),
        pb.TradeSessionRequest(order=order("A1", "AAPL", BUY, "3", "-1", "o-2")),
        pb.TradeSessionRequest(order=order("A1", "AAPL", SELL, "2", "11", "o-3")),
    ]
    events = [event async for event in ledger.stub.TradeSession(iter(requests))]
    assert [e.WhichOneof("event") for e in events] == ["booked", "rejected", "booked"]
    assert [events[0].booked.client_order_id, events[2].booked.client_order_id] == ["o-1", "o-3"]
    rejection = events[1].rejected
    assert (rejection.client_order_id, rejection.code) == ("o-2", "INVALID_ARGUMENT")
    assert "price" in rejection.reason
