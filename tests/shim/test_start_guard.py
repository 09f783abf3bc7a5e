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
from grpc import aio

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.errors import StartupError
from shim.modes import STARTED_BY
from shim.store import ModeChange, OutOfStep, Store
from shim.testing import running_shim
from tests.shim.test_modes import KEYED, LOCATIONS, REGISTRY, RULES, TOKEN, _set, _shim
from tests.shim.test_operator_guards import _clean_evidence

DOWN = "postgresql://shim@127.0.0.1:1/shim"
PLAIN = {"registry": REGISTRY, "methods": KEYED, "rules": RULES, "rule_locations": LOCATIONS}  # no admin API


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


@pytest.mark.parametrize("stretch", ["config-bank", "no-bk"])
async def test_a_stretch_in_bank_mode_after_an_unrecorded_shadow_run_leaves_its_mark(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path, stretch: str
) -> None:
    """A run in shadow by the config records no mode. A restart in bank mode by the config, or without BK,
    is then a start from no recorded mode: it is a stretch all the same (BK was mirrored before), and leaves
    the mark of no key, which keeps Bank from being retired. Before, a start from no recorded mode was taken
    for a first start, and Bank was retired unforced, BK's book lacking the stretch's deposit."""
    bank, _ = ledgers
    url = str(tmp_path / "shim.db")
    async with _shim(ledgers, store={"url": url}, forced_start=False) as (shim, stub, _):
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="S1", initial_deposit="100"))
        await shim.drain()
    if stretch == "config-bank":
        starting = running_shim(bank.address, ledgers[1].address, mode="bank", store={"url": url}, **PLAIN)
    else:
        starting = running_shim(bank.address, None, store={"url": url}, **PLAIN)
    async with starting as (lone, _), aio.insecure_channel(lone.address) as channel:
        await pb_grpc.LedgerStub(channel).Deposit(pb.DepositRequest(account_id="S1", amount="50"))  # type: ignore[no-untyped-call]
    store = Store.open(url)
    await store.start()
    try:
        marks = await store.marks.out_of_step()
    finally:
        await store.close()
    assert [(m.key, m.side) for m in marks] == [("", "bank")]
    assert (await _history(url))[0][1:] == ("", "bank", False)


async def test_a_start_without_bk_while_bk_answers_by_the_store_s_modes_is_refused(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """The store says BK answers (a start in bk-primary recorded): a shim started without BK on it (a config
    that lost its BK) would answer from Bank and send its writes to Bank alone. Refused, nothing recorded,
    unless forced. Before, it started, and recorded bk-primary -> bank for the whole fleet."""
    bank, _ = ledgers
    url = str(tmp_path / "shim.db")
    await _clean_evidence(url, ago=600)
    async with _shim(ledgers, store={"url": url}, mode="bk-primary", forced_start=False):
        pass
    with pytest.raises(StartupError) as refused:
        async with running_shim(bank.address, None, store={"url": url}, forced_start=False, **PLAIN):
            pass
    said = str(refused.value)
    assert said.startswith("starting without BK is refused: BK answers the clients by the store's modes"), (
        said
    )
    assert await _history(url) == [(STARTED_BY, "", "bk-primary", False)]
    async with running_shim(bank.address, None, store={"url": url}, **PLAIN):
        pass
    assert (await _history(url))[0] == (STARTED_BY, "bk-primary", "bank", True)


async def test_a_start_without_bk_serves_bank_while_the_store_is_down(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """BK and the store both down: a shim started without BK serves Bank all the same, saying the start is
    not recorded yet and will be tried again. Before this was guarded, such a start never opened the store;
    the first version of the guard refused to start."""
    bank, _ = ledgers
    with structlog.testing.capture_logs() as logs:  # (nothing listens on port 1)
        async with (
            running_shim(bank.address, None, store={"url": "postgresql://shim@127.0.0.1:1/shim"}) as (
                shim,
                _,
            ),
            aio.insecure_channel(shim.address) as channel,
        ):
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="P1", initial_deposit="1"))
    assert [e["event"] for e in logs if e["log_level"] == "warning"][:1] == [
        "a start without BK is not recorded yet: tried again"
    ]


async def test_a_forced_start_in_bk_with_a_method_still_answered_by_bank_is_refused(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """GetBalance keeps a mode of its own, shadow (Bank answers it). A start in bk, even forced, would leave
    Bank answering balances from a book that gets no write: refused, as the switch at run time is, forced or
    not. Before, the forced start went through."""
    url = str(tmp_path / "shim.db")
    async with _shim(ledgers, store={"url": url}) as (_, _, admin):
        await _set(admin, "shadow", "bank.v1.Ledger/GetBalance", reason="its own mode")
    with pytest.raises(StartupError) as refused:
        async with _shim(ledgers, store={"url": url}, mode="bk", forced_start=True):
            pass
    said = str(refused.value)
    assert "bank.v1.Ledger/GetBalance (shadow) keeps a mode of its own in which Bank still answers" in said, (
        said
    )


async def test_a_start_in_bk_with_a_method_of_its_own_in_bk_primary_says_how_to_retire_both(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """GetBalance promoted to bk-primary at run time (Bank still mirrored for it). A start in bk changes no
    method's own mode, so Bank would stay mirrored for balances while getting no other write: refused,
    saying that the switch at run time retires the method with the default; forced, it starts."""
    url = str(tmp_path / "shim.db")
    await _clean_evidence(url, ago=600)
    async with _shim(ledgers, store={"url": url}) as (_, _, admin):
        await _set(admin, "bk-primary", "bank.v1.Ledger/GetBalance", reason="balances first")
    with pytest.raises(StartupError) as refused:
        async with _shim(ledgers, store={"url": url}, mode="bk", forced_start=False):
            pass
    said = str(refused.value)
    assert "bank.v1.Ledger/GetBalance (bk-primary) keeps a mode of its own, in which Bank is still" in said
    assert "shim mode set bk --retire-bank retires it with the default" in said, said
    async with _shim(ledgers, store={"url": url}, mode="bk", forced_start=True) as (shim, _, _):
        assert shim.modes.table() == {"*": "bk", "/bank.v1.Ledger/GetBalance": "bk-primary"}
