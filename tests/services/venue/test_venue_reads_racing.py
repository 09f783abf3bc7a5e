"""Reads Bank answered while a session's message on their account was in flight there: Bank may have
applied the message before answering the read, or not, while BK, sent the message first (it came
first), answers the read after it. A difference of that order alone is `tainted`, naming the session's
method, never a real mismatch blamed on BK: a read of the account (its key) and a read of every account
(no key) alike. Before, both were real mismatches, and a clean BK failed the gate on realistic traffic.
The same reads once the message is answered match.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from comparators import Verdict
from tests.helpers import until
from tests.services.venue.server import Served
from tests.services.venue.test_venue_recording import PLANES
from tests.services.venue.test_venue_stream_pairs import _order, venue

HELD = 70  # the quantity of the order Bank's session holds


def holding(quantity: int, held: asyncio.Event, release: asyncio.Event) -> Callable[[Served], Any]:
    """Bank's session answering: the order of `quantity` waits at Bank (`held` set) until `release` is set."""
    return holding_each({quantity: (held, release)})


@pytest.mark.parametrize("dataplane", PLANES)
async def test_reads_answered_while_a_sessions_message_on_their_account_was_in_flight_are_tainted(
    tmp_path: Path, dataplane: str
) -> None:
    held, release = asyncio.Event(), asyncio.Event()
    async with venue(tmp_path, dataplane, bank_answering=holding(HELD, held, release)) as (
        shim,
        sink,
        client,
        _,
    ):
        async with client.session() as session:
            sending = asyncio.ensure_future(session.send(_order(HELD)))
            await held.wait()
            during = [await client.get_account("A"), await client.list_accounts()]
            release.set()
            assert (await sending).order_id == "O1"
        after = [await client.get_account("A"), await client.list_accounts()]
        assert during[0] != after[0], "Bank answered the reads before it applied the order"
        await shim.drain()
        reads = sorted(
            (c for c in sink.comparisons if c.method.endswith(("/GetAccount", "/ListAccounts"))),
            key=lambda c: c.exchange.started_at,
        )
    assert [c.method.rpartition("/")[2] for c in reads] == ["GetAccount", "ListAccounts"] * 2
    raced, settled = reads[:2], reads[2:]
    assert all(c.differences for c in raced), [c.differences for c in raced]
    assert [(c.verdict, c.reason.split(" was in flight")[0]) for c in raced] == [
        (Verdict.TAINTED, "answered while venue.v1.Venue/Trade")
    ] * 2, [(c.verdict, c.reason) for c in raced]
    assert [(c.verdict, c.reason) for c in settled] == [(Verdict.MATCH, "")] * 2


def holding_each(held: dict[int, tuple[asyncio.Event, asyncio.Event]]) -> Callable[[Served], Any]:
    """Bank's session answering: the order of each quantity in `held` waits at Bank (its first event set)
    until its second is set."""

    def answering(bank: Served) -> Callable[[Any], Any]:
        async def acks(request: Any) -> list[Any]:
            events = held.get(request.new.quantity)
            if events is not None and not events[1].is_set():
                events[0].set()
                await events[1].wait()
            return [bank.book.trade(request)]

        return acks

    return answering


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_read_answered_while_the_next_message_of_a_pipelined_session_was_in_flight_is_tainted(
    tmp_path: Path, dataplane: str
) -> None:
    """A client pipelines its session: after three orders answered on both sides, it sends orders of 10
    and 70 on account A without waiting for the first ack. Bank answers the first while the second is held
    there; a read of A is then answered without the second. BK, sent the read after both orders (they came
    first), answers with it: a difference of that order, tainted, naming the session. Before, the first ack
    closed the spans of every message sent by then, the second's too, and the read was a real mismatch
    blamed on a clean BK. A read once every message is answered, the session still open, which BK answers
    wrong, is a real mismatch: the answers end the spans they account for, counted from the session's
    first (counted otherwise, BK's fault was hidden as tainted)."""
    first, second = (asyncio.Event(), asyncio.Event()), (asyncio.Event(), asyncio.Event())
    async with venue(tmp_path, dataplane, bank_answering=holding_each({10: first, 70: second})) as (
        shim,
        sink,
        client,
        bk,
    ):
        async with client.session() as session:
            dispatcher = shim.dispatchers["bk"]
            for n in (1, 2, 3):
                assert (await session.send(_order(n))).order_id == f"O{n}"
            await until(  # BK answered them too: what the session's progress keeps of its answers goes
                lambda: any(m.places.shadow_answers >= 3 for m in dispatcher._live), "BK's first acks"
            )
            await session.call.write(_order(10))
            await session.call.write(_order(70))
            await first[0].wait()
            await until(
                lambda: any(getattr(m, "_fed", 0) >= 5 for m in dispatcher._live),
                "the shim took both orders before Bank's ack of the first",
            )
            first[1].set()
            assert (await session.call.read()).order_id == "O4"
            await second[0].wait()
            during = await client.get_account("A")
            second[1].set()
            assert (await session.call.read()).order_id == "O5"
            right = bk.book.get_account

            def wrong(request: Any) -> Any:  # BK reads out one open order too many: a fault of BK's
                account = right(request)
                account.open_orders += 1
                return account

            bk.book.get_account = wrong  # type: ignore[method-assign]
            await until(  # on Envoy, the plane has taken Bank's last ack too: the read's span races none
                lambda: any(m.primary_answers >= 5 for m in dispatcher._live), "the shim took Bank's last ack"
            )
            answered = await client.get_account("A")  # every message answered, the session still open
        after = await client.get_account("A")
        assert during != after, "Bank answered the read before it applied the second order"
        await shim.drain()
        reads = sorted(
            (c for c in sink.comparisons if c.method.endswith("/GetAccount")),
            key=lambda c: c.exchange.started_at,
        )
    raced = reads[0]
    assert raced.differences, raced
    assert (raced.verdict, raced.reason.split(" was in flight")[0]) == (
        Verdict.TAINTED,
        "answered while venue.v1.Venue/Trade",
    ), (raced.verdict, raced.reason)
    assert [(c.verdict, c.reason) for c in reads[1:]] == [(Verdict.MISMATCH, "")] * 2
    assert answered == after
