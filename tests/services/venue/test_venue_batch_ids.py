"""A batch (client stream, `SubmitBatch`) mints order ids in its one answer; a client cancels one of them.

On Envoy the batch's answer and the cancel's request reach the comparison plane as copies on two streams,
in either order. The batch used to take its place in the lanes only as its answer came: a cancel whose
copy came first was placed before it, did not wait for the ids it mints, and went to BK with Bank's
order id. BK refused it (NOT_FOUND), the difference was blamed on BK, and BK's order stayed open with no
key out of step. The batch now takes its place as its last request message comes (before Bank can
answer it), and a later call naming an id it mints waits for its answer and the pair.
"""

from __future__ import annotations

from typing import Any

import pytest
from grpc import aio

from comparators import Comparison, Verdict
from tests.dataplane._copies import EnvoyCopy
from tests.helpers import NEEDS_ENVOY, until
from tests.services.venue.client import VenueClient
from tests.services.venue.messages import BUY, new
from tests.services.venue.test_venue_recording import PLANES
from tests.services.venue.test_venue_stream_pairs import venue

BATCH, CANCEL = "/venue.v1.Venue/SubmitBatch", "/venue.v1.Venue/CancelOrder"
CANCELLED = 4  # venue.v1.Order.Status


def _orders(*quantities: int) -> list[Any]:
    return [
        new(
            "NewOrderRequest",
            account="A",
            order=new("NewOrder", symbol="KO", side=BUY, quantity=q, limit_price="1"),
        )
        for q in quantities
    ]


def _of(method: str) -> Any:
    def where(c: Comparison) -> bool:
        return c.exchange.method == method

    return where


@NEEDS_ENVOY
async def test_a_cancel_whose_copy_comes_before_its_batchs_answer_cancels_bks_order(tmp_path: Any) -> None:
    plane = aio.server()
    async with venue(tmp_path, "envoy") as (shim, sink, _, bk):
        # the test is Envoy now: Bank answers the client's calls, the plane gets their copies as the test says
        processor = shim.front.processor
        plane.add_generic_rpc_handlers([processor.handler()])
        port = plane.add_insecure_port("127.0.0.1:0")
        await plane.start()
        try:
            bank = VenueClient(aio.insecure_channel(shim.config.bank.target))
            orders = _orders(100, 200, 300)
            summary = await bank.submit_batch(orders)
            cancelled = await bank.cancel_order(summary.order_ids[1])
            assert cancelled.status == CANCELLED
            async with aio.insecure_channel(f"127.0.0.1:{port}") as to_plane:

                def mirrors(method: str) -> list[Any]:
                    return [m for m in processor._mirrors if m.method == method]

                batch = EnvoyCopy(to_plane, BATCH)
                batch.request(*(o.SerializeToString() for o in orders))
                await until(
                    lambda: [len(m.requests) for m in mirrors(BATCH)] == [3], "the batch's copy taken up"
                )
                cancel = EnvoyCopy(to_plane, CANCEL)
                cancel.request(new("CancelOrderRequest", order_id=summary.order_ids[1]).SerializeToString())
                await until(lambda: len(mirrors(CANCEL)) == 1, "the cancel's copy taken up")
                (cancel_mirror,) = mirrors(CANCEL)
                await until(lambda: cancel_mirror.admission.admitted.is_set(), "the cancel placed")
                batch.answer(summary.SerializeToString())  # the batch's answer after the cancel's request
                cancel.answer(cancelled.SerializeToString())
                await batch.over()
                await cancel.over()
                (batch_compared,) = await sink.wait_for(1, within=30, where=_of(BATCH))
                (cancel_compared,) = await sink.wait_for(1, within=30, where=_of(CANCEL))
            bank_orders = sorted([(await bank.get_order(i)).status for i in summary.order_ids])
        finally:
            await plane.stop(None)
        bk_orders = {order_id: o.to_order().status for order_id, o in bk.book.orders.items()}
        assert shim.steps is not None
        out_of_step = sorted(shim.steps.keys)
    assert batch_compared.verdict is Verdict.MATCH
    assert (cancel_compared.verdict, cancel_compared.reason) == (Verdict.MATCH, ""), (
        "BK's own order cancelled"
    )
    assert sorted(bk_orders.values()) == bank_orders
    assert bank_orders.count(CANCELLED) == 1
    assert out_of_step == []


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_batch_then_a_cancel_of_an_order_it_placed_match_on_both_planes(
    tmp_path: Any, dataplane: str
) -> None:
    """The client's own order of calls, through the shim: the cancel is sent once the batch is answered."""
    async with venue(tmp_path, dataplane) as (_, sink, client, bk):
        summary = await client.submit_batch(_orders(100, 200, 300))
        cancelled = await client.cancel_order(summary.order_ids[1])
        assert cancelled.status == CANCELLED
        batches = await sink.wait_for(1, within=30, where=_of(BATCH))
        cancels = await sink.wait_for(1, within=30, where=_of(CANCEL))
        bk_orders = [o.to_order().status for o in bk.book.orders.values()]
    assert [c.verdict for c in batches + cancels] == [Verdict.MATCH, Verdict.MATCH]
    assert len(bk_orders) == 3
    assert bk_orders.count(CANCELLED) == 1
