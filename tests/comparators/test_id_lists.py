"""Ids minted in a list a `keyed` or `multiset` rule lets BK answer in another order: which of BK's elements
faces which of Bank's (comparators/_id_lists.py), and the pairs `pair_answers` makes of them.

The messages are those of tests/shim/basket.proto: `Placed` holds `orders`, each with the `order_id` its
side minted, a `client_order_id`, `fills` each with an `exec_id` minted too, and `replaces`, a reference to
an earlier order; and `order_ids`, a list of minted ids alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comparators import build_rules
from comparators.ids import Found, IdFields, IdKind, pair_answers
from shim.units import parse_duration
from tests.services._protoc import registry_of

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = registry_of(ROOT / "tests" / "shim" / "basket.proto")
PLACE = "/basket.v1.Desk/Place"
ORDER = IdKind(
    "order",
    minted=("basket.v1.Order.order_id", "basket.v1.Placed.order_ids"),
    references=("basket.v1.Order.replaces",),
)
EXEC = IdKind("exec", minted=("basket.v1.Fill.exec_id",))
FIELDS = IdFields((ORDER, EXEC), REGISTRY)

KEYED = {"path": "basket.v1.Placed.orders", "rule": "keyed", "key": ["client_order_id"]}
BY_ID = {"path": "basket.v1.Placed.orders", "rule": "keyed", "key": ["order_id"]}
MULTISET = {"path": "basket.v1.Placed.orders", "rule": "multiset"}
IDS_MULTISET = {"path": "basket.v1.Placed.order_ids", "rule": "multiset"}
PRICES = {"path": "basket.v1.Order.price", "rule": "decimal"}


def order(order_id: str, client_order_id: str = "", symbol: str = "KO", price: str = "1", **more: Any) -> Any:
    fills = [REGISTRY.message_class("basket.v1.Fill")(exec_id=e, quantity=1) for e in more.pop("fills", ())]
    return REGISTRY.message_class("basket.v1.Order")(
        order_id=order_id, client_order_id=client_order_id, symbol=symbol, price=price, fills=fills, **more
    )


def placed(*orders: Any, order_ids: tuple[str, ...] = ()) -> Any:
    return REGISTRY.message_class("basket.v1.Placed")(account="A", orders=orders, order_ids=order_ids)


def _minted(answer: Any) -> list[Found]:
    return [f for f in FIELDS.find(PLACE, "response", [answer], None) if f.minted]


def pairs(
    bank: Any, bk: Any, *rules: dict[str, Any], known: dict[str, str] | None = None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(the pairs to learn, the pairs of elements not told apart, to read these answers alone) of two
    answers under `rules`; `known`: BK's ids in memory -> Bank's."""
    told, unsure = pair_answers(
        FIELDS,
        REGISTRY,
        build_rules(list(rules), REGISTRY, parse_duration),
        PLACE,
        ([bank], [bk]),
        (_minted(bank), _minted(bk)),
        (lambda found: (known or {}).get(found.value)),
    )
    return [(a.value, b.value) for a, b in told], [(a.value, b.value) for a, b in unsure]


BANK = placed(order("O1", "c1", "KO"), order("O2", "c2", "PEP"), order("O3", "c3", "MO"))
BK = placed(order("z", "c3", "MO"), order("y", "c2", "PEP"), order("x", "c1", "KO"))


def test_an_ordered_list_pairs_by_position() -> None:
    """With no list rule, another order is a difference: the ids still pair by position, as before."""
    assert pairs(BANK, BK) == ([("O1", "z"), ("O2", "y"), ("O3", "x")], [])


def test_a_keyed_list_pairs_by_key_whatever_the_order() -> None:
    assert pairs(BANK, BK, KEYED) == ([("O1", "x"), ("O2", "y"), ("O3", "z")], [])


def test_a_keyed_list_pairs_the_keys_both_sides_hold_once() -> None:
    """A key on one side only pairs nothing, even in lists as long; a key twice on each side is paired in
    order for the comparison alone (as the comparison pairs it), never learned, and twice on one side only,
    not at all; lists of other lengths still pair the keys they share."""
    bank = placed(order("O1", "c1"), order("O2", "c2"), order("O3", "c2"), order("O4", "c4"))
    bk = placed(order("b", "c2"), order("a", "c1"), order("c", "c2"), order("e", "c5"))
    assert pairs(bank, bk, KEYED) == ([("O1", "a")], [("O2", "b"), ("O3", "c")])
    once = placed(order("O1", "c1"), order("O2", "c2"))  # c2 once on Bank's side, twice on BK's
    assert pairs(once, bk, KEYED) == ([("O1", "a")], [])
    longer = placed(order("e", "c5"), order("b", "c2"), order("a", "c1"))
    assert pairs(placed(order("O1", "c1"), order("O2", "c2")), longer, KEYED) == (
        [("O1", "a"), ("O2", "b")],
        [],
    )


def test_a_list_keyed_by_its_minted_id_pairs_elements_equal_apart_from_it() -> None:
    """Minted ids never match across the sides (nor should two that happen to have one text): a list keyed
    by them pairs as a multiset does."""
    bk = placed(order("O2", "", "PEP"), order("O1", "", "KO"))
    assert pairs(placed(order("O1", "", "KO"), order("O2", "", "PEP")), bk, BY_ID) == (
        [("O1", "O1"), ("O2", "O2")],
        [],
    )
    crossed = placed(order("O1", "", "PEP"), order("O2", "", "KO"))
    assert pairs(placed(order("O1", "", "KO"), order("O2", "", "PEP")), crossed, BY_ID) == (
        [("O1", "O2"), ("O2", "O1")],
        [],
    )


def test_a_multiset_pairs_elements_equal_apart_from_their_ids() -> None:
    bank = placed(order("O1", symbol="KO"), order("O2", symbol="PEP"), order("O3", symbol="MO"))
    bk = placed(order("z", symbol="MO"), order("x", symbol="KO"), order("y", symbol="PEP"))
    assert pairs(bank, bk, MULTISET) == ([("O1", "x"), ("O2", "y"), ("O3", "z")], [])


def test_a_multiset_pairs_elements_alike_under_the_rules_each_the_only_one_for_the_other() -> None:
    """BK writes prices with two decimals: alike under `decimal`, each order to one of the other side."""
    bank = placed(order("O1", symbol="KO", price="1.5"), order("O2", symbol="PEP", price="2"))
    bk = placed(order("y", symbol="PEP", price="2.00"), order("x", symbol="KO", price="1.50"))
    assert pairs(bank, bk, MULTISET, PRICES) == ([("O1", "x"), ("O2", "y")], [])
    assert pairs(bank, bk, MULTISET) == ([], []), "without the rule, they are not alike"
    # Bank's order alike to two of BK's (each equal to none of the others): which is it is not known
    twice = placed(order("y", price="1.50"), order("x", price="1.500"))
    assert pairs(placed(order("O1", price="1.5"), order("O2", price="9")), twice, MULTISET, PRICES) == (
        [],
        [],
    )


def test_a_multiset_does_not_tell_apart_elements_equal_apart_from_their_ids() -> None:
    """Two orders alike on each side: which of Bank's is which of BK's is not known, and a wrong pair would
    send a later call to the wrong order. They are paired in order for the comparison alone. The order told
    apart pairs; alike elements of different counts pair nothing."""
    bank = placed(order("O1", symbol="KO"), order("O2", symbol="KO"), order("O3", symbol="PEP"))
    bk = placed(order("z", symbol="PEP"), order("x", symbol="KO"), order("y", symbol="KO"))
    assert pairs(bank, bk, MULTISET) == ([("O3", "z")], [("O1", "x"), ("O2", "y")])
    three = placed(order("z", symbol="PEP"), order("x", symbol="KO"), order("y", symbol="KO"), order("w"))
    assert pairs(bank, three, MULTISET) == ([("O3", "z")], [])


def test_a_multiset_of_ids_alone_tells_none_apart() -> None:
    """A list of minted ids alone in another order: nothing tells which is which but the position, which the
    rule says nothing of. A single id pairs."""
    assert pairs(placed(order_ids=("O1", "O2")), placed(order_ids=("y", "x")), IDS_MULTISET) == (
        [],
        [("O1", "y"), ("O2", "x")],
    )
    assert pairs(placed(order_ids=("O1",)), placed(order_ids=("x",)), IDS_MULTISET) == ([("O1", "x")], [])


def test_ids_in_a_list_inside_an_element_pair_within_the_element_it_faces() -> None:
    """Fills (in order) of orders keyed by the client's id: the fills of Bank's c1 pair with those of BK's
    c1, wherever it is; fills one side made longer pair nothing, their order still pairs."""
    bank = placed(order("O1", "c1", fills=("E1", "E2")), order("O2", "c2", fills=("E3",)))
    bk = placed(order("y", "c2", fills=("f3", "f4")), order("x", "c1", fills=("f1", "f2")))
    assert pairs(bank, bk, KEYED) == ([("O1", "x"), ("E1", "f1"), ("E2", "f2"), ("O2", "y")], [])


def test_references_in_bks_elements_are_read_as_banks_ids() -> None:
    """Two replacing orders alike but for the order each replaces: known pairs tell them apart."""
    bank = placed(order("O3", replaces="O1"), order("O4", replaces="O2"))
    bk = placed(order("d", replaces="b"), order("c", replaces="a"))
    assert pairs(bank, bk, MULTISET, known={"a": "O1", "b": "O2"}) == ([("O3", "c"), ("O4", "d")], [])
    assert pairs(bank, bk, MULTISET) == ([], []), "unknown references tell nothing"
