"""A session that a side ended with a refusal status after acking (and booking) orders did something: its
status alone no longer says it did nothing. Its accounts go out of step unless both sides refused after as
many acks.

The venue's sessions (bidi `Trade`: one ack per order), on both data planes. A request with no action is a
protocol violation here: a side refusing it ends the session INVALID_ARGUMENT, the orders it acked before
staying booked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from comparators import Comparison
from shim.testing import CapturingSink
from tests.helpers import until
from tests.services.venue.messages import BUY, Refused, new
from tests.services.venue.server import Served
from tests.services.venue.test_venue_recording import PLANES
from tests.services.venue.test_venue_stream_pairs import Acks, venue

VIOLATION = "a request with no action"


def _order(account: str) -> Any:
    return new(
        "TradeRequest",
        account=account,
        new=new("NewOrder", symbol="KO", side=BUY, quantity=10, limit_price="1"),
    )


def refusing_violations(side: Served) -> Callable[[Any], Acks]:
    """A side whose sessions ack (and book) each order, and end INVALID_ARGUMENT at a request with no
    action."""

    def acks(request: Any) -> list[Any]:
        if request.WhichOneof("action") is None:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, VIOLATION)
        return [side.book.trade(request)]

    return acks


def refusing_everything(_: Served) -> Callable[[Any], Acks]:
    """A side whose sessions end INVALID_ARGUMENT at their first request, booking nothing (BK's bug)."""

    def acks(request: Any) -> list[Any]:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, VIOLATION)

    return acks


async def _refused_after(session: Any, accounts: tuple[str, ...]) -> None:
    """The client's session: an order on each of `accounts` (each acked by Bank), then a request with no
    action, which Bank refuses."""
    for account in accounts:
        assert (await session.send(_order(account))).order_id
    with pytest.raises(aio.AioRpcError) as refused:
        await session.send(new("TradeRequest", account=accounts[0]))
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def _sessions(sink: CapturingSink) -> list[Comparison]:
    return [c for c in sink.comparisons if c.method.endswith("/Trade")]


@pytest.mark.parametrize("dataplane", PLANES)
async def test_an_unmirrored_session_bank_refused_after_acking_orders_marks_their_accounts(
    tmp_path: Path, dataplane: str
) -> None:
    """With `max_in_flight_streams = 1` taken by a session on C, a second session is not mirrored: Bank
    books its orders on A and B, then ends it INVALID_ARGUMENT. Judged by its status alone, it did nothing,
    and no account was marked, though BK never got the two orders Bank booked: A and B go out of step."""
    answering = refusing_violations
    async with venue(
        tmp_path,
        dataplane,
        answering,
        bank_answering=answering,
        accounts=("A", "B", "C"),
        shadow={"max_in_flight_streams": 1},
    ) as (shim, sink, client, bk):
        holder = client.session()  # the one place of streams
        await holder.send(_order("C"))
        await _refused_after(client.session(), ("A", "B"))
        await until(lambda: _sessions(sink), "the session not mirrored recorded")
        assert shim.steps is not None
        marks = shim.steps.keys
        await holder.close()
        await shim.drain()
    assert len(bk.book.order_ids) == 1  # C's
    assert sorted(marks) == ["A", "B"], [(c.verdict, c.reason, c.exchange.note) for c in _sessions(sink)]
    assert (
        "the primary may have applied it (it answered 2 messages before INVALID_ARGUMENT)"
        in marks["A"].reason
    )


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_session_bank_refused_after_acking_orders_bk_refused_at_once_marks_their_accounts(
    tmp_path: Path, dataplane: str
) -> None:
    """Bank books orders on A and B, then ends the session INVALID_ARGUMENT; BK ends it INVALID_ARGUMENT at
    its first order, booking nothing. Both refused, by status: judged in step, though Bank booked two
    orders BK never did. The acks each side sent before its refusal tell them apart: A and B go out of
    step, the reason saying how far each side answered."""
    async with venue(
        tmp_path, dataplane, refusing_everything, bank_answering=refusing_violations, accounts=("A", "B")
    ) as (shim, sink, client, bk):
        await _refused_after(client.session(), ("A", "B"))
        await shim.drain()
        await until(lambda: _sessions(sink), "the session compared")
        assert shim.steps is not None
        marks = shim.steps.keys
    assert bk.book.order_ids == []
    assert sorted(marks) == ["A", "B"], [(c.verdict, c.reason) for c in _sessions(sink)]
    assert marks["A"].reason.endswith(
        f"Bank answered INVALID_ARGUMENT ({VIOLATION}) after 2 answer messages,"
        f" BK answered INVALID_ARGUMENT ({VIOLATION}) after no answer messages"
    ), marks["A"].reason


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_session_both_sides_refused_after_as_many_acks_leaves_its_accounts_in_step(
    tmp_path: Path, dataplane: str
) -> None:
    """Both sides book the orders on A and B and refuse the request with no action: they did alike, and no
    account is marked."""
    async with venue(
        tmp_path, dataplane, refusing_violations, bank_answering=refusing_violations, accounts=("A", "B")
    ) as (shim, sink, client, bk):
        await _refused_after(client.session(), ("A", "B"))
        await shim.drain()
        await until(lambda: _sessions(sink), "the session compared")
        assert shim.steps is not None
        marks = shim.steps.keys
    assert len(bk.book.order_ids) == 2
    assert marks == {}, [(c.verdict, c.reason) for c in _sessions(sink)]


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_session_bk_was_cut_from_that_bank_refused_after_acking_marks_its_account(
    tmp_path: Path, dataplane: str
) -> None:
    """BK's acks of a first session go out of line with Bank's (one ack more), so its orders O2 and O3 are
    not paired. A second session cancels O3: BK has no counterpart for it, and is sent none of the session;
    Bank cancels it, acks, then refuses a request with no action. Judged by Bank's status alone, Bank did
    nothing and A was not marked, though Bank cancelled an order BK keeps open: A goes out of step."""

    def out_of_line(bk: Served) -> Callable[[Any], Acks]:
        refusing = refusing_violations(bk)

        def acks(request: Any) -> list[Any]:
            answered = refusing(request)
            if request.new.quantity == 120:  # one message more, naming no order
                return [*answered, new("TradeAck", account="A", status=6, reason="no action")]
            return answered

        return acks

    async with venue(tmp_path, dataplane, out_of_line, bank_answering=refusing_violations) as (
        shim,
        sink,
        client,
        bk,
    ):
        async with client.session() as first:
            placed = [(await first.send(_order_of(quantity))).order_id for quantity in (120, 130, 150)]
        await shim.drain()
        assert shim.steps is not None
        assert shim.steps.keys == {}
        session = client.session()
        cancel = new("TradeRequest", account="A", cancel=new("CancelOrder", order_id=placed[2]))
        assert (await session.send(cancel)).status == 4  # CANCELLED, on Bank
        with pytest.raises(aio.AioRpcError) as refused:
            await session.send(new("TradeRequest", account="A"))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        await shim.drain()
        await until(lambda: len(_sessions(sink)) == 2, "both sessions compared")
        marks = shim.steps.keys
        open_on_bk = [
            o for o in bk.book.order_ids if bk.book.get_order(new("GetOrderRequest", order_id=o)).status != 4
        ]
    assert len(open_on_bk) == 3
    assert sorted(marks) == ["A"], [(c.verdict, c.reason) for c in _sessions(sink)]
    assert "BK was not sent it" in marks["A"].reason, marks["A"].reason


def _order_of(quantity: int) -> Any:
    return new(
        "TradeRequest",
        account="A",
        new=new("NewOrder", symbol="KO", side=BUY, quantity=quantity, limit_price="1"),
    )
