"""A session under way across a switch of modes goes on with the side it started on: each of its messages
to the old primary first. The writes on its accounts after the switch go to the new primary first, so the
two sides may get them in another order: the session's accounts at the switch, and those of its later
messages, go out of step, as a batch's do (`test_venue_shim.py`).

The venue's sessions (bidi `Trade`), on both data planes, switched from shadow to bk-primary.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc import aio

from comparators import Verdict
from shim.admin import set_mode
from shim.testing import running_shim
from tests.helpers import until
from tests.services.venue.client import VenueClient
from tests.services.venue.messages import BUY, new
from tests.services.venue.server import Served
from tests.services.venue.test_venue_recording import PLANES
from tests.services.venue.test_venue_shim import _settings

CANCELLED, MODIFIED = 4, 5  # venue.v1.Order.Status
SPANNED = "a session (bidi stream) under way across a switch of modes"


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_session_under_way_across_a_switch_puts_its_accounts_out_of_step(
    bank: Served, bk: Served, tmp_path: Path, dataplane: str
) -> None:
    """A session places order O1 on A in shadow mode; the mode switches to bk-primary. The client cancels
    O1 (a new call: BK first, then Bank, whose copy is held a moment), and, told it is cancelled, modifies
    it in its session (Bank first, then BK). Bank modified O1 before its cancel came, BK rejected the
    modify of an order it had cancelled: the two sides got A's writes in another order, and the session
    was a mismatch blamed on BK, with no account marked. A is marked as the switch applies, and B, which
    the session trades on after it, as its order comes; the session is tainted."""
    settings = {**_settings(tmp_path), "dataplane": dataplane, "store": {"url": str(tmp_path / "shim.db")}}
    async with (
        running_shim(bank.address, bk.address, **settings) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        client = VenueClient(channel)
        for account in ("A", "B"):
            await client.open_account(account, "100000")
        await shim.drain()
        assert shim.steps is not None
        session = client.session()
        placed = new("NewOrder", symbol="KO", side=BUY, quantity=150, limit_price="1")
        first = await session.send(new("TradeRequest", account="A", new=placed))
        assert first.order_id == "O1"  # 100 filled, 50 resting
        await until(lambda: len(bk.book.order_ids) == 1, "BK has the order")
        await set_mode(shim, "bk-primary", [], "test", "ops", force=True, pause=2.0)
        marks_at_switch = dict(shim.steps.keys)
        gate = bank.hold("CancelOrder")  # the cancel mirrored to Bank comes a moment behind
        assert (await client.cancel_order("O1")).status == CANCELLED  # BK's answer
        modify = new("TradeRequest", account="A", modify=new("ModifyOrder", order_id="O1", quantity=80))
        modified = await session.send(modify)
        await gate.arrived.wait()
        gate.release.set()
        await session.send(new("TradeRequest", account="B", new=placed))
        await session.close()
        await shim.drain()
        await until(
            lambda: any(c.method.endswith("/Trade") for c in sink.comparisons), "the session compared"
        )
        marks = dict(shim.steps.keys)
        (trade,) = [c for c in sink.comparisons if c.method.endswith("/Trade")]
    assert modified.status == MODIFIED  # Bank's: its cancel had not come
    assert list(marks_at_switch) == ["A"]
    assert sorted(marks) == ["A", "B"]
    assert all(SPANNED in mark.reason for mark in marks.values()), marks
    assert trade.verdict is Verdict.TAINTED, (trade.verdict, trade.reason)


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_session_over_before_a_switch_marks_nothing(
    bank: Served, bk: Served, tmp_path: Path, dataplane: str
) -> None:
    """A session that ended, on both sides, before the switch is no session under way: nothing is marked."""
    settings = {**_settings(tmp_path), "dataplane": dataplane, "store": {"url": str(tmp_path / "shim.db")}}
    async with (
        running_shim(bank.address, bk.address, **settings) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
    ):
        client = VenueClient(channel)
        await client.open_account("A", "100000")
        async with client.session() as session:
            placed = new("NewOrder", symbol="KO", side=BUY, quantity=150, limit_price="1")
            await session.send(new("TradeRequest", account="A", new=placed))
        await shim.drain()
        await set_mode(shim, "bk-primary", [], "test", "ops", force=True, pause=2.0)
        assert (await client.cancel_order("O1")).status == CANCELLED
        await shim.drain()
        assert shim.steps is not None
        marks = dict(shim.steps.keys)
    assert marks == {}
