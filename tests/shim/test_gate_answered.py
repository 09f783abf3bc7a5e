"""The gate's `answered` criterion: clean comparisons in which Bank answered (status OK) must number at
least `[gate] min_answered` (no more than `min_compared`), or the method is not proven. The same refusal
on both sides is a clean comparison (a match), but a window of nothing else shows nothing of the method's
work: broken credentials, an overload or garbage requests refused alike would otherwise pass the gate
with every comparison a match.

`evaluate` is checked on reports built from crafted records; the command is run as a real process
against a store file filled the same way.
"""

from __future__ import annotations

import time
from pathlib import Path

from shim.evidence import Report, build_report
from shim.gate import GateResult, evaluate
from shim.store import Store
from tests.helpers import run_shim
from tests.shim.test_evidence import GET, REFUND, SPAN, T0, Records

GET_NAME, REFUND_NAME = GET.lstrip("/"), REFUND.lstrip("/")
OK, INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED = 0, 3, 5, 16


async def _store_file(path: Path, records: Records) -> Path:
    await records.write_to(str(path))
    return path


async def _report(store: Store) -> Report:
    return await build_report(store, since=T0, until=T0 + SPAN, relative=0.2, absolute=0.0003, min_sampled=20)


async def _judge(records: Records, *, min_compared: int = 100, min_answered: int = 10) -> GateResult:
    """The gate on a report of `records`, with no real mismatch and 1% unproven allowed."""
    opened = Store.open(":memory:")
    await opened.start()
    try:
        await records.write(opened)
        report = await _report(opened)
    finally:
        await opened.close()
    return evaluate(
        report,
        min_compared=min_compared,
        min_answered=min_answered,
        max_mismatch_rate=0.0,
        max_unproven_rate=0.01,
        required_methods=(),
    )


def _answered(result: GateResult) -> list[tuple[str, str, str, bool]]:
    return [(c.method, c.measured, c.threshold, c.passed) for c in result.criteria if c.name == "answered"]


async def test_shim_gate_fails_a_method_whose_every_comparison_is_a_refusal_alike(tmp_path: Path) -> None:
    """250 matches, every one UNAUTHENTICATED on both sides (the clients' credentials broken): 100 %
    matched, nothing unproven, and yet nothing shows BK does the method's work. `shim gate` fails the
    method as not proven, naming the refusals; it exits 1. Before, it passed (exit 0)."""
    r = Records()
    r.add(at=time.time() - 600, bank_code=UNAUTHENTICATED, bk_code=UNAUTHENTICATED, count=250)
    store = await _store_file(tmp_path / "shim.db", r)
    done = run_shim("gate", "--store", store, "--min-compared", "100")
    assert done.returncode == 1, done.stdout + done.stderr
    fails = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert [line.split()[1:3] for line in fails] == [[GET_NAME, "answered"]], done.stdout
    (line,) = fails
    assert (
        "not proven: 0 of 250 clean comparisons answered by Bank; the rest were refusals alike on both"
        " sides (UNAUTHENTICATED 250)" in line
    ), line
    assert line.rstrip().endswith("≥ 10"), line
    assert done.stdout.splitlines()[-1] == "gate: FAIL (1 of 4 criteria not met)"


async def test_a_method_bank_answered_often_enough_passes() -> None:
    """20 of 250 clean comparisons answered by Bank pass a minimum of 10, however many refusals beside
    them: refusals alike are evidence too, once the method is seen doing its work."""
    r = Records()
    r.add(count=20)
    r.add(bank_code=UNAUTHENTICATED, bk_code=UNAUTHENTICATED, count=230)
    result = await _judge(r)
    assert result.passed, result.failed
    assert _answered(result) == [(GET_NAME, "20 of 250 clean comparisons", "≥ 10", True)]
    assert [c.name for c in result.criteria] == ["compared", "answered", "real mismatch rate", "unproven"]


async def test_too_few_answered_among_refusals_alike_is_not_proven() -> None:
    """5 answered of 250 clean comparisons fail a minimum of 10, as not proven, alone among the criteria;
    the refusals are named by status, most first."""
    r = Records()
    r.add(count=5)
    r.add(bank_code=UNAUTHENTICATED, bk_code=UNAUTHENTICATED, count=200)
    r.add(bank_code=NOT_FOUND, bk_code=NOT_FOUND, count=45)
    result = await _judge(r)
    assert [(c.name, c.measured) for c in result.failed] == [
        (
            "answered",
            "not proven: 5 of 250 clean comparisons answered by Bank; the rest were refusals alike on both"
            " sides (UNAUTHENTICATED 200, NOT_FOUND 45)",
        )
    ]


async def test_bank_refusals_bk_answered_are_named_with_both_statuses() -> None:
    """Where Bank refused and BK answered (a mismatch, failed by the real mismatch rate as well), the
    refusals are named Bank → BK: they are not alike."""
    r = Records()
    r.add(bank_code=UNAUTHENTICATED, bk_code=UNAUTHENTICATED, count=120)
    r.add("mismatch", bank_code=NOT_FOUND, bk_code=OK, real=[("status", "NOT_FOUND", "OK")], count=3)
    result = await _judge(r)
    assert _answered(result) == [
        (
            GET_NAME,
            "not proven: 0 of 123 clean comparisons answered by Bank; the rest, by status (Bank → BK):"
            " UNAUTHENTICATED 120, NOT_FOUND → OK 3",
            "≥ 10",
            False,
        )
    ]
    assert [c.name for c in result.failed] == ["answered", "real mismatch rate"]


async def test_a_gate_asking_for_fewer_clean_comparisons_asks_for_no_more_answered() -> None:
    """min_answered is capped by min_compared: with 3 clean comparisons required, 3 answered suffice (a
    small service's config keeps passing), but none answered still fails."""
    r = Records()
    r.add(count=3)
    r.add(method=REFUND, bank_code=INVALID_ARGUMENT, bk_code=INVALID_ARGUMENT, count=3)
    result = await _judge(r, min_compared=3, min_answered=10)
    assert _answered(result) == [
        (GET_NAME, "3 of 3 clean comparisons", "≥ 3", True),
        (
            REFUND_NAME,
            "not proven: 0 of 3 clean comparisons answered by Bank; the rest were refusals alike on both"
            " sides (INVALID_ARGUMENT 3)",
            "≥ 3",
            False,
        ),
    ]


async def test_a_method_with_no_clean_comparison_fails_answered_too() -> None:
    """No clean comparison at all: not proven as compared and as answered, with nothing else to name."""
    r = Records()
    r.add("error", reason="the comparison failed: ValueError()", count=150)
    result = await _judge(r)
    assert _answered(result) == [
        (GET_NAME, "not proven: 0 of 0 clean comparisons answered by Bank", "≥ 10", False)
    ]


async def test_min_answered_comes_from_the_config_and_the_flag(tmp_path: Path) -> None:
    """[gate] min_answered sets the criterion (0 is a config error: none answered proves nothing), and
    --min-answered overrides it."""
    r = Records()
    r.add(at=time.time() - 600, count=4)
    r.add(at=time.time() - 600, bank_code=NOT_FOUND, bk_code=NOT_FOUND, count=100)
    store = await _store_file(tmp_path / "shim.db", r)
    config = tmp_path / "shim.toml"
    config.write_text(f'[store]\nurl = "{store}"\n[gate]\nmin_answered = 4\n', encoding="utf-8")
    assert run_shim("gate", "--config", config).returncode == 0
    strict = run_shim("gate", "--config", config, "--min-answered", "5")
    assert strict.returncode == 1, strict.stdout
    assert "not proven: 4 of 104 clean comparisons answered by Bank" in strict.stdout
    config.write_text(f'[store]\nurl = "{store}"\n[gate]\nmin_answered = 0\n', encoding="utf-8")
    refused = run_shim("gate", "--config", config)
    assert refused.returncode == 2
    assert "gate.min_answered: 0 is not a positive integer" in refused.stderr
