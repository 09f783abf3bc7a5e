"""A session's message keeps its place in its account's lane until BK shows it got that far: by its answers,
or, for a message the answers do not release, on hold (`ordering.stream_hold`) once Bank answered past it.
A Bank slower than the hold no longer lets a message go before BK applied it; and a message neither side
answers still gives its place up, the session left open.

The venue's sessions (bidi `Trade`: one ack per order) are the service, on both data planes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from comparators import Verdict
from tests.helpers import until
from tests.services.venue.messages import new
from tests.services.venue.server import Served
from tests.services.venue.test_venue_recording import PLANES
from tests.services.venue.test_venue_stream_pairs import Acks, Answering, _order, venue

FILLED = 2  # venue.v1.Order.Status


def slow(seconds: float) -> Answering:
    """A side whose sessions take `seconds` over each request before booking it and acking."""

    def answering(side: Served) -> Callable[[Any], Acks]:
        async def later(request: Any) -> list[Any]:
            await asyncio.sleep(seconds)
            return [side.book.trade(request)]

        return later

    return answering


def silent_on_no_action(side: Served) -> Callable[[Any], Acks]:
    """A side whose sessions ack each order and answer nothing to a request with no action."""

    def acks(request: Any) -> list[Any]:
        return [] if request.WhichOneof("action") is None else [side.book.trade(request)]

    return acks


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_read_after_a_slow_banks_ack_of_a_later_order_sees_it_on_bk(
    tmp_path: Path, dataplane: str
) -> None:
    """Bank takes 0.7 s over each order of a session, BK 1 s: both longer than `stream_hold` (0.5 s). The
    session's second order went to BK as it came, and its place was released 0.5 s later, Bank not having
    answered it yet (so BK had answered as much as Bank): the client's read of its account once Bank acked
    the order reached BK before BK had booked it, a mismatch blamed on BK. The place is released on hold
    only once Bank answered past the order: here BK's own ack releases it, and the read matches."""
    async with venue(tmp_path, dataplane, slow(1.0), bank_answering=slow(0.7)) as (shim, sink, client, bk):
        async with client.session() as session:
            await session.send(_order(10))
            await until(lambda: len(bk.book.order_ids) == 1, "BK has booked the first order")
            ack = await session.send(_order(20))  # sent to BK as it comes: BK has answered all Bank has
            assert ack.status == FILLED
            account = await client.get_account("A")  # once Bank acked the order
        await shim.drain()
        reads = [c for c in sink.comparisons if c.method.endswith("/GetAccount")]
    assert account.cash == "99970.00"
    assert [(c.verdict, c.reason) for c in reads] == [(Verdict.MATCH, "")], [
        (c.verdict, c.reason, [str(d) for d in c.differences]) for c in reads
    ]


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_message_neither_side_answers_gives_its_place_up_in_an_open_session(
    tmp_path: Path, dataplane: str
) -> None:
    """Both sides answer nothing to a request with no action. The session's last message is one, and the
    session stays open: the message does not hold account A for the session's life. Bank answering nothing
    past it, it is released the shadow timeout (2 s) after it went to BK, and a read of A behind it is
    compared while the session is still open."""
    silent = silent_on_no_action
    async with venue(tmp_path, dataplane, silent, bank_answering=silent) as (shim, sink, client, _):
        session = client.session()
        await session.send(_order(10))
        await session.call.write(new("TradeRequest", account="A"))  # no ack comes, on either side
        account = await client.get_account("A")
        await until(
            lambda: any(c.method.endswith("/GetAccount") for c in sink.comparisons),
            "the read behind the unanswered message compared, the session open",
            within=10.0,
        )
        reads = [c for c in sink.comparisons if c.method.endswith("/GetAccount")]
        assert not session.call.done()
        await session.close()
        await shim.drain()
    assert account.cash == "99990.00"
    assert [c.verdict for c in reads] == [Verdict.MATCH], [(c.verdict, c.reason) for c in reads]
