"""The venue itself, on each side directly (no shim): every method, the house rule, refusals, ids
minted and named within one session, and the two sides' books after the same workload."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, json_format
from grpc import aio

from tests.services.venue import DESCRIPTOR_SET, REGISTRY, book_of, run_workload
from tests.services.venue.client import VenueClient
from tests.services.venue.messages import BUY, SELL, STATUS_NAMES, new
from tests.services.venue.server import Served

ID_FORMATS = {
    "bank": (re.compile(r"O[0-9]+"), re.compile(r"E[0-9]+")),
    "bk": (re.compile(r"ord-[0-9a-f]{12}"), re.compile(r"x-[0-9a-f]{12}")),
}
_ANY_ID = re.compile(r"(?P<order>O[0-9]+|ord-[0-9a-f]{12})|(?P<exec>E[0-9]+|x-[0-9a-f]{12})")


@pytest.fixture
async def client(side: Served) -> AsyncIterator[VenueClient]:
    async with aio.insecure_channel(side.address) as channel:
        yield VenueClient(channel)


def order(symbol: str, side: int, quantity: int, price: str) -> Any:
    return new("NewOrder", symbol=symbol, side=side, quantity=quantity, limit_price=price)


def trade(account: str, **action: Any) -> Any:
    return new("TradeRequest", account=account, **action)


def cancel(account: str, order_id: str) -> Any:
    return trade(account, cancel=new("CancelOrder", order_id=order_id))


def modify(account: str, order_id: str, quantity: int) -> Any:
    return trade(account, modify=new("ModifyOrder", order_id=order_id, quantity=quantity))


def ack_of(ack: Any) -> tuple[str, str, list[tuple[int, str]]]:
    return STATUS_NAMES[ack.status], ack.reason, [(f.quantity, f.price) for f in ack.fills]


async def refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(aio.AioRpcError) as refused:
        await call
    return refused.value.code(), refused.value.details() or ""


def test_the_descriptor_set_describes_every_method_of_the_venue_and_marks_its_reads() -> None:
    """venue.proto compiles into a descriptor set whose methods have the right call kinds, and exactly
    the five reads are marked NO_SIDE_EFFECTS."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET).file
    assert [f.package for f in files] == ["google.protobuf", "venue.v1"]  # and the Timestamp it imports
    kinds = {
        path.rpartition("/")[2]: (info.client_streaming, info.server_streaming, info.read_only)
        for path, info in REGISTRY.methods.items()
        if path.startswith("/venue.v1.Venue/")
    }
    assert kinds == {
        "OpenAccount": (False, False, False),
        "Trade": (True, True, False),
        "SubmitBatch": (True, False, False),
        "CancelOrder": (False, False, False),
        "GetOrder": (False, False, True),
        "ListOpenOrders": (False, False, True),
        "StreamFills": (False, True, True),
        "GetAccount": (False, False, True),
        "ListAccounts": (False, False, True),
    }


async def test_open_account_answers_the_account_and_refuses_bad_or_repeated_opens(
    client: VenueClient,
) -> None:
    """OpenAccount answers the new account with two-place cash; a second open, a bad amount or no name
    is refused with its own code."""
    account = await client.open_account("A", "100.5")
    assert (account.account, account.cash, dict(account.positions), account.open_orders) == (
        "A",
        "100.50",
        {},
        0,
    )
    assert await refusal(client.open_account("A", "1")) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "account already exists",
    )
    for cash in ("1.234", "-5", "1e3", ""):
        code, _ = await refusal(client.open_account("B", cash))
        assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert (await refusal(client.open_account("", "1")))[0] is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_session_acks_every_request_in_order_and_acts_on_the_ids_its_acks_minted(
    side: Served, client: VenueClient
) -> None:
    """In one Trade session, each request gets one ack; new orders fill at once up to 100 shares and
    mint ids in the side's format; later requests of the same session modify and cancel by those ids,
    and the book moves cash and positions by the fills."""
    order_format, exec_format = ID_FORMATS[side.side]
    await client.open_account("A", "5000")
    async with client.session() as session:
        big = await session.send(trade("A", new=order("KO", BUY, 150, "10.5")))
        small = await session.send(trade("A", new=order("KO", SELL, 40, "12")))
        modified = await session.send(modify("A", big.order_id, 20))
        cancelled = await session.send(cancel("A", big.order_id))
        again = await session.send(cancel("A", big.order_id))
        filled = await session.send(modify("A", small.order_id, 5))
        poor = await session.send(trade("A", new=order("KO", BUY, 100, "999.99")))
        invalid = await session.send(trade("A", new=order("KO", BUY, 0, "1")))
    assert ack_of(big) == ("PARTIALLY_FILLED", "", [(100, "10.50")])
    assert ack_of(small) == ("FILLED", "", [(40, "12.00")])
    assert order_format.fullmatch(big.order_id)
    assert order_format.fullmatch(small.order_id)
    assert all(exec_format.fullmatch(f.exec_id) for f in (*big.fills, *small.fills))
    assert [(a.order_id, ack_of(a)) for a in (modified, cancelled, again, filled)] == [
        (big.order_id, ("MODIFIED", "", [])),
        (big.order_id, ("CANCELLED", "", [])),
        (big.order_id, ("REJECTED", "order not open", [])),
        (small.order_id, ("REJECTED", "order not open", [])),
    ]
    assert [(a.order_id, ack_of(a)) for a in (poor, invalid)] == [
        ("", ("REJECTED", "insufficient cash", [])),
        ("", ("REJECTED", "invalid order", [])),
    ]
    account = await client.get_account("A")
    assert (account.cash, dict(account.positions), account.open_orders) == ("4430.00", {"KO": 60}, 0)
    assert side.book.order_ids == [big.order_id, small.order_id]
    assert side.book.exec_ids == [big.fills[0].exec_id, small.fills[0].exec_id]


async def test_a_batch_places_one_accounts_orders_and_leaves_rejected_ones_out(client: VenueClient) -> None:
    """SubmitBatch places each order as a session would, answering the ids of those placed and the
    shares filled; a batch of several accounts, of an unknown one, or of no order is refused whole."""
    await client.open_account("A", "1000")
    await client.open_account("B", "1000")
    summary = await client.submit_batch(
        [
            new("NewOrderRequest", account="A", order=order("AAPL", BUY, 120, "1")),
            new("NewOrderRequest", account="A", order=order("AAPL", BUY, 100, "99.99")),  # unaffordable
            new("NewOrderRequest", account="A", order=order("INTC", SELL, 30, "2.5")),
        ]
    )
    assert (summary.account, len(summary.order_ids), summary.filled_quantity) == ("A", 2, 130)
    account = await client.get_account("A")
    assert (account.cash, dict(account.positions), account.open_orders) == (
        "975.00",
        {"AAPL": 100, "INTC": -30},
        1,
    )
    mixed = [new("NewOrderRequest", account=a, order=order("KO", BUY, 1, "1")) for a in ("A", "B")]
    assert await refusal(client.submit_batch(mixed)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "a batch holds the orders of one account",
    )
    unknown = [new("NewOrderRequest", account="Z", order=order("KO", BUY, 1, "1"))]
    assert await refusal(client.submit_batch(unknown)) == (grpc.StatusCode.NOT_FOUND, "unknown account")
    assert (await refusal(client.submit_batch([])))[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert (await client.get_account("B")).cash == "1000.00"


async def test_cancel_order_closes_a_resting_order_and_refuses_any_other(client: VenueClient) -> None:
    """CancelOrder answers the cancelled order; an order no longer open is FAILED_PRECONDITION and an
    unknown id NOT_FOUND, with details naming no id."""
    await client.open_account("A", "1000")
    async with client.session() as session:
        resting = await session.send(trade("A", new=order("KO", BUY, 101, "1")))
    done = await client.cancel_order(resting.order_id)
    assert (done.order_id, STATUS_NAMES[done.status], done.quantity, done.open_quantity) == (
        resting.order_id,
        "CANCELLED",
        101,
        0,
    )
    assert [(f.exec_id, f.quantity) for f in done.fills] == [(resting.fills[0].exec_id, 100)]
    assert await refusal(client.cancel_order(resting.order_id)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "order not open",
    )
    assert await refusal(client.cancel_order("O999999")) == (grpc.StatusCode.NOT_FOUND, "unknown order")


async def test_reads_show_orders_fills_and_accounts_page_by_page(client: VenueClient) -> None:
    """GetOrder, ListOpenOrders (by symbol or all), StreamFills (oldest first), GetAccount and
    ListAccounts (page tokens followed to the end) show the book; unknown ids and accounts are
    NOT_FOUND."""
    for name in ("E", "D", "C", "B", "A"):
        await client.open_account(name, "1000")
    async with client.session() as session:
        first = await session.send(trade("A", new=order("KO", BUY, 110, "1.1")))
        second = await session.send(trade("A", new=order("AAPL", SELL, 105, "2")))
        await session.send(trade("B", new=order("KO", BUY, 300, "1")))
    got = await client.get_order(first.order_id)
    assert (got.account, got.symbol, got.side, got.quantity, got.open_quantity, STATUS_NAMES[got.status]) == (
        "A",
        "KO",
        BUY,
        110,
        10,
        "PARTIALLY_FILLED",
    )
    assert {o.account for o in (await client.list_open_orders()).orders} == {"A", "B"}
    assert [o.order_id for o in (await client.list_open_orders("AAPL")).orders] == [second.order_id]
    fills = await client.stream_fills("A")
    assert [(f.exec_id, f.quantity, f.price) for f in fills] == [
        (first.fills[0].exec_id, 100, "1.10"),
        (second.fills[0].exec_id, 100, "2.00"),
    ]
    assert await client.stream_fills("C") == []
    account = await client.get_account("A")
    assert (account.cash, dict(account.positions), account.open_orders) == (
        "1090.00",
        {"KO": 100, "AAPL": -100},
        2,
    )
    page = await client.list_accounts(page_size=2)
    assert ([a.account for a in page.accounts], page.next_page_token) == (["A", "B"], "B")
    assert [a.account for a in await client.all_accounts(page_size=2)] == ["A", "B", "C", "D", "E"]
    assert (await client.list_accounts(page_size=5)).next_page_token == ""
    assert await refusal(client.get_order("ord-000000000000")) == (grpc.StatusCode.NOT_FOUND, "unknown order")
    assert await refusal(client.get_account("Z")) == (grpc.StatusCode.NOT_FOUND, "unknown account")
    assert await refusal(client.stream_fills("Z")) == (grpc.StatusCode.NOT_FOUND, "unknown account")


def _normalised(answer: Any, names: dict[str, str]) -> Any:
    """An answer as a dict, each id replaced by its kind and the rank of its first appearance."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and (match := _ANY_ID.fullmatch(value)):
            kind = "order" if match["order"] else "exec"
            return names.setdefault(value, f"{kind}#{sum(n.startswith(kind) for n in names.values())}")
        return value

    return walk(json_format.MessageToDict(answer, preserving_proto_field_name=True))


async def _script(address: str) -> list[Any]:
    """The same calls, refusals included; each answer normalised, or the refusal's code and details."""
    names: dict[str, str] = {}
    out: list[Any] = []
    async with aio.insecure_channel(address) as channel:
        client = VenueClient(channel)

        async def call(answer: Any) -> None:
            try:
                out.append(_normalised(await answer, names))
            except aio.AioRpcError as error:
                out.append((error.code().name, error.details()))

        await call(client.open_account("A", "10000"))
        await call(client.open_account("B", "0"))
        async with client.session() as session:
            acks = [await session.send(trade("A", new=order("KO", BUY, 250, "20.05")))]
            acks.append(await session.send(trade("A", new=order("AAPL", SELL, 90, "3"))))
            acks.append(await session.send(modify("A", acks[0].order_id, 7)))
            acks.append(await session.send(cancel("A", "O424242")))
            acks.append(await session.send(modify("A", "ord-424242424242", 1)))
            acks.append(await session.send(trade("B", new=order("KO", BUY, 1, "0.01"))))
            acks.append(await session.send(trade("Z", new=order("KO", BUY, 1, "1"))))
            acks.append(await session.send(trade("A")))
            out.extend(_normalised(a, names) for a in acks)
        await call(
            client.submit_batch([new("NewOrderRequest", account="A", order=order("KO", SELL, 130, "21"))])
        )
        await call(client.cancel_order("O424242"))
        await call(client.get_order("ord-424242424242"))
        await call(client.cancel_order(acks[1].order_id))
        await call(client.get_order(acks[0].order_id))
        await call(client.get_account("A"))
        out.append([_normalised(f, names) for f in await client.stream_fills("A")])
        listed = await client.list_open_orders()
        out.append(sorted((_normalised(o, names) for o in listed.orders), key=repr))
        await call(client.list_accounts(page_size=1))
    return out


async def test_both_sides_answer_the_same_calls_alike_but_for_their_ids_and_listing_order(
    bank: Served, bk: Served
) -> None:
    """The same calls to Bank and to BK get the same answers, refusals and their wording included,
    once each side's ids are read as ranks of first appearance and open orders as a set."""
    bank_answers, bk_answers = await _script(bank.address), await _script(bk.address)
    assert bk_answers == bank_answers
    rejected = [a for a in bank_answers if isinstance(a, dict) and a.get("status") == "REJECTED"]
    assert [(a.get("order_id", ""), a["reason"]) for a in rejected] == [
        ("", "unknown order"),
        ("", "unknown order"),
        ("", "insufficient cash"),
        ("", "unknown account"),
        ("", "no action"),
    ]
    assert ("NOT_FOUND", "unknown order") in bank_answers


async def test_unknown_order_ids_are_refused_alike_and_never_named_in_the_refusal(
    bank: Served, bk: Served
) -> None:
    """An order id a side never minted (in either side's format) is REJECTED "unknown order" in a
    session, and NOT_FOUND "unknown order" by CancelOrder and GetOrder, on both sides alike."""
    seen: dict[str, list[Any]] = {}
    for served in (bank, bk):
        async with aio.insecure_channel(served.address) as channel:
            client = VenueClient(channel)
            await client.open_account("A", "1")
            answers: list[Any] = []
            for unknown in ("O77", "ord-0123456789ab"):
                async with client.session() as session:
                    answers.append(ack_of(await session.send(cancel("A", unknown))))
                    answers.append(ack_of(await session.send(modify("A", unknown, 3))))
                answers.append(await refusal(client.cancel_order(unknown)))
                answers.append(await refusal(client.get_order(unknown)))
            seen[served.side] = answers
    assert (
        seen["bank"]
        == seen["bk"]
        == [
            ("REJECTED", "unknown order", []),
            ("REJECTED", "unknown order", []),
            (grpc.StatusCode.NOT_FOUND, "unknown order"),
            (grpc.StatusCode.NOT_FOUND, "unknown order"),
        ]
        * 2
    )


async def test_open_orders_are_listed_oldest_first_by_bank_and_newest_first_by_bk(
    bank: Served, bk: Served
) -> None:
    """The one benign difference besides ids: ListOpenOrders comes in another order on BK."""
    listed = {}
    for served in (bank, bk):
        async with aio.insecure_channel(served.address) as channel:
            client = VenueClient(channel)
            await client.open_account("A", "100000")
            async with client.session() as session:
                minted = [
                    (await session.send(trade("A", new=order(s, BUY, 150, "1")))).order_id for s in "XYZ"
                ]
            listed[served.side] = [minted.index(o.order_id) for o in (await client.list_open_orders()).orders]
    assert listed == {"bank": [0, 1, 2], "bk": [2, 1, 0]}


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_every_answer_of_the_workload_is_as_predicted(side: Served, concurrency: int) -> None:
    """The workload's predictions (every ack, batch sizes, which cancels are refused) hold on each
    side, sequentially and with concurrent tasks sharing accounts, and it exercises what it promises."""
    result = await run_workload(
        side.address, seed=11, accounts=4, sessions=30, calls=90, concurrency=concurrency
    )
    assert result.errors == []
    assert result.calls["Trade"] == 30
    assert sum(result.calls.values()) == 4 + 30 + 90
    assert result.in_session_references > 10
    assert result.acks["REJECTED: unknown order"] > 0
    assert result.acks["MODIFIED"] > 0
    assert result.acks["CANCELLED"] > 0
    assert result.acks["REJECTED: insufficient cash"] > 0
    assert {"CancelOrder NOT_FOUND", "CancelOrder FAILED_PRECONDITION", "GetOrder NOT_FOUND"} <= set(
        result.refusals
    )
    order_format, exec_format = ID_FORMATS[side.side]
    assert all(order_format.fullmatch(i) for i in result.minted)
    assert all(exec_format.fullmatch(i) for i in result.exec_ids)


async def test_the_same_seeded_workload_run_sequentially_leaves_equal_books_on_both_sides(
    bank: Served, bk: Served
) -> None:
    """Run call for call alike (one task, one seed), Bank and BK end with equal books, read back
    through the venue's own reads, and give the client the same acks and refusals."""
    settings = {"seed": 5, "accounts": 5, "sessions": 25, "calls": 80, "concurrency": 1}
    on_bank = await run_workload(bank.address, **settings)
    on_bk = await run_workload(bk.address, **settings)
    assert (on_bk.acks, on_bk.refusals, on_bk.calls) == (on_bank.acks, on_bank.refusals, on_bank.calls)
    bank_book = await book_of(bank.address)
    assert await book_of(bk.address) == bank_book
    assert sorted(bank_book) == on_bank.accounts
    assert all(entry["fills"] for entry in bank_book.values())
    assert any(entry["resting"] for entry in bank_book.values())


async def test_a_held_call_waits_at_arrival_until_released(bank: Served) -> None:
    """`hold` stops the next matching call of a method at arrival, leaving other calls free, until the
    test releases it."""
    gate = bank.hold("GetAccount", when=lambda request: request.account == "A")
    async with aio.insecure_channel(bank.address) as channel:
        client = VenueClient(channel)
        await client.open_account("A", "1")
        await client.open_account("B", "2")
        held = asyncio.ensure_future(client.get_account("A"))
        await gate.arrived.wait()
        assert (await client.get_account("B")).cash == "2.00"
        assert not held.done()
        gate.release.set()
        assert (await held).cash == "1.00"
    assert [a.method for a in bank.arrivals] == ["OpenAccount", "OpenAccount", "GetAccount", "GetAccount"]
