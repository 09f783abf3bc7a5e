"""A multiset pairs elements equal under the rules whatever their order: as many as can pair, however long
the list, and a pairing it cannot find within its budget is unproven, never made up.

The probe service is tests/comparators/odd.proto.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comparators import Verdict
from comparators._matching import Unproven, maximum_matching
from tests.comparators._odd import STREAM, Amount, Leg, Odd, Timestamp, judge, rows

LEGS = {"path": "odd.v1.Odd.leg_list", "rule": "multiset"}
QTY = {"path": "odd.v1.Leg.qty", "rule": "decimal", "name": "qty"}
AT = {"path": "odd.v1.Leg.at", "rule": "timestamp", "tolerance": "1s", "name": "clock"}
SAMPLES = {"path": "odd.v1.Odd.samples", "rule": "multiset"}


def _within(absolute: float) -> dict[str, Any]:
    return {"path": "odd.v1.Odd.samples", "rule": "number", "absolute": absolute, "name": "near"}


@pytest.mark.parametrize("n", [101, 2000])
@pytest.mark.parametrize("ids", [True, False], ids=["with-ids", "told-apart-by-the-decimals-alone"])
def test_a_long_multiset_pairs_elements_equal_under_the_rules(n: int, ids: bool) -> None:
    """Past 100 x 100 left-over elements a multiset paired them by position: 101 legs in another order,
    each "1.5" against "1.50", gave 200 real differences. Now the elements are sorted by a fingerprint
    (what the rules cannot tolerate a difference in, a decimal as its number) and those of one fingerprint
    paired: every leg pairs with its own, each difference tolerated."""

    def leg(i: int, qty: str) -> Any:
        return Leg(id=str(i), qty=qty) if ids else Leg(qty=qty)

    bank = Odd(leg_list=[leg(i, f"{i}.5") for i in range(n)])
    bk = Odd(leg_list=[leg(i, f"{i}.50") for i in reversed(range(n))])
    found = judge(bank, bk, [LEGS, QTY])
    assert found.verdict is Verdict.MATCH, found.reason or rows(found)[:3]
    assert len(found.differences) == n
    assert all(d.rule == "qty" and d.bk == f"{d.bank}0" for d in found.differences)


def test_a_long_multiset_stream_of_messages_each_with_a_tolerated_time() -> None:
    """A stream of 150 messages under a multiset stream rule, each with a server time the `timestamp`
    rule tolerates, in another order: a match (it was a mismatch past 100 messages)."""
    n = 150
    bank = [Odd(single=Leg(id=str(i), at=Timestamp(seconds=1000 + i))) for i in range(n)]
    bk = [Odd(single=Leg(id=str(i), at=Timestamp(seconds=1000 + i, nanos=1000))) for i in reversed(range(n))]
    found = judge(bank, bk, [{"path": "odd.v1.Odds/Stream", "rule": "multiset"}, AT], STREAM)
    assert found.verdict is Verdict.MATCH, found.reason or rows(found)[:3]
    assert {d.path for d in found.differences} == {f"[{i}].single.at" for i in range(n)}


def test_a_multiset_finds_the_most_pairs_under_the_rules() -> None:
    """Each element took the first alike one left, so one that could pair with two took the one the next
    needed: [10, 9] against [9.5, 11] within 1 paired 10 with 9.5, and 9 with 11 (a real difference),
    though 10-11 and 9-9.5 are both within it. It finds a pairing with as many pairs as there are: in
    numbers, and in messages (legs told apart by their times alone)."""
    assert judge(Odd(samples=[10.0, 9.0]), Odd(samples=[9.5, 11.0]), [SAMPLES, _within(1)]).verdict is (
        Verdict.MATCH
    )
    legs = [Leg(at=Timestamp(seconds=10)), Leg(at=Timestamp(seconds=9))]
    other = [Leg(at=Timestamp(seconds=9, nanos=500_000_000)), Leg(at=Timestamp(seconds=11))]
    found = judge(Odd(leg_list=legs), Odd(leg_list=other), [LEGS, AT])
    assert found.verdict is Verdict.MATCH, rows(found)
    assert sorted((str(d.bank), str(d.bk)) for d in found.differences) == [
        ("1970-01-01T00:00:09Z", "1970-01-01T00:00:09.500Z"),
        ("1970-01-01T00:00:10Z", "1970-01-01T00:00:11Z"),
    ]
    unlike = judge(Odd(samples=[10.0, 9.0]), Odd(samples=[9.5, 12.0]), [SAMPLES, _within(1)])
    assert sorted((d.bank, d.bk, d.rule) for d in unlike.differences) == [
        (9.0, 9.5, "near"),
        (10.0, 12.0, ""),
    ]


def test_a_multiset_too_long_to_pair_under_the_rules_is_unproven() -> None:
    """Pairing 400 numbers none of which is within the tolerance of another needs 160,000 trials, more than
    a comparison may make (50,000): which pair is not known, and no difference is made up. The call is an
    `error` saying so, with one `unproven` difference (how many elements of each side were left over);
    a real difference elsewhere still makes it a mismatch. Before, such a list paired by position."""
    n = 400
    bank, bk = [float(i) for i in range(n)], [i + 0.5 for i in range(n)]
    found = judge(Odd(samples=bank), Odd(samples=bk), [SAMPLES, _within(0.1)])
    assert found.verdict is Verdict.ERROR
    assert rows(found) == [("samples", "unproven", n, n, "")]
    assert found.reason == (
        "unproven: pairing the elements of a multiset under the rules needs more than 50,000 trials, a"
        " comparison's most (samples: 400 of Bank's elements and 400 of BK's left over once equal ones"
        " paired)"
    )
    also = judge(Odd(samples=bank, count=1), Odd(samples=bk, count=2), [SAMPLES, _within(0.1)])
    assert also.verdict is Verdict.MISMATCH
    assert rows(also) == [("samples", "unproven", n, n, ""), ("count", "changed", 1, 2, "")]


def test_a_multiset_whose_elements_hold_one_too_long_to_pair_is_unproven_itself() -> None:
    """Two messages of a multiset stream alike but for their lists too long to pair: whether the messages
    are alike is not known either, so neither is the stream's pairing."""
    n = 400
    bank = [
        Odd(count=1, samples=[float(i) for i in range(n)]),
        Odd(count=1, samples=[float(-i) for i in range(n)]),
    ]
    bk = [
        Odd(count=1, samples=[i + 0.5 for i in range(n)]),
        Odd(count=1, samples=[-i - 0.5 for i in range(n)]),
    ]
    specs = [{"path": "odd.v1.Odds/Stream", "rule": "multiset"}, SAMPLES, _within(0.1)]
    found = judge(bank, bk, specs, STREAM)
    assert found.verdict is Verdict.ERROR
    assert rows(found) == [("<messages>", "unproven", 2, 2, "")]


# ---- the fingerprint never parts elements alike under the rules ---------------------------------------

RULES = [
    {"path": "odd.v1.Odds/Stream", "rule": "multiset"},
    LEGS,
    QTY,
    AT,
    {"path": "odd.v1.Odd.amount", "rule": "decimal"},
    {"path": "odd.v1.Odd.names", "rule": "string"},
    {"path": "odd.v1.Odd.rate", "rule": "number", "absolute": 0.01},
    {"path": "odd.v1.Odd.blob", "rule": "ignore"},
    {"path": "odd.v1.Odd.wcount", "rule": "bk-may-add"},
]
decimals = st.decimals(min_value=-1000, max_value=1000, places=2, allow_nan=False, allow_infinity=False)


@st.composite
def _tolerated_pair(draw: st.DrawFn, index: int) -> tuple[Any, Any]:
    """A message of the stream and BK's, differing only where the rules tolerate."""
    legs = draw(st.lists(st.tuples(st.text(max_size=3), decimals, st.integers(0, 10**6)), max_size=4))
    bank_legs = [Leg(id=i, qty=str(q), at=Timestamp(seconds=s)) for i, q, s in legs]
    bk_legs = [
        Leg(id=i, qty=f"{q}0", at=Timestamp(seconds=s, nanos=draw(st.integers(0, 10**9 - 1))))
        for i, q, s in legs
    ]
    draw(st.randoms()).shuffle(bk_legs)
    amount, rate = draw(decimals), draw(st.floats(-1e6, 1e6))
    names = draw(st.lists(st.text(alphabet="ab z", max_size=4), max_size=3))
    samples = draw(st.lists(st.sampled_from([0.0, -0.0, 1.5, float("nan")]), max_size=3))
    common: dict[str, Any] = {
        "count": index % 2,
        "samples": samples,
        "legs": {1: Leg(id="m")},
        "color": draw(st.integers(0, 5)),
    }
    bank = Odd(
        leg_list=bank_legs,
        amount=Amount(value=str(amount), currency_code="USD"),
        names=names,
        rate=rate,
        blob=b"a",
        **common,
    )
    bk = Odd(
        leg_list=bk_legs,
        amount=Amount(value=f"{amount}0", currency_code="USD"),
        names=[name.upper() for name in names],
        rate=rate + draw(st.floats(-0.009, 0.009)),
        blob=draw(st.binary(max_size=3)),
        wcount={"value": draw(st.integers(0, 9))},
        **common,
    )
    return bank, bk


@given(data=st.data(), n=st.integers(2, 6))
@settings(max_examples=40, deadline=None)
def test_messages_alike_under_the_rules_pair_in_any_order(data: st.DataObject, n: int) -> None:
    """Messages of a stream, each differing from Bank's only where a rule tolerates (decimals written
    otherwise, a time within the tolerance, names in capitals, a rate within 0.01, ignored bytes, a field
    BK may add, a list of legs in another order), in another order: a match. A fingerprint that parted two
    alike messages would leave one without its own, a mismatch; half of them share a `count`, and are
    tried against each other."""
    pairs = [data.draw(_tolerated_pair(i)) for i in range(n)]
    bank = [b for b, _ in pairs]
    bk = [k for _, k in pairs]
    data.draw(st.randoms()).shuffle(bk)
    found = judge(bank, bk, RULES, STREAM)
    assert found.verdict is Verdict.MATCH, rows(found)


# ---- the matching itself ------------------------------------------------------------------------------


def _most_pairs(edges: set[tuple[int, int]], n: int) -> int:
    """The most pairs, by trying every assignment (small graphs only)."""
    best = 0
    for chosen in itertools.permutations(range(n)):
        best = max(best, sum((left, right) in edges for left, right in enumerate(chosen)))
    return best


@given(n=st.integers(1, 6), density=st.floats(0, 1), seed=st.integers(0, 2**16))
@settings(max_examples=200, deadline=None)
def test_the_matching_has_as_many_pairs_as_can_be(n: int, density: float, seed: int) -> None:
    """On any likeness between a few elements of each side: as many pairs as the best assignment, each
    pair alike, no element twice; no pair asked about twice."""
    chance = random.Random(seed)
    edges = {(a, b) for a in range(n) for b in range(n) if chance.random() < density}
    asked: list[tuple[int, int]] = []

    def alike(left: int, right: int) -> bool:
        asked.append((left, right))
        return (left, right) in edges

    found = maximum_matching(list(range(n)), list(range(n)), alike, [10_000])
    assert all(pair in edges for pair in found.items())
    assert len(set(found.values())) == len(found)
    assert len(found) == _most_pairs(edges, n)
    assert len(asked) == len(set(asked))


def test_the_matching_stops_at_its_budget() -> None:
    """Within the budget, the budget left is what it did not use; past it, Unproven."""
    budget = [10]
    assert maximum_matching([0, 1], [0, 1], lambda a, b: a == b, budget) == {0: 0, 1: 1}
    assert budget == [8]  # (0, 0), then (1, 1): a taken element is never asked about
    with pytest.raises(Unproven):
        maximum_matching(list(range(5)), list(range(5)), lambda a, b: False, [24])
    assert maximum_matching(list(range(5)), list(range(5)), lambda a, b: False, [25]) == {}
