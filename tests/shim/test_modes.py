"""Modes at run time through the admin API: atomic switches, guarded promotion, audit, persistence."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio
from structlog.testing import capture_logs

import sample_ledger
from comparators import DescriptorRegistry
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger, serve
from shim._proto.shim.v1 import admin_pb2 as apb
from shim._proto.shim.v1 import admin_pb2_grpc as apb_grpc
from shim.admin_settings import ADMIN_LISTEN
from shim.app import Shim
from shim.config import build, load_file, load_rules_file
from shim.errors import StartupError
from shim.evidence.record import replica_name
from shim.modes import DEFAULT
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.backends import forwarding
from tests.helpers import NEEDS_ENVOY, refusing_address, run_shim, scrape_metrics, until
from tests.shim.test_cli import shim_serving
from tests.shim.test_evidence import Records

HERE = Path(sample_ledger.__file__).parent
REGISTRY = DescriptorRegistry.from_files([HERE / "bank.binpb"])
RULES, LOCATIONS = load_rules_file(HERE / "rules.toml")
KEYED = {
    f"bank.v1.Ledger/{name}": MethodSettings(key=("account_id",))
    for name in ("OpenAccount", "Deposit", "PostTrade", "GetBalance", "GetPortfolio")
}
TOKEN = "s3cret-admin-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
ACCOUNTS = [f"F{n}" for n in range(8)]
POSTGRES_DSN = os.environ.get("SHIM_TEST_POSTGRES_DSN", "")


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIM_ADMIN_TOKEN", TOKEN)


def _settings(**more: Any) -> dict[str, Any]:
    return {
        "registry": REGISTRY,
        "methods": KEYED,
        "rules": RULES,
        "rule_locations": LOCATIONS,
        "admin": {"listen": "127.0.0.1:0"},
        **more,
    }


@contextlib.asynccontextmanager
async def _shim(
    ledgers: tuple[RunningLedger, RunningLedger], **more: Any
) -> AsyncIterator[tuple[Shim, Any, Any]]:
    """A shim with its admin API: the shim, a Ledger stub to it, an Admin stub to its admin API."""
    bank, bk = ledgers
    async with (
        running_shim(bank.address, bk.address, **_settings(**more)) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
        aio.insecure_channel(f"127.0.0.1:{shim.admin_port}") as admin_channel,
    ):
        yield shim, pb_grpc.LedgerStub(channel), apb_grpc.AdminStub(admin_channel)  # type: ignore[no-untyped-call]


async def _set(admin: Any, mode: str, *methods: str, **flags: Any) -> apb.Modes:
    request = apb.SetModeRequest(
        mode=mode, methods=methods, reason=flags.pop("reason", "test"), who="ops", **flags
    )
    answer: apb.Modes = await admin.SetMode(request, metadata=AUTH, timeout=30)
    return answer


async def _set_past_slow_routes(admin: Any, mode: str, tries: int = 3) -> apb.Modes:
    """`_set(admin, mode, force=True)`, tried again when it was refused only because Envoy, on a loaded
    machine, took longer than the pause to route the calls through the shim (nothing applied, nothing
    recorded, as the refusal says). A refusal naming a mirrored call still in flight is not tried again."""
    for attempt in range(tries):
        try:
            return await _set(admin, mode, force=True)
        except aio.AioRpcError as exc:
            details = exc.details() or ""
            slow_routes = "waiting for Envoy to route the calls through the shim" in details
            if exc.code() is not grpc.StatusCode.ABORTED or not slow_routes or "mirrored call" in details:
                raise
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


async def _books_equal(bank: RunningLedger, bk: RunningLedger) -> list[str]:
    """The accounts whose balance or positions differ between the two ledgers, asked directly."""
    differ = []
    async with aio.insecure_channel(bank.address) as a, aio.insecure_channel(bk.address) as b:
        stubs = [pb_grpc.LedgerStub(a), pb_grpc.LedgerStub(b)]  # type: ignore[no-untyped-call]
        for account in ACCOUNTS:
            balances = [await s.GetBalance(pb.GetBalanceRequest(account_id=account)) for s in stubs]
            folios = [await s.GetPortfolio(pb.GetPortfolioRequest(account_id=account)) for s in stubs]
            cash = {(Decimal(x.cash), Decimal(x.unsettled_cash)) for x in balances}
            held = [{p.symbol: Decimal(p.quantity) for p in f.positions} for f in folios]
            if len(cash) != 1 or held[0] != held[1]:
                differ.append(account)
    return differ


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_flipping_back_and_forth_under_write_load_keeps_both_ledgers_equal(
    ledgers: tuple[RunningLedger, RunningLedger], dataplane: str
) -> None:
    """Writes keep coming from six clients while the default mode flips shadow -> bk-primary -> shadow
    six times: every write reached both sides, in order per account, whichever answered it, so the two
    books (asked directly) end equal and no key is out of step. Through Envoy, each switch is a route
    change that pauses calls briefly."""
    bank, bk = ledgers
    # a shadow timeout would put a key out of step: this test is about switches, so BK gets time enough on
    # a loaded machine, and each switch may hold calls up to the grace period (the default switch_pause
    # refuses one that would hold them longer: test_a_switch_holds_calls_for_switch_pause_at_most...)
    async with _shim(ledgers, dataplane=dataplane, shadow_timeout=10.0, switch_pause=5.0) as (
        shim, stub, admin,
    ):  # fmt: skip
        for account in ACCOUNTS:
            await stub.OpenAccount(pb.OpenAccountRequest(account_id=account, initial_deposit="100000"))
        written = 0
        progress = asyncio.Condition()
        stop = asyncio.Event()
        answered_by: set[str] = set()

        async def client(seed: int) -> None:
            nonlocal written
            rng = random.Random(seed)
            while not stop.is_set():
                account = rng.choice(ACCOUNTS)
                if rng.random() < 0.5:
                    await stub.Deposit(
                        pb.DepositRequest(account_id=account, amount=f"{rng.randint(1, 99)}.25")
                    )
                else:
                    order = pb.PostTradeRequest(
                        account_id=account,
                        symbol="KO",
                        side=pb.SIDE_BUY,
                        quantity=str(2 * rng.randint(1, 20)),
                        price="61.2",
                    )  # whole fees: BK's fee rounding stays out of it
                    trade = await stub.PostTrade(order)
                    answered_by.add("BK" if trade.trade_id.startswith("trd_") else "Bank")
                written += 1
                async with progress:
                    progress.notify_all()

        clients = [asyncio.get_running_loop().create_task(client(n)) for n in range(6)]
        try:
            for flip in range(6):
                async with progress:  # flip once the clients have written 25 more
                    target = written + 25
                    await asyncio.wait_for(progress.wait_for(lambda t=target: written >= t), 60)
                modes = await _set(admin, "bk-primary" if flip % 2 == 0 else "shadow", force=True)
                assert modes.default_mode == ("bk-primary" if flip % 2 == 0 else "shadow")
        finally:
            stop.set()
            await asyncio.gather(*clients)
        await shim.drain()
        out_of_step = dict(shim.steps.keys) if shim.steps is not None else {}
        history = await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)
        pauses = list(shim.modes.pauses)
    assert len(pauses) == 6  # every switch applied, none given up
    # how long calls pause is measured across processes, where it means something: bench/switch.py (here the
    # clients, Bank, BK and the shim share one event loop)
    assert answered_by == {"Bank", "BK"}
    assert written >= 150
    assert out_of_step == {}
    assert await _books_equal(bank, bk) == []
    assert [(c.from_mode, c.to_mode) for c in reversed(history.changes)] == [
        ("shadow", "bk-primary"), ("bk-primary", "shadow"),
    ] * 3  # fmt: skip


async def test_promotion_is_refused_when_the_gate_fails_and_forced_with_an_audit(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """Without evidence the gate fails: bk-primary is refused, saying why, and nothing changes; forced,
    it applies and is audited as forced; bk needs --retire-bank; a method can be switched alone."""
    bank, bk = ledgers
    async with _shim(ledgers) as (shim, stub, admin):
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk-primary")
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "the gate fails" in (refused.value.details() or "")
        assert (await admin.GetModes(apb.GetModesRequest(), metadata=AUTH)).default_mode == "shadow"
        with pytest.raises(aio.AioRpcError) as unconfirmed:
            await _set(admin, "bk", force=True)
        assert "--retire-bank" in (unconfirmed.value.details() or "")
        balance = "bank.v1.Ledger/GetBalance"
        modes = await _set(admin, "bk-primary", balance, force=True, reason="read path first")
        assert dict(modes.methods) == {balance: "bk-primary"}
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="M1", initial_deposit="10"))
        await shim.drain()  # BK got the mirrored write (a read served by BK alone does not wait for it)
        answered = await stub.GetBalance(pb.GetBalanceRequest(account_id="M1"))
        trade = await stub.PostTrade(
            pb.PostTradeRequest(account_id="M1", symbol="KO", side=pb.SIDE_BUY, quantity="2", price="1")
        )
        (change,) = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
        # (a method with a mode of its own in which Bank is still called is retired first)
        await _set(admin, "bk", balance, force=True, retire_bank=True, reason="its reads first")
        retired = await _set(admin, "bk", force=True, retire_bank=True, reason="point of no return")
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="M2"))
        await shim.drain()
    assert retired.default_mode == "bk"
    assert "M2" in bk.servicer.book.accounts
    assert "M2" not in bank.servicer.book.accounts  # Bank retired: not even mirrored
    assert answered.cash == "10"  # BK's way of writing it: GetBalance alone is answered by BK
    assert trade.trade_id.startswith("T")  # PostTrade still answered by Bank
    assert (change.scope, change.from_mode, change.to_mode, change.forced) == (
        balance,
        "shadow",
        "bk-primary",
        True,
    )
    assert (change.who, change.reason) == ("ops", "read path first")


async def test_retiring_bank_is_refused_while_keys_are_out_of_step(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Retiring Bank is the point of no return: while the store holds keys out of step (BK's book known to
    differ from Bank's on them), `bk --retire-bank` is refused, naming them, from bk-primary as from
    shadow; `--force` retires anyway, audited as forced."""
    store = {"url": str(tmp_path / "shim.db")}
    async with _shim(ledgers, store=store) as (shim, _, admin):
        await _set(admin, "bk-primary", force=True)
        assert shim.steps is not None
        assert shim.store is not None
        shim.steps.mark(("K1", "K2"), "/bank.v1.Ledger/Deposit", "Bank answered OK, BK answered INTERNAL")
        await until(lambda: len(shim.steps.keys) == 2, "the keys marked")  # type: ignore[union-attr]
        await shim.store.flush()
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk", retire_bank=True, reason="point of no return")
        still = (await admin.GetModes(apb.GetModesRequest(), metadata=AUTH)).default_mode
        retired = await _set(admin, "bk", retire_bank=True, force=True, reason="point of no return")
        history = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    details = refused.value.details() or ""
    assert "2 keys are out of step (K1, K2)" in details, details
    assert "shim resync" in details, details
    assert "--force overrides" in details, details
    assert still == "bk-primary"
    assert retired.default_mode == "bk"
    (retiring,) = [c for c in history if c.to_mode == "bk"]
    assert (retiring.from_mode, retiring.forced) == ("bk-primary", True)


async def test_promotion_is_refused_while_the_evidence_is_not_proven(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """150 clean matches and 10 tainted calls (6.25% unproven) are not proven: bk-primary is refused with the
    count of each verdict; once a reload raises [gate] max_unproven_rate, the same evidence promotes, not
    forced. (The method alone: the default mode would move methods with no evidence too.)"""
    store = str(tmp_path / "shim.db")
    balance = "/bank.v1.Ledger/GetBalance"
    evidence = Records()
    evidence.add(method=balance, at=time.time() - 60, count=150)
    evidence.add(
        "tainted",
        method=balance,
        at=time.time() - 60,
        real=[("cash", "10", "0")],
        reason="key 'F1' out of step",
        count=10,
    )
    await evidence.write_to(store)
    async with _shim(ledgers, store={"url": store}) as (shim, _, admin):
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk-primary", balance)
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        details = refused.value.details() or ""
        assert (
            "bank.v1.Ledger/GetBalance unproven: not proven: 6.25% of 160 calls"
            " (tainted 10, skipped 0, shadow-error 0, error 0, dropped 0) (needs ≤ 1%)"
        ) in details
        assert "compared:" not in details, "150 clean comparisons are enough"
        assert not (await admin.GetModes(apb.GetModesRequest(), metadata=AUTH)).methods
        assert (
            shim.reconfigure(replace(shim.config, gate=replace(shim.config.gate, max_unproven_rate=0.1)))
            == []
        ), "reloadable"
        promoted = await _set(admin, "bk-primary", balance)
        (change,) = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
    assert dict(promoted.methods) == {balance.lstrip("/"): "bk-primary"}
    assert (change.to_mode, change.forced) == ("bk-primary", False)


async def test_a_promotion_judges_no_evidence_from_before_the_bk_build_in_service(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """150 clean comparisons of GetBalance were made with an older build of BK: once a new build is declared
    (`shim bk-build`), the promotion finds GetBalance not covered and is refused; the new build's own
    evidence promotes it."""
    store = str(tmp_path / "shim.db")
    balance = "/bank.v1.Ledger/GetBalance"
    old = Records()
    old.add(method=balance, at=time.time() - 60, count=150)
    await old.write_to(store)
    declared = run_shim("bk-build", "--store", store, "bk 7", "--reason", "redeployed")
    assert declared.returncode == 0, declared.stderr
    async with _shim(ledgers, store={"url": store}) as (_, _, admin):
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk-primary", balance)
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "bank.v1.Ledger/GetBalance covered: not covered: no call in the window" in (
            refused.value.details() or ""
        )
        new = Records()
        new.add(method=balance, at=time.time(), count=150)
        new.records = [replace(r, id="new-" + r.id) for r in new.records]
        await new.write_to(store)
        promoted = await _set(admin, "bk-primary", balance)
    assert dict(promoted.methods) == {balance.lstrip("/"): "bk-primary"}


async def test_promoting_the_default_mode_needs_evidence_for_every_method_it_moves(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """The default mode covers every method without a mode of its own: promoting it makes BK primary for
    each of them, so each must be covered. With clean evidence for GetBalance alone the promotion is
    refused, naming the methods with none; once every other method has a mode of its own, the default
    moves GetBalance alone, and is promoted, not forced."""
    store = str(tmp_path / "shim.db")
    balance = "bank.v1.Ledger/GetBalance"
    evidence = Records()
    evidence.add(method="/" + balance, at=time.time() - 60, count=150)
    await evidence.write_to(store)
    methods = sorted(m.lstrip("/") for m in REGISTRY.methods)
    async with _shim(ledgers, store={"url": store}) as (_, _, admin):
        with pytest.raises(aio.AioRpcError) as refused:
            await _set(admin, "bk-primary")
        assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        details = refused.value.details() or ""
        uncovered = [m for m in methods if f"{m} covered: not covered: no call in the window" in details]
        assert uncovered == [m for m in methods if m != balance]
        assert (await admin.GetModes(apb.GetModesRequest(), metadata=AUTH)).default_mode == "shadow"
        for method in uncovered:  # kept as they are, each by a mode of its own
            await _set(admin, "shadow", method)
        promoted = await _set(admin, "bk-primary")
        history = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
    assert promoted.default_mode == "bk-primary"
    assert dict(promoted.methods) == dict.fromkeys(uncovered, "shadow")
    (default,) = [c for c in history if c.scope == "*"]
    assert (default.to_mode, default.forced) == ("bk-primary", False)


async def test_the_admin_api_needs_its_token(ledgers: tuple[RunningLedger, RunningLedger]) -> None:
    """No token, or another one: UNAUTHENTICATED; an admin address without a token set: no start."""
    bank, bk = ledgers
    async with _shim(ledgers) as (_, _, admin):
        said = {}
        for name, metadata in (("none", ()), ("wrong", (("authorization", "Bearer wrong"),))):
            with pytest.raises(aio.AioRpcError) as denied:
                await admin.GetModes(apb.GetModesRequest(), metadata=metadata)
            assert denied.value.code() is grpc.StatusCode.UNAUTHENTICATED
            said[name] = denied.value.details()
    assert said == {
        "none": "the admin API needs its token: authorization: Bearer TOKEN",
        "wrong": "the admin token was wrong: it is not the token the shim was started with",
    }
    os.environ.pop("SHIM_ADMIN_TOKEN")
    with pytest.raises(StartupError, match="SHIM_ADMIN_TOKEN is not set"):
        async with running_shim(bank.address, bk.address, **_settings()):
            pass
    os.environ["SHIM_ADMIN_TOKEN"] = ""
    with pytest.raises(StartupError, match="SHIM_ADMIN_TOKEN is empty"):
        async with running_shim(bank.address, bk.address, **_settings()):
            pass
    os.environ["SHIM_ADMIN_TOKEN"] = " \t "  # blank: anyone could send it
    with pytest.raises(StartupError, match="SHIM_ADMIN_TOKEN is blank"):
        async with running_shim(bank.address, bk.address, **_settings()):
            pass


async def test_a_restart_keeps_the_modes(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """The modes live in the store: a shim started again on it answers from BK as it was told to."""
    bank, bk = ledgers
    store = str(tmp_path / "shim.db")
    async with _shim(ledgers, store={"url": store}) as (_, _, admin):
        await _set(admin, "bk-primary", force=True)
    async with running_shim(bank.address, bk.address, **_settings(store={"url": store})) as (shim, _):
        assert shim.modes.default == "bk-primary"
        async with aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="R1", initial_deposit="10"))
            trade = await stub.PostTrade(
                pb.PostTradeRequest(account_id="R1", symbol="KO", side=pb.SIDE_BUY, quantity="2", price="1")
            )
        await shim.drain()
    assert trade.trade_id.startswith("trd_")
    assert "R1" in bank.servicer.book.accounts  # Bank mirrored
    flags = ("--listen", "127.0.0.1:0", "--bank", bank.address, "--bk", bk.address, "--store", store)
    async with shim_serving(*flags, "--mode", "shadow") as (served, ready):
        served.proc.send_signal(signal.SIGTERM)
        assert await served.finish() == 0
    assert ready["mode"] == "bk-primary", "the ready line says the mode it serves in: the store's"


@pytest.mark.skipif(not POSTGRES_DSN, reason="needs PostgreSQL: set SHIM_TEST_POSTGRES_DSN (set by .ci/run)")
async def test_two_replicas_on_one_postgres_store_converge(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """A switch made through one replica reaches the other within a few seconds. (Each replica may hold
    its calls for the switch up to 5 s: the default 100 ms refused the switch on a loaded machine, which is
    what a switch pause is for, and not what this test is about.)"""
    import psycopg

    bank, bk = ledgers
    schema = f"modes_{os.getpid()}"
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{POSTGRES_DSN}?options=-csearch_path%3D{schema}"
    try:
        settings = _settings(store={"url": url, "refresh": 0.2}, switch_pause=5.0)
        async with (
            running_shim(bank.address, bk.address, **settings) as (first, _),
            running_shim(bank.address, bk.address, **settings) as (second, _),
        ):
            async with aio.insecure_channel(f"127.0.0.1:{first.admin_port}") as channel:
                await _set(apb_grpc.AdminStub(channel), "bk-primary", force=True)  # type: ignore[no-untyped-call]

            deadline = asyncio.get_running_loop().time() + 5
            while second.modes.default != "bk-primary":  # it re-reads the store every 0.2 s
                assert asyncio.get_running_loop().time() < deadline, "not converged within 5 s"
                await asyncio.sleep(0.05)
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize("pause", ["2", "0.5"])
def test_a_pause_without_its_unit_is_a_usage_error(pause: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`--pause 2` was taken as 2 s, where every other duration flag refused it: it is refused as they are,
    before any shim is asked."""
    from shim.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["mode", "set", "shadow", "--reason", "roll back", "--pause", pause, "--admin", "127.0.0.1:1"])
    assert exited.value.code == 2
    assert f"argument --pause: '{pause}' is not a duration such as" in capsys.readouterr().err


async def test_shim_mode_commands(ledgers: tuple[RunningLedger, RunningLedger]) -> None:
    """`shim mode set/show/history` drive the admin API; a refusal is exit 1 with the reason; `show` lists
    the replica's view, agreeing with the store. `--pause` takes a duration: not one, a usage error (exit
    2); past the grace period, a refusal naming it."""
    bank, bk = ledgers
    async with running_shim(bank.address, bk.address, **_settings()) as (shim, _):
        admin = f"127.0.0.1:{shim.admin_port}"

        async def mode(*args: str) -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "shim", "mode", *args, "--admin", admin],
                capture_output=True,
                text=True,
                timeout=60,
            )

        no_history = await mode("history")
        refused = await mode("set", "bk-primary", "--reason", "cut over")
        no_duration = await mode("set", "bk-primary", "--reason", "cut over", "--pause", "soon")
        too_long = await mode("set", "bk-primary", "--reason", "cut over", "--force", "--pause", "6s")
        forced = await mode(
            "set", "bk-primary", "--reason", "cut over", "--force", "--who", "ana", "--pause", "250ms"
        )
        shown = await mode("show")
        history = await mode("history")
        read, write = os.pipe()
        os.close(read)  # a reader that stopped reading (`shim mode show | head -1`)
        try:
            unread = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "shim", "mode", "show", "--admin", admin],
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=60,
            )
        finally:
            os.close(write)
    assert (unread.returncode, unread.stderr) == (141, ""), "as a command stopped by SIGPIPE: no traceback"
    assert (no_history.returncode, no_history.stdout) == (0, "no mode change recorded\n")
    assert refused.returncode == 1
    assert "refused: the gate fails" in refused.stderr
    assert no_duration.returncode == 2
    assert "argument --pause: 'soon' is not a duration" in no_duration.stderr
    assert too_long.returncode == 1
    assert "pause 6s is not from 0 (switch_pause) to the grace period (5s)" in too_long.stderr
    assert forced.returncode == 0, forced.stderr
    default, replicas, view = shown.stdout.splitlines()  # one replica on a SQLite store: this process
    assert (default, replicas) == ("default: bk-primary", "replicas (1; silent: not heard from within 3s):")
    assert view.startswith(f"  {replica_name()}  default: bk-primary  since "), view
    assert "SILENT" not in view
    assert "DIFFERS" not in view
    assert "*" in history.stdout
    assert "shadow -> bk-primary (forced)  by ana: cut over" in history.stdout


async def test_a_switch_refused_for_calls_in_flight_is_a_refusal_on_the_command_line(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A switch the calls in flight do not let through within its pause is refused, nothing changed: "try
    again". `shim mode set` says "refused" and exits 1, as for any refusal, never 2 (which says the admin
    API could not be reached): a script tells the two apart. (BK's deposit is held in front of it until
    the command has answered.)"""
    bank, bk = ledgers
    async with forwarding(bk.address) as (proxy, front):
        gate = proxy.gated["/Deposit"] = asyncio.Event()
        store = {"url": str(tmp_path / "shim.db")}
        async with _shim((bank, front), shadow_timeout=10.0, store=store) as (shim, stub, _):  # type: ignore[arg-type]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="R1", initial_deposit="10"))
            await shim.drain()
            await stub.Deposit(pb.DepositRequest(account_id="R1", amount="1"))  # Bank answers at once
            await until(lambda: proxy.arrived == 1, "the mirrored deposit held in front of BK")
            command = [sys.executable, "-m", "shim", "mode", "set", "bk-primary", "--force", "--reason", "r"]
            admin = ["--admin", f"127.0.0.1:{shim.admin_port}"]
            refused = await asyncio.to_thread(
                subprocess.run, [*command, *admin], capture_output=True, text=True, timeout=60
            )
            gate.set()
            assert shim.modes.default == "shadow"
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.startswith("shim mode: refused: not applied, nothing recorded: calls in flight"), (
        refused.stderr
    )


async def test_a_switch_to_the_mode_in_force_says_nothing_changed(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """`shim mode set shadow` in shadow mode: nothing to change, nothing recorded, and the command says so
    (exit 0: the mode asked for is in force). Before, it printed the modes as after any switch, and a
    rollback that had nothing to roll back looked done. A method's own mode set anew is a change."""
    balance = "bank.v1.Ledger/GetBalance"
    async with _shim(ledgers, store={"url": str(tmp_path / "shim.db")}) as (shim, _, admin):
        command = [sys.executable, "-m", "shim", "mode", "set", "shadow", "--reason", "r"]
        where = ["--admin", f"127.0.0.1:{shim.admin_port}"]

        async def mode_set(*more: str) -> subprocess.CompletedProcess[str]:
            return await asyncio.to_thread(
                subprocess.run, [*command, *more, *where], capture_output=True, text=True, timeout=60
            )

        same, method, again = (
            await mode_set(),
            await mode_set("--method", balance),
            await mode_set("--method", balance),
        )
        history = (await admin.ModeHistory(apb.ModeHistoryRequest(), metadata=AUTH)).changes
    assert (same.returncode, method.returncode, again.returncode) == (0, 0, 0), (same.stderr, again.stderr)
    assert same.stdout.startswith("nothing changed: the default mode is shadow already\n"), same.stdout
    assert not method.stdout.startswith("nothing changed"), method.stdout
    assert again.stdout.startswith(f"nothing changed: {balance} is in shadow mode already\n"), again.stdout
    assert [(c.scope, c.to_mode) for c in history] == [(balance, "shadow")]


def test_shim_mode_names_an_admin_address_it_cannot_use_and_one_where_nothing_answers() -> None:
    """A HOST without a port was dialled on port 443; an address off this host got the token sent in clear
    (the admin API listens on loopback only); with no admin API there, gRPC's own text was all it said."""

    def mode(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "shim", "mode", "show", *args]
        env = {**os.environ, "SHIM_ADMIN_TOKEN": TOKEN}
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)

    with refusing_address() as nowhere:
        no_port, elsewhere, nothing = (
            mode("--admin", "localhost"),
            mode("--admin", "10.0.0.1:9465"),
            mode("--admin", nowhere),
        )
    assert (no_port.returncode, elsewhere.returncode, nothing.returncode) == (2, 2, 2)
    assert "argument --admin: 'localhost' is not HOST:PORT" in no_port.stderr
    assert "'10.0.0.1:9465' is not on this host: the admin API listens on loopback only" in elsewhere.stderr
    assert nothing.stderr.startswith("shim mode: error: no admin API answers at 127.0.0.1:"), nothing.stderr
    assert "is shim serve running there, with $SHIM_ADMIN_TOKEN set" in nothing.stderr
    # the config's port 0: the shim picked a port as it started; before, "no admin API answers at ...:0"
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "shim.toml"
        config.write_text('[admin]\nlisten = "127.0.0.1:0"\n', encoding="utf-8")
        picked = mode("--config", str(config))
    assert picked.returncode == 2
    assert picked.stderr == (
        "shim: error: the admin API's address in the config ([admin] listen) is 127.0.0.1:0: port 0, so the"
        ' shim picked its port as it started, named on its ready line ("admin"); give that with --admin'
        " HOST:PORT\n"
    )


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_clients_keep_their_ids_across_switches(
    ledgers: tuple[RunningLedger, RunningLedger], dataplane: str
) -> None:
    """A trade booked in shadow mode (Bank's id) is cancelled by that id after BK became primary, and
    one booked in bk-primary (BK's id) by its id after switching back: each side gets the id in its
    own id space, both ledgers cancel the right trade, every comparison matches, no key goes out of
    step. On Envoy, the first promotion and the rollback happen in this process: the routes the
    rollback sets send the calls naming ids through the shim, which gives Bank its own."""
    bank, bk = ledgers
    ids = build(load_file(HERE / "shim.toml")).ids  # the sample's trade ids and page tokens
    methods = {**KEYED, "bank.v1.Ledger/CancelTrade": MethodSettings(key=("account_id",))}
    more = {"dataplane": dataplane, "switch_pause": 5.0}  # a loaded machine: Envoy may take a while
    async with _shim(ledgers, ids=ids, methods=methods, **more) as (shim, stub, admin):
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="I1", initial_deposit="1000"))
        order = pb.PostTradeRequest(account_id="I1", symbol="KO", side=pb.SIDE_BUY, quantity="2", price="10")
        by_bank = await stub.PostTrade(order)  # shadow mode: Bank's id
        await shim.drain()  # the pair is learned
        await _set(admin, "bk-primary", force=True)
        cancelled_by_bk = await stub.CancelTrade(
            pb.CancelTradeRequest(account_id="I1", trade_id=by_bank.trade_id)
        )
        by_bk = await stub.PostTrade(order)  # bk-primary: BK's id
        await shim.drain()
        await _set(admin, "shadow")
        cancelled_by_bank = await stub.CancelTrade(
            pb.CancelTradeRequest(account_id="I1", trade_id=by_bk.trade_id)
        )
        await shim.drain()
        assert shim.steps is not None
        out_of_step = dict(shim.steps.keys)
        translated = shim.counters.get("ids_translated_for_primary")
        verdicts = {name: shim.counters.get(f"verdict_{name}") for name in ("match", "mismatch", "skipped")}
    assert by_bank.trade_id.startswith("T")
    assert by_bk.trade_id.startswith("trd_")
    assert verdicts == {"match": 5, "mismatch": 0, "skipped": 0}
    assert cancelled_by_bk.status == cancelled_by_bank.status == pb.TRADE_STATUS_CANCELLED
    assert translated == 2
    assert out_of_step == {}
    for ledger in (bank, bk):
        statuses = [t.status for t in ledger.servicer.book.trades.values()]
        assert statuses == [pb.TRADE_STATUS_CANCELLED] * 2, ledger


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_ids_bk_minted_for_one_method_reach_bank_as_its_own_from_the_others(
    ledgers: tuple[RunningLedger, RunningLedger], dataplane: str
) -> None:
    """PostTrade alone is switched to bk-primary (its trades get BK's ids); CancelTrade stays in shadow.
    A trade cancelled by BK's id while PostTrade is BK's, and another after PostTrade is rolled back,
    reach Bank as Bank's id and BK as its own, on either data plane: both ledgers cancel both trades,
    every comparison matches, no key goes out of step."""
    bank, bk = ledgers
    ids = build(load_file(HERE / "shim.toml")).ids
    methods = {**KEYED, "bank.v1.Ledger/CancelTrade": MethodSettings(key=("account_id",))}
    post = "bank.v1.Ledger/PostTrade"
    more = {"dataplane": dataplane, "switch_pause": 5.0}  # a loaded machine: Envoy may take a while
    async with _shim(ledgers, ids=ids, methods=methods, **more) as (shim, stub, admin):
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="M1", initial_deposit="1000"))
        order = pb.PostTradeRequest(account_id="M1", symbol="KO", side=pb.SIDE_BUY, quantity="2", price="10")
        await _set(admin, "bk-primary", post, force=True)
        first, second = await stub.PostTrade(order), await stub.PostTrade(order)  # BK's ids
        await shim.drain()  # their pairs are learned
        cancelled = [await stub.CancelTrade(pb.CancelTradeRequest(account_id="M1", trade_id=first.trade_id))]
        await _set(admin, "shadow", post)
        cancelled.append(
            await stub.CancelTrade(pb.CancelTradeRequest(account_id="M1", trade_id=second.trade_id))
        )
        await shim.drain()
        assert shim.steps is not None
        out_of_step = dict(shim.steps.keys)
        translated = shim.counters.get("ids_translated_for_primary")
        verdicts = {name: shim.counters.get(f"verdict_{name}") for name in ("match", "mismatch", "skipped")}
    assert [t.trade_id[:4] for t in (first, second)] == ["trd_", "trd_"]  # BK answered them
    assert [c.status for c in cancelled] == [pb.TRADE_STATUS_CANCELLED] * 2
    assert verdicts == {"match": 5, "mismatch": 0, "skipped": 0}
    assert translated == 2
    assert out_of_step == {}
    for ledger in (bank, bk):
        statuses = [t.status for t in ledger.servicer.book.trades.values()]
        assert statuses == [pb.TRADE_STATUS_CANCELLED] * 2, ledger


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_read_naming_ids_switches_on_its_own_while_the_default_is_bk_primary(
    ledgers: tuple[RunningLedger, RunningLedger], dataplane: str
) -> None:
    """With BK primary by default, every method naming ids already comes through the shim (its ids are
    translated for BK); so does ListTrades (its page token is an id) in shadow mode once BK has answered.
    Its own switches to shadow and back to bk-primary route it through the shim as it already is: on
    Envoy the routes written for them are the same as those in force, and each switch applies all the
    same, paused for no longer than it takes."""
    ids = build(load_file(HERE / "shim.toml")).ids  # the sample's trade ids and page tokens
    trades = "bank.v1.Ledger/ListTrades"
    more = {"dataplane": dataplane, "switch_pause": 5.0}
    async with _shim(ledgers, ids=ids, **more) as (shim, stub, admin):
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="R1", initial_deposit="10"))
        await _set(admin, "bk-primary", force=True)
        own = await _set(admin, "shadow", trades)
        back = await _set(admin, "bk-primary", trades, force=True)
        listed = await stub.ListTrades(pb.ListTradesRequest(account_id="R1"), timeout=10)
        pauses = list(shim.modes.pauses)
    assert own.default_mode == back.default_mode == "bk-primary"
    assert {k.lstrip("/"): v for k, v in own.methods.items()} == {trades: "shadow"}, own
    assert {k.lstrip("/"): v for k, v in back.methods.items()} == {trades: "bk-primary"}, back
    assert list(listed.trades) == []
    assert max(pauses) < 2.0, pauses  # no switch waited out a route change Envoy never confirms


async def test_the_admin_api_is_on_loopback_by_default_once_its_token_is_set(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """No [admin] listen: with $SHIM_ADMIN_TOKEN set, the admin API listens on 127.0.0.1:9465; without
    the token, nowhere."""
    bank, bk = ledgers
    # the one fixed port of the suite: a shim of an earlier test may still be letting it go
    try:
        await until(lambda: _bindable(ADMIN_LISTEN), f"{ADMIN_LISTEN} free", 30)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {_holders(ADMIN_LISTEN)}") from None
    async with running_shim(bank.address, bk.address, registry=REGISTRY) as (shim, _):
        assert shim.admin_address == ADMIN_LISTEN == "127.0.0.1:9465"
        async with aio.insecure_channel(shim.admin_address) as channel:
            stub = apb_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
            modes = await stub.GetModes(apb.GetModesRequest(), metadata=AUTH)
    assert modes.default_mode == "shadow"
    os.environ.pop("SHIM_ADMIN_TOKEN")
    with capture_logs() as logged:
        async with running_shim(bank.address, bk.address, registry=REGISTRY) as (shim, _):
            assert shim.admin_address == ""
        async with running_shim(
            bank.address, bk.address, registry=REGISTRY, admin={"token_env": "OPS_TOKEN"}
        ):
            pass
    # a variable the config names on purpose, and not set: said at start (a rollback would be impossible)
    warned = [e for e in logged if e["event"].startswith("no admin API")]
    assert [e["token_env"] for e in warned] == ["OPS_TOKEN"]


def _bindable(address: str) -> bool:
    """Whether a listener could bind `address` now (as gRPC binds: SO_REUSEADDR)."""
    host, _, port = address.rpartition(":")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError:
            return False
    return True


def _holders(address: str) -> str:
    """What holds `address`'s port, as `ss` sees it (for the failure's message)."""
    port = address.rpartition(":")[2]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = subprocess.run(
            ["ss", "-tanpH", f"sport = :{port}"], capture_output=True, text=True, timeout=10, check=False
        )
        return f"held by: {found.stdout.strip() or 'nothing ss sees'}"
    return "ss could not say what holds it"


async def second_shim(*args: str | Path) -> tuple[int | None, list[str]]:
    """`shim serve ARGS` as its own process: its exit status and stderr lines when it stops at start,
    or (None, its first line) when it serves (it is then killed)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shim", "serve", *map(str, args),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    first = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
    if '"event": "ready"' in first:
        process.kill()
        await process.wait()
        return None, [first]
    rest = (await asyncio.wait_for(process.stderr.read(), 60)).decode()
    return await asyncio.wait_for(process.wait(), 60), (first + rest).splitlines()


async def test_a_second_shim_cannot_serve_its_admin_api_where_another_does(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A shim whose [admin] listen address another shim's admin API holds stops at start (exit 2) with
    one line naming the address and [admin] listen: `shim mode` there reaches one shim, never either."""
    bank, bk = ledgers
    async with running_shim(bank.address, bk.address, **_settings()) as (first, _):
        config = tmp_path / "second.toml"
        config.write_text(
            f'listen = "127.0.0.1:0"\n[upstreams.bank]\ntarget = "{bank.address}"\n'
            f'[admin]\nlisten = "{first.admin_address}"\n',
            encoding="utf-8",
        )
        status, lines = await second_shim("--config", config, "--store", tmp_path / "second.db")
        async with aio.insecure_channel(first.admin_address) as channel:  # the first one is untouched
            stub = apb_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
            modes = await stub.GetModes(apb.GetModesRequest(), metadata=AUTH)
    assert status == 2, lines
    [line] = lines
    assert line.startswith(f"shim: error: cannot serve the admin API on {first.admin_address}: "), line
    assert "[admin] listen" in line
    assert modes.default_mode == "shadow"


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_switch_is_recorded_only_once_it_is_applied(tmp_path: Path, dataplane: str) -> None:
    """A switch that cannot be applied in time (a slow BK keeps a mirrored call in flight past the grace
    period) is refused, and neither the store's modes nor the history record it; once it applies, both
    do."""
    bank, slow_bk = await serve("bank"), await serve("bk", delay=1.5)
    try:
        store = str(tmp_path / "shim.db")
        more = {"store": {"url": store}, "grace_period": 0.3, "dataplane": dataplane}
        async with _shim((bank, slow_bk), shadow_timeout=5.0, **more) as (shim, stub, admin):
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="S1", initial_deposit="10"))
            slow = asyncio.ensure_future(stub.Deposit(pb.DepositRequest(account_id="S1", amount="1")))
            mirrors = shim.dispatchers.values()
            await until(lambda: any(d.in_flight for d in mirrors), "a mirrored call in flight")
            with pytest.raises(aio.AioRpcError) as refused:
                await _set(admin, "bk-primary", force=True)
            assert refused.value.code() is grpc.StatusCode.ABORTED
            assert shim.modes.default == "shadow"
            assert shim.store is not None
            assert await shim.store.modes.current() == {}
            assert await shim.store.modes.history() == []
            await slow
            await shim.drain()
            await _set(admin, "bk-primary", force=True)  # nothing in flight now: it applies
            recorded = (await shim.store.modes.current(), len(await shim.store.modes.history()))
            assert recorded == ({"*": "bk-primary"}, 1)
    finally:
        await bank.stop(None)
        await slow_bk.stop(None)


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_switch_waits_for_the_mirrored_calls_under_way_before_it_holds_any(
    tmp_path: Path, dataplane: str
) -> None:
    """The comparison side behind the clients: five deposits on one account that Bank answered at once,
    whose mirrored calls wait each for the one before at a BK answering in 0.3 s. A switch asked for then,
    with the default pause (0.1 s), waits for them before it holds any call, then holds and applies; BK,
    primary from then on, has all five. Before, it held the calls at once, the deposits did not finish
    within the pause, and it was refused ("try again"), as long as the shim stayed behind."""
    bank, slow_bk = await serve("bank"), await serve("bk", delay=0.3)
    try:
        more = {"store": {"url": str(tmp_path / "s.db")}, "dataplane": dataplane}
        async with _shim((bank, slow_bk), shadow_timeout=5.0, **more) as (shim, stub, admin):
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="Q1", initial_deposit="10"))
            await shim.drain()
            for _ in range(5):
                await stub.Deposit(pb.DepositRequest(account_id="Q1", amount="1"))
            assert (await _set_past_slow_routes(admin, "bk-primary")).default_mode == "bk-primary"
            assert shim.modes.switches["applied"] == 1
            balance = await stub.GetBalance(pb.GetBalanceRequest(account_id="Q1"), timeout=10)  # BK's
            assert Decimal(balance.cash) == 15
    finally:
        await bank.stop(None)
        await slow_bk.stop(None)


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_switch_holds_calls_for_switch_pause_at_most_then_is_refused(
    tmp_path: Path, dataplane: str
) -> None:
    """A mirrored call in flight longer than `switch_pause` as the switch holds the calls (BK answers in 1 s;
    the default pause is 0.1 s, the grace period 5 s): a write sent while the switch catches up with the one
    before it, which it does not wait for there. The switch is refused while that call is still in flight,
    saying so, nothing recorded, and a call sent during the attempt is answered before it, so no call waited
    for BK's second. With switch_pause raised to the grace period, or this one switch's pause (`shim mode set
    --pause`), the same switch waits for the call and applies; a pause past the grace period is refused as
    invalid."""
    bank, slow_bk = await serve("bank"), await serve("bk", delay=1.0)
    try:
        cases = (("P1", None, 0.0, False), ("P2", 5.0, 0.0, True), ("P3", None, 3.0, True))
        for account, pause, own, applies in cases:
            more: dict[str, Any] = {
                "store": {"url": str(tmp_path / f"{account}.db")}, "dataplane": dataplane,
                "metrics_listen": "127.0.0.1:0",
            }  # fmt: skip
            if pause is not None:
                more["switch_pause"] = pause
            async with _shim((bank, slow_bk), shadow_timeout=5.0, **more) as (shim, stub, admin):
                await stub.OpenAccount(pb.OpenAccountRequest(account_id=account, initial_deposit="10"))
                await shim.drain()
                slow = asyncio.ensure_future(stub.Deposit(pb.DepositRequest(account_id=account, amount="1")))
                mirrors = shim.dispatchers.values()
                await until(lambda m=mirrors: any(d.in_flight for d in m), "a mirrored call in flight")
                if own:
                    with pytest.raises(aio.AioRpcError) as invalid:
                        await _set(admin, "bk-primary", force=True, pause=5.5)
                    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                    assert "to the grace period (5s)" in (invalid.value.details() or "")
                switching = asyncio.ensure_future(_set(admin, "bk-primary", force=True, pause=own))
                await until(lambda: shim.modes.catching_up, "the switch catching up with the deposit")
                later = asyncio.ensure_future(stub.Deposit(pb.DepositRequest(account_id=account, amount="1")))
                await until(lambda: shim.modes.paused, "the switch under way")
                during = await stub.GetBalance(pb.GetBalanceRequest(account_id=account), timeout=30)
                in_flight_after = any(d.in_flight for d in mirrors)
                if applies:
                    assert (await switching).default_mode == "bk-primary"
                    assert await shim.store.modes.current() == {"*": "bk-primary"}  # type: ignore[union-attr]
                    continue
                with pytest.raises(aio.AioRpcError) as refused:
                    await switching
                assert in_flight_after, "a call sent during the switch waited for BK's answer"
                assert any(d.in_flight for d in mirrors), "the switch waited for BK's answer"
                assert refused.value.code() is grpc.StatusCode.ABORTED
                details = refused.value.details() or ""
                assert "the switch's pause (0.1s)" in details, details
                # the read sent during the attempt may be said too: on Envoy its copy waits for its turn
                # behind the slow write on its key
                assert re.search(
                    r"here, on [^ ]+ \([^)]*\b1 mirrored call waiting for the shadow's answer[,)]", details
                ), details
                assert shim.modes.default == "shadow"
                assert await shim.store.modes.current() == {}  # type: ignore[union-attr]
                assert len(shim.modes.pauses) == 1  # the refused switch's pause is measured too
                assert shim.exporter is not None
                metrics = await asyncio.to_thread(scrape_metrics, shim.exporter.port)
                assert metrics["shim_switches_total", (("outcome", "refused"),)] == 1
                assert metrics["shim_switches_total", (("outcome", "applied"),)] == 0
                assert during.account_id == account
                await slow
                await later
    finally:
        await bank.stop(None)
        await slow_bk.stop(None)


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_batch_under_way_neither_holds_a_switch_nor_moves(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path, dataplane: str
) -> None:
    """BookTrades (a client stream, keyed by account) is under way, on either data plane, when the default
    mode switches to bk-primary: the switch applies within the default switch_pause, a new call goes to BK,
    the batch finishes on Bank (Bank's trade ids), and its account goes out of step saying why: the writes on
    it through the new primary while the batch came may have reached the two sides in another order."""
    methods = {**KEYED, "bank.v1.Ledger/BookTrades": MethodSettings(key=("account_id",))}
    more = {"store": {"url": str(tmp_path / "shim.db")}, "dataplane": dataplane, "methods": methods}
    async with _shim(ledgers, shadow_timeout=5.0, **more) as (shim, stub, admin):
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="B1", initial_deposit="100000"))
        await shim.drain()

        def trade(quantity: str) -> pb.PostTradeRequest:
            return pb.PostTradeRequest(
                account_id="B1", symbol="KO", side=pb.SIDE_BUY, quantity=quantity, price="61.2"
            )

        batch = stub.BookTrades()
        await batch.write(trade("2"))
        mirrors = shim.dispatchers.values()
        await until(lambda: any(d.in_flight for d in mirrors), "the batch's copy under way")
        assert (await _set(admin, "bk-primary", force=True)).default_mode == "bk-primary"
        after = await stub.PostTrade(trade("4"))
        await batch.write(trade("6"))
        await batch.done_writing()
        summary = await batch
        await shim.drain()
        marks = dict(shim.steps.keys) if shim.steps is not None else {}
    assert after.trade_id.startswith("trd_")  # BK's id: BK answers new calls
    assert summary.booked == 2
    assert not any(t.startswith("trd_") for t in summary.trade_ids)  # Bank's ids: Bank answered it
    assert list(marks) == ["B1"]
    assert "a batch (client stream) under way across a switch of modes" in marks["B1"].reason


async def test_a_shim_does_not_take_its_own_switches_for_another_replicas(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """After each switch through this shim, re-reading the store finds nothing to apply: the shim's own
    change is not applied again, nor logged as another replica's."""
    async with _shim(ledgers, store={"url": str(tmp_path / "shim.db")}) as (shim, _, admin):
        for mode, methods in (
            ("bk-primary", ()),
            ("shadow", ("bank.v1.Ledger/GetPortfolio",)),
            ("shadow", ()),
            ("bank", ("bank.v1.Ledger/GetPortfolio",)),
            ("shadow", ("bank.v1.Ledger/GetPortfolio",)),
        ):
            await _set(admin, mode, *methods, force=True)
            assert await shim.follow_modes() == {}, (mode, methods)


async def test_a_cancelled_switch_leaves_nothing_pending_and_the_next_one_applies(tmp_path: Path) -> None:
    """The admin call of a switch is cancelled (Ctrl-C of `shim mode set`, or its deadline) while the switch
    waits for a slow BK: the held calls go on within the switch's pause, and the switch is given up at once
    in the store, so the next switch applies as soon as nothing is in flight (not "another switch is under
    way" until the grace period ends)."""
    bank, slow_bk = await serve("bank"), await serve("bk", delay=1.0)
    try:
        more = {"store": {"url": str(tmp_path / "shim.db")}, "grace_period": 30.0}
        async with _shim((bank, slow_bk), shadow_timeout=5.0, **more) as (shim, stub, admin):
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="C1", initial_deposit="10"))
            await shim.drain()
            slow = asyncio.ensure_future(stub.Deposit(pb.DepositRequest(account_id="C1", amount="1")))
            await until(
                lambda: any(d.in_flight for d in shim.dispatchers.values()), "a mirrored call in flight"
            )
            request = apb.SetModeRequest(
                mode="bk-primary", reason="cancelled", who="ops", force=True, pause=0.8
            )
            call = admin.SetMode(request, metadata=AUTH, timeout=30)
            # a write sent while the switch catches up with the first: it holds the calls for this one
            await until(lambda: shim.modes.catching_up, "the switch catching up with the deposit")
            later = asyncio.ensure_future(stub.Deposit(pb.DepositRequest(account_id="C1", amount="1")))
            await until(lambda: shim.modes.paused, "the switch under way")
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await until(lambda: not shim.modes.paused, "the held calls going on", within=0.8 + 2.0)
            await slow
            await later
            await shim.drain()
            modes = await _set(admin, "bk-primary", force=True)
            assert modes.default_mode == "bk-primary"
    finally:
        await bank.stop(None)
        await slow_bk.stop(None)


@NEEDS_ENVOY
async def test_a_switch_while_envoy_does_not_answer_holds_calls_for_a_bounded_time(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """Envoy stops answering (frozen) as a switch begins: its routes are never confirmed, neither the shim's
    nor the old ones restored. The switch is refused saying so (no call in flight is blamed), within its
    pause and a bounded wait for the old routes, and the calls it held go on; once Envoy is back, calls
    flow and the next switch applies."""
    import signal

    more = {"store": {"url": str(tmp_path / "shim.db")}, "dataplane": "envoy", "switch_pause": 0.3}
    async with _shim(ledgers, **more) as (shim, stub, admin):
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="E1", initial_deposit="10"))
        plane = shim.front
        assert plane is not None
        envoy = plane.envoy  # type: ignore[attr-defined]
        assert envoy is not None
        assert envoy.pid
        os.kill(envoy.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(aio.AioRpcError) as refused:
                await _set(admin, "bk-primary", force=True)
            held = time.monotonic() - started
            paused = shim.modes.paused
        finally:
            os.kill(envoy.pid, signal.SIGCONT)
        assert refused.value.code() is grpc.StatusCode.ABORTED
        details = refused.value.details() or ""
        assert details.startswith(
            "not applied, nothing recorded: Envoy did not apply the shim's routes within the switch's pause"
            " (0.3s) here"
        ), details
        assert "calls in flight" not in details, details
        assert not paused
        assert held < 0.3 + 10.0, held
        assert shim.modes.default == "shadow"
        balance = await stub.GetBalance(pb.GetBalanceRequest(account_id="E1"), timeout=10)
        assert balance.account_id == "E1"
        assert (await _set(admin, "bk-primary", force=True)).default_mode == "bk-primary"


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_listing_naming_ids_switched_on_its_own_to_shadow_then_bk_primary_is_applied(
    ledgers: tuple[RunningLedger, RunningLedger], dataplane: str
) -> None:
    """The listing `shim reconcile` reads, given a mode of its own (`shadow`), then moved to `bk-primary`
    on its own, as the cutover has it: its page tokens are ids, so in `bk-primary` it goes through the
    shim, and the switch applies."""
    listing = "bank.v1.Ledger/ListTrades"
    ids = build(load_file(HERE / "shim.toml")).ids
    more = {"ids": ids, "dataplane": dataplane, "switch_pause": 5.0}
    async with _shim(ledgers, **more) as (shim, stub, admin):
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="L1", initial_deposit="100"))
        await _set(admin, "shadow", listing)
        await stub.ListTrades(pb.ListTradesRequest(account_id="L1"))
        await _set(admin, "bk-primary", listing, force=True)
        listed = await stub.ListTrades(pb.ListTradesRequest(account_id="L1"))
        table = shim.modes.table()
    assert table["/" + listing] == "bk-primary"
    assert table[DEFAULT] == "shadow"
    assert list(listed.trades) == []
