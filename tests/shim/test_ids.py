"""Id translation through a real shim, with a service of several id kinds (tests/shim/_payments.py).

Bank mints "M1", "R1", "H1"; BK mints "mv_<hex>", "rv_<hex>", "hd_<hex>". The client only ever
sees Bank's ids; the shim learns the pairs from the two answers of each minting write, sends BK
requests in BK's own ids, orders a call naming an id with the calls on that id's owner, and
compares answers through the map.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from comparators import Comparison, Difference, DiffKind, Verdict
from comparators.ids import IdKind
from shim.app import Shim
from shim.ids import IdBook
from shim.routing import MethodSettings
from shim.steps import EVERY_KEY
from shim.testing import CapturingSink, running_shim
from tests.helpers import postgres_schema_url
from tests.shim._payments import (
    IDS,
    LIST_MOVEMENTS,
    METHODS,
    MOVE,
    PLACE_HOLD,
    REGISTRY,
    RELEASE_HOLD,
    REVERSE,
    Client,
    Served,
    serve,
)


@pytest.fixture
async def sides() -> AsyncIterator[tuple[Served, Served]]:
    """Bank's and BK's payments services, each on a real gRPC server."""
    bank, bk = await serve("bank"), await serve("bk")
    try:
        yield bank, bk
    finally:
        await bk.stop()
        await bank.stop()


@contextlib.asynccontextmanager
async def _shim(
    bank: Served, bk: Served, **settings: Any
) -> AsyncIterator[tuple[Shim, CapturingSink, Client]]:
    """A shim between the two sides (the payments ids and keys unless overridden), and a client of it."""
    settings = {"registry": REGISTRY, "ids": IDS, "methods": METHODS, "shadow_timeout": 10.0, **settings}
    async with (
        running_shim(bank.address, bk.address, **settings) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        yield shim, sink, Client(channel)


def _book(shim: Shim) -> IdBook:
    assert shim.ids is not None
    return shim.ids


def _of(comparisons: Sequence[Comparison], method: str) -> list[Comparison]:
    return [c for c in comparisons if c.method == method]


def _not_matching(comparisons: Sequence[Comparison]) -> list[str]:
    return [
        f"{c.method}: {c.verdict} {c.reason} {c.differences}"
        for c in comparisons
        if c.verdict is not Verdict.MATCH or c.differences
    ]


def _bk_movements_of(bk: Served, account: str) -> list[str]:
    return [mid for mid, m in bk.payments.movements.items() if m.account_id == account]


def _on_method(method: str) -> Any:
    return lambda c: c.method == method


# -- translation ----------------------------------------------------------------------------------------


async def test_a_reverse_by_banks_movement_id_reaches_bk_with_bks_own_id(
    sides: tuple[Served, Served],
) -> None:
    """A Reverse naming Bank's movement id reaches BK with BK's id, and both answers match through the map."""
    bank, bk = sides
    async with _shim(bank, bk) as (shim, sink, client):
        movement = await client.move("A", "10.00")
        reversal = await client.reverse(movement.movement_id)
        comparisons = await sink.wait_for(2)
    # the client got Bank's answers, Bank's ids
    assert (movement.movement_id, movement.account_id, movement.amount) == ("M1", "A", "10.00")
    assert (reversal.reversal_id, reversal.reverses_movement_id, reversal.account_id) == ("R1", "M1", "A")
    # BK was sent its own movement id
    (bk_movement_id,) = bk.payments.movements
    (bk_reversal_id,) = bk.payments.reversals.values()
    assert bk_movement_id.startswith("mv_")
    assert bk_reversal_id.startswith("rv_")
    (sent,) = bk.payments.sent("Reverse")
    assert (sent.movement_id, sent.reason) == (bk_movement_id, "customer asked")
    # both compared equal, with no difference at all (the ids compared through the map)
    assert _not_matching(comparisons) == []
    (move,) = _of(comparisons, MOVE)
    (reverse,) = _of(comparisons, REVERSE)
    for comparison in (move, reverse):
        assert comparison.exchange.shadow is not None
        assert comparison.exchange.primary.messages != comparison.exchange.shadow.messages  # ids differ
    assert move.exchange.ids == (("movement", "M1", bk_movement_id),)
    assert set(reverse.exchange.ids) == {
        ("movement", "M1", bk_movement_id),
        ("reversal", "R1", bk_reversal_id),
    }
    assert reverse.exchange.routing_key == "A"  # the movement's owner
    # the map knows both pairs, both ways
    book = _book(shim)
    assert book.known("bank", "movement", "M1") == bk_movement_id
    assert book.known("bk", "movement", bk_movement_id) == "M1"
    assert book.known("bank", "reversal", "R1") == bk_reversal_id
    assert shim.counters.get("ids_translated", REVERSE) == 1
    assert shim.steps is not None
    assert shim.steps.keys == {}


async def test_holds_and_movements_on_one_account_each_translate_to_their_own_bk_id(
    sides: tuple[Served, Served],
) -> None:
    """Holds and movements interleaved on one account: each release and reversal reaches BK with the
    BK id of the very hold or movement the client named."""
    bank, bk = sides
    async with _shim(bank, bk) as (shim, sink, client):
        m1 = await client.move("A", "10.00")
        h1 = await client.place_hold("A", "1.00")
        m2 = await client.move("A", "20.00")
        h2 = await client.place_hold("A", "2.00")
        released_h2 = await client.release_hold(h2.hold_id)
        reversed_m1 = await client.reverse(m1.movement_id)
        released_h1 = await client.release_hold(h1.hold_id)
        reversed_m2 = await client.reverse(m2.movement_id)
        comparisons = await sink.wait_for(8)
    assert [m1.movement_id, m2.movement_id, h1.hold_id, h2.hold_id] == ["M1", "M2", "H1", "H2"]
    assert [released_h2.hold_id, released_h1.hold_id] == ["H2", "H1"]
    assert [reversed_m1.reverses_movement_id, reversed_m2.reverses_movement_id] == ["M1", "M2"]
    assert [reversed_m1.reversal_id, reversed_m2.reversal_id] == ["R1", "R2"]
    # BK released and reversed the same things, known by its own records (amounts), not by the map
    bk_released = [bk.payments.holds[h.hold_id] for h in bk.payments.sent("ReleaseHold")]
    assert bk_released == [("A", "2.00"), ("A", "1.00")]
    bk_reversed = [bk.payments.movements[r.movement_id].amount for r in bk.payments.sent("Reverse")]
    assert bk_reversed == ["10.00", "20.00"]
    assert all(h.hold_id.startswith("hd_") for h in bk.payments.sent("ReleaseHold"))
    # and the map agrees
    book = _book(shim)
    for kind, bank_id, bk_id in [
        ("hold", "H2", bk.payments.sent("ReleaseHold")[0].hold_id),
        ("hold", "H1", bk.payments.sent("ReleaseHold")[1].hold_id),
        ("movement", "M1", bk.payments.sent("Reverse")[0].movement_id),
        ("movement", "M2", bk.payments.sent("Reverse")[1].movement_id),
    ]:
        assert book.known("bank", kind, bank_id) == bk_id
    assert _not_matching(comparisons) == []
    assert all(c.exchange.routing_key == "A" for c in comparisons)  # releases and reversals too
    # a release answers with the hold's id at a minted place: the pair is learned again, not a conflict
    assert shim.counters.get("id_conflicts") == 0
    assert shim.counters.get("ids_translated", RELEASE_HOLD) == 2
    assert shim.counters.get("ids_learned", "hold") == 2
    assert len(_of(comparisons, PLACE_HOLD)) == 2


# -- ordering -------------------------------------------------------------------------------------------


async def test_a_reverse_is_ordered_with_its_movements_account_and_waits_for_its_bk_id(
    sides: tuple[Served, Served],
) -> None:
    """While BK holds the Move on A, a Reverse of its movement (keyed on A through the movement's owner)
    waits in the shim and a Move on B goes by; once BK answers, the Reverse follows with BK's id."""
    bank, bk = sides
    gate = bk.payments.hold("Move", when=lambda r: r.account_id == "A")
    async with _shim(bank, bk) as (shim, sink, client):
        movement = await client.move("A", "10.00")  # Bank answered; BK holds its copy
        await asyncio.wait_for(gate.arrived.wait(), timeout=10)
        reversal = await client.reverse(movement.movement_id)  # the client has Bank's answer at once
        await client.move("B", "5.00")
        await bk.payments.wait_until(lambda: "Move B" in bk.payments.arrivals)
        # had the Reverse been unkeyed, the Move on B would have waited behind it; had it been free, it
        # would have reached BK before the Move on B, which the client sent after it was answered
        assert bk.payments.arrivals == ["Move A", "Move B"]
        assert shim.counters.get("ids_owner_unknown") == 0
        assert _book(shim).known("bank", "movement", "M1") is None  # BK has not answered: no pair yet
        gate.release.set()
        comparisons = await sink.wait_for(3)
    assert reversal.reverses_movement_id == "M1"
    (bk_movement_a,) = _bk_movements_of(bk, "A")
    assert bk.payments.arrivals == ["Move A", "Move B", f"Reverse {bk_movement_a}"]
    assert _not_matching(comparisons) == []
    (reverse,) = _of(comparisons, REVERSE)
    assert reverse.exchange.routing_key == "A"


async def test_a_reference_to_an_id_whose_minting_write_is_in_flight_waits_for_its_pair(
    sides: tuple[Served, Served],
) -> None:
    """With nothing ordering a Reverse after the Move that minted its movement (no owner key; the Reverse
    routed by a key of its own), the Reverse still waits for BK's answer to the Move and is translated."""
    bank, bk = sides
    movement_without_owner = IdKind(
        "movement",
        minted=("pay.v1.Movement.movement_id",),
        references=("pay.v1.ReverseRequest.movement_id", "pay.v1.Reversal.reverses_movement_id"),
    )
    ids = (movement_without_owner, *IDS[1:])
    methods = {**METHODS, "pay.v1.Payments/Reverse": MethodSettings(key=("reason",))}
    gate = bk.payments.hold("Move", when=lambda r: r.account_id == "A")
    async with _shim(bank, bk, ids=ids, methods=methods) as (shim, sink, client):
        movement = await client.move("A", "10.00")
        await asyncio.wait_for(gate.arrived.wait(), timeout=10)
        reversal = await client.reverse(movement.movement_id, reason="ticket-7")
        await client.move("B", "5.00")
        await bk.payments.wait_until(lambda: "Move B" in bk.payments.arrivals)
        assert bk.payments.arrivals == ["Move A", "Move B"]
        gate.release.set()
        comparisons = await sink.wait_for(3)
    assert reversal.reverses_movement_id == "M1"
    (bk_movement_a,) = _bk_movements_of(bk, "A")
    assert bk.payments.arrivals == ["Move A", "Move B", f"Reverse {bk_movement_a}"]
    assert _not_matching(comparisons) == []
    (reverse,) = _of(comparisons, REVERSE)
    assert reverse.exchange.routing_key == "ticket-7"  # not ordered with account A
    assert shim.counters.get("ids_unmapped") == 0


# -- ids with no counterpart ----------------------------------------------------------------------------


async def test_a_reverse_of_an_id_nobody_minted_is_sent_unchanged_and_compared(
    sides: tuple[Served, Served],
) -> None:
    """A Reverse of "M999" (an id the map has never seen) is sent to BK unchanged: both sides refuse it
    NOT_FOUND with the same words, the comparison is a match, and no key goes out of step."""
    bank, bk = sides
    async with _shim(bank, bk) as (shim, sink, client):
        with pytest.raises(aio.AioRpcError) as refused:
            await client.reverse("M999")
        (comparison,) = await sink.wait_for(1)
        assert shim.steps is not None
        marks = shim.steps.keys
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    assert refused.value.details() == "unknown movement"
    assert comparison.verdict is Verdict.MATCH
    assert comparison.exchange.unmapped == ()
    assert [r.request.movement_id for r in bk.payments.received] == ["M999"]
    assert marks == {}  # both refused it: neither side did anything
    assert shim.counters.get("ids_unknown", REVERSE) == 1
    assert shim.counters.get("ids_unmapped", REVERSE) == 0


async def _reverse_an_unpaired_movement(
    bank: Served, bk: Served
) -> tuple[Comparison, Comparison, dict[str, Any]]:
    """Move on A (BK's copy fails INTERNAL: M1 has no pair), resync A, then Reverse M1 through the shim.

    Returns the Move's and the Reverse's comparisons and the keys out of step after the Reverse.
    """
    bk.payments.fail("Move", grpc.StatusCode.INTERNAL)
    async with _shim(bank, bk) as (shim, sink, client):
        movement = await client.move("A", "10.00")
        (move,) = await sink.wait_for(1)
        steps, store = shim.steps, shim.store
        assert steps is not None
        assert store is not None
        assert set(steps.keys) == {"A"}  # Bank applied the Move, BK did not
        assert steps.keys["A"].method == MOVE
        # an operator re-syncs account A; the movement still has no pair in the map
        assert await store.marks.resync(["A"]) == ["A"]
        await steps.refresh()
        assert steps.keys == {}
        reversal = await client.reverse(movement.movement_id)  # Bank knows M1: it answers OK
        (reverse,) = await sink.wait_for(1, where=_on_method(REVERSE))
        marks = steps.keys
        assert _book(shim).known("bank", "movement", "M1") is None
    assert (movement.movement_id, reversal.reverses_movement_id) == ("M1", "M1")
    assert bk.payments.sent("Reverse") == []
    return move, reverse, marks


async def test_a_reverse_of_a_movement_bk_never_paired_is_not_sent_and_puts_keys_out_of_step(
    sides: tuple[Served, Served],
) -> None:
    """A Reverse of a movement Bank minted but BK has no pair for (its Move failed INTERNAL on BK): Bank
    applies it, BK is not sent it, the comparison is skipped as unmapped-id, and a key goes out of step."""
    move, reverse, marks = await _reverse_an_unpaired_movement(*sides)
    assert move.verdict is Verdict.MISMATCH
    assert Difference("status.code", DiffKind.STATUS, "OK", "INTERNAL") in move.real_differences
    assert reverse.verdict is Verdict.SKIPPED
    assert reverse.differences == (Difference("request.movement_id", DiffKind.UNMAPPED_ID, "M1", None),)
    assert "unmapped-id" in reverse.reason
    assert reverse.exchange.primary.code == 0
    assert reverse.exchange.shadow is None
    (mark,) = marks.values()
    assert mark.method == REVERSE
    assert "BK was not sent it" in mark.reason
    assert "movement 'M1'" in mark.reason
    assert "unmapped-id" in mark.reason


async def test_with_bk_primary_the_mark_says_bank_was_not_sent_the_write(
    sides: tuple[Served, Served],
) -> None:
    """BK primary: a Reverse of a movement BK minted whose Move failed on Bank is not sent to Bank, the
    mirrored side, and the mark says so of Bank."""
    bank, bk = sides
    bank.payments.fail("Move", grpc.StatusCode.INTERNAL)
    async with _shim(bank, bk, mode="bk-primary") as (shim, sink, client):
        movement = await client.move("A", "10.00")
        await sink.wait_for(1)
        assert shim.steps is not None
        assert shim.store is not None
        assert await shim.store.marks.resync(["A"]) == ["A"]
        await shim.steps.refresh()
        await client.reverse(movement.movement_id)  # BK's own id: BK answers OK
        await sink.wait_for(1, where=_on_method(REVERSE))
        (mark,) = shim.steps.keys.values()
    assert bank.payments.sent("Reverse") == []
    assert mark.reason.startswith("Bank was not sent it: "), mark.reason


async def test_a_write_by_an_id_the_other_mode_minted_marks_its_owner(sides: tuple[Served, Served]) -> None:
    """Bank's movement id named once BK is primary, and BK's named once back in shadow: the owner is
    known through the pair. The mirrored Reverse failing on the other side marks the movement's account
    out of step (not "without a key"), and the call is not counted as naming an id of unknown owner."""
    bank, bk = sides
    async with _shim(bank, bk) as (shim, sink, client):
        by_bank = await client.move("A", "10.00")  # shadow: Bank's id, paired with BK's
        await sink.wait_for(1)
        await shim.modes.switch({"*": "bk-primary"}, within=10)
        bank.payments.fail("Reverse", grpc.StatusCode.INTERNAL)
        await client.reverse(by_bank.movement_id)  # BK answers, Bank (mirrored) fails
        (reverse,) = await sink.wait_for(1, where=_on_method(REVERSE))
        assert shim.steps is not None
        bk_primary_marks = dict(shim.steps.keys)
        by_bk = await client.move("B", "5.00")  # bk-primary: BK's id, paired with Bank's
        await sink.wait_for(1, where=lambda c: c.method == MOVE and c.exchange.routing_key == "B")
        await shim.modes.switch({"*": "shadow"}, within=10)
        bk.payments.fail("Reverse", grpc.StatusCode.INTERNAL)
        await client.reverse(by_bk.movement_id)  # Bank answers (given its own id), BK fails
        await sink.wait_for(2, where=_on_method(REVERSE))
        shadow_marks = dict(shim.steps.keys)
        unknown = shim.counters.get("ids_owner_unknown")
    assert by_bank.movement_id == "M1"
    assert by_bk.movement_id.startswith("mv_")
    assert reverse.exchange.routing_key == "A"
    assert set(bk_primary_marks) == {"A"}
    assert set(shadow_marks) == {"A", "B"}
    assert "Bank answered INTERNAL" in bk_primary_marks["A"].reason, bk_primary_marks["A"].reason
    assert "BK answered INTERNAL" in shadow_marks["B"].reason, shadow_marks["B"].reason
    assert unknown == 0


async def test_an_unkeyed_write_that_mints_is_tainted_only_by_its_owners_mark(
    sides: tuple[Served, Served],
) -> None:
    """Move keyed by nothing in its request: its movement's owner (`owner_key`, the account) is its key.
    With account B out of step (BK failed a Move on it), a Move on A whose answer differs (BK answers
    the amount in its own way) is a real mismatch: no mark explains it. The same on B is tainted."""
    bank, bk = sides
    methods = {name: settings for name, settings in METHODS.items() if not name.endswith("/Move")}
    async with _shim(bank, bk, methods=methods) as (shim, sink, client):
        bk.payments.fail("Move", grpc.StatusCode.INTERNAL, when=lambda request: request.account_id == "B")
        await client.move("B", "1.00")
        await sink.wait_for(1, where=_on_method(MOVE))
        assert shim.steps is not None
        marks = dict(shim.steps.keys)
        bk.payments.amounts_answered["7.00"] = "7.0"
        await client.move("A", "7.00")
        await client.move("B", "7.00")
        _, on_a, on_b = await sink.wait_for(3, where=_on_method(MOVE))
    assert set(marks) == {"B"}
    assert on_a.verdict is Verdict.MISMATCH, on_a.reason
    assert [d.path for d in on_a.real_differences] == ["amount"], on_a.differences
    assert on_b.verdict is Verdict.TAINTED, on_b.reason
    assert on_b.reason.startswith("key 'B' out of step since"), on_b.reason


async def test_a_reverse_of_a_movement_bk_never_paired_marks_only_the_movements_account(
    sides: tuple[Served, Served],
) -> None:
    """The write BK was not sent puts the movement's account (its owner, known from Bank's answer) out
    of step, not every key."""
    _, reverse, marks = await _reverse_an_unpaired_movement(*sides)
    assert set(marks) == {"A"}
    assert EVERY_KEY not in marks
    assert reverse.exchange.routing_key == "A"


async def test_a_write_whose_answer_mints_again_the_unpaired_id_it_names_is_not_held(
    sides: tuple[Served, Served],
) -> None:
    """ReleaseHold names hold H1, which BK never paired (its PlaceHold failed on BK), and answers that
    hold, whose id is minted wherever it appears: the call does not wait for the pair its own answer
    would give (none comes before the call is sent), so it neither waits out `max_wait` nor holds the
    calls behind it. It is recorded at once as not sent, and its key goes out of step."""
    bank, bk = sides
    bk.payments.fail("PlaceHold", grpc.StatusCode.INTERNAL)
    async with _shim(bank, bk, ordering={"max_wait": 60.0}) as (shim, sink, client):
        hold = await client.place_hold("A", "5.00")
        await sink.wait_for(1)
        await client.release_hold(hold.hold_id)
        (release,) = await sink.wait_for(1, within=8, where=_on_method(RELEASE_HOLD))
        await client.move("A", "1.00")  # on the same key: behind the release
        (move,) = await sink.wait_for(1, within=8, where=_on_method(MOVE))
        assert shim.steps is not None
        marks = shim.steps.keys
    assert release.verdict is Verdict.SKIPPED
    assert release.differences == (Difference("request.hold_id", DiffKind.UNMAPPED_ID, "H1", None),)
    assert bk.payments.sent("ReleaseHold") == []
    assert move.exchange.shadow is not None
    assert move.exchange.shadow.code == 0
    assert set(marks) == {"A"}


async def test_waiting_for_a_counterpart_is_bounded_by_the_shadow_timeout(
    sides: tuple[Served, Served],
) -> None:
    """BK never answers a Move: a Reverse of its movement is given up at the shadow timeout and recorded,
    never sent to BK, while the client had Bank's answer at once."""
    timeout = 0.5
    bank, bk = sides
    gate = bk.payments.hold("Move")  # never released (until the servers stop)
    async with _shim(bank, bk, shadow_timeout=timeout) as (shim, sink, client):
        started = time.perf_counter()
        movement = await client.move("A", "10.00")
        await asyncio.wait_for(gate.arrived.wait(), timeout=10)
        sent = time.perf_counter()
        reversal = await client.reverse(movement.movement_id)
        answered_in = time.perf_counter() - sent
        (reverse,) = await sink.wait_for(1, within=5 * timeout + 5, where=_on_method(REVERSE))
        recorded_after = time.perf_counter() - started
        (move,) = await sink.wait_for(1, where=_on_method(MOVE))
        assert shim.steps is not None
        marks = shim.steps.keys
    assert reversal.reverses_movement_id == "M1"
    assert answered_in < timeout  # Bank's answer, not held by BK's silence
    assert recorded_after >= timeout - 0.01  # given up no sooner than the timeout
    assert bk.payments.arrivals == ["Move A"]  # the Reverse never reached BK
    assert move.verdict is Verdict.SHADOW_ERROR
    assert "shadow timeout" in move.reason
    # the Reverse waited on its key behind the Move: either its own timeout ended the wait, or the Move
    # was given up first and M1 was then found to have no counterpart
    if reverse.verdict is Verdict.SHADOW_ERROR:
        assert "shadow timeout" in reverse.reason
        assert f"{timeout:g}s" in reverse.reason
    else:
        assert reverse.verdict is Verdict.SKIPPED
        assert reverse.differences == (Difference("request.movement_id", DiffKind.UNMAPPED_ID, "M1", None),)
        assert "unmapped-id" in reverse.reason
    assert set(marks) == {"A"}  # whether BK applied the Move is unknown


# -- reads ----------------------------------------------------------------------------------------------


async def test_a_streamed_listing_matches_through_the_map_although_every_id_differs(
    sides: tuple[Served, Served],
) -> None:
    """ListMovements streams Bank's and BK's movements with different ids in every message; compared
    through the learned pairs they match."""
    bank, bk = sides
    async with _shim(bank, bk) as (shim, sink, client):
        for amount in ("10.00", "20.00", "30.00"):
            await client.move("A", amount)
        await client.move("B", "1.00")
        listed = await client.list_movements("A")
        comparisons = await sink.wait_for(5)
    assert [(m.movement_id, m.amount) for m in listed] == [("M1", "10.00"), ("M2", "20.00"), ("M3", "30.00")]
    (listing,) = _of(comparisons, LIST_MOVEMENTS)
    assert listing.exchange.is_write is False
    assert listing.exchange.shadow is not None
    bk_listed = _bk_movements_of(bk, "A")
    assert len(bk_listed) == 3
    assert len(listing.exchange.shadow.messages) == 3
    assert all(
        a != b
        for a, b in zip(listing.exchange.primary.messages, listing.exchange.shadow.messages, strict=True)
    )
    assert set(listing.exchange.ids) == {
        ("movement", f"M{i}", bk_id) for i, bk_id in enumerate(bk_listed, start=1)
    }
    assert listing.verdict is Verdict.MATCH
    assert listing.differences == ()
    assert listing.decoded
    assert _not_matching(comparisons) == []
    assert shim.counters.get("ids_learned", "movement") == 4  # the read learned nothing


# -- persistence ----------------------------------------------------------------------------------------


async def test_a_pair_learned_by_one_shim_translates_in_the_next_one_on_the_same_store(
    sides: tuple[Served, Served], tmp_path: Path
) -> None:
    """A pair learned before a restart is loaded from the SQLite store: a Reverse by Bank's id through the
    restarted shim reaches BK with BK's id."""
    bank, bk = sides
    store = str(tmp_path / "shim.db")
    async with _shim(bank, bk, store={"url": store}) as (_, sink, client):
        await client.move("A", "10.00")
        await sink.wait_for(1)
    (bk_movement_id,) = bk.payments.movements
    async with _shim(bank, bk, store={"url": store}) as (shim, sink, client):
        assert _book(shim).known("bank", "movement", "M1") == bk_movement_id  # preloaded
        reversal = await client.reverse("M1")
        (reverse,) = await sink.wait_for(1)
    assert reversal.reverses_movement_id == "M1"
    (sent,) = bk.payments.sent("Reverse")
    assert sent.movement_id == bk_movement_id
    assert reverse.verdict is Verdict.MATCH
    assert reverse.differences == ()
    assert reverse.exchange.routing_key == "A"  # the owner was stored with the pair


@pytest.fixture
def postgres_store() -> Iterator[str]:
    """A PostgreSQL store URL whose tables live in a fresh schema, dropped afterwards."""
    with postgres_schema_url() as url:
        yield url


async def test_a_pair_learned_by_one_shim_of_a_fleet_translates_in_another(
    sides: tuple[Served, Served], postgres_store: str
) -> None:
    """Two shims running at once on one PostgreSQL store: a Move through shim A, then a Reverse by Bank's id
    through shim B reaches BK with BK's id (B finds the pair in the store)."""
    bank, bk = sides
    async with (
        _shim(bank, bk, store={"url": postgres_store}) as (shim_a, sink_a, client_a),
        _shim(bank, bk, store={"url": postgres_store}) as (shim_b, sink_b, client_b),
    ):
        await client_a.move("A", "10.00")
        (move,) = await sink_a.wait_for(1)
        assert shim_a.store is not None
        await shim_a.store.flush()
        assert _book(shim_b).known("bank", "movement", "M1") is None  # B never saw the Move
        reversal = await client_b.reverse("M1")
        (reverse,) = await sink_b.wait_for(1)
        (bk_movement_id,) = bk.payments.movements
        assert _book(shim_b).known("bank", "movement", "M1") == bk_movement_id
    assert move.verdict is Verdict.MATCH
    assert reversal.reverses_movement_id == "M1"
    (sent,) = bk.payments.sent("Reverse")
    assert sent.movement_id == bk_movement_id
    assert reverse.verdict is Verdict.MATCH
    assert reverse.differences == ()
    assert sink_a.comparisons == [move]  # each call was compared by the shim it went through
