"""Ids minted in streamed answers pair by their place: message i of Bank's stream with message i of BK's.
When the two streams stop lining up (one side sent a message the other did not), no later id of the call
is paired: a wrong pair would send a later call to another object than the client meant, on BK's book.

The venue's sessions (bidi `Trade`: one ack per order, each minting the order's id) are the service.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from comparators import Verdict
from shim.testing import CapturingSink, running_shim
from tests.helpers import until
from tests.services.venue.client import VenueClient
from tests.services.venue.messages import BUY, Refused, message_class, new
from tests.services.venue.server import Served, serve
from tests.services.venue.test_venue_recording import PLANES
from tests.services.venue.test_venue_shim import _settings

CANCELLED, REJECTED = 4, 6  # venue.v1.Status


def _order(quantity: int) -> Any:
    return new(
        "TradeRequest",
        account="A",
        new=new("NewOrder", symbol="KO", side=BUY, quantity=quantity, limit_price="1"),
    )


Acks = list[Any] | Awaitable[list[Any]]


def _sessions_answer(side: Served, answer: Callable[[Any], Acks]) -> None:
    """`side`'s Trade sessions answer each request with `answer(request)` (its acks, or a coroutine giving
    them), the book booking it; `Refused` raised there ends the session with its status."""
    handler = side._handler
    service = handler.service

    def replaced(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if not details.method.endswith("/Trade"):
            return service(details)

        async def session(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async for request in requests:
                try:
                    acks = answer(request)
                    acks = await acks if inspect.isawaitable(acks) else acks
                except Refused as refused:  # the session ends with that status, what it acked staying booked
                    await context.abort(refused.code, refused.details)
                for ack in acks:
                    yield ack

        return grpc.stream_stream_rpc_method_handler(
            session,
            request_deserializer=message_class("TradeRequest").FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )

    handler.service = replaced  # type: ignore[method-assign]


Answering = Callable[[Served], Callable[[Any], Acks]]  # a side's acks to a request, given the side


def clock_ahead(seconds: float) -> Answering:
    """BK's acks stamped `seconds` ahead of its clock (its book books each order as ever)."""

    def answering(bk: Served) -> Callable[[Any], list[Any]]:
        def ahead(request: Any) -> list[Any]:
            ack = bk.book.trade(request)
            ack.acked_at.FromNanoseconds(time.time_ns() + int(seconds * 1e9))
            return [ack]

        return ahead

    return answering


@asynccontextmanager
async def venue(
    tmp_path: Path,
    dataplane: str,
    answering: Answering | None = None,
    *,
    stamped: bool = False,
    accounts: tuple[str, ...] = ("A",),
    shadow: dict[str, Any] | None = None,
    bank_answering: Answering | None = None,
) -> AsyncIterator[tuple[Any, CapturingSink, VenueClient, Served]]:
    """The venue's Bank (its acks `stamped` with its clock; its sessions answered by `bank_answering`, if
    given) and BK (its sessions answered by `answering`, if given), a shim in front on `dataplane` (with
    `shadow` settings over the venue's), and a client with `accounts` open: the shim, its comparisons, the
    client and BK."""
    bank, bk = await serve("bank", stamped=stamped), await serve("bk")
    if answering is not None:
        _sessions_answer(bk, answering(bk))
    if bank_answering is not None:
        _sessions_answer(bank, bank_answering(bank))
    settings = _settings(tmp_path)
    if shadow:
        settings["shadow"] = {**settings.get("shadow", {}), **shadow}
    try:
        async with (
            running_shim(bank.address, bk.address, dataplane=dataplane, **settings) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = VenueClient(channel)
            for account in accounts:
                await client.open_account(account, "100000")
            await shim.drain()
            yield shim, sink, client, bk
    finally:
        await bank.stop()
        await bk.stop()


@pytest.mark.parametrize("dataplane", PLANES)
async def test_ids_after_a_message_one_stream_has_and_the_other_not_are_not_paired(
    tmp_path: Path, dataplane: str
) -> None:
    """BK's session sends one message more than Bank's: an ack naming no order, after the first order's.
    Message by message, Bank's O2 faces that ack and O3 faces BK's second order (130 shares, where O3 is
    150): pairing O3 with it sent the client's later CancelOrder(O3) to BK as the 130-share order, BK
    cancelled the wrong one, and the cancel's difference was blamed on BK. No pair is learned from the
    first place the streams differ: O1 is paired, O2 and O3 are not; the cancel is not mirrored
    (skipped, its id unmapped), and BK's book keeps both orders open."""

    def with_extra_ack(bk: Served) -> Callable[[Any], list[Any]]:
        def acks(request: Any) -> list[Any]:
            ack = bk.book.trade(request)
            if request.new.quantity == 120:  # BK's bug: one more message, naming no order
                return [ack, message_class("TradeAck")(account="A", status=6, reason="no action")]
            return [ack]

        return acks

    async with venue(tmp_path, dataplane, with_extra_ack) as (shim, sink, client, bk):
        async with client.session() as session:
            placed = [(await session.send(_order(q))).order_id for q in (120, 130, 150)]
        await shim.drain()
        assert placed == ["O1", "O2", "O3"]
        cancelled = await client.cancel_order("O3")
        assert cancelled.quantity == 150
        await shim.drain()
        assert shim.ids is not None
        pairs = {bank_id: shim.ids.known("bank", "order", bank_id) for bank_id in placed}
        (cancel,) = [c for c in sink.comparisons if c.method.endswith("/CancelOrder")]
        bk_orders = [bk.book.get_order(new("GetOrderRequest", order_id=o)) for o in bk.book.order_ids]
    assert pairs["O1"] is not None
    assert (pairs["O2"], pairs["O3"]) == (None, None)
    assert cancel.verdict is Verdict.SKIPPED, (cancel.verdict, cancel.reason)
    assert "unmapped" in cancel.reason
    assert [o.quantity for o in bk_orders if o.status == CANCELLED] == []


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_key_marked_after_a_sessions_messages_does_not_taint_it(
    tmp_path: Path, dataplane: str
) -> None:
    """Session S1's first ack differs (BK stamps its acks a minute ahead: a difference a client sees). Only
    after that does another client cancel its own session on the same account, which puts A out of step.
    S1, judged when it ends, was judged against the marks of that moment: its mismatch was tainted,
    explained away by a write that came after the message that differed. A session is tainted by the
    keys out of step at each of its messages' turns: S1 stays a mismatch, and a session started on A
    after the mark is tainted."""
    async with venue(tmp_path, dataplane, clock_ahead(60), stamped=True) as (shim, sink, client, bk):
        s1 = client.session()
        await s1.send(_order(10))
        await until(lambda: len(bk.book.order_ids) >= 1, "S1 order on BK")
        s2 = client.session()
        await s2.send(_order(20))
        s2.call.cancel()  # a client gives up its session: A goes out of step
        assert shim.steps is not None
        await until(lambda: "A" in shim.steps.keys, "A out of step")
        await s1.close()
        async with client.session() as s3:
            await s3.send(_order(30))
        await shim.drain()
        trades = [c for c in sink.comparisons if c.method.endswith("/Trade")]
    verdicts = [(c.verdict, c.reason) for c in trades]
    by_quantity = {}
    for comparison in trades:
        (first,) = comparison.exchange.requests[:1]
        by_quantity[message_class("TradeRequest").FromString(first).new.quantity] = comparison
    assert set(by_quantity) == {10, 20, 30}, verdicts
    assert by_quantity[10].verdict is Verdict.MISMATCH, (by_quantity[10].verdict, by_quantity[10].reason)
    assert by_quantity[30].verdict is Verdict.TAINTED, (by_quantity[30].verdict, by_quantity[30].reason)
    assert "key 'A' out of step" in by_quantity[30].reason


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_session_bk_answers_one_message_less_is_compared(tmp_path: Path, dataplane: str) -> None:
    """BK's session leaves out the ack of its second order (a client of BK would see two acks for three
    orders), booking it all the same. The session's third order waited for BK's ack of the second (the
    session's own earlier message held its place against it) and never went to BK: the session was a
    shadow timeout, blaming BK's time. A session's messages wait only for other calls on their keys: BK
    gets all three, and the session is a mismatch, its answers one message short."""

    def without_second_ack(bk: Served) -> Callable[[Any], list[Any]]:
        def acks(request: Any) -> list[Any]:
            ack = bk.book.trade(request)
            return [] if request.new.quantity == 130 else [ack]

        return acks

    async with venue(tmp_path, dataplane, without_second_ack) as (shim, sink, client, bk):
        async with client.session() as session:
            for quantity in (120, 130, 150):
                await session.send(_order(quantity))
        await shim.drain()
        (trade,) = [c for c in sink.comparisons if c.method.endswith("/Trade")]
        booked = [bk.book.get_order(new("GetOrderRequest", order_id=o)).quantity for o in bk.book.order_ids]
    assert booked == [120, 130, 150]
    assert trade.verdict is Verdict.MISMATCH, (trade.verdict, trade.reason)


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_message_naming_an_order_already_paired_in_other_places_leaves_the_streams_facing(
    tmp_path: Path, dataplane: str
) -> None:
    """BK refuses a session's cancel of O1 that Bank carries out: Bank's ack names O1 (where a new order's
    id is minted), BK's rejection names no order. The streams still face each other, message for message:
    O1 was paired by the message before, so naming it again mints nothing. The session's next order, O2,
    pairs as ever, and a later CancelOrder(O2) reaches BK's order. Before, the streams were taken to stop
    facing each other at the cancel: O2 was never paired, and the client's later calls naming it were not
    mirrored (skipped, unmapped-id), BK's order left open where Bank's was cancelled."""

    def refusing_cancels(bk: Served) -> Callable[[Any], list[Any]]:
        def acks(request: Any) -> list[Any]:
            if request.WhichOneof("action") == "cancel":  # BK's bug: it refuses to cancel
                return [message_class("TradeAck")(account="A", status=REJECTED, reason="not cancellable")]
            return [bk.book.trade(request)]

        return acks

    async with venue(tmp_path, dataplane, refusing_cancels) as (shim, sink, client, bk):
        async with client.session() as session:
            first = (await session.send(_order(150))).order_id
            cancelled = await session.send(
                new("TradeRequest", account="A", cancel=new("CancelOrder", order_id=first))
            )
            second = (await session.send(_order(120))).order_id
        assert (first, cancelled.status, second) == ("O1", CANCELLED, "O2")
        await shim.drain()
        assert (await client.cancel_order(second)).status == CANCELLED
        await shim.drain()
        assert shim.ids is not None
        pairs = {bank_id: shim.ids.known("bank", "order", bank_id) for bank_id in (first, second)}
        (trade,) = [c for c in sink.comparisons if c.method.endswith("/Trade")]
        (cancel,) = [c for c in sink.comparisons if c.method.endswith("/CancelOrder")]
        bk_orders = [bk.book.get_order(new("GetOrderRequest", order_id=o)) for o in bk.book.order_ids]
    assert None not in pairs.values(), pairs
    assert trade.verdict is Verdict.MISMATCH, (trade.verdict, trade.reason)  # BK's refusal, seen
    assert {d.path.split(".")[-1] for d in trade.real_differences} == {"order_id", "status", "reason"}, (
        trade.differences
    )
    assert (cancel.verdict, cancel.reason) == (Verdict.MATCH, ""), (cancel.verdict, cancel.reason)
    assert {o.quantity: o.status for o in bk_orders}[120] == CANCELLED


def naming_orders_in_reasons(side: Served) -> Callable[[Any], list[Any]]:
    """`side`'s acks, a rejection's reason naming the order in the side's own id ("order O1 is not open")."""

    def acks(request: Any) -> list[Any]:
        ack = side.book.trade(request)
        if ack.status == REJECTED and ack.order_id:
            ack.reason = f"order {ack.order_id} is not open"
        return [ack]

    return acks


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_rejection_whose_reason_names_the_order_in_each_side_s_ids_is_the_same_rejection(
    tmp_path: Path, dataplane: str
) -> None:
    """Both sides refuse a session's cancel of a filled order, each naming the order in its reason in its
    own ids ("order O1 is not open", "order ord-3f9a... is not open"): the same rejection, read through the
    pair, as status details are. Before, every such message was a real mismatch blamed on a BK with no bug.
    A reason naming another order is still a difference."""
    async with venue(
        tmp_path, dataplane, naming_orders_in_reasons, bank_answering=naming_orders_in_reasons
    ) as (shim, sink, client, _):
        async with client.session() as session:
            filled = (await session.send(_order(50))).order_id
            other = (await session.send(_order(60))).order_id
            refused = await session.send(
                new("TradeRequest", account="A", cancel=new("CancelOrder", order_id=filled))
            )
        assert (refused.status, refused.reason) == (REJECTED, f"order {filled} is not open")
        await shim.drain()
        (trade,) = [c for c in sink.comparisons if c.method.endswith("/Trade")]
    assert (trade.verdict, trade.differences) == (Verdict.MATCH, ()), (trade.verdict, trade.differences)
    assert other == "O2"
