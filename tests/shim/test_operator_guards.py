"""What the admin API refuses an operator, and why: switches that would let a side answer, or be judged,
from a book that lacks writes.

The sample ledger is the service here; the guards are the modes' own, whatever the service.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim._proto.shim.v1 import admin_pb2 as apb
from shim._proto.shim.v1 import admin_pb2_grpc as apb_grpc
from shim.config import Upstream
from shim.modes import STARTED_BY
from shim.testing import running_shim
from tests.backends import forwarding
from tests.helpers import run_shim, shim_command, until
from tests.shim.test_evidence import Records
from tests.shim.test_modes import AUTH, LOCATIONS, REGISTRY, RULES, TOKEN, _set, _settings, _shim

DEPOSIT = "bank.v1.Ledger/Deposit"


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIM_ADMIN_TOKEN", TOKEN)


async def _clean_evidence(store: str, ago: float) -> None:
    """150 clean comparisons of every method of the descriptors, `ago` seconds ago, in the store."""
    evidence = Records()
    for method in REGISTRY.methods:
        evidence.add(method=method, at=time.time() - ago, count=150)
    await evidence.write_to(store)


async def _clean_since(store: str) -> None:
    """150 clean comparisons of every method of the descriptors, now (after a promotion), in the store."""
    evidence = Records()
    for method in REGISTRY.methods:
        evidence.add(method=method, at=time.time(), count=150)
    evidence.records = [replace(r, id=f"since-{r.id}") for r in evidence.records]
    await evidence.write_to(store)


async def _clean_trades(store: str) -> None:
    """150 clean comparisons of PostTrade, ten minutes ago, in the store."""
    evidence = Records()
    evidence.add(method="/bank.v1.Ledger/PostTrade", at=time.time() - 600, count=150)
    await evidence.write_to(store)


async def _mismatched_trades(stub: Any) -> None:
    """Three trades on T1 whose fees the two sides round apart: real mismatches of the sample BK."""
    for n in range(3):  # a fee of 0.005: Bank rounds to 0.01, the sample BK to 0.00
        request = pb.PostTradeRequest(
            account_id="T1",
            symbol="ACME",
            side=pb.SIDE_BUY,
            quantity="1",
            price="10",
            client_order_id=f"o{n}",
        )
        await stub.PostTrade(request)


async def _cash(ledger: RunningLedger, account: str) -> Decimal:
    async with aio.insecure_channel(ledger.address) as channel:
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        return Decimal((await stub.GetBalance(pb.GetBalanceRequest(account_id=account))).cash)


async def test_bank_once_retired_answers_again_only_when_forced(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """After Bank is retired (bk), a deposit reaches BK alone. Switching back to shadow would have the
    stale Bank answer the clients: refused, naming why, unless forced (and then recorded as forced)."""
    bank, _ = ledgers
    async with _shim(ledgers, store={"url": str(tmp_path / "shim.db")}) as (shim, stub, admin):
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="R1", initial_deposit="100"))
        await shim.drain()
        await _set(admin, "bk", retire_bank=True, force=True, reason="the point of no return, no evidence")
        await stub.Deposit(pb.DepositRequest(account_id="R1", amount="50"))  # BK alone
        await shim.drain()
        for mode in ("shadow", "bank", "bk-primary"):
            with pytest.raises(aio.AioRpcError) as refused:
                await _set(admin, mode, reason="oops")
            assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert "Bank is retired there (mode bk)" in (refused.value.details() or "")
        assert Decimal((await stub.GetBalance(pb.GetBalanceRequest(account_id="R1"))).cash) == Decimal("150")
        assert await _cash(bank, "R1") == Decimal("100")
        await _set(admin, "shadow", force=True, reason="Bank's book restored by hand")
        history = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
    assert [(c.from_mode, c.to_mode, c.forced) for c in history][:2] == [
        ("bk", "shadow", True),
        ("shadow", "bk", True),
    ]


async def test_bk_is_not_promoted_on_evidence_from_before_a_stretch_in_bank_mode(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Clean evidence of every method, then deposits go to Bank alone (bank mode, an incident): BK's book
    lacks them. Promoting deposits straight from bank mode, or after a moment back in shadow, is judged on
    the evidence since the stretch in bank mode: none, so it is refused, saying why."""
    bank, bk = ledgers
    store = str(tmp_path / "shim.db")
    await _clean_evidence(store, ago=60)
    async with _shim(ledgers, store={"url": store}) as (shim, stub, admin):
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="S1", initial_deposit="100"))
        await shim.drain()
        await _set(admin, "bank", DEPOSIT, reason="incident: BK slow, stop mirroring deposits")
        await stub.Deposit(pb.DepositRequest(account_id="S1", amount="50"))
        await shim.drain()
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk-primary", DEPOSIT, reason="promote deposits")
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "in bank mode BK is sent no write" in (refused.value.details() or "")
        await _set(admin, "shadow", DEPOSIT, reason="incident over")
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk-primary", DEPOSIT, reason="promote deposits")
        assert "bank.v1.Ledger/Deposit covered: not covered: no call in the window" in (
            refused.value.details() or ""
        )
        history = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
    assert [c.to_mode for c in history] == ["shadow", "bank"]
    assert (await _cash(bank, "S1"), await _cash(bk, "S1")) == (Decimal("150"), Decimal("100"))


async def test_bank_is_not_retired_when_a_key_goes_out_of_step_while_the_switch_waits(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """In bk-primary a deposit's mirror to Bank is held on its way (a slow Bank) when Bank's retirement is
    asked: no key is out of step yet. The switch waits for the mirror, which times out, marking the key:
    Bank is not retired then (unforced), and nothing is recorded. (The store holds clean evidence of every
    method: the gate, which retiring from bk-primary runs, passes.)"""
    bank, bk = ledgers
    await _clean_evidence(str(tmp_path / "shim.db"), ago=3600)
    async with forwarding(bank.address) as (front, running):
        gate = front.gated["/Deposit"] = asyncio.Event()
        async with (
            running_shim(
                Upstream("bank", f"127.0.0.1:{running.port}", timeout=1.0),
                bk.address,
                **_settings(store={"url": str(tmp_path / "shim.db")}),
            ) as (shim, _),
            aio.insecure_channel(shim.address) as channel,
            aio.insecure_channel(f"127.0.0.1:{shim.admin_port}") as admin_channel,
        ):
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            admin = apb_grpc.AdminStub(admin_channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="Z1", initial_deposit="100"))
            await shim.drain()
            await _set(admin, "bk-primary", force=True, reason="no evidence needed here")
            await _clean_since(str(tmp_path / "shim.db"))  # what retiring judges: since the promotion
            await stub.Deposit(pb.DepositRequest(account_id="Z1", amount="5"))  # BK answers; Bank's copy held
            await until(lambda: front.arrived >= 1, "the deposit's mirror held on its way to Bank")
            assert shim.steps is not None
            assert shim.steps.keys == {}
            with pytest.raises(aio.AioRpcError) as refused:
                await _set(admin, "bk", retire_bank=True, pause=3.0, reason="the point of no return")
            gate.set()
            assert "1 key is out of step (Z1)" in (refused.value.details() or "")
            assert "nothing recorded" in (refused.value.details() or "")
            history = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
            assert [c.to_mode for c in history] == ["bk-primary"]
            assert shim.modes.default == "bk-primary"


async def test_a_method_promoted_before_the_default_is_retired_with_it(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Deposits promoted to bk-primary first, then the default. Retiring Bank (the default) takes deposits
    with it, unforced, in one switch recorded for both scopes. Before, retiring the default was refused
    while deposits kept a mode of their own, and retiring deposits alone was refused while Bank was
    compared for the rest: no unforced way out."""
    store = str(tmp_path / "shim.db")
    await _clean_evidence(store, ago=600)
    async with _shim(ledgers, store={"url": store}) as (_, _, admin):
        await _set(admin, "bk-primary", DEPOSIT, reason="deposits first")
        await _set(admin, "bk-primary", reason="the rest")
        await _clean_since(store)  # what retiring judges: the evidence since the promotion
        modes = await _set(admin, "bk", retire_bank=True, reason="the point of no return")
        history = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
    assert (modes.default_mode, dict(modes.methods)) == ("bk", {DEPOSIT: "bk"})
    assert sorted((c.scope, c.from_mode, c.to_mode, c.forced) for c in history[:2]) == [
        ("*", "bk-primary", "bk", False),
        (DEPOSIT, "bk-primary", "bk", False),
    ]


async def test_a_stretch_in_bank_mode_keeps_bank_from_being_retired_until_the_books_are_reconciled(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A stretch in bank mode (an incident): a deposit reaches Bank alone, on a key the shim marks nowhere
    (on Envoy the shim does not see such calls). The switch into bank mode leaves the mark of no key, so
    that once BK is promoted on clean evidence from after the stretch, retiring Bank is refused until the
    books are reconciled and the mark cleared (`shim resync --force ''`). Before, Bank was retired unforced,
    BK's book lacking the deposit. A stretch of a read method alone leaves no mark."""
    bank, bk = ledgers
    async with _shim(ledgers, store={"url": str(tmp_path / "reads.db")}) as (shim, _, admin):
        await _set(admin, "bank", "bank.v1.Ledger/GetBalance", reason="BK slow on balances")
        await _set(admin, "shadow", "bank.v1.Ledger/GetBalance", reason="BK back")
        assert shim.store is not None
        assert [m.key for m in await shim.store.marks.out_of_step()] == []
    store = str(tmp_path / "shim.db")
    async with _shim(ledgers, store={"url": store}) as (shim, stub, admin):
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="S1", initial_deposit="100"))
        await shim.drain()
        assert shim.store is not None
        await _set(admin, "bank", reason="incident: BK down")
        await stub.Deposit(pb.DepositRequest(account_id="S1", amount="50"))
        await _set(admin, "shadow", reason="BK back")
        await _clean_evidence(store, ago=0)  # clean evidence from after the stretch
        await _set(admin, "bk-primary", reason="promote")
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk", retire_bank=True, reason="the point of no return")
        marks = await shim.store.marks.out_of_step()
    assert await _cash(bank, "S1") == Decimal("150")
    assert await _cash(bk, "S1") == Decimal("100")
    details = refused.value.details() or ""
    assert "1 key is out of step ((writes with no key))" in details, details
    assert [(m.key, m.side) for m in marks] == [("", "bank")]
    assert "a stretch in bank mode" in marks[0].reason, marks[0].reason
    listed = run_shim("resync", "--store", store, "--list")
    assert "(writes with no key)" in listed.stdout, listed.stdout


async def test_bank_is_not_retired_while_a_method_keeps_a_mode_in_which_bank_is_called(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A method with a mode of its own (GetBalance in shadow) when the default mode retires Bank: Bank would
    still be called for it, and answer its clients from a book that gets no write any more. Refused, forced
    or not, naming the method and its mode; once the method is promoted to bk-primary, it is retired with
    the default, and no call reaches Bank."""
    bank, _ = ledgers
    balance = "bank.v1.Ledger/GetBalance"
    async with _shim(ledgers, store={"url": str(tmp_path / "shim.db")}) as (shim, stub, admin):
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="K1", initial_deposit="100"))
        await shim.drain()
        await _set(admin, "shadow", balance, reason="its own mode")
        for force in (False, True):
            with pytest.raises(aio.AioRpcError) as refused:
                await _set(admin, "bk", retire_bank=True, force=force, reason="retire")
            assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            details = refused.value.details() or ""
            assert f"{balance} (shadow) keeps a mode of its own in which Bank still answers" in details, (
                details
            )
        await _set(admin, "bk-primary", balance, force=True, reason="promote it first")
        modes = await _set(admin, "bk", retire_bank=True, force=True, reason="retire")
        assert (modes.default_mode, dict(modes.methods)) == ("bk", {balance: "bk"})
        await stub.Deposit(pb.DepositRequest(account_id="K1", amount="50"))
        assert Decimal((await stub.GetBalance(pb.GetBalanceRequest(account_id="K1"))).cash) == Decimal("150")
    assert await _cash(bank, "K1") == Decimal("100")


async def test_a_shim_started_in_bank_mode_by_its_config_is_a_stretch_in_bank_mode(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """The store holds clean evidence of every method from an hour ago, and no mode set at run time. The
    shim is started in bank mode by its config (an incident): its start is recorded, a deposit reaches
    Bank alone, and promoting straight from there is refused for want of evidence. Started in shadow again,
    that is recorded too, and the gate judges nothing from before: BK's book lacks the deposit. A start in
    the mode last recorded records nothing. Before, none of it was recorded: the gate passed on the old
    evidence, and BK was promoted unforced."""
    bank, bk = ledgers
    store = str(tmp_path / "shim.db")
    await _clean_evidence(store, ago=3600)
    criteria = ("--store", store, "--min-compared", "100")
    assert run_shim("gate", *criteria).returncode == 0
    async with _shim(ledgers, store={"url": store}, mode="bank") as (shim, stub, admin):
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="B1", initial_deposit="100"))
        await shim.drain()
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk-primary", reason="promote")
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "in bank mode BK is sent no write" in (refused.value.details() or "")
    for _ in range(2):  # started in shadow twice: the second start changes nothing
        async with _shim(ledgers, store={"url": store}) as (shim, stub, admin):
            assert shim.modes.default == "shadow"
            history = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
            listed = await shim_command("mode", "history", "--admin", f"127.0.0.1:{shim.admin_port}")
    assert [(c.who, c.scope, c.from_mode, c.to_mode, c.forced) for c in history] == [
        (STARTED_BY, "*", "bank", "shadow", False),
        (STARTED_BY, "*", "", "bank", False),
    ]
    assert listed[0] == 0, listed
    said = [" ".join(line.split()[1:]) for line in listed[1].splitlines()]  # (without the time)
    assert said == [
        f"* bank -> shadow by {STARTED_BY}: the mode the shim started in",
        f"* (none) -> bank by {STARTED_BY}: the mode the shim started in",
    ], listed[1]
    gate = run_shim("gate", *criteria)
    assert gate.returncode == 1, gate.stdout
    assert "gate: a switch into or out of bank or bk mode at " in gate.stdout
    assert await _cash(bank, "B1") == Decimal("100")
    with pytest.raises(aio.AioRpcError) as missing:
        await _cash(bk, "B1")  # opened in bank mode: BK never had it
    assert "no account" in (missing.value.details() or "")


async def test_a_start_without_bk_is_a_stretch_in_bank_mode_for_the_store_it_names(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Clean evidence of every method from an hour ago. The shim is started with Bank alone (BK taken out of
    its config in an incident) on the same store: a deposit reaches Bank alone. That start is recorded as a
    stretch in bank mode, so the gate judges nothing from before it, and a promotion after the restart with
    BK is refused for want of evidence. Before, nothing was recorded: the gate passed on the old evidence
    and BK was promoted unforced, though its book lacked the deposit. A store that does not exist yet holds
    no evidence: none is made for a start without BK."""
    bank, _ = ledgers
    store = str(tmp_path / "shim.db")
    await _clean_evidence(store, ago=3600)
    criteria = ("--store", store, "--min-compared", "100")
    assert run_shim("gate", *criteria).returncode == 0
    async with (
        running_shim(bank.address, store={"url": store}) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
    ):
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="N1", initial_deposit="150"))
    gate = run_shim("gate", *criteria)
    assert gate.returncode == 1, gate.stdout
    assert "gate: a switch into or out of bank or bk mode at " in gate.stdout
    async with _shim(ledgers, store={"url": store}) as (shim, _, admin):
        history = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk-primary", reason="promote")
    assert [(c.who, c.from_mode, c.to_mode, c.forced) for c in history] == [
        (STARTED_BY, "bank", "shadow", False),
        (STARTED_BY, "", "bank", False),
    ]
    details = refused.value.details() or ""
    assert details.startswith("the gate fails, so BK may not become primary: "), details
    assert "not covered: no call in the window" in details, details
    fresh = tmp_path / "fresh.db"
    async with running_shim(bank.address, store={"url": str(fresh)}):
        pass
    assert not fresh.exists()


async def test_retiring_bank_from_bk_primary_is_judged_by_the_gate(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """BK is promoted on clean evidence; after the promotion, comparisons find real mismatches on a method
    (a new bug of BK's). Retiring Bank from bk-primary, the point of no return, runs the gate on the
    evidence since as the promotion did: refused, naming the failure, unless forced (recorded as forced).
    Before, no gate ran there, and Bank was retired on the evidence from before the promotion."""
    store = str(tmp_path / "shim.db")
    await _clean_evidence(store, ago=3600)
    async with _shim(ledgers, store={"url": store}) as (shim, _, admin):
        await _set(admin, "bk-primary", reason="the gate passes")
        found = Records()
        found.add("mismatch", method=f"/{DEPOSIT}", at=time.time(), real=[("cash", "150", "149")], count=5)
        found.records = [replace(r, id=f"after-{r.id}") for r in found.records]
        await found.write_to(store)
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk", retire_bank=True, reason="the point of no return")
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        details = refused.value.details() or ""
        assert details.startswith("the gate fails, so Bank may not be retired: "), details
        assert f"{DEPOSIT} real mismatch rate" in details, details
        assert shim.modes.default == "bk-primary"
        await _set(admin, "bk", retire_bank=True, force=True, reason="retired anyway")
        history = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
    assert [(c.from_mode, c.to_mode, c.forced) for c in history] == [
        ("bk-primary", "bk", True),
        ("shadow", "bk-primary", False),
    ]


async def test_retiring_bank_judges_only_the_evidence_since_the_promotion(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """BK is promoted on clean evidence from shadow mode, and Bank retired at once: nothing was compared
    with BK as primary, so the point of no return has no evidence and is refused. Once clean comparisons
    are made in bk-primary, it is not. Before, the evidence from before the promotion retired Bank."""
    store = str(tmp_path / "shim.db")
    await _clean_evidence(store, ago=600)
    async with _shim(ledgers, store={"url": store}) as (shim, _, admin):
        await _set(admin, "bk-primary", reason="the gate passes")
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk", retire_bank=True, reason="the point of no return")
        details = refused.value.details() or ""
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert details.startswith("the gate fails, so Bank may not be retired: "), details
        assert shim.modes.default == "bk-primary"
        await _clean_since(store)
        await _set(admin, "bk", retire_bank=True, reason="the point of no return")
        history = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
    assert [(c.from_mode, c.to_mode, c.forced) for c in history] == [
        ("bk-primary", "bk", False),
        ("shadow", "bk-primary", False),
    ]


async def test_promoting_the_default_judges_the_methods_with_evidence_the_descriptors_do_not_describe(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Clean evidence of every method of the descriptors, and real mismatches only on a method they do not
    describe (another service behind the same address), which follows the default mode. Promoting the
    default moves it too: refused, naming it, unless forced (recorded as forced). Before, it was never
    judged, and BK became primary for it unforced."""
    store = str(tmp_path / "shim.db")
    undescribed = "pay.v1.Payments/Move"
    await _clean_evidence(store, ago=600)
    evidence = Records()
    evidence.add(
        "mismatch", method=f"/{undescribed}", at=time.time() - 600, real=[("amount", "1", "2")], count=150
    )
    evidence.records = [replace(r, id=f"other-{r.id}") for r in evidence.records]
    await evidence.write_to(store)
    async with _shim(ledgers, store={"url": store}) as (shim, _, admin):
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk-primary", reason="promote everything")
        details = refused.value.details() or ""
        assert details.startswith("the gate fails, so BK may not become primary: "), details
        assert f"{undescribed} real mismatch rate: 100% (150 of 150)" in details, details
        assert shim.modes.default == "shadow"
        await _set(admin, "bk-primary", force=True, reason="the other service's answers are not ours")
        history = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
    assert [(c.to_mode, c.forced) for c in history] == [("bk-primary", True)]


async def test_a_switch_that_leaves_the_answering_side_without_a_method_s_writes_is_refused(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Deposits kept in bank mode (an incident) while the default is promoted: BK would answer balances from
    a book without the deposits. Deposits retired to BK alone while Bank answers the rest: Bank would.
    Both refused, naming the method, its mode and the side, unless forced (recorded as forced). Keeping
    deposits in bank mode while Bank answers everything is allowed (the incident itself)."""
    store = str(tmp_path / "shim.db")
    await _clean_evidence(store, ago=600)
    async with _shim(ledgers, store={"url": store}) as (shim, _, admin):
        await _set(admin, "bank", DEPOSIT, reason="incident: BK slow on deposits")
        with pytest.raises(aio.AioRpcError) as promoted:
            await _set(admin, "bk-primary", reason="promote the rest")
        await _set(admin, "shadow", DEPOSIT, reason="incident over")
        with pytest.raises(aio.AioRpcError) as retired:
            await _set(admin, "bk", DEPOSIT, retire_bank=True, reason="retire deposits first")
        assert shim.modes.table() == {"*": "shadow", f"/{DEPOSIT}": "shadow"}
        await _set(admin, "bank", DEPOSIT, reason="incident again")
        await _set(admin, "bk-primary", force=True, reason="BK answers; deposits reconciled by hand")
        history = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
    for refused, said in (
        (promoted, f"{DEPOSIT} (bank): BK answers, and gets none of its writes"),
        (retired, f"{DEPOSIT} (bk): Bank answers, and gets none of its writes"),
    ):
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        details = refused.value.details() or ""
        assert details.startswith(said + ": that side's clients would read answers from a book"), details
    assert [(c.scope, c.to_mode, c.forced) for c in history][:2] == [
        ("*", "bk-primary", True),
        (DEPOSIT, "bank", False),
    ]


async def test_retiring_a_write_method_alone_while_bank_is_compared_is_refused(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """The default in bk-primary: BK answers, Bank is mirrored and compared. Deposits retired to bk alone
    would reach BK only, and Bank's balances, still compared, would differ from BK's on every account
    deposited to: real mismatches blamed on a BK with no bug, and writes on one side with no mark. Refused,
    naming the method and that Bank is compared, unless forced. Before, it was applied unforced."""
    store = str(tmp_path / "shim.db")
    await _clean_evidence(store, ago=600)
    async with _shim(ledgers, store={"url": store}) as (shim, _, admin):
        await _set(admin, "bk-primary", reason="promote")
        with pytest.raises(aio.AioRpcError) as retired:
            await _set(admin, "bk", DEPOSIT, retire_bank=True, reason="retire deposits first")
        assert shim.modes.table() == {"*": "bk-primary"}
        await _set(admin, "bk", DEPOSIT, retire_bank=True, force=True, reason="Bank's deposits closed")
        assert shim.modes.of(f"/{DEPOSIT}") == "bk"
    assert retired.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = retired.value.details() or ""
    assert details.startswith(f"{DEPOSIT} (bk): Bank is compared, and gets none of its writes: "), details


async def test_a_promotion_judges_the_comparisons_still_on_their_way_to_the_store(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Clean evidence of trades from ten minutes ago; then trades whose fee BK gets wrong (the sample BK's
    planted bug), compared slowly (a comparison plane behind its clients: a rule taking half a second). A
    promotion of trades asked as soon as the last one is handed to the comparison waits for them to be
    stored, and is refused on their real mismatches. Before, the gate judged the store as it was, and BK
    was promoted on the older evidence alone."""
    store = str(tmp_path / "shim.db")
    trades = "bank.v1.Ledger/PostTrade"
    await _clean_trades(store)
    slow = {"path": "bank.v1.Trade.trade_id", "rule": "custom", "callable": "tests.shim._slow_rule:slow_any"}
    rules = {"rules": [*RULES, slow], "rule_locations": [*LOCATIONS, "test"]}
    async with _shim(ledgers, store={"url": store}, **rules) as (shim, stub, admin):
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="T1", initial_deposit="100000"))
        await _mismatched_trades(stub)
        assert shim.pipeline is not None
        await until(
            lambda: shim.pipeline is not None and shim.pipeline.submitted >= 4, "every call handed over"
        )
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk-primary", trades, reason="promote trades")
        assert shim.modes.of(f"/{trades}") == "shadow"
    details = refused.value.details() or ""
    assert f"{trades} real mismatch rate: " in details, details
    assert "(3 of 153)" in details, details


async def test_a_promotion_judges_the_comparisons_of_mirrors_still_waiting_for_bk(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Clean evidence of trades from ten minutes ago; three trades whose fees Bank and the sample BK round
    differently (real mismatches) are answered to the client while BK's answers come a second late. A
    promotion of trades asked as soon as the client has its answers waits for those mirrors, then for
    their comparisons to be stored, and is refused on their mismatches. Before, the gate waited only for
    the comparisons handed over by then: these were not, and BK was promoted on the older evidence."""
    bank, bk = ledgers
    store = str(tmp_path / "shim.db")
    trades = "bank.v1.Ledger/PostTrade"
    await _clean_trades(store)
    async with forwarding(bk.address) as (front, running):
        front.late["/PostTrade"] = 1.0
        async with (
            running_shim(bank.address, running.address, **_settings(store={"url": store})) as (shim, _),
            aio.insecure_channel(shim.address) as channel,
            aio.insecure_channel(f"127.0.0.1:{shim.admin_port}") as admin_channel,
        ):
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            admin = apb_grpc.AdminStub(admin_channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="T1", initial_deposit="100000"))
            await shim.drain()
            await _mismatched_trades(stub)
            assert shim.pipeline is not None
            assert shim.pipeline.submitted == 1  # the trades' mirrors still wait for BK
            with pytest.raises(aio.AioRpcError) as refused:
                await _set(admin, "bk-primary", trades, reason="promote trades")
            assert shim.modes.of(f"/{trades}") == "shadow"
    details = refused.value.details() or ""
    assert f"{trades} real mismatch rate: " in details, details
    assert "(3 of 153)" in details, details


async def test_a_promotion_fails_while_a_live_replica_runs_in_other_modes(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Two replicas on one store, one started in bank mode by its config (drift): its deposits reach Bank
    alone while the other mirrors. A promotion through the other fails the gate, naming the replica and its
    mode, until it runs the same modes. Before, the gate judged the other's evidence alone, and passed."""
    bank, bk = ledgers
    store = str(tmp_path / "shim.db")
    await _clean_evidence(store, ago=600)
    settings = _settings(store={"url": store})
    async with (
        running_shim(bank.address, bk.address, mode="shadow", **settings) as (first, _),
        running_shim(bank.address, bk.address, mode="bank", **settings) as (drifted, _),
        aio.insecure_channel(f"127.0.0.1:{first.admin_port}") as admin_channel,
    ):
        admin = apb_grpc.AdminStub(admin_channel)  # type: ignore[no-untyped-call]
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk-primary", "bank.v1.Ledger/GetBalance", reason="promote reads", pause=2.0)
        assert (first.modes.default, drifted.modes.default) == ("shadow", "bank")
    details = refused.value.details() or ""
    assert "fleet: replicas in other modes than this one's: " in details, details
    assert " in * bank" in details, details
