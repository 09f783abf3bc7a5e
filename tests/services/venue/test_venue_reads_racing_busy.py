"""A read Bank answered while a session's message on its account was in flight there stays `tainted` however
many writes on the account Bank answers before BK answers the read: the shim keeps the spans of only the
last `PER_KEY` writes of a key, and a read judged once BK answered it, on a busy account, found none of
them. Before, the message's span had made way for the later writes' by then, and the read's difference (of
the order alone) was a real mismatch blamed on a clean BK: about 10 in a 20 s run of two sessions and two
unary clients, on either data plane. A BK that answers the account wrong is still caught once no write
races the read."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from comparators import Verdict
from shim.shadow.together import PER_KEY
from tests.helpers import until
from tests.services.venue.test_venue_reads_racing import holding
from tests.services.venue.test_venue_recording import PLANES
from tests.services.venue.test_venue_stream_pairs import _order, venue

HELD = 70  # the quantity of the order Bank's session holds
LATER = PER_KEY + 1  # writes on the account Bank answers before BK answers the read


@pytest.mark.parametrize("dataplane", PLANES)
@pytest.mark.parametrize("bk_reads_wrong", [False, True], ids=["clean-bk", "bk-reads-wrong"])
async def test_a_read_raced_by_a_message_is_tainted_however_many_writes_bank_answers_before_bk_does(
    tmp_path: Path, dataplane: str, bk_reads_wrong: bool
) -> None:
    held, release = asyncio.Event(), asyncio.Event()
    async with venue(tmp_path, dataplane, bank_answering=holding(HELD, held, release)) as (
        shim,
        sink,
        client,
        bk,
    ):
        if bk_reads_wrong:  # one open order too many in every account BK reads out
            right = bk.book.get_account

            def wrong(request: Any) -> Any:
                account = right(request)
                account.open_orders += 1
                return account

            bk.book.get_account = wrong  # type: ignore[method-assign]
        bk_read = bk.hold("GetAccount")  # BK answers the raced read once Bank answered LATER writes on A
        mirrors = shim.dispatchers["bk"]
        async with client.session() as session:
            sending = asyncio.ensure_future(session.send(_order(HELD)))
            await held.wait()
            raced = await client.get_account("A")  # Bank answers it without the held order
            release.set()
            await sending
            for _ in range(LATER):
                await session.send(_order(1))
            await until(
                lambda: any(m.primary_answers > LATER for m in mirrors._live if m.method.endswith("/Trade")),
                "the plane has Bank's answers to the later messages",
            )
            await bk_read.arrived.wait()
            bk_read.release.set()
        settled = await client.get_account("A")
        assert (raced.positions["KO"], settled.positions["KO"]) == (0, HELD + LATER)  # as Bank answered
        await shim.drain()
        reads = [c for c in sink.comparisons if c.method.endswith("/GetAccount")]
        reads.sort(key=lambda c: c.exchange.started_at)
    assert len(reads) == 2
    assert reads[0].differences
    assert (reads[0].verdict, reads[0].reason.split(" was in flight")[0]) == (
        Verdict.TAINTED,
        "answered while venue.v1.Venue/Trade",
    ), (reads[0].verdict, reads[0].reason, reads[0].real_differences)
    if bk_reads_wrong:
        assert (reads[1].verdict, reads[1].reason) == (Verdict.MISMATCH, "")
        assert [d.path for d in reads[1].real_differences] == ["open_orders"]
    else:
        assert (reads[1].verdict, reads[1].reason) == (Verdict.MATCH, "")
