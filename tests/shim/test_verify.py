"""Keys out of step are verified: both ledgers read, the mark cleared only when they agree, the check stored;
`shim resync` verifies before clearing; a crash leaves marks for the writes it lost."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from grpc import aio

import sample_ledger
from comparators import Difference, DiffKind, Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.app import Shim
from shim.config import load_file, merged
from shim.metrics import Counters
from shim.reconcile import KeyResult
from shim.steps import Steps
from shim.store import OutOfStep, Store, StoreError
from shim.store.key_order import KeyOrder
from shim.testing import CapturingSink, running_shim
from shim.verify import IN_STEP, INCONCLUSIVE, Verifier
from tests.backends import forwarding
from tests.helpers import shim_command, until
from tests.processes import shim_process
from tests.services.custody import DESCRIPTOR_SET, Client, serve
from tests.services.custody.server import Served
from tests.shim import test_store as engines
from tests.shim.test_evidence_store import _shadow_args
from tests.shim.test_store import Target

ROOT = Path(__file__).resolve().parents[2]
CUSTODY = ROOT / "tests" / "services" / "custody" / "shim.toml"
SAMPLE = Path(sample_ledger.__file__).parent
TIMEOUT = 20.0

durable = engines.durable  # SQLite in a file and PostgreSQL: the stores that replicas share


def _custody_config(tmp_path: Path) -> Path:
    (tmp_path / "custody.binpb").write_bytes(DESCRIPTOR_SET)
    config = tmp_path / "shim.toml"
    shutil.copyfile(CUSTODY, config)
    return config


@contextlib.asynccontextmanager
async def _custody(
    tmp_path: Path, bugs: set[str], **overrides: Any
) -> AsyncIterator[tuple[Shim, CapturingSink, Client, Served, Served]]:
    """The custody ledger's Bank and BK (with `bugs`) behind a shim on its own config, with a SQLite store."""
    settings = load_file(_custody_config(tmp_path))
    settings.pop("mode")
    settings.update(overrides)
    bank, bk = await serve("bank"), await serve("bk", bugs=bugs)
    try:
        async with (
            running_shim(bank.address, bk.address, store={"url": str(tmp_path / "shim.db")}, **settings) as (
                shim,
                sink,
            ),
            aio.insecure_channel(shim.address) as channel,
        ):
            yield shim, sink, Client(channel), bank, bk
    finally:
        await bank.stop()
        await bk.stop()


async def _open(client: Client, ref: str, funds: str) -> str:
    opened = await client.call("OpenAccount", client_ref=ref, owner="Ada")
    account: str = opened.message.account_id
    await client.call("Deposit", account_id=account, amount=funds)
    return account


async def test_a_no_op_one_side_refused_is_verified_in_step_at_once_and_later_differences_count(
    tmp_path: Path,
) -> None:
    """A transfer to the same account (Bank refuses it, BK books nothing) marks the account, which is checked
    at once, found in step and cleared, the check stored; a later real difference there is a mismatch, not
    tainted."""
    async with _custody(tmp_path, {"same-account", "fee-rounding"}) as (shim, sink, client, _, _):
        account = await _open(client, "ref-1", "100")
        noop = await client.call("Transfer", from_account=account, to_account=account, amount="5")
        await shim.drain()
        assert shim.steps is not None
        assert shim.books.verifier is not None
        marks = dict(shim.steps.keys)
        (check,) = [v for v in shim.books.verifier.results if v.key == account]
        other = await _open(client, "ref-2", "100")
        await client.call("Transfer", from_account=account, to_account=other, amount="12.345")  # rounds apart
        await shim.drain()
        comparisons = sink.comparisons
        assert shim.store is not None
        await shim.store.flush()
        stored = await shim.store.select("SELECT key, result, reason FROM verifications")
    assert noop.code == "INVALID_ARGUMENT"  # Bank's answer
    assert marks == {}
    assert (check.result, check.cleared, check.mark.method) == (
        "in-step",
        True,
        "/custody.v1.Custody/Transfer",
    )
    assert "Bank answered INVALID_ARGUMENT" in check.mark.reason
    assert stored == [(account, "in-step", check.mark.reason)]
    rounded = [c for c in comparisons if c.method.endswith("/Transfer") and c.exchange.routing_key != account]
    assert [(c.verdict, [d.path for d in c.real_differences]) for c in rounded] == [
        (Verdict.MISMATCH, ["amount"])
    ]


async def test_a_key_whose_books_differ_stays_out_of_step_with_the_differences_recorded(
    tmp_path: Path,
) -> None:
    """An account whose balance differs already (BK rounds a transfer apart) and that a no-op then marks is
    checked and found different: the mark stays, the check records the differing balance, and later
    differences there are tainted."""
    async with _custody(tmp_path, {"same-account", "fee-rounding"}) as (shim, sink, client, _, _):
        account, other = await _open(client, "ref-1", "100"), await _open(client, "ref-2", "100")
        await client.call("Transfer", from_account=account, to_account=other, amount="12.345")
        await client.call("Transfer", from_account=account, to_account=account, amount="1")
        await client.call("GetBalance", account_id=account)
        await shim.drain()
        assert shim.steps is not None
        assert shim.books.verifier is not None
        marks = dict(shim.steps.keys)
        checks = [v for v in shim.books.verifier.results if v.key == account]
        balance = sink.comparisons[-1]
    assert list(marks) == [account]
    assert [(c.result, c.cleared) for c in checks] == [("differs", False)]
    assert '"path":"balance"' in checks[0].detail
    assert balance.method.endswith("/GetBalance")
    assert balance.verdict is Verdict.TAINTED


async def test_a_check_that_finds_a_redacted_field_differing_records_its_hashes(tmp_path: Path) -> None:
    """The balance read by the check is a redacted field: the check's recorded differences (kept in the
    store) show the two hashes, as a comparison would. Before, the check compared without redaction and
    recorded both balances as they were."""
    redact = {"fields": ["custody.v1.Balance.balance"], "key_env": "SHIM_TEST_VERIFY_KEY"}
    async with _custody(tmp_path, {"same-account", "fee-rounding"}, redact=redact) as (shim, _, client, _, _):
        account, other = await _open(client, "ref-1", "100"), await _open(client, "ref-2", "100")
        await client.call("Transfer", from_account=account, to_account=other, amount="12.345")
        await client.call("Transfer", from_account=account, to_account=account, amount="1")
        bank_balance = (await client.call("GetBalance", account_id=account)).message.balance
        await shim.drain()
        assert shim.books.verifier is not None
        checks = [v for v in shim.books.verifier.results if v.key == account]
        assert shim.store is not None
        await shim.store.flush()
        stored = await shim.store.select("SELECT detail FROM verifications")
    assert [(c.result, c.cleared) for c in checks] == [("differs", False)]
    assert '"path":"balance"' in checks[0].detail
    assert "redacted:" in checks[0].detail
    assert bank_balance not in checks[0].detail
    assert bank_balance not in repr(stored)


async def test_an_unknown_natural_key_is_not_tainted_by_another_accounts_mark(tmp_path: Path) -> None:
    """A read by a client reference nobody opened names no known account: another account out of step
    does not taint it, so BK's wrong refusal there is a real mismatch."""
    async with _custody(tmp_path, {"same-account", "fee-rounding", "wrong-code"}) as (
        shim,
        sink,
        client,
        _,
        _,
    ):
        account, other = await _open(client, "ref-1", "100"), await _open(client, "ref-2", "100")
        await client.call("Transfer", from_account=account, to_account=other, amount="12.345")
        await client.call("Transfer", from_account=account, to_account=account, amount="1")  # stays marked
        await client.call("GetAccountByRef", client_ref="nobody")
        await shim.drain()
        assert shim.steps is not None
        marks = dict(shim.steps.keys)
        unknown = sink.comparisons[-1]
    assert list(marks) == [account]
    assert unknown.method.endswith("/GetAccountByRef")
    assert unknown.verdict is Verdict.MISMATCH
    assert next((d.path, d.bank, d.bk) for d in unknown.real_differences) == (
        "status.code",
        "NOT_FOUND",
        "INVALID_ARGUMENT",
    )


async def test_a_read_by_a_natural_key_is_ordered_and_tainted_under_the_account(tmp_path: Path) -> None:
    """A client reference learned from OpenAccount's answer (a key alias) puts a read by it on the account:
    it is routed and tainted under the account id."""
    async with _custody(tmp_path, {"same-account", "fee-rounding"}) as (shim, sink, client, _, _):
        account, other = await _open(client, "ref-1", "100"), await _open(client, "ref-2", "100")
        await client.call("Transfer", from_account=account, to_account=other, amount="12.345")
        await client.call("Transfer", from_account=account, to_account=account, amount="1")
        await client.call("GetAccountByRef", client_ref="ref-1")
        await shim.drain()
        by_ref = sink.comparisons[-1]
        assert shim.books.aliases is not None
        learned = await shim.books.aliases.lookup("client_ref", "ref-1")
    assert learned == account
    assert by_ref.exchange.routing_key == account
    assert by_ref.verdict is Verdict.TAINTED


# -- a BK that answers after the shadow timeout -----------------------------------------------------------


async def test_a_write_bk_answered_too_late_is_verified_in_step_in_the_background(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A deposit BK applies but answers after the shadow timeout marks its account; the background check,
    once settled, reads both books (GetBalance, GetPortfolio), finds them equal and clears the mark."""
    bank, bk = ledgers
    settings = load_file(SAMPLE / "shim.toml")
    for name in ("bank", "bk", "mode"):
        settings.pop(name)
    settings = merged(
        settings,
        {"store": {"url": str(tmp_path / "shim.db")}, "verify": {"settle": 0.2}, "noise": {"reads": 0.0}},
    )
    async with (
        forwarding(bk.address) as (slow, front),
        running_shim(bank.address, front.address, shadow_timeout=0.3, **settings) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        slow.late["/Deposit"] = 0.6  # BK applies a deposit, and answers after the shadow timeout
        stub: Any = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="S1", initial_deposit="10"))
        await stub.Deposit(pb.DepositRequest(account_id="S1", amount="5"))
        await shim.drain()
        assert shim.steps is not None
        assert shim.books.verifier is not None
        marked = dict(shim.steps.keys)
        await asyncio.wait_for(shim.books.verifier.drain(), TIMEOUT)
        after = dict(shim.steps.keys)
        checks = [(v.key, v.result, v.cleared) for v in shim.books.verifier.results]
        deposit = next(c for c in sink.comparisons if c.method.endswith("/Deposit"))
    assert deposit.verdict is Verdict.SHADOW_ERROR
    assert list(marked) == ["S1"]
    assert "shadow timeout" in marked["S1"].reason
    assert ("S1", "in-step", True) in checks
    assert after == {}


# -- shim resync -------------------------------------------------------------------------------------------


async def test_resync_verifies_before_clearing_and_force_clears_without(tmp_path: Path) -> None:
    """`shim resync KEY` reads both books: an account they agree on is put back in step, one they differ
    on keeps its mark (exit 1, the difference named), --force clears it anyway, and without a config
    nothing is cleared unverified."""
    async with _custody(tmp_path, {"fee-rounding"}) as (shim, _, client, bank, bk):
        apart, other, untouched = [await _open(client, f"ref-{i}", "100") for i in range(3)]
        await client.call("Transfer", from_account=other, to_account=apart, amount="7.105")  # a cent apart
        await shim.drain()
        assert shim.store is not None
        shim.store.marks.put(
            [OutOfStep(key, 1_795_000_000.0, "/x.Y/Z", "marked by hand") for key in (apart, untouched)]
        )
        await shim.store.flush()
        db, config = tmp_path / "shim.db", tmp_path / "shim.toml"
        common = ("resync", "--config", config, "--store", db, "--bank", bank.address, "--bk", bk.address)
        unconfigured = await shim_command("resync", "--store", db, apart)
        verified = await shim_command(*common, apart, untouched)
        listed = await shim_command(*common, "--list")
        listed_forced = await shim_command(*common, "--list", "--force")  # --force was taken and ignored
        forced = await shim_command(*common, "--force", apart, "A99")
        left = await shim_command("resync", "--store", db)
    assert unconfigured[0] == 2
    assert "give --config FILE (or --force to clear without verifying)" in unconfigured[2]
    code, out, err = verified
    assert code == 1, out + err
    assert out.splitlines()[:2] == [
        f"{apart}: still out of step, differs: GetBalance balance '107.11' -> '107.1'",
        f"{untouched}: verified in step: in step again",
    ]
    assert listed_forced[0] == 2
    assert "--force clears the keys named" in listed_forced[2]
    assert listed[1].startswith(f"{apart}\tsince 2026-11-18T")
    assert "last check " in listed[1]
    assert ": differs: GetBalance balance" in listed[1]
    assert (forced[0], forced[1]) == (
        0,
        f"{apart}: in step again (forced, not verified)\nA99: was not out of step\n",
    )
    assert left[1].startswith("no key is out of step")


# -- a crash with mirrored writes in flight ----------------------------------------------------------------


async def test_writes_in_flight_when_the_shim_is_killed_leave_their_keys_out_of_step_and_checked(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """kill -9 while a mirrored deposit is in flight on BK: the next shim on the store finds its intent,
    marks its account out of step (and only it), checks it (the books differ: BK never got the deposit),
    and a read of that account is tainted, not a real mismatch."""
    bank, bk = ledgers
    config = tmp_path / "shim.toml"
    config.write_text(
        (SAMPLE / "shim.toml")
        .read_text()
        .replace('"bank.binpb"', f'"{SAMPLE / "bank.binpb"}"')
        .replace('"rules.toml"', f'"{SAMPLE / "rules.toml"}"')
        + '\n[verify]\nsettle = "100ms"\n'
        # the reads compared however busy the machine: none shed, the plane at the suite's priority
        + "[shadow]\nshed_lag = 0\n[envoy]\ncomparison_nice = 0\n",
        encoding="utf-8",
    )
    db = tmp_path / "shim.db"
    async with forwarding(bk.address) as (proxy, front):
        proxy.held.add("/Deposit")  # BK never gets the deposit
        args = _shadow_args(bank, front, db, "--config", config)  # type: ignore[arg-type]
        async with shim_process(*args) as first, aio.insecure_channel(first.ready["listen"]) as channel:
            stub: Any = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            for account in ("K1", "K2"):
                await stub.OpenAccount(pb.OpenAccountRequest(account_id=account, initial_deposit="10"))

            def settled() -> bool:  # the accounts' mirrored openings are compared, their intents cleared
                with sqlite3.connect(db) as conn:
                    opened = conn.execute("SELECT COUNT(*) FROM comparisons").fetchone()[0]
                    return opened == 2 and not conn.execute("SELECT COUNT(*) FROM intents").fetchone()[0]

            await until(settled, "the openings' intents cleared")
            await stub.Deposit(pb.DepositRequest(account_id="K1", amount="5"))  # Bank applies it
            await until(lambda: proxy.arrived == 1, "the mirrored deposit held in front of BK")
            await first.kill_9()
        async with shim_process(*args) as second, aio.insecure_channel(second.ready["listen"]) as channel:
            listed: tuple[int | None, str, str] = (None, "", "")

            async def checked() -> bool:
                nonlocal listed
                listed = await shim_command("resync", "--store", db, "--list")
                return "last check" in listed[1]

            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while not await checked():
                assert asyncio.get_running_loop().time() < deadline, listed
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.GetBalance(pb.GetBalanceRequest(account_id="K1"))
            await stub.GetBalance(pb.GetBalanceRequest(account_id="K2"))
    lines = listed[1].splitlines()
    assert [line.split("\t")[0] for line in lines] == ["K1"]
    assert "bank.v1.Ledger/Deposit: a mirrored write was in flight when its shim" in lines[0]
    assert "last check" in lines[0]
    assert ": differs: GetBalance cash '15.00' -> '10'" in lines[0]
    store = await _started(db)
    try:
        reads = await store.select(
            "SELECT routing_key, verdict FROM comparisons WHERE method = ? ORDER BY at",
            ("/bank.v1.Ledger/GetBalance",),
        )
    finally:
        await store.close()
    assert reads[-2:] == [("K1", "tainted"), ("K2", "match")]


async def _started(path: Path) -> Store:
    store = Store.open(str(path))
    await store.start()
    return store


# -- in a fleet (ordering.across_replicas) -------------------------------------------------------------------


async def test_a_difference_read_while_a_write_on_the_key_is_under_way_elsewhere_proves_nothing() -> None:
    """With the keys' order across replicas, a check that reads the key while a write on it has a ticket
    not yet done (on any replica: it may have reached one side only, for now), or while a ticket is taken,
    proves nothing: inconclusive, checked again later, and cleared once the key is quiet and agrees."""
    bank_has = ["w1", "w2"]  # w2 went through another replica: on Bank, not yet on BK
    bk_has = ["w1"]
    positions = [(2, 1), (2, 1), (2, 2), (3, 2), (3, 3), (3, 3)]  # (issued, done), as each look finds it

    async def check(key: str, side: str) -> KeyResult:
        if bank_has == bk_has:
            return KeyResult(key)
        return KeyResult(key, [("t.v1.T/List", Difference("entries[1]", DiffKind.REMOVED, "w2", None))])

    async def position(key: str) -> tuple[int, int]:
        return positions.pop(0)

    steps = Steps(None, Counters())
    verifier = Verifier(check, steps, lambda: None, None, Counters(), "r", fleet=position)
    (mark,) = steps.mark(["k"], "/t.v1.T/Append", "a test's mark")
    first = await verifier.verify("k", mark)  # w2 under way elsewhere
    bk_has.append("w2")
    second = await verifier.verify("k", mark)  # quiet when the check began, a ticket taken meanwhile
    third = await verifier.verify("k", mark)  # quiet throughout: the books agree
    assert [(v.result, v.cleared) for v in (first, second, third)] == [
        (INCONCLUSIVE, False), (INCONCLUSIVE, False), (IN_STEP, True),
    ]  # fmt: skip
    assert "under way" in first.detail
    assert steps.mark_of("k") is None


async def test_a_check_that_cannot_read_the_keys_order_is_inconclusive() -> None:
    """The store failing when a check looks at the key's tickets: inconclusive (checked again later), the
    mark kept."""

    async def check(key: str, side: str) -> KeyResult:
        return KeyResult(key)

    async def position(key: str) -> tuple[int, int]:
        raise StoreError("the store is down")

    steps = Steps(None, Counters())
    verifier = Verifier(check, steps, lambda: None, None, Counters(), "r", fleet=position)
    (mark,) = steps.mark(["k"], "/t.v1.T/Append", "a test's mark")
    checked = await verifier.verify("k", mark)
    assert (checked.result, checked.cleared) == (INCONCLUSIVE, False)
    assert "the store is down" in checked.detail
    assert steps.mark_of("k") == mark


async def test_a_write_missed_just_after_another_replica_cleared_the_key_leaves_a_mark(
    tmp_path: Path,
) -> None:
    """Replica A verifies K in step and clears its mark; replica B still holds that mark in memory until its
    next look at the store (`store.refresh`). A write B sees go out of step on K meanwhile must still leave
    K marked in the store, with the time of that write: before, B skipped a key it held marked, and once
    its look at the store dropped the old mark, K was out of step with no mark at all."""
    store = Store.open(str(tmp_path / "shim.db"))
    await store.start()
    try:
        a = Steps(store, Counters(), replica="a:1:aaaaaa")
        b = Steps(store, Counters(), replica="b:2:bbbbbb")
        (first,) = a.mark(["K"], "/bank.v1.Ledger/Deposit", "Bank applied it (OK), BK answered INTERNAL")
        await store.flush()
        await b.refresh()
        assert b.mark_of("K") == first
        assert await a.clear(first, await a.generation("K"))  # A's verifier: both books read alike
        b.mark(["K"], "/bank.v1.Ledger/Deposit", "Bank applied it (OK), BK timed out")
        await store.flush()
        await b.refresh()
        stored = await store.marks.out_of_step()
    finally:
        await store.close()
    assert [(m.key, m.replica, m.reason) for m in stored] == [
        ("K", "b:2:bbbbbb", "Bank applied it (OK), BK timed out")
    ]
    assert stored[0].since > first.since
    assert b.mark_of("K") == stored[0]


async def test_a_mark_another_replica_puts_while_a_check_reads_the_key_is_kept(durable: Target) -> None:
    """Replica A checks K (both books read alike); meanwhile a write through replica B misses BK and B
    marks K, which keeps its earlier mark in the store. A's check must not clear it: before, A deleted the
    row by its `since`, B's mark was gone with it, and B's next look at the store dropped K, out of step
    with no mark. The next check, with no write meanwhile, clears it."""
    store_a, store_b = Store.open(durable.url), Store.open(durable.url)
    await store_a.start()
    await store_b.start()
    try:
        a = Steps(store_a, Counters(), refresh=60, replica="a:1:aaaaaa")
        b = Steps(store_b, Counters(), refresh=60, replica="b:2:bbbbbb")
        (first,) = a.mark(["K"], "/bank.v1.Ledger/Deposit", "Bank applied it (OK), BK timed out")
        await store_a.flush()
        await b.refresh()
        reads = 0

        async def check(key: str, side: str) -> KeyResult:  # both books agree: B's write is on neither yet
            nonlocal reads
            reads += 1
            if reads == 1:  # ... and while A reads them, it reaches Bank, not BK: B marks K
                b.mark(["K"], "/bank.v1.Ledger/Deposit", "Bank applied it (OK), BK answered UNAVAILABLE")
                await store_b.flush()
            return KeyResult(key)

        verifier = Verifier(check, a, lambda: None, store_a, Counters(), "a:1:aaaaaa")
        during = await verifier.verify("K", first)
        stored = await store_a.marks.out_of_step()
        await b.refresh()
        b_holds = b.mark_of("K")
        after = await verifier.verify("K", first)  # no write meanwhile: the books agree, the mark goes
        left = await store_a.marks.out_of_step()
    finally:
        await store_a.close()
        await store_b.close()
    assert (during.result, during.cleared) == (IN_STEP, False)
    assert stored == [first]  # the earliest mark stays the key's
    assert b_holds == first
    assert a.mark_of("K") is None
    assert (after.result, after.cleared, left) == (IN_STEP, True, [])


async def test_a_key_marked_as_each_side_s_id_is_checked_as_either(durable: Target) -> None:
    """Where the id spaces overlap, replica A marks "A2" as BK's id (BK primary) and replica B as Bank's (a
    write through a replica still in shadow): the key's mark says neither side, in the store and, once it
    reads it, in A's memory. A's check, asked while A still holds its own mark as BK's, reads the key as
    the store's mark says (side "": every account of that text, `Sweep.marked`) and clears it. Before, a
    mark did not say whose id its key was, and a check read the text as Bank's own id."""
    store_a, store_b = Store.open(durable.url), Store.open(durable.url)
    await store_a.start()
    await store_b.start()
    try:
        a = Steps(store_a, Counters(), refresh=60, replica="a:1:aaaaaa")
        b = Steps(store_b, Counters(), refresh=60, replica="b:2:bbbbbb")
        (mark,) = a.mark(["A2"], "/custody.v1.Custody/Deposit", "Bank answered INTERNAL", side="bk")
        await store_a.flush()
        b.mark(["A2"], "/custody.v1.Custody/Deposit", "BK answered INTERNAL", side="bank")
        await store_b.flush()
        asked: list[str] = []

        async def check(key: str, side: str) -> KeyResult:
            asked.append(side)
            return KeyResult(key)

        verifier = Verifier(check, a, lambda: None, store_a, Counters(), "a:1:aaaaaa")
        held = a.mark_of("A2")
        checked = await verifier.verify("A2", mark)
        left = await store_a.marks.out_of_step()
        a.mark(["K"], "/custody.v1.Custody/Deposit", "BK answered INTERNAL", side="bk")
        a.mark(["K"], "/custody.v1.Custody/Deposit", "Bank answered INTERNAL", side="bank")
        merged = a.mark_of("K")
    finally:
        await store_a.close()
        await store_b.close()
    assert held is not None
    assert held.side == "bk"
    assert (asked, checked.result, checked.cleared, left) == ([""], IN_STEP, True, [])
    assert merged is not None
    assert merged.side == ""


async def test_a_key_a_replica_gone_held_a_ticket_on_is_checked_and_cleared(durable: Target) -> None:
    """With the keys' order across replicas, replica a is killed with a write on K in flight (its ticket
    taken, never done), and no write on K follows. Replica b marks K (a's intent claimed) and checks it:
    the check releases a's ticket (a is silent past the lease) and marks K for it, as any ticket released;
    a later check, the books agreeing, clears the mark. Before, a's ticket was released only by a write
    waiting behind it: K stayed under way, every check was inconclusive, and the mark was never cleared."""
    a, b = "a:1:aaaaaa", "b:2:bbbbbb"
    store = Store.open(durable.url)
    await store.start()
    steps = Steps(store, Counters(), refresh=60, replica=b)
    released: list[str] = []

    def on_released(key: str, holder: str, method: str) -> None:  # as `Books` does
        released.append(holder)
        steps.mark([key], method, f"the ticket of {holder}, gone, was released")

    order_a, order_b = KeyOrder(durable.url, a, lease=10.0), KeyOrder(durable.url, b, 10.0, on_released)
    try:
        await store.liveness.beat(a)
        await store.liveness.beat(b)
        await order_a.start()
        await order_b.start()
        tickets = order_a.take(["K"], "/bank.v1.Ledger/Deposit")
        await asyncio.wait_for(tickets.taken.wait(), TIMEOUT)
        await order_a.close()  # killed: its ticket is never done, its heartbeat stops
        durable.sql(f"UPDATE shim_replicas SET seen = seen - 20 WHERE replica = '{a}'")
        await steps.start()
        (mark,) = steps.mark(["K"], "/bank.v1.Ledger/Deposit", f"a mirrored write was in flight ({a})")

        async def agree(key: str, side: str) -> KeyResult:
            return KeyResult(key)

        verifier = Verifier(
            agree, steps, lambda: None, store, Counters(), b, settle=0.01, fleet=order_b.position
        )
        verifier.schedule(mark)
        await asyncio.wait_for(verifier.drain(), TIMEOUT)
        position = await order_b.position("K")
        left = await store.marks.out_of_step()
    finally:
        await order_b.close()
        await store.close()
    assert released == [a]
    assert (verifier.results[-1].result, verifier.results[-1].cleared) == (IN_STEP, True)
    assert (position, left, steps.mark_of("K")) == ((1, 1), [], None)
