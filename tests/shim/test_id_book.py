"""The id map: pairs learned both ways, first pair wins, pending ids, memory bounded over the store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from comparators import DescriptorRegistry
from comparators.ids import Found, IdFields, IdKind
from shim.ids import IdBook
from shim.metrics import Counters
from shim.store import Store
from tests.services.custody import REGISTRY as CUSTODY

SAMPLE = Path(__file__).resolve().parents[2] / "sample_ledger" / "bank.binpb"
FIELDS = IdFields(
    [IdKind("trade", ("bank.v1.Trade.trade_id",), owner_key=("bank.v1.Trade.account_id",))],
    DescriptorRegistry.from_files([SAMPLE]),
)


def minted(value: str, owner: str = "A1", kind: str = "trade") -> Found:
    return Found(kind, True, (0, "trade_id"), value, owner)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store.open(str(tmp_path / "shim.db"))
    await store.start()
    yield store
    await store.close()


async def test_a_pair_translates_both_ways_and_keeps_its_owner() -> None:
    """A learned pair answers from either side's id, and the owner key is known from either id."""
    counters = Counters()
    book = IdBook(FIELDS, None, counters)
    assert book.learn([(minted("T1"), minted("trd_1"))], {}) == 1
    assert await book.counterpart("bank", "trade", "T1") == "trd_1"
    assert await book.counterpart("bk", "trade", "trd_1") == "T1"
    assert (book.owner("bank", "trade", "T1"), book.owner("bk", "trade", "trd_1")) == ("A1", "A1")
    assert await book.counterpart("bank", "trade", "T2") is None
    assert book.owner("bank", "trade", "T2") is None
    assert counters.get("ids_learned", "trade") == 1


async def test_the_first_pair_of_an_id_wins_and_a_conflict_is_counted() -> None:
    """A later pair naming an id already paired (on either side) is ignored and counted; the same pair
    learned again is not a conflict."""
    counters = Counters()
    book = IdBook(FIELDS, None, counters)
    book.learn([(minted("T1"), minted("trd_1"))], {})
    assert book.learn([(minted("T1"), minted("trd_1"))], {}) == 0
    assert counters.get("id_conflicts", "trade") == 0
    assert book.learn([(minted("T1"), minted("trd_2")), (minted("T9"), minted("trd_1"))], {}) == 0
    assert counters.get("id_conflicts", "trade") == 2
    assert (book.known("bank", "trade", "T1"), book.known("bk", "trade", "trd_1")) == ("trd_1", "T1")
    assert book.known("bk", "trade", "trd_2") is None


async def test_a_pending_id_is_waited_for_until_learned() -> None:
    """An id the primary minted is pending: its owner is known at once, and a translation waits for the
    shadow's answer to pair it."""
    book = IdBook(FIELDS, None, Counters())
    (pending,) = book.expect("bank", [minted("T1", owner="A7")], {})
    assert book.owner("bank", "trade", "T1") == "A7"
    waiting = asyncio.ensure_future(book.counterpart("bank", "trade", "T1", asyncio.Event()))
    await asyncio.sleep(0)
    assert not waiting.done()
    book.learn([(minted("T1", owner="A7"), minted("trd_1", owner="A7"))], {})
    assert await asyncio.wait_for(waiting, 5) == "trd_1"
    assert pending.future.result() == "trd_1"


async def test_a_pending_id_settled_without_a_pair_is_unmapped_at_once() -> None:
    """When the minting call ends without a pair (the shadow failed), a waiting translation ends with
    no counterpart instead of waiting for its bound."""
    book = IdBook(FIELDS, None, Counters())
    pendings = book.expect("bank", [minted("T1")], {})
    waiting = asyncio.ensure_future(book.counterpart("bank", "trade", "T1", asyncio.Event()))
    await asyncio.sleep(0)
    book.settle(pendings)
    assert await asyncio.wait_for(waiting, 5) is None
    assert book.known("bank", "trade", "T1") is None
    assert book.owner("bank", "trade", "T1") == "A1"  # still ordered (and marked) on its account


async def test_waiting_for_a_pending_id_ends_when_the_call_is_given_up() -> None:
    """The wait for a pending id is bounded by the caller's stop event."""
    book = IdBook(FIELDS, None, Counters())
    book.expect("bank", [minted("T1")], {})
    stop = asyncio.Event()
    waiting = asyncio.ensure_future(book.counterpart("bank", "trade", "T1", stop))
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(waiting, 5) is None


async def test_without_a_stop_event_a_pending_id_is_not_waited_for() -> None:
    """A lookup for a comparison never waits for a pending id."""
    book = IdBook(FIELDS, None, Counters())
    book.expect("bank", [minted("T1")], {})
    assert await asyncio.wait_for(book.counterpart("bank", "trade", "T1"), 5) is None


async def test_an_id_not_known_yet_waits_for_the_answers_of_earlier_calls_that_may_mint_it() -> None:
    """An earlier call (order 3) whose answer may mint trades is not answered yet: a call of order 5 naming
    a trade the map does not know waits until that answer is in, then for the pair it made pending."""
    counters = Counters()
    book = IdBook(FIELDS, None, counters)
    answered = book.answering(3, frozenset({"trade"}))
    waiting = asyncio.ensure_future(book.counterpart("bank", "trade", "T1", asyncio.Event(), before=5))
    await asyncio.sleep(0)
    assert not waiting.done()
    book.expect("bank", [minted("T1")], {}, order=3)  # the primary's answer minted T1 ...
    answered.set_result(None)
    await asyncio.sleep(0)
    assert not waiting.done()  # ... and the call now waits for its pair
    book.learn([(minted("T1"), minted("trd_1"))], {})
    assert await asyncio.wait_for(waiting, 5) == "trd_1"
    assert counters.get("ids_waited_for_answers", "trade") == 1


async def test_only_earlier_unanswered_calls_of_the_kind_are_waited_for() -> None:
    """A call never waits for the answer of a later call (which may wait behind it in the lanes), nor for
    one that mints another kind; an answer that minted something else ends the wait with no pair; and the
    caller's stop ends it too. (Calls register as they take their places: in their order.)"""
    book = IdBook(FIELDS, None, Counters())
    book.answering(2, frozenset({"account"}))
    answered = book.answering(4, frozenset({"trade"}))
    book.answering(7, frozenset({"trade"}))
    assert (
        await asyncio.wait_for(book.counterpart("bank", "trade", "T1", asyncio.Event(), before=3), 5) is None
    )
    waiting = asyncio.ensure_future(book.counterpart("bank", "trade", "T1", asyncio.Event(), before=5))
    await asyncio.sleep(0)
    assert not waiting.done()
    answered.set_result(None)  # it minted T2, not T1; the call of order 7 came later
    assert await asyncio.wait_for(waiting, 5) is None
    stop = asyncio.Event()
    waiting = asyncio.ensure_future(book.counterpart("bank", "trade", "T1", stop, before=9))
    await asyncio.sleep(0)
    assert not waiting.done()  # order 7's answer is not in
    stop.set()
    assert await asyncio.wait_for(waiting, 5) is None
    # without a stop event (a comparison's lookup) or an order, nothing is waited for
    assert await asyncio.wait_for(book.counterpart("bank", "trade", "T1", None, before=9), 5) is None
    assert await asyncio.wait_for(book.counterpart("bank", "trade", "T1", asyncio.Event()), 5) is None


async def test_a_call_waits_for_the_pair_of_an_id_minted_by_an_earlier_call_alone() -> None:
    """A call of order 5 in the lanes waits for an id pending from a call of order 3, never for one of
    order 8 (which may wait behind it); an earlier call minting the same id again makes it waited for."""
    book = IdBook(FIELDS, None, Counters())
    book.expect("bank", [minted("T1")], {}, order=8)
    stop = asyncio.Event()
    assert await asyncio.wait_for(book.counterpart("bank", "trade", "T1", stop, before=5), 5) is None
    book.expect("bank", [minted("T1")], {}, order=3)  # the same id, pending from the earlier call too
    waiting = asyncio.ensure_future(book.counterpart("bank", "trade", "T1", stop, before=5))
    await asyncio.sleep(0)
    assert not waiting.done()
    book.learn([(minted("T1"), minted("trd_1"))], {})
    assert await asyncio.wait_for(waiting, 5) == "trd_1"
    book.expect("bank", [minted("T2")], {})  # an order not known: waited for, as before
    unknown = asyncio.ensure_future(book.counterpart("bank", "trade", "T2", stop, before=5))
    await asyncio.sleep(0)
    assert not unknown.done()
    stop.set()
    assert await asyncio.wait_for(unknown, 5) is None


async def test_memory_is_bounded_and_evicted_pairs_come_back_from_the_store(store: Store) -> None:
    """With room for two pairs, the oldest leaves memory; naming it reads it from the store."""
    book = IdBook(FIELDS, store, Counters(), cache=2)
    for n in range(3):
        book.learn([(minted(f"T{n}"), minted(f"trd_{n}"))], {})
    assert len(book) == 2
    assert book.known("bank", "trade", "T0") is None
    await store.flush()
    assert await book.counterpart("bk", "trade", "trd_0") == "T0"
    assert book.known("bank", "trade", "T0") == "trd_0"  # back in memory
    assert len(book) == 2


async def test_a_pair_conflicting_with_one_that_left_memory_is_a_conflict_once_checked(store: Store) -> None:
    """The first pair of an id wins in the store too: a pair whose BK id is paired in the store, with a pair
    memory no longer holds, is counted as a conflict and memory keeps the store's pair. Before, it was
    taken as new: BK reusing an old id for a new trade read as that trade, the divergence hidden."""
    counters = Counters()
    book = IdBook(FIELDS, store, counters, cache=1)
    book.learn([(minted("T0"), minted("trd_0"))], {})
    book.learn([(minted("T1"), minted("trd_1"))], {})  # T0 leaves memory
    await store.flush()
    book.learn([(minted("T9"), minted("trd_0"))], {})
    await book.checked()
    assert counters.get("id_conflicts", "trade") == 1
    assert (book.known("bk", "trade", "trd_0"), book.known("bank", "trade", "T9")) == ("T0", None)
    assert await book.counterpart("bank", "trade", "T9") is None
    await store.flush()
    assert [(p.bank_id, p.bk_id) for p in await store.pairs.find("trade", "bk", ["trd_0"])] == [
        ("T0", "trd_0")
    ]


async def test_a_pair_another_replica_learned_first_wins_once_checked(store: Store) -> None:
    """Two replicas on one store: the pair one learned first wins on the other too."""
    first, counters = IdBook(FIELDS, store, Counters(), shared=True), Counters()
    second = IdBook(FIELDS, store, counters, shared=True)
    await second.preload()
    first.learn([(minted("T0"), minted("trd_0"))], {})
    await store.flush()
    second.learn([(minted("T9"), minted("trd_0")), (minted("T5"), minted("trd_5"))], {})
    await second.checked()
    assert counters.get("id_conflicts", "trade") == 1
    assert second.known("bk", "trade", "trd_0") == "T0"
    assert second.known("bank", "trade", "T5") == "trd_5", "a pair of its own stays"


async def test_a_new_book_preloads_the_most_recent_pairs(store: Store) -> None:
    """A restarted shim starts with the store's most recent pairs in memory, owners included."""
    first = IdBook(FIELDS, store, Counters())
    for n in range(5):
        first.learn([(minted(f"T{n}", owner=f"A{n}"), minted(f"trd_{n}", owner=f"A{n}"))], {})
    await store.flush()
    second = IdBook(FIELDS, store, Counters(), cache=3)
    await second.preload()
    assert len(second) == 3
    assert [second.known("bank", "trade", f"T{n}") for n in range(5)] == [
        None,
        None,
        "trd_2",
        "trd_3",
        "trd_4",
    ]
    assert second.owner("bk", "trade", "trd_4") == "A4"


async def test_query_scoped_pairs_hold_only_for_their_scope() -> None:
    """A page token paired for one query does not translate the same token of another query."""
    book = IdBook(FIELDS, None, Counters())
    page = Found("page", True, (0, "next_page_token"), "50", "")
    book.learn([(page, page._replace(value="QTAwMDE="))], {"page": "query-a"})
    assert await book.counterpart("bank", "page", "50", scope="query-a") == "QTAwMDE="
    assert await book.counterpart("bank", "page", "50", scope="query-b") is None
    assert await book.counterpart("bk", "page", "QTAwMDE=", scope="query-a") == "50"


async def test_held_tells_from_memory_which_side_minted_a_text() -> None:
    """Where the id spaces overlap, one text may be an id on both sides: `held` tells, from memory alone,
    whether a side minted it (paired, pending, or minted without a pair), whatever the other side holds."""
    book = IdBook(FIELDS, None, Counters())
    book.learn([(minted("7"), minted("5"))], {})  # Bank's 7 is BK's 5
    assert (book.held("bank", "trade", "7"), book.held("bk", "trade", "5")) == (True, True)
    assert (book.held("bank", "trade", "5"), book.held("bk", "trade", "7")) == (False, False)
    pendings = book.expect("bank", [minted("5")], {})  # Bank mints 5: pending, then without a pair
    assert book.held("bank", "trade", "5")
    book.settle(pendings)
    assert book.held("bank", "trade", "5")
    assert await book.minted("bank", "trade", "5")
    assert not book.held("bank", "trade", "9")


async def test_an_id_kept_from_the_other_mode_has_its_owner_in_the_primarys_ids() -> None:
    """Custody's movements are owned by their accounts, whose ids each side mints. A movement id of the
    other side (kept from another mode) finds its owner through the pair, in the asking side's ids:
    with BK primary, Bank's movement is on BK's account; with Bank primary, BK's is on Bank's."""
    fields = IdFields(
        [
            IdKind("account", ("custody.v1.Account.account_id",)),
            IdKind(
                "movement",
                ("custody.v1.Movement.movement_id",),
                owner_key=("custody.v1.Movement.from_account",),
            ),
        ],
        CUSTODY,
    )
    book = IdBook(fields, None, Counters())

    def found(kind: str, value: str, owner: str = "") -> Found:
        return Found(kind, True, (0, f"{kind}_id"), value, owner)

    book.learn([(found("account", "A1"), found("account", "acc_1"))], {})
    book.learn([(found("movement", "M1", "A1"), found("movement", "mv_1", "acc_1"))], {})
    assert book.owner_for("bk", "movement", "M1") == "acc_1"  # Bank's id with BK primary
    assert book.owner_for("bank", "movement", "mv_1") == "A1"  # BK's id with Bank primary
    assert book.owner_for("bank", "movement", "M1") == "A1"  # each side's own
    assert book.owner_for("bk", "movement", "mv_1") == "acc_1"
    assert book.owner_for("bk", "movement", "M2") is None
    book.learn([(found("movement", "M3", "someone"), found("movement", "mv_3", "someone"))], {})
    assert book.owner_for("bk", "movement", "M3") == "someone"  # a key that is no id: as it is
