"""Rules on fields the descriptors do not know: a BK built from a newer proto answers with a field Bank's
descriptors lack. That is an `unknown-field` difference at `#<number>` on every call, and a rule naming
`package.Message.#<number>` (or `#*`) tolerates it: `ignore`, or `bk-may-add` for a field only BK sends.

The probe service is tests/comparators/odd.proto; its `odd.v1.Odd` has no field 40, `odd.v1.Leg` no 9.
"""

from __future__ import annotations

from typing import Any

import pytest

from comparators import RuleError, Verdict, build_rules
from shim.units import parse_duration
from tests.comparators._odd import REGISTRY, Leg, Odd, judge, rows

FORTY = b"\xc0\x02"  # field 40, varint


def _with(message: Any, tail: bytes) -> bytes:
    return bytes(message.SerializeToString()) + tail


def test_without_a_rule_a_field_bk_adds_is_a_difference() -> None:
    found = judge(_with(Odd(num=1), b""), _with(Odd(num=1), FORTY + b"\x07"))
    assert (found.verdict, rows(found)) == (Verdict.MISMATCH, [("#40", "unknown-field", None, 7, "")])


def test_bk_may_add_tolerates_a_field_only_bk_sends_and_nothing_else() -> None:
    rule = [{"path": "odd.v1.Odd.#40", "rule": "bk-may-add", "name": "newer-bk"}]
    added = judge(_with(Odd(num=1), b""), _with(Odd(num=1), FORTY + b"\x07"), rule)
    assert (added.verdict, rows(added)) == (Verdict.MATCH, [("#40", "unknown-field", None, 7, "newer-bk")])
    left_out = judge(_with(Odd(num=1), FORTY + b"\x07"), _with(Odd(num=1), b""), rule)
    assert (left_out.verdict, rows(left_out)) == (Verdict.MISMATCH, [("#40", "unknown-field", 7, None, "")])
    changed = judge(_with(Odd(num=1), FORTY + b"\x07"), _with(Odd(num=1), FORTY + b"\x08"), rule)
    assert (changed.verdict, rows(changed)) == (Verdict.MISMATCH, [("#40", "unknown-field", 7, 8, "")])
    other = judge(_with(Odd(num=1), b""), _with(Odd(num=1), b"\xc8\x02\x07"), rule)  # field 41
    assert (other.verdict, rows(other)) == (Verdict.MISMATCH, [("#41", "unknown-field", None, 7, "")])


def test_ignore_on_every_unknown_field_of_a_message_tolerates_any_of_them_there_only() -> None:
    rule = [{"path": "odd.v1.Odd.#*", "rule": "ignore"}]
    found = judge(_with(Odd(num=1), FORTY + b"\x07"), _with(Odd(num=1), FORTY + b"\x08\xc8\x02\x01"), rule)
    assert found.verdict is Verdict.MATCH
    assert rows(found) == [
        ("#40", "unknown-field", 7, 8, "ignore #*"),
        ("#41", "unknown-field", None, 1, "ignore #*"),
    ]
    nested = judge(Odd(single=Leg(id="a")), _with(Odd(), b"\x82\x01\x05\x0a\x01a\x48\x01"), rule)  # Leg #9
    assert (nested.verdict, rows(nested)) == (
        Verdict.MISMATCH,
        [("single.#9", "unknown-field", None, 1, "")],
    )


def test_a_rule_on_a_nested_messages_unknown_field_names_that_message() -> None:
    rule = [{"path": "odd.v1.Leg.#9", "rule": "bk-may-add"}]
    bk = _with(Odd(), b"\x82\x01\x05\x0a\x01a\x48\x01")  # single: Leg(id="a") and its field 9 = 1
    found = judge(Odd(single=Leg(id="a")), bk, rule)
    assert (found.verdict, rows(found)) == (
        Verdict.MATCH,
        [("single.#9", "unknown-field", None, 1, "bk-may-add #9")],
    )


def test_an_unknown_group_is_tolerated_as_a_whole() -> None:
    group = b"\xc3\x02\x08\x05\xc4\x02"  # field 40 as a group holding #1 = 5
    other = b"\xc3\x02\x08\x06\xc4\x02"
    rule = [{"path": "odd.v1.Odd.#40", "rule": "ignore"}]
    found = judge(_with(Odd(num=1), group), _with(Odd(num=1), other), rule)
    assert (found.verdict, rows(found)) == (Verdict.MATCH, [("#40.#1", "unknown-field", 5, 6, "ignore #40")])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            {"path": "odd.v1.Odd.#1", "rule": "ignore"},
            "field 1 of odd.v1.Odd is known, as num: name it by its name",
            id="a-known-number",
        ),
        pytest.param(
            {"path": "odd.v1.Nope.#40", "rule": "ignore"},
            "path 'odd.v1.Nope.#40' names no message in the descriptors",
            id="no-such-message",
        ),
        pytest.param(
            {"path": "odd.v1.Odd.#forty", "rule": "ignore"},
            "'#forty' is not a field number: give #<number> or #*",
            id="not-a-number",
        ),
        pytest.param(
            {"path": "odd.v1.Odd.#40", "rule": "number", "absolute": 1},
            "a field the descriptors do not know takes ignore or bk-may-add, not 'number'",
            id="a-value-rule",
        ),
        pytest.param(
            {"path": "odd.v1.Odd.#0", "rule": "ignore"},
            "'#0' is not a field number: give #<number> or #*",
            id="zero",
        ),
    ],
)
def test_a_rule_on_unknown_fields_that_could_never_apply_is_refused(
    spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(RuleError) as caught:
        build_rules([spec], REGISTRY, parse_duration, ["r.toml"])
    assert message in str(caught.value)


def test_a_glob_over_a_messages_fields_covers_its_unknown_fields_too() -> None:
    rule = [{"path": "odd.v1.Odd.*", "rule": "bk-may-add"}]
    found = judge(_with(Odd(num=1), b""), _with(Odd(num=1), FORTY + b"\x07"), rule)
    assert (found.verdict, rows(found)) == (
        Verdict.MATCH,
        [("#40", "unknown-field", None, 7, "bk-may-add *")],
    )
