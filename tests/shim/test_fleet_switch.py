"""Fleet-wide switches: `shim serve` processes sharing one PostgreSQL store switch as one, and each
publishes its view, which `shim mode show` lists."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger, serve
from shim._proto.shim.v1 import admin_pb2 as apb
from shim._proto.shim.v1 import admin_pb2_grpc as apb_grpc
from tests.backends import forwarding
from tests.helpers import ROOT, postgres_schema_url, until
from tests.processes import ShimProcess, shim_process
from tests.shim.test_evidence_store import _postgres_sql
from tests.shim.test_modes import ACCOUNTS, AUTH, NEEDS_ENVOY, TOKEN, _books_equal

LEASE = 1.0  # store.lease of the shims here (seconds)
PACE = 20.0  # calls a second of each writer at most, in the test of switches under load


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIM_ADMIN_TOKEN", TOKEN)


def _config(tmp_path: Path, grace: str = "5s", pause: str = "") -> Path:
    """The sample's config, its files named absolutely, an admin API on a free port, a short lease, and
    a comparison plane (on Envoy) at the suite's priority: niced below the tests beside it, it falls
    seconds behind its clients and a switch waiting for its copies is refused for its pause."""
    sample = ROOT / "sample_ledger"
    text = (sample / "shim.toml").read_text(encoding="utf-8")
    text = text.replace('["bank.binpb"]', f'["{sample / "bank.binpb"}"]')
    text = text.replace('["rules.toml"]', f'["{sample / "rules.toml"}"]')
    text = text.replace("[store]\n", f'[store]\nrefresh = "200ms"\nlease = "{LEASE:g}s"\n', 1)
    config = tmp_path / "shim.toml"
    config.write_text(
        f'grace_period = "{grace}"\n'
        + (f'switch_pause = "{pause}"\n' if pause else "")
        + text
        + '\n[admin]\nlisten = "127.0.0.1:0"\n'
        + "\n[envoy]\ncomparison_nice = 0\n",
        encoding="utf-8",
    )
    return config


@contextlib.asynccontextmanager
async def _fleet(
    ledgers: tuple[RunningLedger, RunningLedger],
    tmp_path: Path,
    replicas: int,
    grace: str = "5s",
    dataplane: str = "python",
    pause: str = "",
) -> AsyncIterator[tuple[str, list[ShimProcess]]]:
    """`replicas` shim processes on one new PostgreSQL schema: its url, the shims."""
    bank, bk = ledgers
    config = _config(tmp_path, grace, pause)
    with postgres_schema_url() as url:
        args = [
            "--config", config, "--listen", "127.0.0.1:0", "--bank", bank.address, "--bk", bk.address,
            "--store", url, "--dataplane", dataplane, "--diff-log", "/dev/null",
        ]  # fmt: skip
        async with contextlib.AsyncExitStack() as stack:
            shims = [await stack.enter_async_context(shim_process(*args)) for _ in range(replicas)]
            yield url, shims


async def _set_mode(shim: ShimProcess, mode: str, pause: float = 0.0) -> apb.Modes:
    async with aio.insecure_channel(shim.ready["admin"]) as channel:
        stub = apb_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        request = apb.SetModeRequest(mode=mode, reason="test", who="ops", force=True, pause=pause)
        answer: apb.Modes = await stub.SetMode(request, metadata=AUTH, timeout=30)
        return answer


async def _set_mode_retrying(shim: ShimProcess, mode: str, tries: int = 3) -> apb.Modes:
    """`_set_mode` as an operator does it: a switch refused because the calls in flight did not finish
    within its pause, or Envoy did not apply the routes within it (nothing applied, nothing recorded), is
    tried again, as the refusal says to. On a
    loaded machine a replica's comparison plane can be seconds behind its clients; what a test of one
    step for all replicas needs is the step, not the pause."""
    for attempt in range(tries):
        try:
            return await _set_mode(shim, mode)
        except grpc.aio.AioRpcError as exc:
            refused = exc.code() == grpc.StatusCode.ABORTED and (exc.details() or "").startswith(
                (
                    "not applied, nothing recorded: calls in flight did not finish",
                    "not applied, nothing recorded: Envoy did not apply the shim's routes",
                )
            )
            if not refused or attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


async def _views(shim: ShimProcess) -> dict[str, apb.ReplicaModes]:
    """Each replica's view, as `shim`'s admin API lists them."""
    async with aio.insecure_channel(shim.ready["admin"]) as channel:
        stub = apb_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        modes = await stub.GetModes(apb.GetModesRequest(), metadata=AUTH, timeout=30)
    return {view.replica: view for view in modes.replicas}


async def _show(shim: ShimProcess) -> list[str]:
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "shim", "mode", "show", "--admin", shim.ready["admin"]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


async def _until_judged(sql: Callable[[str], Any], shims: list[ShimProcess]) -> None:
    """Wait until no intent is left in the store (every mirrored write judged), or fail saying which are
    left and what each replica logged but its comparisons."""
    try:
        await until(lambda: not sql("SELECT id FROM intents"), "every mirrored write judged", within=30)
    except AssertionError as exc:
        left = sql("SELECT at, replica, method, keys FROM intents ORDER BY at")
        logged = {
            shim.replica: [line for line in shim.stderr if '"event": "comparison"' not in line][-40:]
            for shim in shims
        }
        raise AssertionError(
            f"{exc}; intents left ({time.time():.3f} now): {left}; logged: {logged}"
        ) from None


@dataclass(frozen=True)
class Answered:
    sent: float
    answered: float
    side: str  # "Bank" or "BK", by the trade id's form


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_switch_through_one_replica_is_one_step_for_all_three(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path, dataplane: str
) -> None:
    """Three replicas, two writers each on shared accounts, shadow -> bk-primary -> shadow through one
    replica mid-run: no trade sent after a switch committed was answered by the side it left, none
    answered before the switch was proposed by the side it went to; every replica's view shows the
    final mode and agrees with the store; both ledgers, read directly, are equal; no key out of step."""
    bank, bk = ledgers
    # what is tested is that the three switch as one: they get the grace period to hold on a loaded machine
    # (the default switch_pause refuses a switch that would hold calls longer; test_modes.py tests that)
    async with _fleet(ledgers, tmp_path, 3, dataplane=dataplane, pause="5s") as (url, shims):
        async with aio.insecure_channel(shims[0].ready["listen"]) as channel:
            first = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            for account in ACCOUNTS:
                await first.OpenAccount(pb.OpenAccountRequest(account_id=account, initial_deposit="100000"))
        sql = _postgres_sql(url)
        # the openings reached BK before other replicas mirror writes on those accounts (replicas keep
        # the order of the writes on a key each for its own calls only). BK's book says so: on Envoy a
        # write's intent is written only once its copy reaches the comparison plane, after the client
        # has the answer, so no intent left in the store does not mean the copies were sent
        await until(
            lambda: set(ACCOUNTS) <= set(bk.servicer.book.accounts), "the openings mirrored", within=30
        )
        await until(lambda: not sql("SELECT id FROM intents"), "the openings judged", within=30)
        trades: list[Answered] = []
        stop = asyncio.Event()

        async def writer(shim: ShimProcess, seed: int) -> None:
            """At most PACE calls a second: the switch is tested at a rate each replica's comparison plane
            keeps up with (beyond it, copies are lost and their keys marked, as tests/dataplane tests)."""
            rng = random.Random(seed)
            loop = asyncio.get_running_loop()
            async with aio.insecure_channel(shim.ready["listen"]) as channel:
                stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                due = loop.time()
                while not stop.is_set():
                    due += 1 / PACE
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), max(0.0, due - loop.time()))
                    account = rng.choice(ACCOUNTS)
                    if rng.random() < 0.4:
                        await stub.Deposit(
                            pb.DepositRequest(account_id=account, amount=f"{rng.randint(1, 99)}.25")
                        )
                        continue
                    order = pb.PostTradeRequest(
                        account_id=account, symbol="KO", side=pb.SIDE_BUY,
                        quantity=str(2 * rng.randint(1, 20)), price="61.2",
                    )  # fmt: skip
                    sent = time.time()
                    trade = await stub.PostTrade(order, timeout=30)
                    side = "BK" if trade.trade_id.startswith("trd_") else "Bank"
                    trades.append(Answered(sent, time.time(), side))

        writers = [
            asyncio.get_running_loop().create_task(writer(shim, n * 10 + k))
            for n, shim in enumerate(shims)
            for k in range(2)
        ]
        try:
            for mode in ("bk-primary", "shadow"):
                count = len(trades)
                await until(lambda c=count: len(trades) >= c + 30, "30 more trades")
                assert (await _set_mode_retrying(shims[0], mode)).default_mode == mode
            count = len(trades)
            await until(lambda c=count: len(trades) >= c + 30, "30 more trades")
        finally:
            stop.set()
            await asyncio.gather(*writers)
        switches = sql("SELECT at, decided, modes, state FROM shim_mode_switches ORDER BY at")
        await _until_judged(sql, shims)  # the last trades' copies reached the shadow
        out_of_step = sql("SELECT key, method, reason FROM out_of_step")
        views = await _views(shims[1])
        shown = await _show(shims[2])
    assert {row[3] for row in switches} <= {"committed", "abandoned"}  # a refused try is abandoned
    switches = [row for row in switches if row[3] == "committed"]
    assert [(row[2], row[3]) for row in switches] == [
        ('{"*": "bk-primary"}', "committed"), ('{"*": "shadow"}', "committed"),
    ]  # fmt: skip
    (to_bk_at, to_bk), (back_at, back) = [(float(r[0]), float(r[1])) for r in switches]
    sides = {"Bank": [(to_bk_at, back)], "BK": [(to_bk, back_at)]}  # when each side answered at most
    late = [t for t in trades if t.side == "Bank" and to_bk < t.sent and t.answered < back_at]
    early = [t for t in trades if t.side == "BK" and (t.answered < to_bk_at or t.sent > back)]
    assert (late, early) == ([], []), sides
    assert {t.side for t in trades} == {"Bank", "BK"}
    assert sorted(views) == sorted(shim.replica for shim in shims)
    assert {(v.default_mode, v.differs, v.silent) for v in views.values()} == {("shadow", False, False)}
    assert shown[0] == "default: shadow"
    assert shown[1] == f"replicas (3; silent: not heard from within {LEASE:g}s):"
    assert all(" default: shadow  since " in line and "SILENT" not in line for line in shown[2:]), shown
    assert out_of_step == []
    assert await _books_equal(bank, bk) == []


async def test_a_silent_replica_is_not_waited_for_beyond_its_lease(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """One of three replicas is SIGSTOPped: a switch through another commits once the stopped one's lease
    has run out, the two live ones apply it, and `shim mode show` flags the stopped one as silent and
    differing; resumed, it follows the store and answers from BK."""
    async with _fleet(ledgers, tmp_path, 3, pause="5s") as (_, shims):  # held past the silent one's lease
        live, silent = shims[:2], shims[2]
        os.kill(silent.proc.pid, signal.SIGSTOP)
        try:
            started = time.perf_counter()
            await _set_mode(live[0], "bk-primary")
            took = time.perf_counter() - started
            # each live replica applies the switch as the decision reaches it (holding its calls until
            # then), and publishes its view after: wait for the views, not for a fixed time
            deadline = time.monotonic() + 10
            while True:
                views = await _views(live[1])
                if all(views[s.replica].default_mode == "bk-primary" for s in live):
                    break
                assert time.monotonic() < deadline, f"the live replicas' views: {views}"
                await asyncio.sleep(0.05)
            shown = await _show(live[1])
        finally:
            os.kill(silent.proc.pid, signal.SIGCONT)

        async def followed() -> bool:
            view = (await _views(live[0]))[silent.replica]
            return view.default_mode == "bk-primary" and not view.silent

        deadline = time.monotonic() + 20
        while not await followed():
            assert time.monotonic() < deadline, "the resumed replica did not follow the store"
            await asyncio.sleep(0.1)
        async with aio.insecure_channel(silent.ready["listen"]) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="Z1", initial_deposit="100"))
            order = pb.PostTradeRequest(
                account_id="Z1", symbol="KO", side=pb.SIDE_BUY, quantity="2", price="1"
            )
            trade = await stub.PostTrade(order, timeout=30)
    assert took < 5.0, "within the grace period"
    stopped = views[silent.replica]
    assert (stopped.default_mode, stopped.silent, stopped.differs) == ("shadow", True, True)
    assert {(views[s.replica].default_mode, views[s.replica].silent) for s in live} == {("bk-primary", False)}
    [line] = [line for line in shown if silent.replica in line]
    assert line.endswith("SILENT  DIFFERS from the store"), line
    assert trade.trade_id.startswith("trd_")


@pytest.mark.parametrize("dataplane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_switch_one_replica_cannot_hold_for_is_given_up_everywhere(
    tmp_path: Path, dataplane: str
) -> None:
    """BK answers in 1.5 s, switch_pause is its default (0.1 s) and the grace period 0.3 s: a mirrored call
    in flight on the second replica keeps it from holding, so the switch through the first is refused, both
    keep their mode, and the store records nothing (the switch itself is kept as abandoned). The second
    replica says what it waited for."""
    bank, slow_bk = await serve("bank"), await serve("bk", delay=1.5)
    try:
        async with _fleet((bank, slow_bk), tmp_path, 2, grace="300ms", dataplane=dataplane) as (
            url,
            (first, second),
        ):
            async with aio.insecure_channel(second.ready["listen"]) as channel:
                stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                await stub.OpenAccount(pb.OpenAccountRequest(account_id="S1", initial_deposit="10"))
                await stub.Deposit(pb.DepositRequest(account_id="S1", amount="1"))  # Bank answers at once
                with pytest.raises(aio.AioRpcError) as refused:  # BK's copy is still on its way
                    await _set_mode(first, "bk-primary")
            views = await _views(first)
            sql = _postgres_sql(url)
            recorded = sql("SELECT scope FROM modes"), sql("SELECT scope FROM mode_changes")
            states = sql("SELECT state FROM shim_mode_switches")
            gave_up = await second.until_event("fleet switch: calls in flight did not finish")
    finally:
        await bank.stop(None)
        await slow_bk.stop(None)
    assert refused.value.code() is grpc.StatusCode.ABORTED
    # the proposer names the replica it waited for; had that one answered first, it says so itself
    assert re.search(rf"within the switch's pause \(0.1s\).*{second.replica}", refused.value.details() or "")
    assert {v.default_mode for v in views.values()} == {"shadow"}
    assert recorded == ([], [])
    assert states == [("abandoned",)]
    assert "1 mirrored call waiting for the shadow's answer" in gave_up["error"], gave_up


async def test_a_switch_s_own_pause_is_the_one_every_replica_holds_for(tmp_path: Path) -> None:
    """BK answers in 1 s; a mirrored call is in flight on the second replica, whose switch_pause (0.1 s, the
    default) could not hold for it: a switch through the first with a pause of its own (3 s, `shim mode set
    --pause`) is held by the second that long too, and applies on both."""
    bank, slow_bk = await serve("bank"), await serve("bk", delay=1.0)
    try:
        async with _fleet((bank, slow_bk), tmp_path, 2) as (_, (first, second)):
            async with aio.insecure_channel(second.ready["listen"]) as channel:
                stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                await stub.OpenAccount(pb.OpenAccountRequest(account_id="S1", initial_deposit="10"))
                await until(lambda: "S1" in slow_bk.servicer.book.accounts, "the opening mirrored")  # type: ignore[union-attr]
                await stub.Deposit(pb.DepositRequest(account_id="S1", amount="1"))  # BK's copy takes a second
                answer = await _set_mode(first, "bk-primary", pause=3.0)
            # the second applies the switch once it hears the decision, just after the first answered, and
            # then publishes its view
            views: dict[str, apb.ReplicaModes] = {}
            deadline = time.monotonic() + 10
            while {v.default_mode for v in views.values()} != {"bk-primary"} and time.monotonic() < deadline:
                views = await _views(first)
                await asyncio.sleep(0.02)
    finally:
        await bank.stop(None)
        await slow_bk.stop(None)
    assert answer.default_mode == "bk-primary"
    assert {v.default_mode for v in views.values()} == {"bk-primary"}, views
    assert len(views) == 2


async def _side(address: str) -> str:
    """Which side answers a read, through `address`, of an account only Bank has (BK: not registered)."""
    async with aio.insecure_channel(address) as channel:
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        try:
            await stub.GetAccount(pb.GetAccountRequest(account_id="ONLYBANK"), timeout=30)
        except aio.AioRpcError as exc:
            return "BK" if "no account is registered as 'ONLYBANK'" in (exc.details() or "") else str(exc)
        return "Bank"


async def test_a_replica_starting_during_a_switch_takes_part_in_it_before_it_serves(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A switch shadow -> bk-primary through a first replica is held there by a mirrored trade BK has not
    answered (sent while the switch caught up with a deposit before it, which it does not hold the calls
    for); a second replica starts meanwhile, after the proposal. It takes part in the switch before it
    serves: the first call it answers after the commit is answered from BK, as on the first replica, not
    from Bank until its first look at the store (`store.refresh`, 5 s here)."""
    bank, bk = ledgers
    async with aio.insecure_channel(bank.address) as channel:
        await pb_grpc.LedgerStub(channel).OpenAccount(pb.OpenAccountRequest(account_id="ONLYBANK"))  # type: ignore[no-untyped-call]
    config = _config(tmp_path, grace="10s")
    text = config.read_text(encoding="utf-8").replace('refresh = "200ms"', 'refresh = "5s"')
    config.write_text(text.replace(f'lease = "{LEASE:g}s"', 'lease = "15s"'), encoding="utf-8")
    with postgres_schema_url() as url:
        sql = _postgres_sql(url)
        async with forwarding(bk.address) as (proxy, front), contextlib.AsyncExitStack() as stack:
            args = [
                "--config", config, "--listen", "127.0.0.1:0", "--bank", bank.address, "--bk", front.address,
                "--store", url, "--dataplane", "python", "--diff-log", "/dev/null",
            ]  # fmt: skip
            first = await stack.enter_async_context(shim_process(*args))
            async with aio.insecure_channel(first.ready["listen"]) as channel:
                stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
                await stub.OpenAccount(pb.OpenAccountRequest(account_id="W1", initial_deposit="10"))
                await until(
                    lambda: "W1" in bk.servicer.book.accounts and not sql("SELECT id FROM intents"),
                    "the opening mirrored and judged",  # its intent is stored after Bank's answer
                )
                deposit = proxy.gated["/Deposit"] = asyncio.Event()
                gate = proxy.gated["/PostTrade"] = asyncio.Event()
                await stub.Deposit(pb.DepositRequest(account_id="W1", amount="1"))  # Bank answers at once
                await until(lambda: proxy.arrived == 1, "the mirrored deposit held in front of BK")
                switch = asyncio.ensure_future(_set_mode(first, "bk-primary", pause=8.0))
                await first.until_event("switch: catching up with the mirrored calls under way")
                order = pb.PostTradeRequest(
                    account_id="W1", symbol="KO", side=pb.SIDE_BUY, quantity="2", price="61.2"
                )
                await stub.PostTrade(order)  # its mirrored call waits for the deposit's, on W1
            deposit.set()  # the switch has caught up: it holds the calls, for the trade
            try:
                await until(lambda: proxy.arrived == 2, "the mirrored trade held in front of BK")
                await until(
                    lambda: sql("SELECT id FROM shim_mode_switches WHERE state = 'pending'"),
                    "the switch pending",
                )
                second_ready = asyncio.ensure_future(stack.enter_async_context(shim_process(*args)))
                await until(
                    lambda: len(sql("SELECT replica FROM shim_replica_modes")) == 2 or second_ready.done(),
                    "the second replica's view published",
                    within=30,
                )
                gate.set()  # the mirrored deposit goes on: the first replica holds, the switch commits
                answer = await switch
            finally:
                deposit.set()
                gate.set()
                switch.cancel()
            committed = time.monotonic()
            second = await second_ready
            answered = {
                "first": await _side(first.ready["listen"]),
                "second": await _side(second.ready["listen"]),
            }
            took = time.monotonic() - committed
            views = await _views(first)
    assert answer.default_mode == "bk-primary"
    assert took < 5.0, "within the second replica's store.refresh"
    assert answered == {"first": "BK", "second": "BK"}, answered
    assert {view.default_mode for view in views.values()} == {"bk-primary"}, views
