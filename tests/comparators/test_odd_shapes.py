"""Odd shapes of answers and rules, compared as a client would judge them: no real difference hidden, no
difference a client could not notice, and no comparison lost to an error.

The probe service is tests/comparators/odd.proto (and ext.proto, proto2 with an extension).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing

import pytest

from comparators import Outcome, RuleError, Verdict, build_rules, compare
from shim.evidence.record import record_of
from shim.units import parse_duration
from tests.comparators._exchanges import answer, exchange
from tests.comparators._odd import (
    GET,
    HERE,
    STREAM,
    Amount,
    Leg,
    Money,
    Odd,
    Timestamp,
    compare_in_child,
    judge,
    rows,
)
from tests.services._protoc import registry_of

EXT = registry_of(HERE / "ext.proto")


def test_an_extension_that_differs_is_a_difference() -> None:
    """A proto2 extension is a field of the message like any other: `(ext.v1.balance)` 5 against 7 is a
    difference (it was a match: the walk visited the declared fields only)."""
    reply = EXT.message_class("ext.v1.Reply")
    balance = EXT.pool.FindExtensionByName("ext.v1.balance")
    bank, bk, same = reply(id="x"), reply(id="x"), reply(id="x")
    bank.Extensions[balance], bk.Extensions[balance], same.Extensions[balance] = 5, 7, 5
    rules = build_rules([], EXT, parse_duration)
    found = compare(exchange("/ext.v1.Ext/Get", answer(bank), answer(bk)), EXT, rules)
    assert (found.verdict, rows(found)) == (Verdict.MISMATCH, [("(ext.v1.balance)", "changed", 5, 7, "")])
    found = compare(exchange("/ext.v1.Ext/Get", answer(bank), answer(same)), EXT, rules)
    assert found.verdict is Verdict.MATCH


@pytest.mark.parametrize("path", ["ext.v1.balance", "(ext.v1.balance)", "ext.v1.*"])
def test_a_rule_names_an_extension_by_its_full_name(path: str) -> None:
    """docs/rules.md: an extension is a field like any other. A rule naming it by its full name, or as a
    difference shows it, `(ext.v1.balance)`, judges it; before, the check at start knew only declared fields
    and refused every way of naming one."""
    reply = EXT.message_class("ext.v1.Reply")
    balance = EXT.pool.FindExtensionByName("ext.v1.balance")
    bank, bk = reply(id="x"), reply(id="x")
    bank.Extensions[balance], bk.Extensions[balance] = 5, 7
    rules = build_rules([{"path": path, "rule": "number", "absolute": 5, "name": "n"}], EXT, parse_duration)
    found = compare(exchange("/ext.v1.Ext/Get", answer(bank), answer(bk)), EXT, rules)
    assert (found.verdict, rows(found)) == (Verdict.MATCH, [("(ext.v1.balance)", "changed", 5, 7, "n")])


def test_a_list_rule_names_an_extension_declared_in_a_message() -> None:
    """An extension declared inside a message is named `package.Message.name` (where it is declared, not
    the message it extends): a multiset on it pairs its elements in another order."""
    reply = EXT.message_class("ext.v1.Reply")
    notes = EXT.pool.FindExtensionByName("ext.v1.Holder.notes")
    bank, bk = reply(id="x"), reply(id="x")
    bank.Extensions[notes].extend(["a", "b"])
    bk.Extensions[notes].extend(["b", "a"])
    ordered = compare(
        exchange("/ext.v1.Ext/Get", answer(bank), answer(bk)), EXT, build_rules([], EXT, parse_duration)
    )
    assert ordered.verdict is Verdict.MISMATCH
    rules = build_rules([{"path": "ext.v1.Holder.notes", "rule": "multiset"}], EXT, parse_duration)
    found = compare(exchange("/ext.v1.Ext/Get", answer(bank), answer(bk)), EXT, rules)
    assert found.verdict is Verdict.MATCH, rows(found)


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        (
            {"path": "ext.v1.Reply.balance", "rule": "number", "absolute": 5},
            "rule 1: path 'ext.v1.Reply.balance' names no field in the descriptors (ext.v1.balance extends"
            " ext.v1.Reply: name an extension by its full name, ext.v1.balance)",
        ),
        (
            {"path": "(ext.v1.balance)", "rule": "timestamp", "tolerance": "1s"},
            "no field it names holds a Timestamp or Duration (ext.v1.balance is not one)",
        ),
        (
            {"path": "ext.v1.balance", "rule": "keyed", "key": ["id"]},
            "names no repeated field or streaming method",
        ),
    ],
)
def test_a_rule_on_an_extension_is_checked_as_one_on_a_field(spec: dict[str, object], says: str) -> None:
    """Named by the message it extends, an extension is not found, and the error says how to name it; a
    rule that could never judge it is refused as on any field."""
    with pytest.raises(RuleError) as caught:
        build_rules([spec], EXT, parse_duration)
    assert says in str(caught.value)


def test_a_rule_on_fields_whose_glob_matches_a_stream_tolerates_no_message_one_side_sent() -> None:
    """`odd.v1.*` also matches the method `odd.v1.Odds/Stream` (a glob's `*` crosses `/`): a `bk-may-add`
    or `ignore` meant for fields tolerated a whole message BK sent more, or left out, of the stream."""
    more = judge([Odd(num=1)], [Odd(num=1), Odd(num=2)], [{"path": "odd.v1.*", "rule": "bk-may-add"}], STREAM)
    assert (more.verdict, rows(more)) == (Verdict.MISMATCH, [("[1]", "added", None, {"num": 2}, "")])
    # (`ignore` on the package's every field is refused unless scoped to methods: scoped to the stream)
    ignore = {"regex": r"odd\.v1\..*", "rule": "ignore", "methods": [STREAM.lstrip("/")]}
    fewer = judge([Odd(num=1), Odd(num=2)], [Odd(num=1)], [ignore], STREAM)
    assert (fewer.verdict, rows(fewer)) == (Verdict.MISMATCH, [("[1]", "removed", {"num": 2}, None, "")])


def test_the_number_rule_compares_64_bit_integers_exactly() -> None:
    """Through a double, 2^62 and 2^62 + 1 are one number, and so are 2^64 - 1 and 2^64 - 1000: a
    tolerance of 0.5 tolerated both. Integers are compared as integers."""
    units = [{"path": "odd.v1.Money.units", "rule": "number", "absolute": 0.5}]
    assert (
        judge(Odd(cash=Money(units=2**62)), Odd(cash=Money(units=2**62 + 1)), units).verdict
        is Verdict.MISMATCH
    )
    big = [{"path": "odd.v1.Odd.big", "rule": "number", "absolute": 2}]
    assert judge(Odd(big=2**64 - 1), Odd(big=2**64 - 1000), big).verdict is Verdict.MISMATCH
    assert judge(Odd(big=2**64 - 1), Odd(big=2**64 - 3), big).verdict is Verdict.MATCH  # within 2


FAR = Timestamp(seconds=2**63 - 1, nanos=2**31 - 1)  # decodes, but is no time a Timestamp can write


def test_a_time_past_what_a_timestamp_holds_is_shown_stored_and_keyed() -> None:
    """Such a time made the difference unshowable: the record could not be stored, a list keyed by it
    failed as `error`. It shows as seconds and nanoseconds."""
    found = judge(Odd(single=Leg(at=FAR)), Odd(single=Leg(at=Timestamp(seconds=1))))
    assert found.verdict is Verdict.MISMATCH
    assert "9223372036854775809s" in record_of(found, "replica").differences
    keyed = [{"path": "odd.v1.Odd.leg_list", "rule": "keyed", "key": ["at"]}]
    found = judge(Odd(leg_list=[Leg(id="a", at=FAR)]), Odd(leg_list=[Leg(id="b", at=FAR)]), keyed)
    assert found.verdict is Verdict.MISMATCH, found.reason


def test_a_time_past_what_a_timestamp_holds_comes_back_from_a_worker_process() -> None:
    """Its differences could not be pickled back from a comparison worker, which failed every comparison
    of the batch handed to it (any method's)."""
    plain = (Odd(count=1).SerializeToString(), Odd(count=2).SerializeToString())
    odd = (
        Odd(single=Leg(at=FAR)).SerializeToString(),
        Odd(single=Leg(at=Timestamp(seconds=1))).SerializeToString(),
    )
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = pool.submit(compare_in_child, [plain, odd]).result()
    assert [verdict for verdict, _ in results] == [Verdict.MISMATCH, Verdict.MISMATCH]


def test_a_multiset_pairs_elements_equal_under_the_rules() -> None:
    """A multiset paired only byte-equal elements: one tolerated difference inside an element left it
    unpaired, and the leftovers paired by position compared unrelated elements. Elements alike under the
    rules pair now, their tolerated differences kept under the rules' names."""
    legs = [
        {"path": "odd.v1.Odd.leg_list", "rule": "multiset"},
        {"path": "odd.v1.Leg.qty", "rule": "decimal"},
    ]
    bank = Odd(leg_list=[Leg(id="a", qty="1.0"), Leg(id="b", qty="2")])
    bk = Odd(leg_list=[Leg(id="b", qty="2.0"), Leg(id="a", qty="1")])
    found = judge(bank, bk, legs)
    assert found.verdict is Verdict.MATCH, rows(found)
    assert sorted((d.bank, d.bk, bool(d.rule)) for d in found.differences) == [
        ("1.0", "1", True),
        ("2", "2.0", True),
    ]
    samples = [
        {"path": "odd.v1.Odd.samples", "rule": "multiset"},
        {"path": "odd.v1.Odd.samples", "rule": "number", "absolute": 0.001},
    ]
    assert (
        judge(Odd(samples=[1.0, 2.0]), Odd(samples=[2.0000001, 1.0000001]), samples).verdict is Verdict.MATCH
    )
    unlike = judge(Odd(samples=[1.0, 2.0]), Odd(samples=[2.0000001, 1.5]), samples)
    assert [d.path for d in unlike.real_differences] == ["samples[0]"]


def test_a_rule_on_a_message_field_applies_to_its_list_elements_and_custom_rules_see_the_message() -> None:
    """`decimal` on a repeated money field compared its elements field by field ("1.5" against "1.50" was
    a difference), where on a singular field it compares amounts; a custom rule on a message field was
    accepted and never called."""
    amounts = [{"path": "odd.v1.Odd.amounts", "rule": "decimal"}]
    bank = Odd(amounts=[Amount(value="1.5", currency_code="USD")])
    bk = Odd(amounts=[Amount(value="1.50", currency_code="USD")])
    assert judge(bank, bk, amounts).verdict is Verdict.MATCH
    euros = Odd(amounts=[Amount(value="1.50", currency_code="EUR")])
    assert judge(bank, euros, amounts).verdict is Verdict.MISMATCH
    custom = [
        {"path": "odd.v1.Odd.single", "rule": "custom", "callable": "tests.comparators._custom_rules:Named"}
    ]
    found = judge(Odd(single=Leg(id="a")), Odd(single=Leg(id="b")), custom)
    assert found.verdict is Verdict.MATCH, rows(found)
    assert rows(found) == [("single", "changed", {"id": "a"}, {"id": "b"}, "named by itself")]


def test_a_metadata_rule_that_raises_tolerates_nothing() -> None:
    """A custom rule on a header that raised on a value it did not expect failed the whole comparison as
    `error`: the evidence was lost. As for a field, it tolerates nothing and the comparison goes on."""
    rules = build_rules(
        [
            {
                "metadata": "x-limit",
                "rule": "custom",
                "callable": "tests.comparators._custom_rules:WithinPercent",
                "options": {"percent": 5},
            }
        ],
        None,
        parse_duration,
    )
    body = (Odd(count=1).SerializeToString(),)
    bank = Outcome(code=0, messages=body, initial_metadata=(("x-limit", "unlimited"),))
    bk = Outcome(code=0, messages=body, initial_metadata=(("x-limit", "100"),))
    found = compare(exchange(GET, bank, bk), None, rules)
    assert found.verdict is Verdict.MISMATCH, found.reason
    assert [(d.path, d.rule) for d in found.differences] == [("metadata.x-limit", "")]
