"""A Difference has one JSON form: the diff log, the store and `shim report --json` all write it, and a
stored one reads back as the same Difference."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from comparators import Comparison, Difference, DiffKind, Exchange, Outcome, Verdict
from shim.evidence import Report, build_report
from shim.evidence.record import StoreSink
from shim.report import html, to_json
from shim.sinks import DiffLog
from shim.store import Store

_VALUES = (
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.lists(st.integers(), max_size=3)
)


@given(
    path=st.text(max_size=30),
    kind=st.sampled_from(list(DiffKind)),
    bank=_VALUES,
    bk=_VALUES,
    rule=st.text(max_size=10),
    noise=st.booleans(),
)
def test_a_difference_reads_back_from_its_json_form(
    path: str, kind: DiffKind, bank: object, bk: object, rule: str, noise: bool
) -> None:
    """Whatever its values, a difference written as JSON (and through a JSON text) reads back as itself."""
    diff = Difference(path, kind, bank, bk, rule, noise)
    text = json.dumps(diff.as_json())
    assert Difference.from_json(json.loads(text)) == diff


def test_the_json_form_names_the_rule_and_noise_only_when_set_and_writes_bytes_as_base64() -> None:
    """Absent keys mean a real difference of BK's: `rule` and `noise` appear only when they say something."""
    assert Difference("fee", DiffKind.CHANGED, b"\x01", None).as_json() == {
        "path": "fee",
        "kind": "changed",
        "bank": "base64:AQ==",
        "bk": None,
    }
    assert Difference("a", DiffKind.ADDED, None, 1, "bk only", True).as_json() == {
        "path": "a",
        "kind": "added",
        "bank": None,
        "bk": 1,
        "rule": "bk only",
        "noise": True,
    }


def _comparison() -> Comparison:
    now = time.time()
    exchange = Exchange(
        method="/pay.v1.Payments/Get",
        requests=(b"",),
        primary=Outcome(0, messages=(b"",), latency=0.002),
        shadow=Outcome(0, messages=(b"",), latency=0.003),
        secondary=Outcome(0, messages=(b"",), latency=0.002),
        started_at=now,
    )
    differences = (
        Difference("fee", DiffKind.CHANGED, "0.03", "0.3"),
        Difference("price", DiffKind.CHANGED, "1.50", "1.5", "decimal formatting"),
    )
    noise = (Difference("request_id", DiffKind.CHANGED, "r1", "r2", noise=True),)
    return Comparison(exchange, Verdict.MISMATCH, differences, noise=noise)


async def _stored(comparison: Comparison, tmp_path: Path) -> Report:
    """The report of a store holding `comparison` alone, its calls listed."""
    store = Store.open(str(tmp_path / "shim.db"))
    await store.start()
    try:
        StoreSink(store, replica="r1")(comparison)
        await store.flush()
        return await build_report(
            store, since=0, until=time.time() + 60, relative=0.2, absolute=0.0003, min_sampled=20, calls=True
        )
    finally:
        await store.close()


async def test_the_diff_log_the_store_and_report_json_write_the_same_form(tmp_path: Path) -> None:
    """One comparison, three outputs: each difference is written the same way in each of them."""
    comparison = _comparison()
    expected = [d.as_json() for d in comparison.differences]

    out = io.StringIO()
    DiffLog(out)(comparison)
    assert json.loads(out.getvalue())["differences"] == expected

    report = await _stored(comparison, tmp_path)
    (call,) = report.calls
    assert call.differences == (*comparison.differences, *comparison.noise)
    (listed,) = to_json(report)["calls"]
    assert listed["differences"] == [*expected, comparison.noise[0].as_json()]


def test_a_stored_text_that_is_not_differences_shows_whole_rather_than_vanishing() -> None:
    """What the store holds but cannot be read as differences (not JSON, not a list, an unknown kind, a
    field of the wrong type) is shown as one `undecodable` difference holding the text: never dropped."""
    from shim.evidence.tally import _differences

    for text in (
        "not json",
        '{"path": "a"}',
        '[{"path": "a", "kind": "nope"}]',
        '[{"path": 1, "kind": "changed"}]',
    ):
        assert _differences(text) == (Difference("", DiffKind.UNDECODABLE, text, None),)
    good = [Difference("fee", DiffKind.CHANGED, "1", "2").as_json()]
    assert _differences(json.dumps(good)) == (Difference("fee", DiffKind.CHANGED, "1", "2"),)


async def test_a_comparison_with_a_great_many_differences_keeps_a_bounded_number_of_them(
    tmp_path: Path,
) -> None:
    """An answer of 5,000 elements, each differing, and one difference more at another path after them:
    the diff log and the store keep `KEPT_DIFFERENCES` of them, every differing path among them, and say
    how many they left out; the counts stay whole. Before, every difference was written: 100,000
    differing elements made one comparison 8.8 MB of JSON in the store and in the diff log."""
    from shim.sinks import KEPT_DIFFERENCES

    each = [Difference(f"items[{i}].name", DiffKind.CHANGED, f"n{i}", f"m{i}") for i in range(5000)]
    late = Difference("total", DiffKind.CHANGED, "1", "2")
    tolerated = Difference("price", DiffKind.CHANGED, "1.50", "1.5", "decimal formatting")
    base = _comparison()
    comparison = Comparison(base.exchange, Verdict.MISMATCH, (*each, late, tolerated), noise=base.noise)
    kept = [*each[: KEPT_DIFFERENCES - 2], late, tolerated]  # the first of each path and rule, then in order

    out = io.StringIO()
    DiffLog(out)(comparison)
    line = json.loads(out.getvalue())
    assert line["differences"] == [d.as_json() for d in kept]
    assert line["differences_omitted"] == 5002 - KEPT_DIFFERENCES

    report = await _stored(comparison, tmp_path)
    (call,) = report.calls
    assert call.differences == (*kept, *comparison.noise)
    assert call.omitted == 5002 - KEPT_DIFFERENCES
    (listed,) = to_json(report)["calls"]
    assert len(listed["differences"]) == KEPT_DIFFERENCES + 1
    assert listed["differences_omitted"] == 5002 - KEPT_DIFFERENCES
    assert f"and {5002 - KEPT_DIFFERENCES:,} more differences, not kept" in html(report)
    (method,) = report.methods
    assert {p.path for p in method.paths} == {"items[*].name", "total"}


def test_a_batch_is_written_to_the_diff_log_at_once_line_by_line_as_one_at_a_time() -> None:
    """The pipeline hands the diff log each batch the comparison worker answered: its lines are one write
    and one flush, each line the same as written one comparison at a time (a match writes none)."""

    class Counted(io.StringIO):
        writes = flushes = 0

        def write(self, text: str) -> int:
            self.writes += 1
            return super().write(text)

        def flush(self) -> None:
            self.flushes += 1

    comparison = _comparison()
    matched = Comparison(comparison.exchange, Verdict.MATCH)
    batched, single = Counted(), io.StringIO()
    DiffLog(batched).batch([comparison, matched, comparison])
    DiffLog(single)(comparison)
    assert (batched.writes, batched.flushes) == (1, 1)
    lines = [json.loads(line) for line in batched.getvalue().splitlines()]
    (one,) = [json.loads(line) for line in single.getvalue().splitlines()]
    assert len(lines) == 2
    for line in (*lines, one):
        line.pop("timestamp")
    assert lines == [one, one]
    assert list(one) == ["method", "verdict", "bank", "bk", "differences", "event"]
