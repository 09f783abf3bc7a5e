"""The gate: each criterion passes or fails on crafted evidence, and `shim gate` exits 0, 1 or 2.

`evaluate` is checked on reports built from crafted records (SQLite file);
the command is run as a real process against a store file filled the same way.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from shim.evidence import Report, build_report
from shim.gate import GateResult, evaluate, split_fleet
from shim.store import BkBuild, ModeChange, ReplicaView, Store
from tests.shim.test_evidence import GET, REFUND, SPAN, T0, Records

ROOT = Path(__file__).resolve().parents[2]
GET_NAME, REFUND_NAME = GET.lstrip("/"), REFUND.lstrip("/")


def _evidence(at: float) -> Records:
    """Get: 100 compared, 2 real mismatches (2%) and 5 noise ones (of 20 calls asked twice), 4 shadow errors
    (3.846% of 104 calls unproven); Refund: 10 compared, no mismatch, nothing unproven."""
    r = Records()
    r.add(at=at, count=78)
    r.add(at=at, sampled=True, count=15)
    r.add("mismatch", at=at, real=[("fee", "0.03", "0.02")], count=2)
    r.add("mismatch", at=at, real=[("request_id", 1, 2)], noise=["request_id"], count=5)
    r.add("shadow-error", at=at, bk_code=None, count=4)  # unproven: no effect on the mismatch rate
    r.add(method=REFUND, at=at, count=10)
    return r


async def _fill(path: Path, at: float) -> None:
    store = Store.open(str(path))
    await store.start()
    try:
        await _evidence(at).write(store)
    finally:
        await store.close()


@pytest.fixture
async def report(tmp_path: Path) -> Report:
    path = tmp_path / "shim.db"
    await _fill(path, T0 + 10)
    store = Store.open(str(path))
    await store.start()
    try:
        return await build_report(
            store, since=T0, until=T0 + SPAN, relative=0.2, absolute=0.0003, min_sampled=20
        )
    finally:
        await store.close()


def _lines(result: GateResult) -> list[tuple[str, str, str, str, bool]]:
    return [(c.method, c.name, c.measured, c.threshold, c.passed) for c in result.criteria]


def test_every_method_passes_when_it_meets_the_four_criteria(report: Report) -> None:
    """Without required methods, each method of the report is judged: enough compared, enough of them
    answered by Bank, a low enough rate, few enough unproven calls (each verdict counted)."""
    result = evaluate(
        report,
        min_compared=10,
        min_answered=10,
        max_mismatch_rate=0.02,
        max_unproven_rate=0.05,
        required_methods=(),
    )
    assert result.passed
    assert _lines(result) == [
        (GET_NAME, "compared", "100", "≥ 10", True),
        (GET_NAME, "answered", "100 of 100 clean comparisons", "≥ 10", True),
        (GET_NAME, "real mismatch rate", "2% (2 of 100)", "≤ 2%", True),
        (
            GET_NAME,
            "unproven",
            "3.846% of 104 calls (tainted 0, skipped 0, shadow-error 4, error 0, dropped 0)",
            "≤ 5%",
            True,
        ),
        (REFUND_NAME, "compared", "10", "≥ 10", True),
        (REFUND_NAME, "answered", "10 of 10 clean comparisons", "≥ 10", True),
        (REFUND_NAME, "real mismatch rate", "0% (0 of 10)", "≤ 2%", True),
        (
            REFUND_NAME,
            "unproven",
            "0% of 10 calls (tainted 0, skipped 0, shadow-error 0, error 0, dropped 0)",
            "≤ 5%",
            True,
        ),
    ]


def test_too_few_compared_calls_are_not_proven(report: Report) -> None:
    """A method with fewer clean comparisons than min_compared fails that criterion alone, as not proven."""
    result = evaluate(
        report,
        min_compared=11,
        min_answered=10,
        max_mismatch_rate=0.02,
        max_unproven_rate=0.05,
        required_methods=(),
    )
    assert not result.passed
    assert [(c.method, c.name, c.measured) for c in result.failed] == [
        (REFUND_NAME, "compared", "not proven: 10 clean of 10 calls")
    ]


def test_a_real_mismatch_rate_above_the_maximum_fails(report: Report) -> None:
    """2 real mismatches in 100 fail a 1% maximum; the 5 noise mismatches are not counted."""
    result = evaluate(
        report,
        min_compared=1,
        min_answered=10,
        max_mismatch_rate=0.01,
        max_unproven_rate=0.05,
        required_methods=(),
    )
    assert [(c.method, c.name, c.measured) for c in result.failed] == [
        (GET_NAME, "real mismatch rate", "2% (2 of 100)")
    ]
    # a switch of Refund's mode alone is judged on Refund's evidence alone
    assert not evaluate(
        report,
        min_compared=1,
        min_answered=10,
        max_mismatch_rate=0.0,
        max_unproven_rate=0.0,
        required_methods=(),
        scope=[REFUND],
    ).failed


def test_a_share_of_unproven_calls_above_the_maximum_is_not_proven(report: Report) -> None:
    """4 shadow errors in 104 calls (3.846%) fail a 1% maximum, as not proven, with each verdict's count."""
    result = evaluate(
        report,
        min_compared=1,
        min_answered=10,
        max_mismatch_rate=0.02,
        max_unproven_rate=0.01,
        required_methods=(),
    )
    assert _lines(result)[3] == (
        GET_NAME,
        "unproven",
        "not proven: 3.846% of 104 calls (tainted 0, skipped 0, shadow-error 4, error 0, dropped 0)",
        "≤ 1%",
        False,
    )
    assert [(c.method, c.name) for c in result.failed] == [(GET_NAME, "unproven")]


async def _judge(
    records: Records,
    *,
    min_compared: int,
    max_unproven_rate: float,
    counts: Sequence[tuple[str, str, int]] = (),
) -> GateResult:
    """The gate on a report of `records` (and of `counts` of comparisons the shim did not store), with no
    real mismatch allowed."""
    store = Store.open(":memory:")
    await store.start()
    try:
        await records.write(store)
        if counts:
            store.counts.put(T0 + 20, "test:1", counts)
            await store.flush()
        report = await build_report(
            store, since=T0, until=T0 + SPAN, relative=0.2, absolute=0.0003, min_sampled=20
        )
    finally:
        await store.close()
    return evaluate(
        report,
        min_compared=min_compared,
        min_answered=10,
        max_mismatch_rate=0.0,
        max_unproven_rate=max_unproven_rate,
        required_methods=(),
    )


async def test_tainted_calls_are_not_compared_and_count_as_unproven() -> None:
    """300 matches and 3 tainted calls (0.99%) pass at 1%; 97 matches and 3 tainted (3 of 100) do not,
    and the tainted mismatches count neither as compared nor as real mismatches."""
    few = Records()
    few.add(count=300)
    few.add("tainted", real=[("fee", "1", "2")], reason="key 'A1' out of step", count=3)
    passed = await _judge(few, min_compared=100, max_unproven_rate=0.01)
    assert passed.passed, passed.failed
    assert [c.measured for c in passed.criteria] == [
        "300",
        "300 of 300 clean comparisons",
        "0% (0 of 300)",
        "0.9901% of 303 calls (tainted 3, skipped 0, shadow-error 0, error 0, dropped 0)",
    ]
    many = Records()
    many.add(count=97)
    many.add("tainted", real=[("fee", "1", "2")], reason="key 'A1' out of step", count=3)
    failed = await _judge(many, min_compared=10, max_unproven_rate=0.01)
    assert [(c.name, c.measured) for c in failed.failed] == [
        ("unproven", "not proven: 3% of 100 calls (tainted 3, skipped 0, shadow-error 0, error 0, dropped 0)")
    ]


@pytest.mark.parametrize("verdict", ["tainted", "skipped", "shadow-error", "error"])
async def test_every_unproven_verdict_counts_against_the_gate(verdict: str) -> None:
    """One call of the verdict in 100 passes a 1% maximum; two in 100 fail it, counted under its name."""
    one = Records()
    one.add(count=99)
    one.add(verdict, reason="why")
    assert (await _judge(one, min_compared=10, max_unproven_rate=0.01)).passed
    two = Records()
    two.add(count=98)
    two.add(verdict, reason="why", count=2)
    result = await _judge(two, min_compared=10, max_unproven_rate=0.01)
    (failed,) = result.failed
    assert failed.name == "unproven"
    assert failed.measured.startswith("not proven: 2% of 100 calls (")
    assert f"{verdict} 2" in failed.measured


async def test_error_comparisons_are_not_clean_comparisons() -> None:
    """A method whose comparisons all failed has no clean comparison: not proven on the three criteria
    that count them."""
    errors = Records()
    errors.add("error", reason="the comparison failed: ValueError()", count=150)
    result = await _judge(errors, min_compared=100, max_unproven_rate=0.01)
    assert [(c.name, c.measured, c.passed) for c in result.criteria] == [
        ("compared", "not proven: 0 clean of 150 calls", False),
        ("answered", "not proven: 0 of 0 clean comparisons answered by Bank", False),
        ("real mismatch rate", "0% (0 of 0)", True),
        (
            "unproven",
            "not proven: 100% of 150 calls (tainted 0, skipped 0, shadow-error 0, error 150, dropped 0)",
            False,
        ),
    ]


async def _judge_with_counts(
    records: Records, counts: list[tuple[str, str, int]], *, max_unproven_rate: float = 0.01
) -> GateResult:
    """The gate on a report of `records` and of counts of comparisons the shim did not store."""
    return await _judge(records, min_compared=10, max_unproven_rate=max_unproven_rate, counts=counts)


async def test_comparisons_dropped_before_the_store_count_as_unproven() -> None:
    """100 matches stored and 1,000,000 comparisons dropped (the pipeline's and the store sink's) prove
    nothing about the dropped calls: the method is not proven, and the drops are counted in its calls."""
    r = Records()
    r.add(count=100)
    result = await _judge_with_counts(
        r, [(GET, "store_dropped", 900_000), (GET, "comparisons_dropped", 100_000)]
    )
    assert [(c.name, c.measured) for c in result.failed] == [
        (
            "unproven",
            "not proven: 99.99% of 1,000,100 calls"
            " (tainted 0, skipped 0, shadow-error 0, error 0, dropped 1,000,000)",
        )
    ]


async def test_drops_count_against_their_own_method_only() -> None:
    """One drop in 100 calls of Get passes 1%, two fail it; Refund's drops never touch Get's rate."""
    r = Records()
    r.add(count=99)
    r.add(method=REFUND, count=100)
    one = await _judge_with_counts(r, [(GET, "store_failed", 1), (REFUND, "comparisons_dropped", 50)])
    assert [(c.method, c.name) for c in one.failed] == [(REFUND_NAME, "unproven")]
    assert one.criteria[3].measured == (
        "1% of 100 calls (tainted 0, skipped 0, shadow-error 0, error 0, dropped 1)"
    )
    two = Records()
    two.add(count=98)
    failed = await _judge_with_counts(two, [(GET, "store_dropped", 2)])
    assert [c.measured for c in failed.failed] == [
        "not proven: 2% of 100 calls (tainted 0, skipped 0, shadow-error 0, error 0, dropped 2)"
    ]


@pytest.mark.parametrize("label", ["", "(other)", "(not described)"])
async def test_drops_counted_without_a_method_count_against_every_method(label: str) -> None:
    """A drop counted under no method (beyond the methods the shim counts apart, or not described) could be
    any method's: it counts against each one judged, and is no method of its own."""
    r = Records()
    r.add(count=100)
    r.add(method=REFUND, count=200)
    result = await _judge_with_counts(r, [(label, "store_dropped", 2)])
    assert [(c.method, c.name, c.measured) for c in result.failed] == [
        (
            GET_NAME,
            "unproven",
            "not proven: 1.961% of 102 calls"
            " (tainted 0, skipped 0, shadow-error 0, error 0, dropped 2 (2 without a method))",
        )
    ]
    assert {c.method for c in result.criteria} == {GET_NAME, REFUND_NAME}
    assert result.criteria[-1].measured == (
        "0.9901% of 202 calls (tainted 0, skipped 0, shadow-error 0, error 0, dropped 2 (2 without a method))"
    )
    only = await _judge_with_counts(Records(), [(label, "comparisons_dropped", 5)])
    assert [(c.name, c.measured) for c in only.failed] == [
        ("evidence", "no method has a call in the window; 5 dropped without a method")
    ]


def test_a_required_method_without_calls_is_not_covered(report: Report) -> None:
    """A scope's methods are the only ones judged; one with no call fails as not covered."""
    result = evaluate(
        report,
        min_compared=1,
        min_answered=10,
        max_mismatch_rate=0.0,
        max_unproven_rate=0.01,
        required_methods=(),
        scope=["pay.v1.Payments/Refund", "pay.v1.X/Y"],
    )
    assert _lines(result) == [
        (REFUND_NAME, "compared", "10", "≥ 1", True),
        (REFUND_NAME, "answered", "10 of 10 clean comparisons", "≥ 1", True),
        (REFUND_NAME, "real mismatch rate", "0% (0 of 10)", "≤ 0%", True),
        (
            REFUND_NAME,
            "unproven",
            "0% of 10 calls (tainted 0, skipped 0, shadow-error 0, error 0, dropped 0)",
            "≤ 1%",
            True,
        ),
        ("pay.v1.X/Y", "covered", "not covered: no call in the window", "≥ 1 call", False),
    ]
    assert not result.passed


def test_no_evidence_is_not_a_pass() -> None:
    """A report with no method, and no method required, fails: nothing was proven."""
    empty = Report(T0, T0 + 1, T0, ":memory:", 0.2, 0.0003, 20, (), None, 10)
    result = evaluate(
        empty,
        min_compared=0,
        min_answered=10,
        max_mismatch_rate=1.0,
        max_unproven_rate=1.0,
        required_methods=(),
    )
    assert [(c.name, c.passed) for c in result.criteria] == [("evidence", False)]


def _gate(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shim", "gate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


@pytest.fixture
async def recent(tmp_path: Path) -> Path:
    """A store file holding the evidence, as of ten minutes ago."""
    path = tmp_path / "shim.db"
    await _fill(path, time.time() - 600)
    return path


def test_the_command_exits_0_when_the_criteria_are_met(recent: Path) -> None:
    """Each criterion is printed with its measure and PASS, then the verdict; exit 0."""
    done = _gate(
        "--store",
        str(recent),
        "--min-compared",
        "10",
        "--max-mismatch-rate",
        "0.02",
        "--max-unproven-rate",
        "0.05",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("gate: evidence from ")
    assert lines[1].split() == ["PASS", GET_NAME, "compared", "100", "≥", "10"]
    assert lines[2].split() == [
        "PASS",
        GET_NAME,
        "answered",
        "100",
        "of",
        "100",
        "clean",
        "comparisons",
        "≥",
        "10",
    ]
    assert lines[3].split()[:4] == ["PASS", GET_NAME, "real", "mismatch"]
    assert "2% (2 of 100)" in lines[3]
    assert lines[4].split()[:3] == ["PASS", GET_NAME, "unproven"]
    assert "3.846% of 104 calls (tainted 0, skipped 0, shadow-error 4, error 0, dropped 0)" in lines[4]
    assert lines[4].endswith("≤ 5%")
    assert lines[-1] == "gate: PASS (all 8 criteria met)"


def test_the_command_exits_1_when_a_criterion_fails(recent: Path) -> None:
    """A failed criterion prints FAIL with its measure, and the command exits 1; at most 1% of calls may be
    unproven unless told otherwise."""
    done = _gate("--store", str(recent), "--min-compared", "50", "--max-mismatch-rate", "0.01")
    assert done.returncode == 1, done.stdout + done.stderr
    fails = [line.split()[:3] for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert fails == [
        ["FAIL", GET_NAME, "real"],
        ["FAIL", GET_NAME, "unproven"],
        ["FAIL", REFUND_NAME, "compared"],
    ]
    assert "not proven: 3.846% of 104 calls" in done.stdout
    assert "not proven: 10 clean of 10 calls" in done.stdout
    assert done.stdout.splitlines()[-1] == "gate: FAIL (3 of 8 criteria not met)"

    uncovered = _gate("--store", str(recent), "--min-compared", "1", "--require-method", "pay.v1.X/Y")
    assert uncovered.returncode == 1
    assert "not covered: no call in the window" in uncovered.stdout
    assert (
        'gate: pay.v1.X/Y names no method called or described ("package.Service/Method")' in uncovered.stdout
    )
    # the short name a report prints fails as uncovered too, and says which method it may mean
    short = GET_NAME.split(".")[-1]
    named = _gate("--store", str(recent), "--min-compared", "1", "--require-method", short)
    assert named.returncode == 1
    assert f"gate: {short} names no method called or described: did you mean {GET_NAME}?" in named.stdout

    old = _gate("--store", str(recent), "--window", "1m", "--min-compared", "1")
    assert old.returncode == 1, "evidence older than the window does not count"
    assert "no method has a call in the window" in old.stdout


LENIENT = ("--min-compared", "10", "--max-mismatch-rate", "0.02", "--max-unproven-rate", "0.05")


async def _recorded(path: Path, *changes: ModeChange) -> None:
    """Record these mode changes in the store at `path`, one after the other."""
    store = Store.open(str(path))
    await store.start()
    try:
        for change in changes:
            await store.modes.change([change])
    finally:
        await store.close()


async def test_evidence_from_before_a_stretch_in_bank_mode_is_not_judged(recent: Path) -> None:
    """In bank mode BK is sent no write: its book lacks them from then on, and what it answered before
    says nothing about the book it holds since. The evidence of ten minutes ago passes the gate until a
    switch into bank mode and back, after which the gate judges none of it, and says why."""
    criteria = LENIENT
    assert _gate("--store", str(recent), *criteria).returncode == 0
    now = time.time()
    await _recorded(
        recent,
        ModeChange(now - 60, "ops", "*", "shadow", "bank", "BK slow", False),
        ModeChange(now - 30, "ops", "*", "bank", "shadow", "BK back", False),
    )
    done = _gate("--store", str(recent), *criteria)
    assert done.returncode == 1, done.stdout
    assert "gate: a switch into or out of bank or bk mode at " in done.stdout
    assert "the evidence from before it is not judged" in done.stdout
    assert "no method has a call in the window" in done.stdout


async def test_evidence_from_before_a_stretch_in_bk_mode_is_not_judged(recent: Path) -> None:
    """In bk mode Bank is sent no write: after a forced return to shadow, Bank's book lacks them, and the
    comparisons from before the stretch say nothing about the books since. A stretch in bk mode on one
    method restarts the evidence as one in bank mode does. Before, the old evidence passed the gate, and
    BK was promoted again on it unforced."""
    criteria = LENIENT
    assert _gate("--store", str(recent), *criteria).returncode == 0
    now = time.time()
    deposit = "/bank.v1.Ledger/Deposit"
    await _recorded(
        recent,
        ModeChange(now - 60, "ops", deposit, "bk-primary", "bk", "retire", False),
        ModeChange(now - 30, "ops", deposit, "bk", "shadow", "rollback", True),
    )
    done = _gate("--store", str(recent), *criteria)
    assert done.returncode == 1, done.stdout
    assert "gate: a switch into or out of bank or bk mode at " in done.stdout
    assert "no method has a call in the window" in done.stdout


async def test_a_switch_or_a_build_stamped_after_now_leaves_no_evidence_to_judge(recent: Path) -> None:
    """A switch into bank mode and back, or a build of BK declared, stamped two minutes ahead (a replica or a
    host whose clock is fast): which evidence came after it is not known, so none is judged, and the gate
    says the clocks disagree. Before, they were left out, and the evidence from before them passed."""
    criteria = LENIENT
    assert _gate("--store", str(recent), *criteria).returncode == 0
    ahead = time.time() + 120
    await _recorded(
        recent,
        ModeChange(ahead, "ops", "*", "shadow", "bank", "BK slow", False),
        ModeChange(ahead + 30, "ops", "*", "bank", "shadow", "BK back", False),
    )
    switched = _gate("--store", str(recent), *criteria)
    assert switched.returncode == 1, switched.stdout
    assert "(after now by this host's clock: the clocks disagree)" in switched.stdout, switched.stdout
    assert "no method has a call in the window" in switched.stdout
    store = Store.open(str(recent))
    await store.start()
    try:
        await store.execute("DELETE FROM mode_changes")
        assert _gate("--store", str(recent), *criteria).returncode == 0
        await store.builds.declare(BkBuild(time.time() + 120, "bk 2.5", "ops", "deployed"))
    finally:
        await store.close()
    declared = _gate("--store", str(recent), *criteria)
    assert declared.returncode == 1, declared.stdout
    assert "gate: BK build bk 2.5 declared " in declared.stdout
    assert "after now by this host's clock: the clocks disagree, and no evidence is judged" in declared.stdout


async def test_a_store_of_mostly_tainted_calls_is_not_proven(tmp_path: Path) -> None:
    """Once every key is out of step, BK's mismatches are tainted: `shim gate` does not count them as
    compared, says "not proven" with the count of each verdict, and exits 1."""
    at = time.time() - 600
    r = Records()
    r.add(at=at, count=150)
    r.add("tainted", at=at, real=[("fee", "0.03", "0.02")], reason="key '*' out of step", count=350)
    r.add(method=REFUND, at=at, count=40)
    r.add(
        "tainted", method=REFUND, at=at, real=[("amount", "1", "2")], reason="key '*' out of step", count=360
    )
    r.add("error", method=REFUND, at=at, reason="the comparison failed: ValueError()", count=5)
    path = tmp_path / "shim.db"
    store = Store.open(str(path))
    await store.start()
    try:
        await r.write(store)
    finally:
        await store.close()
    done = _gate("--store", str(path), "--min-compared", "100")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = [[cell for cell in line.split("  ") if cell] for line in done.stdout.splitlines()[1:-1]]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["PASS", GET_NAME, "compared", "150", "≥ 100"],
        ["PASS", GET_NAME, "answered", "150 of 150 clean comparisons", "≥ 10"],
        ["PASS", GET_NAME, "real mismatch rate", "0% (0 of 150)", "≤ 0%"],
        [
            "FAIL",
            GET_NAME,
            "unproven",
            "not proven: 70% of 500 calls (tainted 350, skipped 0, shadow-error 0, error 0, dropped 0)",
            "≤ 1%",
        ],
        ["FAIL", REFUND_NAME, "compared", "not proven: 40 clean of 405 calls", "≥ 100"],
        ["PASS", REFUND_NAME, "answered", "40 of 40 clean comparisons", "≥ 10"],
        ["PASS", REFUND_NAME, "real mismatch rate", "0% (0 of 40)", "≤ 0%"],
        [
            "FAIL",
            REFUND_NAME,
            "unproven",
            "not proven: 90.12% of 405 calls (tainted 360, skipped 0, shadow-error 0, error 5, dropped 0)",
            "≤ 1%",
        ],
    ]
    assert done.stdout.splitlines()[-1] == "gate: FAIL (3 of 8 criteria not met)"


def test_flags_override_the_gate_config(recent: Path, tmp_path: Path) -> None:
    """[gate] in the config sets the criteria and [store] url the store; each flag overrides its key."""
    config = tmp_path / "shim.toml"
    config.write_text(
        f"""
[store]
url = "{recent.name}"

[gate]
window = "1h"
min_compared = 1000
max_mismatch_rate = 0.05
max_unproven_rate = 0.05
methods = ["{REFUND_NAME}"]
""",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_config = _gate("--config", str(config), cwd=elsewhere)
    assert by_config.returncode == 1, by_config.stdout + by_config.stderr
    assert [line.split()[:3] for line in by_config.stdout.splitlines() if line[:4] in ("PASS", "FAIL")] == [
        ["FAIL", REFUND_NAME, "compared"],
        ["PASS", REFUND_NAME, "answered"],
        ["PASS", REFUND_NAME, "real"],
        ["PASS", REFUND_NAME, "unproven"],
        ["FAIL", GET_NAME, "compared"],
        ["PASS", GET_NAME, "answered"],
        ["PASS", GET_NAME, "real"],
        ["PASS", GET_NAME, "unproven"],
    ], "the required method first, then every other method, against min_compared = 1000"
    by_flags = _gate("--config", str(config), "--min-compared", "5", cwd=elsewhere)
    assert by_flags.returncode == 0, by_flags.stdout
    everything = _gate(
        "--config",
        str(config),
        "--min-compared",
        "5",
        "--require-method",
        GET_NAME,
        "--max-mismatch-rate",
        "0",
    )
    assert everything.returncode == 1
    judged = {tuple(line.split()[:3]) for line in everything.stdout.splitlines()}
    assert ("FAIL", GET_NAME, "real") in judged
    assert ("PASS", GET_NAME, "unproven") in judged, "3.846% unproven is within the config's 5%"
    strict = _gate(
        "--config",
        str(config),
        "--min-compared",
        "5",
        "--require-method",
        GET_NAME,
        "--max-unproven-rate",
        "0.01",
    )
    assert strict.returncode == 1
    assert [line.split()[:3] for line in strict.stdout.splitlines() if line.startswith("FAIL")] == [
        ["FAIL", GET_NAME, "unproven"]
    ], "the flag overrides [gate] max_unproven_rate"
    short = _gate("--config", str(config), "--min-compared", "5", "--window", "1m")
    assert short.returncode == 1
    assert "not covered" in short.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-mismatch-rate", "2"], "is not a share between 0 and 1"),
        (["--max-unproven-rate", "1.5"], "is not a share between 0 and 1"),
        (["--min-compared", "-1"], "is not a whole number of 1 or more"),
        (["--min-compared", "0"], "is not a whole number of 1 or more"),
        (["--window", "soon"], "is not a duration"),
        (["--bogus"], "unrecognized arguments"),
        (["--require-method", "Deposit"], "'Deposit' is not a \"package.Service/Method\" name"),
    ],
)
def test_usage_errors_exit_2(recent: Path, args: list[str], message: str) -> None:
    """A bad flag is one line on stderr and exit status 2, not a failed gate."""
    done = _gate("--store", str(recent), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stderr.startswith("shim: error: ")


def test_a_bad_max_unproven_rate_in_the_config_exits_2(recent: Path, tmp_path: Path) -> None:
    """[gate] max_unproven_rate must be a share between 0 and 1: anything else is a config error."""
    config = tmp_path / "shim.toml"
    config.write_text(f'[store]\nurl = "{recent}"\n[gate]\nmax_unproven_rate = 2\n', encoding="utf-8")
    done = _gate("--config", str(config))
    assert done.returncode == 2, done.stdout
    assert "gate.max_unproven_rate: 2 is not a share between 0 and 1" in done.stderr


def test_a_gate_that_needs_no_clean_comparison_is_a_config_error(recent: Path, tmp_path: Path) -> None:
    """[gate] min_compared = 0 would pass a method none of whose calls was compared: a config error."""
    config = tmp_path / "shim.toml"
    config.write_text(f'[store]\nurl = "{recent}"\n[gate]\nmin_compared = 0\n', encoding="utf-8")
    done = _gate("--config", str(config))
    assert done.returncode == 2, done.stdout
    assert "gate.min_compared: 0 is not a positive integer" in done.stderr


def test_a_store_error_exits_2(tmp_path: Path) -> None:
    """A store that does not exist, or cannot be read, is exit status 2."""
    missing = _gate("--store", str(tmp_path / "missing.db"))
    assert missing.returncode == 2
    assert "no store at" in missing.stderr
    not_a_db = tmp_path / "garbage.db"
    not_a_db.write_bytes(b"this is not a database" * 100)
    broken = _gate("--store", str(not_a_db))
    assert broken.returncode == 2
    assert broken.stderr.startswith("shim: error: ")


def test_the_docs_config_examples_are_valid(tmp_path: Path) -> None:
    """The [noise] and [gate] examples of the docs' "Reports and the gate" page load as a config."""
    from shim.config import load_file
    from tests.helpers import toml_blocks

    blocks = toml_blocks("reports.md", "# Reports and the gate")
    assert len(blocks) == 2
    path = tmp_path / "shim.toml"
    path.write_text("\n".join(blocks), encoding="utf-8")
    settings = load_file(path)
    assert settings["noise"]["relative"] == 0.2
    assert settings["gate"]["max_unproven_rate"] == 0.01
    assert settings["gate"]["methods"] == ("bank.v1.Ledger/PostTrade", "bank.v1.Ledger/CancelTrade")


def test_a_required_method_adds_to_the_criteria_and_never_hides_the_other_methods(
    recent: Path, tmp_path: Path
) -> None:
    """Requiring Refund (by flag or config) asks that Refund be covered too: Get, which fails, is still
    judged, and the flag's methods add to the config's."""
    strict = ["--min-compared", "5", "--max-mismatch-rate", "0"]  # Get's 2% real mismatches fail
    by_flag = _gate("--store", str(recent), *strict, "--require-method", REFUND_NAME)
    assert by_flag.returncode == 1, by_flag.stdout
    verdicts = {tuple(line.split()[:3]) for line in by_flag.stdout.splitlines()}
    assert {("FAIL", GET_NAME, "real"), ("PASS", REFUND_NAME, "compared")} <= verdicts
    config = tmp_path / "gate.toml"
    config.write_text(f'[store]\nurl = "{recent}"\n[gate]\nmethods = ["{REFUND_NAME}"]\n', encoding="utf-8")
    both = _gate("--config", str(config), *strict, "--require-method", "pay.v1.X/Y")
    assert both.returncode == 1
    judged = {tuple(line.split()[1:3]) for line in both.stdout.splitlines() if line[:4] in ("PASS", "FAIL")}
    assert {(GET_NAME, "real"), (REFUND_NAME, "compared"), ("pay.v1.X/Y", "covered")} <= judged


async def test_the_gate_reads_counts_not_a_row_per_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The promotion's gate runs inside the serving shim (`shim mode set bk-primary`), and `shim gate` beside
    it: both judge counts. Before, each read every latency of the window, a row per comparison: 740 MB for
    3,000,000 comparisons, in the process that serves the clients. `shim report` still shows latencies."""
    import types

    from shim._noise import NoiseSettings
    from shim._promotion import gate_failures
    from shim.cli import main
    from shim.gate import GateSettings
    from shim.store import backends
    from tests.shim.test_store_retention import _fill_old

    path = tmp_path / "shim.db"
    rows = 50_000
    await _fill_old(path, rows, time.time() - 3600)  # the last hour's comparisons
    fetched = [0]
    real_run = backends.Sqlite.run

    def counting(self: backends.Sqlite, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        found = real_run(self, sql, params)
        fetched[0] += len(found)
        return found

    monkeypatch.setattr(backends.Sqlite, "run", counting)
    config = types.SimpleNamespace(
        store=types.SimpleNamespace(url=str(path)), gate=GateSettings(), noise=NoiseSettings()
    )
    store = Store.open(str(path))
    await store.start()
    try:
        failed = await gate_failures(store, config, [])  # type: ignore[arg-type]
    finally:
        await store.close()
    assert failed == []
    assert fetched[0] < 1000, f"the promotion's gate fetched {fetched[0]:,} rows for {rows:,} comparisons"
    fetched[0] = 0
    assert await asyncio.to_thread(main, ["gate", "--store", str(path)]) == 0
    assert "PASS" in capsys.readouterr().out
    assert fetched[0] < 1000, f"`shim gate` fetched {fetched[0]:,} rows for {rows:,} comparisons"
    fetched[0] = 0
    assert await asyncio.to_thread(main, ["report", "--store", str(path)]) == 0
    assert fetched[0] < 1000  # the report's latencies are read a few at a time (`Db.each`), never all at once
    assert "p99" in capsys.readouterr().out


def test_a_fleet_split_names_the_live_replicas_on_the_scopes_they_differ_on() -> None:
    """Replicas agree: no split. One runs a method in bank mode: each live replica is named with its mode of
    that method alone. A silent one (heard from longer ago than the lease) is left out."""
    now = 1_000.0
    shadow = ReplicaView("a", {"*": "shadow"}, 0.0, now - 1)
    same = ReplicaView("b", {"*": "shadow", "/x.v1.S/Get": "shadow"}, 0.0, now - 2)
    drifted = ReplicaView("c", {"*": "shadow", "/x.v1.S/Put": "bank"}, 0.0, now - 3)
    silent = ReplicaView("d", {"*": "bk"}, 0.0, now - 31)
    assert split_fleet([shadow, same, silent], lease=30, now=now) == ""
    assert split_fleet([shadow, drifted, silent], lease=30, now=now) == (
        "a in x.v1.S/Put shadow; c in x.v1.S/Put bank"
    )
    assert split_fleet([drifted], lease=30, now=now) == ""
