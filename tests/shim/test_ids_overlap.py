"""Id spaces that overlap: both sides mint plain counters ("M1", "M2", ...), so one text may be an id on
both sides, naming different things (tests/shim/_payments.py, BK minting as Bank does).

The client speaks the primary's ids. A value the primary's side knows as its own id (paired, pending or
minted without a pair) reaches the primary as the client sent it; only a value known on the shadow's side
alone is read as the shadow's id. Toward the shadow, the pair of the primary's id wins. In comparisons, BK
naming its own unpaired "M1" where Bank names its "M1" (which is BK's "M2") is a difference, though the
text is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import Any

import grpc
import pytest
from grpc import aio

from comparators import Comparison, Difference, DiffKind, Verdict
from comparators.ids import IdKind
from shim.app import Shim
from shim.testing import CapturingSink, running_shim
from tests.shim._payments import IDS, METHODS, MOVE, REGISTRY, REVERSE, Client, Served, new, serve


@pytest.fixture
async def sides() -> AsyncIterator[tuple[Served, Served]]:
    """Bank's and BK's payments services, on real gRPC servers, both minting "M<n>", "R<n>", "H<n>"."""
    bank, bk = await serve("bank"), await serve("bk")
    bk.payments.side = "bank"  # BK mints as Bank does: the same texts
    try:
        yield bank, bk
    finally:
        await bk.stop()
        await bank.stop()


@contextlib.asynccontextmanager
async def _shim(
    bank: Served, bk: Served, mode: str = "shadow", ids: Sequence[IdKind] = IDS
) -> AsyncIterator[tuple[Shim, CapturingSink, Client]]:
    """A shim in front of Bank and BK (`mode` says which answers), and a client of it."""
    settings = {"registry": REGISTRY, "ids": tuple(ids), "methods": METHODS, "shadow_timeout": 10.0}
    async with (
        running_shim(bank.address, bk.address, mode=mode, **settings) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        yield shim, sink, Client(channel)


def _not_matching(comparisons: Sequence[Comparison]) -> list[str]:
    return [
        f"{c.method}: {c.verdict} {c.reason} {c.differences}"
        for c in comparisons
        if c.verdict is not Verdict.MATCH or c.differences
    ]


def _reversed(side: Served) -> list[str]:
    return [r.movement_id for r in side.payments.sent("Reverse")]


def _on(method: str) -> Any:
    return lambda c: c.method == method


async def test_bank_receives_the_id_the_client_sent_when_bk_uses_the_same_text_for_another_movement(
    sides: tuple[Served, Served],
) -> None:
    """Bank mints M1, M2; BK, one movement ahead, M2, M3 (pairs M1-M2, M2-M3). A Reverse of Bank's M2
    reaches Bank as M2 (BK's M2 is Bank's M1: not what the client meant) and BK as M3; all match."""
    bank, bk = sides
    bk.payments._counters["M"] = itertools.count(2)
    async with _shim(bank, bk) as (shim, sink, client):
        first = await client.move("A", "1.00")
        await sink.wait_for(1)
        second = await client.move("B", "2.00")
        await sink.wait_for(2)
        reversal = await client.reverse("M2")
        comparisons = await sink.wait_for(3)
        translated_for_bank = shim.counters.get("ids_translated_for_primary")
    assert (first.movement_id, second.movement_id) == ("M1", "M2")
    assert _reversed(bank) == ["M2"]
    assert _reversed(bk) == ["M3"]
    assert (reversal.reverses_movement_id, reversal.account_id) == ("M2", "B")
    assert _not_matching(comparisons) == []
    assert translated_for_bank == 0


async def test_bk_as_primary_receives_the_id_the_client_sent_when_bank_uses_the_same_text(
    sides: tuple[Served, Served],
) -> None:
    """The same in bk-primary mode, where the client speaks BK's ids: BK mints M1, M2; Bank, one ahead, M2,
    M3. A Reverse of BK's M2 reaches BK as M2 (Bank's M2 is BK's M1) and Bank, mirrored, as M3."""
    bank, bk = sides
    bank.payments._counters["M"] = itertools.count(2)
    async with _shim(bank, bk, mode="bk-primary") as (_, sink, client):
        first = await client.move("A", "1.00")
        await sink.wait_for(1)
        second = await client.move("B", "2.00")
        await sink.wait_for(2)
        reversal = await client.reverse("M2")
        comparisons = await sink.wait_for(3)
    assert (first.movement_id, second.movement_id) == ("M1", "M2")
    assert _reversed(bk) == ["M2"]
    assert _reversed(bank) == ["M3"]
    assert (reversal.reverses_movement_id, reversal.account_id) == ("M2", "B")
    assert _not_matching(comparisons) == []


async def test_an_id_bank_minted_and_bk_is_still_minting_its_pair_for_reaches_bank_as_sent(
    sides: tuple[Served, Served],
) -> None:
    """Bank's M2 is pending (BK holds its copy of the Move) while BK's M2 is known as Bank's M1: a Reverse
    of M2 reaches Bank as M2 at once, and BK, once it answered the Move, with its id for Bank's M2 (M3)."""
    bank, bk = sides
    bk.payments._counters["M"] = itertools.count(2)
    async with _shim(bank, bk) as (_, sink, client):
        await client.move("A", "1.00")
        await sink.wait_for(1)
        gate = bk.payments.hold("Move", when=lambda r: r.account_id == "B")
        second = await client.move("B", "2.00")
        await asyncio.wait_for(gate.arrived.wait(), timeout=10)
        await client.reverse(second.movement_id)
        await bank.payments.wait_until(lambda: len(bank.payments.sent("Reverse")) == 1)
        assert _reversed(bank) == ["M2"]
        gate.release.set()
        comparisons = await sink.wait_for(3)
    assert _reversed(bk) == ["M3"]
    assert _not_matching(comparisons) == []


async def test_an_id_bank_minted_without_a_pair_is_bank_s_own_on_both_paths(
    sides: tuple[Served, Served],
) -> None:
    """Bank's M2 has no pair (BK's copy of the Move failed); BK's M2 is Bank's M1. A Reverse of M2 reaches
    Bank as M2, and is not sent to BK at all: sent as "M2", BK would reverse Bank's M1. The comparison is
    skipped as unmapped-id."""
    bank, bk = sides
    bk.payments._counters["M"] = itertools.count(2)
    async with _shim(bank, bk) as (shim, sink, client):
        await client.move("A", "1.00")
        await sink.wait_for(1)
        bk.payments.fail("Move", grpc.StatusCode.INTERNAL)
        await client.move("B", "2.00")
        await sink.wait_for(2)
        assert shim.ids is not None
        assert shim.ids.known("bank", "movement", "M2") is None
        assert shim.ids.known("bk", "movement", "M2") == "M1"
        await client.reverse("M2")
        (reverse,) = await sink.wait_for(1, where=_on(REVERSE))
    assert _reversed(bank) == ["M2"]
    assert _reversed(bk) == []
    assert reverse.verdict is Verdict.SKIPPED
    assert reverse.differences == (Difference("request.movement_id", DiffKind.UNMAPPED_ID, "M2", None),)


async def test_a_text_bank_knows_as_one_kind_and_bk_as_another_is_bank_s_on_both_paths(
    sides: tuple[Served, Served],
) -> None:
    """A Reverse's movement_id may name a movement or a hold (a location two kinds share). Bank's movement
    M1 is BK's M5; BK minted its hold H1 as "M1". A Reverse of M1 means Bank's movement: it reaches Bank
    as M1 (not as H1, the Bank hold BK's "M1" pairs with) and BK as M5 (not stopped as ambiguous)."""
    bank, bk = sides
    movement, _, hold = IDS
    shared = replace(hold, references=(*hold.references, "pay.v1.ReverseRequest.movement_id"))
    movements = itertools.count(5)

    def mint(bank_prefix: str, bk_prefix: str) -> str:  # BK: movements M5, M6, ...; its first hold "M1"
        return "M1" if bank_prefix == "H" else f"{bank_prefix}{next(movements)}"

    bk.payments._mint = mint  # type: ignore[method-assign]
    async with _shim(bank, bk, ids=(movement, IDS[1], shared)) as (shim, sink, client):
        await client.move("A", "1.00")
        await client.place_hold("A", "2.00")
        await sink.wait_for(2)
        assert shim.ids is not None
        assert (shim.ids.known("bank", "movement", "M1"), shim.ids.known("bk", "hold", "M1")) == ("M5", "H1")
        await client.reverse("M1")
        comparisons = await sink.wait_for(3)
    assert _reversed(bank) == ["M1"]
    assert _reversed(bk) == ["M5"]
    assert _not_matching(comparisons) == []


async def test_bk_naming_its_own_unpaired_id_where_bank_names_the_same_text_is_an_unmapped_id(
    sides: tuple[Served, Served],
) -> None:
    """BK holds a movement M1 of its own (from before the shim) and reverses the movement before the one
    named. Bank's M1 is BK's M2; BK's reversal says "reverses M1", as Bank's does: the same text, but BK's
    M1 is not Bank's M1. An unmapped-id difference, where the comparison used to see none."""
    bank, bk = sides
    bk.payments.movements["M1"] = new("Movement", movement_id="M1", account_id="A", amount="5.00")
    bk.payments._counters["M"] = itertools.count(2)
    bk.payments._counters["R"] = itertools.count(7)
    answer = bk.payments._answer

    def off_by_one(method: str, request: Any) -> Any:
        if method == "Reverse":
            previous = f"M{int(request.movement_id[1:]) - 1}"
            request = new("ReverseRequest", movement_id=previous, reason=request.reason)
        return answer(method, request)

    bk.payments._answer = off_by_one  # type: ignore[method-assign]
    async with _shim(bank, bk) as (_, sink, client):
        moved = await client.move("A", "10.00")
        (move,) = await sink.wait_for(1)
        await client.reverse(moved.movement_id)
        (reverse,) = await sink.wait_for(1, where=_on(REVERSE))
    assert move.method == MOVE
    assert move.verdict is Verdict.MATCH
    assert _reversed(bk) == ["M2"]  # translated right; BK's bug reverses its M1
    assert reverse.verdict is Verdict.MISMATCH
    assert reverse.differences == (Difference("reverses_movement_id", DiffKind.UNMAPPED_ID, "M1", "M1"),)
