"""A session's later message that waits for its turn behind another call on its account, the session over at
Bank and BK having answered every message it was sent, waits as a call's first message does (`max_wait`),
not within one shadow timeout counted from the session's first send: BK is not the one late. Before, the
session's mirror was cut off at the shadow timeout, its later messages never sent to BK, their orders
unpaired and missing from BK's book (seen on Envoy under load, where the mirror replays a session well
after Bank ended it; the mechanism is the same on both data planes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from shim.testing import running_shim
from tests.helpers import until
from tests.services.venue import book_of
from tests.services.venue.client import VenueClient
from tests.services.venue.messages import BUY, new
from tests.services.venue.server import Served
from tests.services.venue.test_venue_recording import PLANES
from tests.services.venue.test_venue_shim import _settings
from tests.services.venue.test_venue_stream_pairs import Acks, venue

TIMEOUT = 0.5  # the shadow timeout: BK answers each message in milliseconds


def _buy(quantity: int) -> Any:
    order = new("NewOrder", symbol="KO", side=BUY, quantity=quantity, limit_price="1")
    return new("TradeRequest", account="A", new=order)


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_session_message_waiting_behind_another_call_outlasts_the_shadow_timeout(
    bank: Served, bk: Served, tmp_path: Path, dataplane: str
) -> None:
    settings = {**_settings(tmp_path), "dataplane": dataplane, "shadow_timeout": TIMEOUT}
    async with (
        running_shim(bank.address, bk.address, **settings) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        client = VenueClient(channel)
        await client.open_account("A", "100000")
        await shim.drain()
        mirrors = shim.dispatchers["bk"]
        gate = bank.hold("SubmitBatch")  # a batch on A, held at Bank: its mirror waits for Bank to have it
        async with client.session() as session:
            await session.send(_buy(10))
            batch = asyncio.ensure_future(
                client.submit_batch([new("NewOrderRequest", account="A", order=_buy(20).new)])
            )
            await gate.arrived.wait()
            await until(lambda: mirrors.waiting()["the primary to receive it"] == 1, "the batch placed on A")
            await session.send(_buy(30))  # its turn on A comes after the batch's
        # the session is over at Bank; BK answered its first message and waits for the second's turn
        await asyncio.sleep(3 * TIMEOUT)  # longer than the shadow timeout: BK is idle, the batch is Bank's
        gate.release.set()
        await batch
        await shim.drain()
        comparisons = sink.comparisons
    trade = [c for c in comparisons if c.method.endswith("/Trade")]
    assert [(str(c.verdict), c.reason) for c in trade] == [("match", "")]
    assert len(bk.book.order_ids) == len(bank.book.order_ids) == 3
    assert await book_of(bk.address) == await book_of(bank.address)
    assert not (shim.steps.keys if shim.steps is not None else {})


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_session_bk_leaves_unanswered_still_times_out(tmp_path: Path, dataplane: str) -> None:
    """BK answers a session's first message and never its second: the session's mirror still ends at the
    shadow timeout (2 s in the venue's config) after Bank ended the session, as a shadow timeout."""
    hang = asyncio.Event()

    def first_only(bk: Served) -> Callable[[Any], Acks]:
        async def acks(request: Any) -> list[Any]:
            if bk.book.order_ids:
                await hang.wait()  # never set: BK hangs on the second message
            return [bk.book.trade(request)]

        return acks

    async with venue(tmp_path, dataplane, first_only) as (_shim, sink, client, _):
        async with client.session() as session:
            await session.send(_buy(10))
            await session.send(_buy(30))
        ended = time.monotonic()
        [trade] = await sink.wait_for(1, within=25.0, where=lambda c: c.method.endswith("/Trade"))
        took = time.monotonic() - ended
    assert (str(trade.verdict), trade.reason) == (
        "shadow-error",
        "shadow timeout: no answer within 2s after the primary",
    )
    assert took < 15.0, took  # the shadow timeout (2 s) on a loaded machine, never ordering.max_wait (30 s)
