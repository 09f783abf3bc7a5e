"""BK's native interface (`bk.v1.Journal`, `sample_ledger.bk_native`) and its Money/Shares conversions."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st

from sample_ledger._bk_journal import derive
from sample_ledger._decimal import LedgerError
from sample_ledger._money import from_money, from_shares, to_money, to_shares
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger._proto.bk.v1 import journal_pb2 as jpb
from sample_ledger._proto.bk.v1 import journal_pb2_grpc as jpb_grpc
from sample_ledger.bk import BkServicer
from sample_ledger.bk_native import BkNativeServicer
from sample_ledger.server import KINDS, RunningLedger, serve
from tests.sample_ledger._support import bad_fields, failure, order, violations

D = Decimal


def money(text: str, currency: str = "") -> jpb.Money:
    return to_money(D(text), currency)


def shares(text: str) -> jpb.Shares:
    return to_shares(D(text))


@dataclass
class Native:
    """A running native BK with a channel and a `bk.v1.Journal` stub."""

    running: RunningLedger
    channel: grpc.aio.Channel
    stub: Any

    @property
    def servicer(self) -> BkNativeServicer:
        assert isinstance(self.running.servicer, BkNativeServicer)
        return self.running.servicer

    async def register(self, number: str, opening: str = "", currency: str = "") -> jpb.Client:
        request = jpb.RegisterClientRequest(number=number, holder=f"Holder of {number}", currency=currency)
        if opening:
            request.opening_cash.CopyFrom(money(opening))
        return await self.stub.RegisterClient(request)

    async def execute(self, client: str, instrument: str, count: str, price: str) -> jpb.Execution:
        request = jpb.ExecuteRequest(
            client=client, instrument=instrument, shares=shares(count), price=money(price)
        )
        return await self.stub.Execute(request)

    async def cash(self, client: str) -> tuple[Decimal, Decimal]:
        position = await self.stub.Cash(jpb.CashRequest(client=client))
        return from_money(position.settled), from_money(position.pending)

    async def holdings(
        self, client: str, instrument: str = ""
    ) -> list[tuple[str, Decimal, Decimal, Decimal]]:
        view = await self.stub.Holdings(jpb.HoldingsRequest(client=client, instrument=instrument))
        return [
            (h.instrument, from_shares(h.shares), from_money(h.average_cost), from_money(h.book_value))
            for h in view.holdings
        ]


@pytest.fixture
async def native() -> AsyncIterator[Native]:
    running = await serve("bk-native")
    channel = grpc.aio.insecure_channel(running.address)
    try:
        yield Native(running, channel, jpb_grpc.JournalStub(channel))
    finally:
        await channel.close()
        await running.stop(grace=1.0)


# ---- _money -------------------------------------------------------------------------

nine_places = st.decimals(
    min_value=D(-(2**63) + 1), max_value=D(2**63 - 1), places=9, allow_nan=False, allow_infinity=False
)


@given(nine_places)
def test_money_and_shares_round_trip_exactly(value: Decimal) -> None:
    """Any value with at most 9 decimals survives both conversions, with units and nanos of one sign."""
    message = to_money(value, "USD")
    assert message.currency == "USD"
    assert from_money(message) == value
    assert from_shares(to_shares(value)) == value
    assert abs(message.nanos) < 10**9
    assert message.units * message.nanos >= 0
    assert D(message.units) + D(message.nanos).scaleb(-9) == value


@given(st.integers(min_value=-(10**9) + 1, max_value=-1))
def test_values_between_minus_one_and_zero_have_zero_units(nanos: int) -> None:
    """-0.5 is units 0 and nanos -500000000, as in google.type.Money."""
    value = D(nanos).scaleb(-9)
    message = to_money(value, "EUR")
    assert (message.units, message.nanos) == (0, nanos)
    assert from_money(message) == value
    assert from_shares(to_shares(value)) == value


@pytest.mark.parametrize(
    ("text", "units", "nanos"),
    [
        ("0", 0, 0),
        ("-0", 0, 0),
        ("-0.5", 0, -500_000_000),
        ("1.5", 1, 500_000_000),
        ("-1.25", -1, -250_000_000),
        ("0.000000001", 0, 1),
        ("12.3400000000000", 12, 340_000_000),
        ("9223372036854775807.999999999", 2**63 - 1, 999_999_999),
    ],
)
def test_money_splits_into_units_and_nanos_of_one_sign(text: str, units: int, nanos: int) -> None:
    message = to_money(D(text), "USD")
    assert (message.units, message.nanos) == (units, nanos)
    assert (to_shares(D(text)).units, to_shares(D(text)).nanos) == (units, nanos)
    assert from_money(message) == D(text)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0.0000000001", "more than 9 fractional digits"),
        ("-1.0000000005", "more than 9 fractional digits"),
        ("9223372036854775808", "int64"),
        ("NaN", "finite"),
        ("Infinity", "finite"),
    ],
)
def test_unrepresentable_values_are_refused(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        to_money(D(text), "USD")
    with pytest.raises(ValueError, match=match):
        to_shares(D(text))


@pytest.mark.parametrize(
    ("units", "nanos", "match"),
    [
        (0, 1_000_000_000, "outside"),
        (0, -1_000_000_000, "outside"),
        (1, -1, "opposite signs"),
        (-1, 1, "opposite signs"),
    ],
)
def test_malformed_messages_are_refused(units: int, nanos: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        from_money(jpb.Money(currency="USD", units=units, nanos=nanos))
    with pytest.raises(ValueError, match=match):
        from_shares(jpb.Shares(units=units, nanos=nanos))


# ---- serving ------------------------------------------------------------------------


def test_bk_native_is_a_kind() -> None:
    assert "bk-native" in KINDS


async def test_native_server_does_not_serve_bank_interface(native: Native) -> None:
    """bank.v1.Ledger is not registered: GetBalance is UNIMPLEMENTED."""
    stub = pb_grpc.LedgerStub(native.channel)
    error = await failure(stub.GetBalance(pb.GetBalanceRequest(account_id="A1")))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_reflection_lists_the_journal_and_not_the_ledger(native: Native) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(native.channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()
    names = {s.name for s in response.list_services_response.service}
    assert names == {"bk.v1.Journal", "grpc.reflection.v1alpha.ServerReflection"}


async def test_module_runs_the_native_server_until_sigterm() -> None:
    """`python -m sample_ledger bk-native` serves bk.v1.Journal and exits 0 on SIGTERM."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sample_ledger",
        "bk-native",
        "--listen",
        "127.0.0.1:0",
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        line = (await asyncio.wait_for(process.stderr.readline(), timeout=30)).decode()
        match = re.search(r"bk-native ledger listening on (127\.0\.0\.1:\d+)", line)
        assert match, line
        async with grpc.aio.insecure_channel(match.group(1)) as channel:
            client = await jpb_grpc.JournalStub(channel).RegisterClient(
                jpb.RegisterClientRequest(number="A1")
            )
        assert client.number == "A1"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# ---- every rpc ----------------------------------------------------------------------


async def test_register_fetch_and_opening_cash(native: Native) -> None:
    """A client registers with opening cash (settled) and a default currency of USD."""
    client = await native.register("A1", opening="1000.5")
    assert (client.number, client.holder, client.currency) == ("A1", "Holder of A1", "USD")
    assert client.registered_at.seconds > 0
    fetched = await native.stub.FetchClient(jpb.FetchClientRequest(number="A1"))
    assert fetched == client
    assert await native.cash("A1") == (D("1000.5"), D(0))
    plain = await native.register("B1", currency="EUR")
    assert plain.currency == "EUR"
    assert await native.cash("B1") == (D(0), D(0))
    position = await native.stub.Cash(jpb.CashRequest(client="B1"))
    assert position.settled.currency == position.pending.currency == "EUR"


async def test_fund_answers_the_cash_after_it(native: Native) -> None:
    """Fund moves settled cash in or out; a withdrawal below one unit has zero units and negative nanos."""
    await native.register("A1", opening="100")
    after = await native.stub.Fund(jpb.FundRequest(client="A1", amount=money("250.25", "USD")))
    assert (after.client, from_money(after.settled), from_money(after.pending)) == ("A1", D("350.25"), D(0))
    assert after.settled.currency == "USD"
    after = await native.stub.Fund(jpb.FundRequest(client="A1", amount=money("-0.5")))
    assert (after.settled.units, after.settled.nanos) == (349, 750_000_000)
    assert await native.cash("A1") == (D("349.75"), D(0))
    withdrawal = native.servicer.book.journal.of_client("A1")[-1]
    assert withdrawal.client_cash() == D("-0.5")


async def test_execute_buys_and_sells_with_signed_shares(native: Native) -> None:
    """Positive shares buy, negative shares sell; gross and commission come with the execution."""
    await native.register("A1", opening="1000")
    buy = await native.execute("A1", "AAPL", "10", "100.5")
    assert (buy.client, buy.instrument, from_shares(buy.shares)) == ("A1", "AAPL", D(10))
    assert (from_money(buy.price), from_money(buy.gross), from_money(buy.commission)) == (
        D("100.5"),
        D("1005"),
        D("0.05"),
    )
    assert buy.price.currency == buy.gross.currency == buy.commission.currency == "USD"
    assert (buy.state, buy.venue) == (jpb.EXECUTION_STATE_LIVE, "XNYS")
    assert re.fullmatch(r"trd_[0-9a-f]{12}", buy.execution_id)
    request = jpb.ExecuteRequest(
        client="A1", instrument="AAPL", shares=shares("-4"), price=money("101", "USD"), client_ref="ref-1"
    )
    sell = await native.stub.Execute(request)
    assert (sell.shares.units, from_money(sell.gross), from_money(sell.commission)) == (-4, D(404), D("0.02"))
    assert sell.client_ref == "ref-1"
    # cash: 1000 settled; pending -1005.05 for the buy and +403.98 for the sell
    assert await native.cash("A1") == (D(1000), D("-601.07"))
    assert await native.holdings("A1") == [("AAPL", D(6), D("100.5"), D("603"))]


async def test_planted_bugs_of_the_book_stay(native: Native) -> None:
    """Commission rounds half even (5 shares: 0.02) and an oversell is booked, leaving a negative holding."""
    await native.register("A1", opening="1000")
    assert from_money((await native.execute("A1", "AAPL", "5", "10")).commission) == D("0.02")
    oversold = await native.execute("A1", "KO", "-10", "60")
    assert oversold.state == jpb.EXECUTION_STATE_LIVE
    assert await native.holdings("A1", "KO") == [("KO", D(-10), D(0), D(0))]


async def test_reverse_undoes_an_execution_once(native: Native) -> None:
    await native.register("A1", opening="1000")
    buy = await native.execute("A1", "AAPL", "3", "10")
    reversed_ = await native.stub.Reverse(jpb.ReverseRequest(client="A1", execution_id=buy.execution_id))
    assert (reversed_.execution_id, reversed_.state) == (buy.execution_id, jpb.EXECUTION_STATE_REVERSED)
    assert await native.cash("A1") == (D(1000), D(0))
    assert await native.holdings("A1") == []
    again = await failure(native.stub.Reverse(jpb.ReverseRequest(client="A1", execution_id=buy.execution_id)))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    missing = await failure(native.stub.Reverse(jpb.ReverseRequest(client="A1", execution_id="trd_nope")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_reversing_a_buy_of_shares_no_longer_held_is_refused(native: Native) -> None:
    await native.register("A1", opening="1000")
    buy = await native.execute("A1", "AAPL", "3", "10")
    await native.execute("A1", "AAPL", "-2", "10")
    error = await failure(native.stub.Reverse(jpb.ReverseRequest(client="A1", execution_id=buy.execution_id)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_clear_settles_live_executions(native: Native) -> None:
    """Clear moves pending cash to settled and marks live executions cleared; reversed ones stay out."""
    await native.register("A1", opening="1000")
    first = await native.execute("A1", "AAPL", "2", "10")
    second = await native.execute("A1", "KO", "3", "20")
    gone = await native.execute("A1", "XOM", "2", "30")
    await native.stub.Reverse(jpb.ReverseRequest(client="A1", execution_id=gone.execution_id))
    cleared = await native.stub.Clear(jpb.ClearRequest(client="A1"))
    assert cleared.client == "A1"
    assert list(cleared.execution_ids) == sorted([first.execution_id, second.execution_id])
    assert from_money(cleared.net_cash) == D("-80.03")
    assert cleared.net_cash.currency == "USD"
    assert await native.cash("A1") == (D("919.97"), D(0))
    page = await native.stub.ScanExecutions(jpb.ScanExecutionsRequest(client="A1"))
    assert [e.state for e in page.executions] == [
        jpb.EXECUTION_STATE_CLEARED,
        jpb.EXECUTION_STATE_CLEARED,
        jpb.EXECUTION_STATE_REVERSED,
    ]
    nothing = await native.stub.Clear(jpb.ClearRequest(client="A1"))
    assert (list(nothing.execution_ids), from_money(nothing.net_cash)) == ([], D(0))


async def test_clear_through_a_time_leaves_later_executions_live(native: Native) -> None:
    await native.register("A1", opening="1000")
    await native.execute("A1", "AAPL", "2", "10")
    past = jpb.ClearRequest(client="A1")
    past.through.FromDatetime(datetime(2000, 1, 1, tzinfo=UTC))
    assert list((await native.stub.Clear(past)).execution_ids) == []
    assert await native.cash("A1") == (D(1000), D("-20.01"))


async def test_holdings_all_one_and_flat(native: Native) -> None:
    """All non-empty holdings by instrument; one instrument asked for is listed even when flat."""
    await native.register("A1", opening="10000")
    await native.execute("A1", "XOM", "3", "30")
    await native.execute("A1", "AAPL", "10", "100")
    await native.execute("A1", "AAPL", "30", "101.5")
    await native.execute("A1", "KO", "2", "60")
    await native.execute("A1", "KO", "-2", "61")  # flat again
    await native.execute("A1", "BRK.B", "3", "10.33333")
    assert await native.holdings("A1") == [
        ("AAPL", D(40), D("101.125"), D("4045")),
        ("BRK.B", D(3), D("10.3333"), D("31")),
        ("XOM", D(3), D(30), D(90)),
    ]
    assert await native.holdings("A1", "AAPL") == [("AAPL", D(40), D("101.125"), D("4045"))]
    assert await native.holdings("A1", "KO") == [("KO", D(0), D(0), D(0))]
    assert await native.holdings("A1", "MSFT") == [("MSFT", D(0), D(0), D(0))]
    view = await native.stub.Holdings(jpb.HoldingsRequest(client="A1", instrument="MSFT"))
    assert view.client == "A1"
    assert view.holdings[0].HasField("shares")
    assert view.holdings[0].average_cost.currency == "USD"
    assert view.as_of.seconds > 0


async def test_scan_clients_pages_by_offset(native: Native) -> None:
    """Pages in number order; next_offset is where the next page starts, 0 after the last."""
    for number in ["C3", "C1", "C5", "C2", "C4"]:
        await native.register(number)
    seen, offsets, offset = [], [], 0
    while True:
        page = await native.stub.ScanClients(jpb.ScanClientsRequest(limit=2, offset=offset))
        seen += [c.number for c in page.clients]
        offsets.append(page.next_offset)
        if not page.next_offset:
            break
        offset = page.next_offset
    assert seen == ["C1", "C2", "C3", "C4", "C5"]
    assert offsets == [2, 4, 0]
    everything = await native.stub.ScanClients(jpb.ScanClientsRequest())  # limit 0: the default page
    assert ([c.number for c in everything.clients], everything.next_offset) == (seen, 0)
    large = await native.stub.ScanClients(jpb.ScanClientsRequest(limit=10_000, offset=1))
    assert ([c.number for c in large.clients], large.next_offset) == (seen[1:], 0)
    exact = await native.stub.ScanClients(jpb.ScanClientsRequest(limit=5))
    assert (len(exact.clients), exact.next_offset) == (5, 0)
    past = await native.stub.ScanClients(jpb.ScanClientsRequest(limit=2, offset=99))
    assert (list(past.clients), past.next_offset) == ([], 0)


async def test_scan_executions_pages_in_booking_order_by_instrument(native: Native) -> None:
    await native.register("A1", opening="10000")
    await native.register("A2", opening="10000")
    booked = []
    for instrument in ["KO", "AAPL", "KO", "KO", "AAPL", "KO", "KO"]:
        booked.append((await native.execute("A1", instrument, "2", "10")).execution_id)
    await native.execute("A2", "KO", "2", "10")
    ko = [
        i
        for i, name in zip(booked, ["KO", "AAPL", "KO", "KO", "AAPL", "KO", "KO"], strict=True)
        if name == "KO"
    ]
    seen, offsets, offset = [], [], 0
    while True:
        request = jpb.ScanExecutionsRequest(client="A1", instrument="KO", limit=2, offset=offset)
        page = await native.stub.ScanExecutions(request)
        assert {e.instrument for e in page.executions} == {"KO"}
        seen += [e.execution_id for e in page.executions]
        offsets.append(page.next_offset)
        if not page.next_offset:
            break
        offset = page.next_offset
    assert seen == ko
    assert offsets == [2, 4, 0]
    everything = await native.stub.ScanExecutions(jpb.ScanExecutionsRequest(client="A1"))
    assert ([e.execution_id for e in everything.executions], everything.next_offset) == (booked, 0)
    first = await native.stub.ScanExecutions(jpb.ScanExecutionsRequest(client="A1", limit=3))
    assert ([e.execution_id for e in first.executions], first.next_offset) == (booked[:3], 3)


@pytest.mark.parametrize("rpc", ["ScanClients", "ScanExecutions"])
@pytest.mark.parametrize(
    ("limit", "offset", "fields"), [(-1, 0, ["limit"]), (0, -1, ["offset"]), (-5, -5, ["limit", "offset"])]
)
async def test_negative_limit_or_offset_is_invalid(
    native: Native, rpc: str, limit: int, offset: int, fields: list[str]
) -> None:
    await native.register("A1")
    if rpc == "ScanClients":
        call = native.stub.ScanClients(jpb.ScanClientsRequest(limit=limit, offset=offset))
    else:
        call = native.stub.ScanExecutions(jpb.ScanExecutionsRequest(client="A1", limit=limit, offset=offset))
    error = await failure(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == fields


async def test_transactions_stream_the_clients_journal(native: Native) -> None:
    """One Transaction per journal transaction of the client, with its kind and signed movements."""
    await native.register("A1", opening="1000")
    await native.register("A2", opening="50")
    await native.stub.Fund(jpb.FundRequest(client="A1", amount=money("-0.25")))
    buy = await native.execute("A1", "AAPL", "10", "10")
    sell = await native.execute("A1", "AAPL", "-4", "11")
    await native.stub.Reverse(jpb.ReverseRequest(client="A1", execution_id=sell.execution_id))
    await native.stub.Clear(jpb.ClearRequest(client="A1"))
    streamed = [t async for t in native.stub.Transactions(jpb.TransactionsRequest(client="A1"))]
    assert [t.kind for t in streamed] == [
        jpb.TRANSACTION_KIND_FUNDING,
        jpb.TRANSACTION_KIND_FUNDING,
        jpb.TRANSACTION_KIND_EXECUTION,
        jpb.TRANSACTION_KIND_COMMISSION,
        jpb.TRANSACTION_KIND_EXECUTION,
        jpb.TRANSACTION_KIND_COMMISSION,
        jpb.TRANSACTION_KIND_REVERSAL,
        jpb.TRANSACTION_KIND_CLEARING,
    ]
    assert [from_money(t.cash) for t in streamed] == [
        D(1000),
        D("-0.25"),
        D(-100),
        D("-0.05"),
        D(44),
        D("-0.02"),
        D("-43.98"),
        D(0),  # clearing moves pending cash to settled: no net movement
    ]
    assert {t.cash.currency for t in streamed} == {"USD"}
    assert [from_shares(t.shares) if t.HasField("shares") else None for t in streamed] == [
        None,
        None,
        D(10),
        None,
        D(-4),
        None,
        D(4),
        None,
    ]
    assert [t.execution_id for t in streamed] == ["", ""] + [buy.execution_id] * 2 + [
        sell.execution_id
    ] * 3 + [""]
    assert [t.instrument for t in streamed] == ["", ""] + ["AAPL"] * 5 + [""]
    assert {t.client for t in streamed} == {"A1"}
    journal = native.servicer.book.journal
    assert [t.number for t in streamed] == [t.number for t in journal.of_client("A1")]
    assert streamed[0].number == 1
    assert streamed[1].number == 3  # A2's opening cash is number 2
    assert all(t.posted_at.seconds > 0 for t in streamed)
    other = [t async for t in native.stub.Transactions(jpb.TransactionsRequest(client="A2"))]
    assert [t.number for t in other] == [2]


# ---- refusals -----------------------------------------------------------------------


def _unknown_client_calls(stub: Any) -> list[tuple[str, Any]]:
    return [
        ("number", lambda: stub.FetchClient(jpb.FetchClientRequest(number="Z9"))),
        ("client", lambda: stub.Fund(jpb.FundRequest(client="Z9", amount=money("5")))),
        ("client", lambda: stub.Cash(jpb.CashRequest(client="Z9"))),
        (
            "client",
            lambda: stub.Execute(
                jpb.ExecuteRequest(client="Z9", instrument="KO", shares=shares("1"), price=money("1"))
            ),
        ),
        ("client", lambda: stub.Reverse(jpb.ReverseRequest(client="Z9", execution_id="trd_000000000000"))),
        ("client", lambda: stub.Clear(jpb.ClearRequest(client="Z9"))),
        ("client", lambda: stub.Holdings(jpb.HoldingsRequest(client="Z9"))),
        ("client", lambda: stub.Holdings(jpb.HoldingsRequest(client="Z9", instrument="KO"))),
        ("client", lambda: stub.ScanExecutions(jpb.ScanExecutionsRequest(client="Z9"))),
        ("client", lambda: _drain(stub.Transactions(jpb.TransactionsRequest(client="Z9")))),
    ]


async def _drain(call: Any) -> list[Any]:
    return [item async for item in call]


async def test_an_unknown_client_is_invalid_argument_naming_the_client_field(native: Native) -> None:
    """Every rpc on a client never registered: INVALID_ARGUMENT (BK's planted bug 2, as in its book),
    BK's words, a violation on the client field."""
    await native.register("A1", opening="100")
    for field, call in _unknown_client_calls(native.stub):
        error = await failure(call())
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert error.details() == "client 'Z9' is not registered"
        assert bad_fields(error) == [field]
        assert "account" not in error.details()


async def test_register_twice_is_already_exists(native: Native) -> None:
    await native.register("A1")
    error = await failure(native.register("A1"))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error.details() == "client 'A1' is already registered"


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        (jpb.RegisterClientRequest(), ["number"]),
        (jpb.RegisterClientRequest(number="x" * 65), ["number"]),
        (jpb.RegisterClientRequest(number="A1", currency="usd"), ["currency"]),
        (jpb.RegisterClientRequest(number="A1", opening_cash=money("-5")), ["opening_cash"]),
        (jpb.RegisterClientRequest(number="A1", opening_cash=money("1.005")), ["opening_cash"]),
        (jpb.RegisterClientRequest(number="A1", opening_cash=money("1000000000000.01")), ["opening_cash"]),
        (jpb.RegisterClientRequest(number="A1", opening_cash=jpb.Money(units=1, nanos=-1)), ["opening_cash"]),
        (jpb.RegisterClientRequest(number="A1", opening_cash=money("5", "EUR")), ["opening_cash"]),
        (
            jpb.RegisterClientRequest(number="A1", currency="EUR", opening_cash=money("5", "USD")),
            ["opening_cash"],
        ),
        (
            jpb.RegisterClientRequest(currency="eur", opening_cash=money("-1", "USD")),
            ["number", "currency", "opening_cash"],
        ),
    ],
)
async def test_register_refusals_name_native_fields(
    native: Native, request_: jpb.RegisterClientRequest, fields: list[str]
) -> None:
    error = await failure(native.stub.RegisterClient(request_))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == fields
    assert native.servicer.book.accounts == {}


async def test_register_with_matching_or_zero_opening_cash(native: Native) -> None:
    await native.stub.RegisterClient(
        jpb.RegisterClientRequest(number="E1", currency="EUR", opening_cash=money("5", "EUR"))
    )
    await native.stub.RegisterClient(jpb.RegisterClientRequest(number="E2", opening_cash=money("0")))
    assert await native.cash("E1") == (D(5), D(0))
    assert await native.cash("E2") == (D(0), D(0))
    assert len(native.servicer.book.journal.transactions) == 1


@pytest.mark.parametrize(
    ("amount", "description"),
    [
        (None, "is required"),
        (money("0"), "must not be zero"),
        (money("0.001"), "takes at most 2 decimal places"),
        (money("-1000000000000.01"), "must be at most 1000000000000 in magnitude"),
        (jpb.Money(units=-1, nanos=5), "is malformed"),
        (jpb.Money(nanos=1_000_000_000), "is malformed"),
    ],
)
async def test_fund_refusals_name_amount(native: Native, amount: jpb.Money | None, description: str) -> None:
    await native.register("A1")
    error = await failure(native.stub.Fund(jpb.FundRequest(client="A1", amount=amount)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    ((field, text),) = violations(error)
    assert field == "amount"
    assert text.startswith(description)


async def test_a_foreign_currency_is_invalid(native: Native) -> None:
    """Money in a currency other than the client's is refused, naming the field; unset is the client's."""
    await native.register("A1", opening="100")
    error = await failure(native.stub.Fund(jpb.FundRequest(client="A1", amount=money("5", "EUR"))))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == [("amount", "is in EUR, not in the client's currency USD")]
    request = jpb.ExecuteRequest(client="A1", instrument="KO", shares=shares("1"), price=money("10", "GBP"))
    error = await failure(native.stub.Execute(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["price"]
    assert await native.cash("A1") == (D(100), D(0))
    assert native.servicer.book.trades == {}


@pytest.mark.parametrize(
    ("instrument", "count", "price", "fields"),
    [
        ("KO", "0", "10", ["shares"]),
        ("KO", None, "10", ["shares"]),
        ("KO", "0.00001", "10", ["shares"]),
        ("KO", "-1000000001", "10", ["shares"]),
        ("KO", "1", "0", ["price"]),
        ("KO", "1", "-10", ["price"]),
        ("KO", "1", None, ["price"]),
        ("KO", "1", "10.0000001", ["price"]),
        ("KO", "1", "1000000000.5", ["price"]),
        ("ko", "1", "10", ["instrument"]),
        ("", "0", "0", ["instrument", "shares", "price"]),
    ],
)
async def test_execute_refusals_name_native_fields(
    native: Native, instrument: str, count: str | None, price: str | None, fields: list[str]
) -> None:
    await native.register("A1", opening="100")
    request = jpb.ExecuteRequest(client="A1", instrument=instrument)
    if count is not None:
        request.shares.CopyFrom(shares(count))
    if price is not None:
        request.price.CopyFrom(money(price))
    error = await failure(native.stub.Execute(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == fields
    assert error.details().startswith("invalid request: ")


async def test_zero_shares_is_invalid_before_the_client_is_looked_up(native: Native) -> None:
    """Fields are checked first: zero shares for an unknown client is INVALID_ARGUMENT on shares."""
    request = jpb.ExecuteRequest(client="Z9", instrument="KO", shares=shares("0"), price=money("10"))
    error = await failure(native.stub.Execute(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == [("shares", "must not be zero")]


async def test_a_bad_instrument_in_holdings_or_scans_is_invalid(native: Native) -> None:
    await native.register("A1")
    for call in (
        native.stub.Holdings(jpb.HoldingsRequest(client="A1", instrument="not a ticker")),
        native.stub.ScanExecutions(jpb.ScanExecutionsRequest(client="A1", instrument="not a ticker")),
    ):
        error = await failure(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(error) == ["instrument"]


# ---- the same book as BK behind bank.v1.Ledger ----------------------------------------


class _Context:
    """Enough of a grpc.aio.ServicerContext for servicer methods called directly."""

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise LedgerError(code, message)

    async def abort_with_status(self, status: Any) -> None:
        raise LedgerError(status.code, status.details)


def _stepping_clock() -> Callable[[], datetime]:
    ticks: Iterator[int] = iter(range(10**6))
    start = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    return lambda: start + timedelta(seconds=next(ticks))


async def test_the_native_servicer_keeps_the_same_book_as_bk() -> None:
    """One sequence through BkServicer (bank.v1.Ledger) and BkNativeServicer (bk.v1.Journal): equal books."""
    bank_side, native_side = BkServicer(_stepping_clock()), BkNativeServicer(_stepping_clock())
    ctx = _Context()

    async def both_trade(account: str, symbol: str, signed: str, price: str) -> tuple[str, str]:
        side = pb.SIDE_SELL if signed.startswith("-") else pb.SIDE_BUY
        bank_trade = await bank_side.PostTrade(order(account, symbol, side, signed.lstrip("-"), price), ctx)
        request = jpb.ExecuteRequest(
            client=account, instrument=symbol, shares=shares(signed), price=money(price)
        )
        native_trade = await native_side.Execute(request, ctx)
        assert D(bank_trade.fee) == from_money(native_trade.commission)
        assert D(bank_trade.notional) == from_money(native_trade.gross)
        return bank_trade.trade_id, native_trade.execution_id

    await bank_side.OpenAccount(
        pb.OpenAccountRequest(account_id="A1", owner_name="a", initial_deposit="5000"), ctx
    )
    await native_side.RegisterClient(
        jpb.RegisterClientRequest(number="A1", holder="a", opening_cash=money("5000")), ctx
    )
    await bank_side.OpenAccount(pb.OpenAccountRequest(account_id="E1", currency="EUR"), ctx)
    await native_side.RegisterClient(jpb.RegisterClientRequest(number="E1", currency="EUR"), ctx)
    await bank_side.Deposit(pb.DepositRequest(account_id="E1", amount="300.5"), ctx)
    await native_side.Fund(jpb.FundRequest(client="E1", amount=money("300.5", "EUR")), ctx)
    await bank_side.Deposit(pb.DepositRequest(account_id="A1", amount="-0.75"), ctx)
    await native_side.Fund(jpb.FundRequest(client="A1", amount=money("-0.75")), ctx)
    await both_trade("A1", "AAPL", "5", "100.25")  # fee rounded half even
    await both_trade("A1", "AAPL", "2.5", "10.125")
    sold = await both_trade("A1", "AAPL", "-3", "101")
    await both_trade("E1", "KO", "-4", "60")  # an oversell, booked
    await both_trade("A1", "MSFT", "7", "400.333333")
    await bank_side.CancelTrade(pb.CancelTradeRequest(account_id="A1", trade_id=sold[0]), ctx)
    await native_side.Reverse(jpb.ReverseRequest(client="A1", execution_id=sold[1]), ctx)
    through = datetime(2024, 1, 2, 3, 4, 14, tzinfo=UTC)  # the first two trades only (one is reversed)
    settle = pb.SettleTradesRequest(account_id="A1")
    settle.settle_through.FromDatetime(through)
    clear = jpb.ClearRequest(client="A1")
    clear.through.FromDatetime(through)
    report = await bank_side.SettleTrades(settle, ctx)
    clearing = await native_side.Clear(clear, ctx)
    assert report.settled_count == len(clearing.execution_ids) > 0
    assert D(report.net_cash) == from_money(clearing.net_cash)
    await both_trade("A1", "XOM", "9", "30")
    await bank_side.SettleTrades(pb.SettleTradesRequest(account_id="E1"), ctx)
    await native_side.Clear(jpb.ClearRequest(client="E1"), ctx)

    bank_book, native_book = bank_side.book, native_side.book
    assert native_book.journal.cached() == bank_book.journal.cached()
    assert derive(native_book.journal.transactions) == native_book.journal.cached()

    def shape(book: Any) -> list[tuple[Any, ...]]:
        order_of = {
            trade_id: n
            for n, trade_id in enumerate(
                dict.fromkeys(t.trade_id for t in book.journal.transactions if t.trade_id)
            )
        }
        return [
            (t.number, t.kind, t.client, t.posted_at, t.postings, t.symbol, order_of.get(t.trade_id))
            for t in book.journal.transactions
        ]

    assert shape(native_book) == shape(bank_book)
    for account_id in ("A1", "E1"):
        bank_balance = await bank_side.GetBalance(pb.GetBalanceRequest(account_id=account_id), ctx)
        native_cash = await native_side.Cash(jpb.CashRequest(client=account_id), ctx)
        settled, pending = from_money(native_cash.settled), from_money(native_cash.pending)
        assert (D(bank_balance.cash), D(bank_balance.unsettled_cash)) == (settled + pending, pending)
        portfolio = await bank_side.GetPortfolio(pb.GetPortfolioRequest(account_id=account_id), ctx)
        view = await native_side.Holdings(jpb.HoldingsRequest(client=account_id), ctx)
        assert sorted(
            (p.symbol, D(p.quantity), D(p.average_price), D(p.cost_basis)) for p in portfolio.positions
        ) == [
            (h.instrument, from_shares(h.shares), from_money(h.average_cost), from_money(h.book_value))
            for h in view.holdings
        ]
        entries = [
            e
            async for e in bank_side.StreamLedgerEntries(
                pb.StreamLedgerEntriesRequest(account_id=account_id), ctx
            )
        ]
        streamed = [
            t async for t in native_side.Transactions(jpb.TransactionsRequest(client=account_id), ctx)
        ]
        assert [(D(e.amount), D(e.quantity) if e.quantity else None) for e in entries] == [
            (from_money(t.cash), from_shares(t.shares) if t.HasField("shares") else None) for t in streamed
        ]
