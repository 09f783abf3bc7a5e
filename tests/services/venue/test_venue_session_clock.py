"""The times a session's answers hold are compared message by message, each allowed only for how late its
own message can have been stamped: a session lasting seconds does not loosen the timestamp rule for its
first messages.

The venue's sessions (`Trade`: one ack per order, `acked_at` stamped by each side's clock; the rule
"each side's clock" tolerates 1 s) are the service.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from comparators import Verdict
from tests.services.venue.test_venue_recording import PLANES
from tests.services.venue.test_venue_stream_pairs import _order, clock_ahead, venue

AHEAD = 3.0  # seconds BK's clock runs ahead of Bank's; the rule tolerates 1 s


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_long_session_does_not_hide_a_bk_clock_ahead(tmp_path: Path, dataplane: str) -> None:
    """BK stamps every ack 3 s ahead of Bank and answers at once. A session of one order shows it; so does
    a session of five orders 1.2 s apart, whose first ack BK sent at once: before, the whole session's
    length (6 s) was taken as how late BK may have stamped any of its acks, and all five were tolerated."""
    async with venue(tmp_path, dataplane, clock_ahead(AHEAD), stamped=True) as (shim, sink, client, _):
        async with client.session() as short:
            await short.send(_order(10))
        async with client.session() as long:
            for quantity in (11, 12, 13, 14, 15):
                await long.send(_order(quantity))
                await asyncio.sleep(1.2)  # a client placing an order now and then
        await shim.drain()
        trades = [c for c in sink.comparisons if c.method.endswith("/Trade")]
    short_one, long_one = trades
    assert short_one.verdict is Verdict.MISMATCH, short_one
    assert long_one.verdict is Verdict.MISMATCH, (long_one.verdict, long_one.exchange.own_late)
    real = [d.path for d in long_one.real_differences]
    assert "[0].acked_at" in real, long_one.differences
