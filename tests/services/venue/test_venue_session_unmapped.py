"""A session whose mirror stops at an id BK has no counterpart for (`unmapped-id`) gives its place up in its
account's lane while the session stays open: the calls on the account after it are not held back.

The venue's sessions (bidi `Trade`) are the service, on both data planes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from comparators import Verdict
from tests.helpers import until
from tests.services.venue.messages import message_class, new
from tests.services.venue.server import Served
from tests.services.venue.test_venue_recording import PLANES
from tests.services.venue.test_venue_stream_pairs import REJECTED, _order, venue


def rejecting(quantity: int) -> Callable[[Served], Callable[[Any], list[Any]]]:
    """BK's sessions reject every new order of `quantity` (its bug) and book the rest."""

    def answering(bk: Served) -> Callable[[Any], list[Any]]:
        def acks(request: Any) -> list[Any]:
            if request.WhichOneof("action") == "new" and request.new.quantity == quantity:
                return [message_class("TradeAck")(account="A", status=REJECTED, reason="rejected")]
            return [bk.book.trade(request)]

        return acks

    return answering


def _quantities(side: Served) -> list[int]:
    return [side.book.get_order(new("GetOrderRequest", order_id=o)).quantity for o in side.book.order_ids]


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_session_stopped_by_an_unmapped_id_frees_its_place_while_it_stays_open(
    tmp_path: Path, dataplane: str
) -> None:
    """BK rejects an order Bank books (O1): O1 has no counterpart. Another session on the account modifies
    O1: its mirror stops there (`unmapped-id`), the session staying open. The first session's next order,
    on the same account and after the modify, reaches BK at once: the stopped session's place is freed.
    Before, it waited for `ordering.max_wait` (30 s), then was given up, its account out of step."""
    async with venue(tmp_path, dataplane, rejecting(150)) as (shim, sink, client, bk):
        async with client.session() as first, client.session() as second:
            placed = (await first.send(_order(150))).order_id
            modify = new("ModifyOrder", order_id=placed, quantity=90)
            await second.send(new("TradeRequest", account="A", modify=modify))
            await first.send(_order(120))
            await until(
                lambda: 120 in _quantities(bk), "BK booked the first session's next order", within=5.0
            )
        await shim.drain()
        trades = [c for c in sink.comparisons if c.method.endswith("/Trade")]
    assert shim.steps is not None
    reasons = sorted((c.verdict.value, c.reason) for c in trades)
    assert [c.verdict for c in trades].count(Verdict.SKIPPED) == 1, reasons
    assert "unmapped" in next(c.reason for c in trades if c.verdict is Verdict.SKIPPED), reasons
