"""Keys out of step: a write BK missed taints later mismatches on its keys until an operator resyncs them."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

import sample_ledger
from comparators import Comparison, DescriptorRegistry, Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.config import load_file, load_rules_file
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.backends import forwarding
from tests.helpers import until

HERE = Path(sample_ledger.__file__).parent
REGISTRY = DescriptorRegistry.from_files([HERE / "bank.binpb"])
RULES, RULE_LOCATIONS = load_rules_file(HERE / "rules.toml")
IDS = load_file(HERE / "shim.toml")["ids"]
BY_ACCOUNT = MethodSettings(key=("account_id",))
METHODS = {
    f"bank.v1.Ledger/{name}": BY_ACCOUNT for name in ("OpenAccount", "Deposit", "GetBalance", "PostTrade")
}
DEPOSIT, GET_BALANCE = "/bank.v1.Ledger/Deposit", "/bank.v1.Ledger/GetBalance"
TIMEOUT = 10.0


def _stub(channel: aio.Channel) -> Any:
    return pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]  # generated, untyped


def _resync(store: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "shim", "resync", "--store", str(store), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_missed_writes_put_their_accounts_out_of_step_until_resynced(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """BK down for a while: the breaker opens, the clients get Bank's answers, exactly the accounts that
    missed a write are out of step (in the store), mismatches on them are tainted while the other
    accounts still match; `shim resync` puts an account back in step and its mismatches count again."""
    bank, bk = ledgers
    store = tmp_path / "shim.db"
    settings: dict[str, Any] = {
        "registry": REGISTRY,
        "rules": RULES,
        "rule_locations": RULE_LOCATIONS,
        "ids": IDS,
        "methods": METHODS,
        "store": {"url": str(store), "refresh": 0.05},
        "shadow": {"breaker_failures": 2, "breaker_open_for": 3600.0},
    }
    async with (
        forwarding(bk.address) as (proxy, front),
        running_shim(bank.address, front.address, **settings) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        stub = _stub(channel)
        for account in ("A", "B", "C", "D"):
            await stub.OpenAccount(pb.OpenAccountRequest(account_id=account, initial_deposit="100"))
        await shim.drain()
        proxy.failing = True
        answers = []
        for account in ("A", "B", "C"):  # A and B: shadow errors that open the breaker; C: not mirrored
            answers.append(await stub.Deposit(pb.DepositRequest(account_id=account, amount="5")))
            await shim.drain()
        assert shim.dispatcher is not None
        assert shim.dispatcher.shared.breaker.state == "open"
        assert [a.cash for a in answers] == ["105.00", "105.00", "105.00"]  # Bank's answers
        assert shim.steps is not None
        assert sorted(shim.steps.keys) == ["A", "B", "C"]
        assert shim.counters.get("keys_out_of_step") == 3
        assert (shim.counters.get("shadow_breaker_skipped"), shim.dispatcher.shared.breaker.state) == (
            1,
            "open",
        )
        assert store.exists()
        listed = _resync(store, "--list")
        assert [line.split("\t")[0] for line in listed.splitlines()] == ["A", "B", "C"]
        assert "BK is down" in listed  # the shadow's own error, as the reason

        proxy.failing = False
        shim.dispatcher.shared.breaker.record(ok=True)  # as a successful probe would
        for account in ("A", "D"):
            await stub.GetBalance(pb.GetBalanceRequest(account_id=account))
        await shim.drain()
        reads = await sink.wait_for(2, where=lambda c: c.method == GET_BALANCE)
        assert [(c.exchange.routing_key, c.verdict) for c in reads] == [
            ("A", Verdict.TAINTED),
            ("D", Verdict.MATCH),
        ]
        assert "key 'A' out of step since" in reads[0].reason
        assert [d.path for d in reads[0].real_differences] == ["cash"]

        forced = _resync(store, "--force", "A", "Z")
        assert forced == "A: in step again (forced, not verified)\nZ: was not out of step\n"
        await until(lambda: "A" not in shim.steps.keys, "the running shim sees A resynced", TIMEOUT)
        await stub.GetBalance(pb.GetBalanceRequest(account_id="A"))
        await shim.drain()
        again = await sink.wait_for(3, where=lambda c: c.method == GET_BALANCE)
        assert again[2].verdict is Verdict.MISMATCH  # BK still lacks the deposit: a real difference now
        assert sorted(shim.steps.keys) == ["B", "C"]


def _both_refused(comparison: Comparison) -> bool:
    shadow = comparison.exchange.shadow
    return shadow is not None and comparison.exchange.primary.code == shadow.code != 0


async def test_a_write_both_sides_refuse_leaves_its_account_in_step(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """A write Bank and BK both refuse (a deposit without an amount) changed neither book: no key is
    marked; a write one side refuses and the other applies (BK's planted oversell) marks its key."""
    bank, bk = ledgers
    settings = {"registry": REGISTRY, "rules": RULES, "ids": IDS, "methods": METHODS}
    async with (
        running_shim(bank.address, bk.address, **settings) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        stub = _stub(channel)
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="E", initial_deposit="100"))
        with pytest.raises(aio.AioRpcError):
            await stub.Deposit(pb.DepositRequest(account_id="E", amount=""))
        (refused,) = await sink.wait_for(1, where=lambda c: c.method == DEPOSIT)
        assert _both_refused(refused)
        assert shim.steps is not None
        assert shim.steps.keys == {}
        with pytest.raises(aio.AioRpcError) as oversold:
            await stub.PostTrade(
                pb.PostTradeRequest(account_id="E", symbol="KO", side=pb.SIDE_SELL, quantity="1", price="1")
            )
        await sink.wait_for(1, where=lambda c: c.method.endswith("/PostTrade"))
        assert oversold.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        (mark,) = shim.steps.keys.values()
    assert (mark.key, mark.method) == ("E", "/bank.v1.Ledger/PostTrade")
    assert mark.reason.startswith("Bank answered FAILED_PRECONDITION (insufficient position")
    assert mark.reason.endswith(", BK applied it (OK)")


async def _marked_again_after_the_read(url: str, since: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store at `url` where A is marked (at 2000.0), and another replica marks A again (at `since`) just
    after `shim resync` has read its marks."""
    from shim.store import OutOfStep, Store
    from shim.store.marks import StoredMarks

    store = Store.open(url)
    await store.start()
    store.marks.put([OutOfStep("A", 2000.0, DEPOSIT, "BK is down", "replica-1")])
    await store.flush()
    await store.close()
    read = StoredMarks.marked

    async def read_then_marked_again(self: StoredMarks, keys: Any) -> Any:
        marks = await read(self, keys)
        monkeypatch.setattr(StoredMarks, "marked", read)
        other = Store.open(url)
        await other.start()
        other.marks.put([OutOfStep("A", since, DEPOSIT, "BK timed out", "replica-2")])
        await other.flush()
        await other.close()
        return marks

    monkeypatch.setattr(StoredMarks, "marked", read_then_marked_again)


async def _stored(url: str) -> tuple[list[tuple[str, float]], dict[str, Any]]:
    from shim.store import Store

    store = Store.open(url)
    await store.start()
    try:
        marks = [(m.key, m.since) for m in await store.marks.out_of_step()]
        return marks, await store.marks.last_verifications()
    finally:
        await store.close()


@pytest.mark.parametrize("since", [1000.0, 3000.0], ids=["earlier", "later"])
async def test_resync_force_says_so_when_the_key_was_marked_again_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], since: float
) -> None:
    """`shim resync --force A` clears the mark it read; when another replica marked A again meanwhile, for an
    earlier write it missed (its mark takes the place) or a later one (the key keeps its earliest mark, as it
    was read), nothing is cleared: the command says so and exits 1, and records no forced check. Before, a
    later write's mark was deleted with the mark read, and the key it left out of step had no mark."""
    from shim.cli import resync

    url = str(tmp_path / "marks.db")
    await _marked_again_after_the_read(url, since, monkeypatch)
    args = argparse.Namespace(force=True, list=False, keys=["A"], config=None)
    assert await resync.run(args, url) == resync.EXIT_OUT_OF_STEP
    assert capsys.readouterr().out == "A: marked again meanwhile, kept (not cleared)\n"
    assert await _stored(url) == ([("A", min(since, 2000.0))], {})


async def test_resync_keeps_a_mark_another_replica_put_while_it_read_the_books(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`shim resync A` reads both books alike; meanwhile a write another replica saw miss BK marked A again
    (later: the key keeps its mark as read). The mark is kept, and the command says so and exits 1."""
    from shim.cli import resync
    from shim.reconcile import KeyResult
    from shim.store import OutOfStep, Store

    url = str(tmp_path / "marks.db")
    store = Store.open(url)
    await store.start()
    store.marks.put([OutOfStep("A", 2000.0, DEPOSIT, "BK is down", "replica-1")])
    await store.close()

    class Agreeing:  # the [reconcile] reads: both books alike, and another replica marks A meanwhile
        async def marked(self, key: str, side: str) -> KeyResult:
            other = Store.open(url)
            await other.start()
            other.marks.put([OutOfStep("A", 3000.0, DEPOSIT, "BK timed out", "replica-2")])
            await other.close()
            return KeyResult(key)

    async def sweep(args: argparse.Namespace, store: Any) -> tuple[Agreeing, Any]:
        async def close() -> None:
            pass

        return Agreeing(), close

    monkeypatch.setattr(resync, "_sweep", sweep)
    args = argparse.Namespace(force=False, list=False, keys=["A"], config="shim.toml")
    assert await resync.run(args, url) == resync.EXIT_OUT_OF_STEP
    assert capsys.readouterr().out.splitlines()[0] == "A: verified in step: marked again meanwhile, kept"
    marks, checks = await _stored(url)
    assert marks == [("A", 2000.0)]
    assert checks["A"][1] == "in-step"


def test_a_write_whose_side_lost_its_connection_once_it_had_it_leaves_its_keys_out_of_step() -> None:
    """A side that answered UNAVAILABLE in the words of a connection lost once the write was sent on it may
    have applied it: unknown, not refused, so its keys go out of step whatever the other side did. One that
    never received it (a connection refused) refused it."""
    from comparators import Outcome
    from shim.steps import REFUSED, UNKNOWN, effect, out_of_step_reason

    lost = Outcome(14, "Stream removed (Socket closed)")
    refused = Outcome(14, "failed to connect to all addresses; last error: Connection refused")
    applied, declined = Outcome(0), Outcome(5, "no such account")
    assert (effect(lost), effect(refused)) == (UNKNOWN, REFUSED)
    for other in (applied, declined, refused):
        assert out_of_step_reason(lost, other, True), other
        assert out_of_step_reason(other, lost, True), other
    assert out_of_step_reason(refused, declined, True) == ""
