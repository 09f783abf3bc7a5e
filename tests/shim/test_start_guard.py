"""A shim started by its config in a mode other than the last recorded one is guarded as a switch at run time
is: a promotion, or Bank's retirement, runs the gate first; Bank is not retired with keys out of step, nor
brought back from retirement; the start is refused, nothing recorded, unless forced (recorded as forced).
Before, a config that said `bk` (one letter from `bank`) retired Bank with no question asked."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import structlog.testing

from sample_ledger.server import RunningLedger
from shim.errors import StartupError
from shim.modes import STARTED_BY
from shim.store import ModeChange, OutOfStep, Store
from tests.shim.test_modes import TOKEN, _set, _shim
from tests.shim.test_operator_guards import _clean_evidence


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIM_ADMIN_TOKEN", TOKEN)


async def _history(url: str) -> list[tuple[str, str, str, bool]]:
    store = Store.open(url)
    await store.start()
    try:
        return [(c.who, c.from_mode, c.to_mode, c.forced) for c in await store.modes.history()]
    finally:
        await store.close()


async def _in_store(url: str, *, marks: Sequence[OutOfStep] = (), started: ModeChange | None = None) -> None:
    store = Store.open(url)
    await store.start()
    try:
        if marks:
            store.marks.put(marks)
        if started is not None:
            await store.modes.started(started)
        await store.flush()
    finally:
        await store.close()


@pytest.mark.parametrize("mode", ["bk-primary", "bk"])
async def test_a_start_that_promotes_bk_with_no_evidence_is_refused_unless_forced(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path, mode: str
) -> None:
    """An empty store: the gate has nothing to judge, so a start in bk-primary or bk is refused, saying the
    gate fails and how to go on; nothing is recorded. Forced, it starts, recorded as forced."""
    url = str(tmp_path / "shim.db")
    with pytest.raises(StartupError) as refused:
        async with _shim(ledgers, store={"url": url}, mode=mode, forced_start=False):
            pass
    said = str(refused.value)
    assert (
        f"starting in the config's mode {mode} (the default mode last recorded: none) is refused" in said
    ), said
    assert "the gate fails" in said, said
    assert "shim serve --force" in said, said
    assert await _history(url) == []
    async with _shim(ledgers, store={"url": url}, mode=mode, forced_start=True) as (shim, _, _):
        assert shim.modes.default == mode
    assert await _history(url) == [(STARTED_BY, "", mode, True)]


async def test_a_start_that_promotes_bk_on_clean_evidence_is_recorded_unforced(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Clean evidence of every method: a start in bk-primary passes the gate, recorded unforced."""
    url = str(tmp_path / "shim.db")
    await _clean_evidence(url, ago=600)
    async with _shim(ledgers, store={"url": url}, mode="bk-primary", forced_start=False) as (shim, _, _):
        assert shim.modes.default == "bk-primary"
    assert await _history(url) == [(STARTED_BY, "", "bk-primary", False)]


async def test_a_start_that_retires_bank_with_a_key_out_of_step_is_refused(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Clean evidence, but a key out of step: a start in bk would leave nothing to tell which book is
    right there. Refused, naming the key; a start in bk-primary (Bank still mirrored) is not."""
    url = str(tmp_path / "shim.db")
    await _clean_evidence(url, ago=600)
    await _in_store(url, marks=[OutOfStep("A7", time.time() - 60, "/bank.v1.Ledger/PostTrade", "bk failed")])
    with pytest.raises(StartupError) as refused:
        async with _shim(ledgers, store={"url": url}, mode="bk", forced_start=False):
            pass
    said = str(refused.value)
    assert "1 key is out of step (A7)" in said, said
    assert "the gate fails" not in said, said
    assert await _history(url) == []
    async with _shim(ledgers, store={"url": url}, mode="bk-primary", forced_start=False):
        pass
    assert await _history(url) == [(STARTED_BY, "", "bk-primary", False)]


async def test_a_start_that_brings_bank_back_from_retirement_is_refused(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """The last start was in bk: Bank was sent no write since. A start in shadow would compare BK with a
    book that lacks them: refused unless forced. A start in bk again changes nothing, and is not refused."""
    url = str(tmp_path / "shim.db")
    retired = ModeChange(
        time.time() - 60, STARTED_BY, "*", "bk-primary", "bk", "the mode the shim started in", False
    )
    await _in_store(url, started=retired)
    with pytest.raises(StartupError) as refused:
        async with _shim(ledgers, store={"url": url}, mode="shadow", forced_start=False):
            pass
    assert "Bank is retired there (mode bk)" in str(refused.value), refused.value
    async with _shim(ledgers, store={"url": url}, mode="bk", forced_start=False) as (shim, _, _):
        assert shim.modes.default == "bk"
    assert await _history(url) == [(STARTED_BY, "bk-primary", "bk", False)]


async def test_a_config_mode_overridden_by_a_mode_set_at_run_time_is_said_at_start(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """bk-primary set at run time; the shim restarted with shadow in its config (`--mode shadow`, say, to
    roll back with the admin API out of reach). The store's modes hold, as documented, and the start says
    so in a warning naming both and how to change it. Before, nothing was said: only the ready line's mode
    showed that the rollback had not happened."""
    url = str(tmp_path / "shim.db")
    await _clean_evidence(url, ago=600)
    async with _shim(ledgers, store={"url": url}) as (_, _, admin):
        await _set(admin, "bk-primary", reason="promote")
    with structlog.testing.capture_logs() as logs:
        async with _shim(ledgers, store={"url": url}, mode="shadow", forced_start=False) as (shim, _, _):
            assert shim.modes.default == "bk-primary"
    (warned,) = [e for e in logs if e["event"] == "the config's mode is not in force"]
    assert warned["log_level"] == "warning"
    assert (warned["config_mode"], warned["mode"]) == ("shadow", "bk-primary")
    assert "shim mode set" in warned["why"]
