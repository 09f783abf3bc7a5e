"""Custody with overlapping id spaces: BK mints "A<n>" and "M<n>" as Bank does, and had opened an account
"A1" of its own before the shim was put in front of it, so its counter runs one account ahead of Bank's.
Bank's A1 is BK's A2, Bank's A2 is BK's A3, and BK's own A1 pairs with nothing.

A client naming Bank's A2 means Bank's A2, on the primary's path (not BK's A2) and in the copies the shim
asks again for noise; BK gets A3. BK answering with its own A1 where Bank answers with its A1 (in an
answer or in rich error details) is a difference, though the text is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from comparators import Comparison, Difference, DiffKind, Verdict
from shim.app import Shim
from shim.config import load_file
from shim.store import OutOfStep
from shim.testing import CapturingSink, running_shim
from shim.verify import DIFFERS
from tests.helpers import shim_command
from tests.services.custody import DESCRIPTOR_SET
from tests.services.custody._book import Book
from tests.services.custody.client import Client
from tests.services.custody.messages import new, path
from tests.services.custody.server import Served, serve

HERE = Path(__file__).parent


def _mint_as_bank(book: Book, balance: int) -> None:
    """BK's book mints "A<n>", "M<n>" as Bank's does, with an account "A1" of its own opened already."""
    counters = {prefix: itertools.count(1) for prefix in ("A", "M")}

    def mint(bank_prefix: str, bk_prefix: str) -> str:
        return f"{bank_prefix}{next(counters[bank_prefix])}"

    book._mint = mint  # type: ignore[method-assign]
    book.OpenAccount(new("OpenAccountRequest", client_ref="opened-before", owner="someone"))
    book.accounts["A1"].balance = Decimal(balance)


def _read_the_account_before(book: Book) -> None:
    """BK's bug: every account it is named is read as the one opened before it (A3 as A2)."""
    account = book._account
    book._account = lambda account_id: account(f"A{int(account_id[1:]) - 1}")  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def _sides(
    bk_reads_the_account_before: bool = False, balance: int = 10
) -> AsyncIterator[tuple[Served, Served]]:
    """Bank, and BK (fixed) minting as Bank does (its own A1 holding `balance`); optionally with a bug of
    its own (`_read_the_account_before`)."""
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    _mint_as_bank(bk.book, balance)
    if bk_reads_the_account_before:
        _read_the_account_before(bk.book)
    try:
        yield bank, bk
    finally:
        await bk.stop()
        await bank.stop()


@contextlib.asynccontextmanager
async def _shim(
    tmp_path: Path, bank: Served, bk: Served, **settings: Any
) -> AsyncIterator[tuple[Shim, CapturingSink, Client]]:
    (tmp_path / "custody.binpb").write_bytes(DESCRIPTOR_SET)
    shutil.copyfile(HERE / "shim.toml", tmp_path / "shim.toml")
    given = {**load_file(tmp_path / "shim.toml"), "shadow_timeout": 10.0, **settings}
    async with (
        running_shim(bank.address, bk.address, **given) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        yield shim, sink, Client(channel)


def _real(comparisons: list[Comparison]) -> list[str]:
    return [
        f"{c.method} {c.verdict} {c.real_differences} {c.noise}" for c in comparisons if c.real_differences
    ]


async def test_a_client_naming_banks_account_reaches_bank_with_it_and_bk_with_its_pair(
    tmp_path: Path,
) -> None:
    """Bank's A2 is BK's A3, and BK's A2 is Bank's A1. A deposit into A2 reaches Bank as A2 and BK as A3;
    a balance read of A2, asked of Bank twice (noise), reads A2 both times. Every comparison matches,
    with no noise."""
    async with _sides() as (bank, bk), _shim(tmp_path, bank, bk, noise={"reads": 1.0}) as (_, sink, client):
        first = await client.call("OpenAccount", client_ref="r1", owner="One")
        second = await client.call("OpenAccount", client_ref="r2", owner="Two")
        await sink.wait_for(2)
        deposit = await client.call("Deposit", account_id="A2", amount="10.00")
        await sink.wait_for(3)
        balance = await client.call("GetBalance", account_id="A2")
        comparisons = await sink.wait_for(4)
    assert (first.message.account_id, second.message.account_id) == ("A1", "A2")
    assert deposit.message.to_account == "A2"
    assert (balance.message.account_id, balance.message.balance) == ("A2", "10.00")
    assert {a: s.balance for a, s in bank.book.accounts.items()} == {"A1": 0, "A2": 10}
    assert {a: s.balance for a, s in bk.book.accounts.items()} == {"A1": 10, "A2": 0, "A3": 10}
    (read,) = [c for c in comparisons if c.method == path("GetBalance")]
    assert read.exchange.secondary is not None  # Bank was asked again ...
    assert read.exchange.secondary.messages == read.exchange.primary.messages  # ... of the same account
    assert all(c.verdict is Verdict.MATCH for c in comparisons)
    assert _real(comparisons) == []


async def test_bk_naming_its_own_unpaired_account_where_bank_names_its_paired_one_is_a_difference(
    tmp_path: Path,
) -> None:
    """BK reads every account as the one before it. A transfer from Bank's A1 (BK's A2) is refused by both
    for want of funds, BK naming its own A1 in the rich details, Bank its A1: byte-identical refusals, but
    BK's A1 pairs with nothing and Bank's A1 is BK's A2. A deposit into A1 lands in BK's own A1: its answer
    names to_account "A1" as Bank's does. Both are unmapped-id differences."""
    async with (
        _sides(bk_reads_the_account_before=True) as (bank, bk),
        _shim(tmp_path, bank, bk) as (
            _,
            sink,
            client,
        ),
    ):
        await client.call("OpenAccount", client_ref="r1", owner="One")
        await client.call("OpenAccount", client_ref="r2", owner="Two")
        opened = await sink.wait_for(2)
        refused = await client.call("Transfer", from_account="A1", to_account="A2", amount="50.00")
        (transfer,) = await sink.wait_for(1, where=lambda c: c.method == path("Transfer"))
        await client.call("Deposit", account_id="A1", amount="10.00")
        (deposit,) = await sink.wait_for(1, where=lambda c: c.method == path("Deposit"))
    assert [c.verdict for c in opened] == [Verdict.MATCH, Verdict.MATCH]
    assert refused.code == "FAILED_PRECONDITION"
    assert transfer.exchange.shadow is not None
    assert transfer.exchange.shadow.trailing_metadata == transfer.exchange.primary.trailing_metadata
    assert transfer.verdict is Verdict.MISMATCH
    subject = "status.rich_details.details[0].violations[0].subject"
    assert transfer.real_differences == (Difference(subject, DiffKind.UNMAPPED_ID, "A1", "A1"),)
    assert deposit.verdict is Verdict.MISMATCH
    assert deposit.real_differences == (Difference("to_account", DiffKind.UNMAPPED_ID, "A1", "A1"),)


async def _reconcile(tmp_path: Path, bank: Served, bk: Served, *keys: str) -> tuple[int | None, Any]:
    """`shim reconcile` of these keys (a keys file), on the store the shim wrote: (exit status, --json)."""
    (tmp_path / "keys.txt").write_text("\n".join(keys) + "\n", encoding="utf-8")
    code, out, err = await shim_command(
        "reconcile", "--config", tmp_path / "shim.toml", "--store", tmp_path / "shim.db",
        "--bank", bank.address, "--bk", bk.address, "--keys-file", tmp_path / "keys.txt", "--json",
    )  # fmt: skip
    assert code in (0, 1), err
    return code, json.loads(out)


async def test_reconcile_reads_a_key_bank_knows_as_its_own_as_bank_s(tmp_path: Path) -> None:
    """`shim reconcile` reads the key A2 as Bank's A2 (BK's A3), not as BK's A2 (Bank's A1, which BK alone
    credited behind the shim's back): they agree. And with BK reading every account as the one before, its
    balance of A1 names its own A1 where Bank's names Bank's: an unmapped-id difference, the balances
    being equal."""
    async with _sides(balance=0) as (bank, bk):
        async with _shim(tmp_path, bank, bk, store={"url": str(tmp_path / "shim.db")}) as (shim, _, client):
            await client.call("OpenAccount", client_ref="r1", owner="One")
            await client.call("OpenAccount", client_ref="r2", owner="Two")
            await client.call("Deposit", account_id="A2", amount="10.00")
            await shim.drain()
        bk.book.Deposit(new("DepositRequest", account_id="A2", amount="1.00"))  # BK's A2: Bank's A1
        agreeing = await _reconcile(tmp_path, bank, bk, "A2")
        _read_the_account_before(bk.book)
        code, result = await _reconcile(tmp_path, bank, bk, "A1")
    assert agreeing == (0, {**agreeing[1], "keys": 1, "differing": [], "unreadable": []})
    assert code == 1
    (differing,) = result["differing"]
    assert differing["key"] == "A1"
    assert [(d["path"], d["kind"], d["bank"], d["bk"]) for d in differing["differences"]] == [
        ("account_id", "unmapped-id", "A1", "A1")
    ]


async def _checked(shim: Shim, key: str) -> tuple[str, str]:
    """The running shim's first check of `key` (result, detail), once stored."""
    assert shim.store is not None
    checks: dict[str, tuple[float, str, str]] = {}
    deadline = asyncio.get_running_loop().time() + 20
    while key not in checks:
        assert asyncio.get_running_loop().time() < deadline, "no check of the key within 20 s"
        await asyncio.sleep(0.05)
        checks = await shim.store.marks.last_verifications()
    return checks[key][1:]


async def _resync(tmp_path: Path, bank: Served, bk: Served, key: str) -> tuple[int | None, str]:
    code, out, err = await shim_command(
        "resync", "--config", tmp_path / "shim.toml", "--store", tmp_path / "shim.db",
        "--bank", bank.address, "--bk", bk.address, key,
    )  # fmt: skip
    assert code in (0, 1), err
    return code, out


async def test_a_key_marked_with_bk_primary_is_checked_on_the_accounts_bk_s_id_names(tmp_path: Path) -> None:
    """With BK primary, a deposit into BK's A2 (Bank's A1) that Bank fails marks "A2" as BK's id. Its check
    reads Bank's A1 and BK's A2, which differ by the deposit: the mark stays, `shim resync A2` keeps it, and
    `shim reconcile --keys-from store` reads the mark's accounts (Bank's A1) and finds them differing. Once
    Bank's A1 has the deposit too, `shim resync A2` clears it. Before, "A2" was read as Bank's own A2 (and
    BK's A3), both at 0: the mark was cleared at once, and reconcile said both books agree."""
    store = {"url": str(tmp_path / "shim.db")}
    async with _sides(balance=0) as (bank, bk):
        async with _shim(tmp_path, bank, bk, store=store) as (shim, _, client):  # shadow: the pairs
            await client.call("OpenAccount", client_ref="r1", owner="One")
            await client.call("OpenAccount", client_ref="r2", owner="Two")
            await shim.drain()
        async with _shim(tmp_path, bank, bk, store=store, mode="bk-primary") as (shim, sink, client):
            bank.fail("Deposit", grpc.StatusCode.INTERNAL)
            assert (await client.call("Deposit", account_id="A2", amount="10.00")).ok  # BK's A2: Bank's A1
            await sink.wait_for(1, where=lambda c: c.method == path("Deposit"))
            result, detail = await _checked(shim, "A2")
            assert shim.store is not None
            await shim.store.flush()
            marks = await shim.store.marks.out_of_step()
        bank.fails.clear()
        resynced = await _resync(tmp_path, bank, bk, "A2")
        code, out, err = await shim_command(
            "reconcile", "--config", tmp_path / "shim.toml", "--store", tmp_path / "shim.db",
            "--bank", bank.address, "--bk", bk.address, "--keys-from", "store", "--json",
        )  # fmt: skip
        bank.book.Deposit(new("DepositRequest", account_id="A1", amount="10.00"))  # the deposit Bank missed
        cleared = await _resync(tmp_path, bank, bk, "A2")
    assert (result, json.loads(detail)[0]["path"]) == (DIFFERS, "balance"), detail
    assert [(m.key, m.side) for m in marks] == [("A2", "bk")]
    assert resynced[0] == 1, resynced
    assert "A2: still out of step, differs" in resynced[1], resynced
    assert code == 1, (out, err)
    (differing,) = json.loads(out)["differing"]
    assert (differing["key"], differing["side"], differing["out_of_step"] != "") == ("A1", "bank", True)
    assert cleared == (0, "A2: verified in step: in step again\n")


async def test_reconcile_lists_an_account_only_bk_has_apart_from_bank_s_account_of_the_same_text(
    tmp_path: Path,
) -> None:
    """BK's own A1 (holding 10) pairs with nothing, and Bank's A1 is BK's A2. BK's listing names A1, A2
    and A3: A2 and A3 are Bank's A1 and A2, and A1 is an account only BK has, reported as BK's id, not
    taken for Bank's A1. Before, it was kept as the text "A1", merged with Bank's A1, and reconcile said
    both books agree (exit 0)."""
    async with _sides(balance=10) as (bank, bk):
        async with _shim(tmp_path, bank, bk, store={"url": str(tmp_path / "shim.db")}) as (shim, _, client):
            await client.call("OpenAccount", client_ref="r1", owner="One")
            await client.call("OpenAccount", client_ref="r2", owner="Two")
            await shim.drain()
        code, out, err = await shim_command(
            "reconcile", "--config", tmp_path / "shim.toml", "--store", tmp_path / "shim.db",
            "--bank", bank.address, "--bk", bk.address, "--json",
        )  # fmt: skip
        _, shown, _ = await shim_command(
            "reconcile", "--config", tmp_path / "shim.toml", "--store", tmp_path / "shim.db",
            "--bank", bank.address, "--bk", bk.address,
        )  # fmt: skip
    assert code == 1, (out, err)
    result = json.loads(out)
    assert (result["keys"], result["unreadable"]) == (3, [])
    (only,) = result["differing"]
    assert (only["key"], only["side"]) == ("A1", "bk")
    assert [(d["path"], d["kind"], d["bank"], d["bk"]) for d in only["differences"]] == [
        ("accounts[account_id=A1]", "added", None, "A1")
    ]
    assert "A1 (BK's id)" in shown, shown


async def test_a_mark_that_does_not_say_whose_id_it_is_is_checked_as_both(tmp_path: Path) -> None:
    """A mark from before marks said whose id their key is (side ""), on A2, which both sides have: Bank's
    A2 (BK's A3) agrees, BK's A2 (Bank's A1) does not. `shim resync A2` reads both and keeps the mark,
    naming the accounts that differ; once they agree it clears it. Before, it read Bank's A2 alone and
    cleared the mark."""
    async with _sides(balance=0) as (bank, bk):
        async with _shim(tmp_path, bank, bk, store={"url": str(tmp_path / "shim.db")}) as (shim, _, client):
            await client.call("OpenAccount", client_ref="r1", owner="One")
            await client.call("OpenAccount", client_ref="r2", owner="Two")
            await shim.drain()
            assert shim.store is not None
            shim.store.marks.put([OutOfStep("A2", time.time(), path("Deposit"), "an older shim's mark")])
        bk.book.Deposit(new("DepositRequest", account_id="A2", amount="1.00"))  # BK's A2: Bank's A1
        kept = await _resync(tmp_path, bank, bk, "A2")
        bank.book.Deposit(new("DepositRequest", account_id="A1", amount="1.00"))
        cleared = await _resync(tmp_path, bank, bk, "A2")
    assert kept[0] == 1, kept
    assert "A2: still out of step, differs: GetBalance (as BK's A2, Bank's A1) balance" in kept[1], kept
    assert cleared == (0, "A2: verified in step: in step again\n")
