"""A session that is not mirrored, or stops being mirrored part way, leaves every key its messages named
out of step: Bank applied what they asked, BK did not get them. Before, only its first message's keys
were marked, and a later read of another account it traded on was a real difference blamed on BK.

The venue's sessions (`Trade`: each message an order on its account) are the service.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import until
from tests.services.venue.messages import BUY, new
from tests.services.venue.test_venue_recording import PLANES
from tests.services.venue.test_venue_stream_pairs import venue

TRADE = "/venue.v1.Venue/Trade"


def _order(account: str) -> Any:
    return new(
        "TradeRequest",
        account=account,
        new=new("NewOrder", symbol="KO", side=BUY, quantity=10, limit_price="1"),
    )


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_session_not_mirrored_marks_every_account_it_traded_on(
    tmp_path: Path, dataplane: str
) -> None:
    """One session holds the one place for streams (`shadow.max_in_flight_streams = 1`); another, not
    mirrored, trades on A, then on B. Bank applied both orders and BK neither: A and B go out of step."""
    streams = {"max_in_flight_streams": 1}
    async with venue(tmp_path, dataplane, accounts=("A", "B", "C"), shadow=streams) as (shim, _, client, _):
        holder = client.session()  # takes the one place of streams
        await holder.send(_order("C"))
        async with client.session() as session:  # not mirrored
            await session.send(_order("A"))
            await session.send(_order("B"))
        await holder.close()
        await shim.drain()
        assert shim.steps is not None
        await until(lambda: {"A", "B"} <= set(shim.steps.keys), "A and B out of step", within=5.0)
        marks = sorted(shim.steps.keys)
    assert marks == ["A", "B"]


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_session_given_up_part_way_marks_the_accounts_of_its_later_messages(
    tmp_path: Path, dataplane: str
) -> None:
    """A mirrored session idle for `shadow.stream_idle` gives its place to a new one; its client then
    trades on B. Bank applies it, BK never gets it: B goes out of step, as A (its messages before)."""
    idling = {"max_in_flight_streams": 1, "stream_idle": 0.2}
    async with venue(tmp_path, dataplane, accounts=("A", "B", "C"), shadow=idling) as (shim, _, client, _):
        first = client.session()
        await first.send(_order("A"))
        idle_from = time.monotonic()
        await until(lambda: time.monotonic() - idle_from > 0.3, "the first session idle for stream_idle")
        async with client.session() as second:  # takes the first one's place
            await second.send(_order("C"))
        given_up = lambda: shim.counters.get("shadow_idle_given_up", TRADE)  # noqa: E731
        await until(lambda: given_up() >= 1, "the first session's mirror given up", within=5.0)
        await first.send(_order("B"))
        await first.close()
        await shim.drain()
        assert shim.steps is not None
        await until(lambda: {"A", "B"} <= set(shim.steps.keys), "A and B out of step", within=5.0)
        marks = sorted(shim.steps.keys)
    assert marks == ["A", "B"]
