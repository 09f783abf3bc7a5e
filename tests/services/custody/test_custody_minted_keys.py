"""A write with no key in its request that mints the key of what it makes (custody's OpenAccount mints
the account id, the account's own key with `owner_key`): when BK misses it, the minted key goes out of
step. Marking nothing would make every later listing's missing account a real difference, blamed on
BK for a write it never got."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from comparators import Verdict
from shim.config import load_file
from shim.testing import running_shim
from tests.services.custody import DESCRIPTOR_SET
from tests.services.custody.client import Client
from tests.services.custody.server import serve

HERE = Path(__file__).parent


def _settings(tmp_path: Path, *, owned: bool) -> dict[str, Any]:
    (tmp_path / "custody.binpb").write_bytes(DESCRIPTOR_SET)
    shutil.copyfile(HERE / "shim.toml", tmp_path / "shim.toml")
    settings = load_file(tmp_path / "shim.toml")
    if owned:  # an account id names the account, whose key it is
        settings["ids"] = tuple(
            replace(k, owner_key=("custody.v1.Account.account_id",)) if k.name == "account" else k
            for k in settings["ids"]
        )
    return settings


async def _open_while_bk_fails(tmp_path: Path, owned: bool) -> tuple[dict[str, Any], Any, Any, str]:
    """(the keys out of step, the listing's comparison, the counters, Bank's new account id)"""
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        async with (
            running_shim(bank.address, bk.address, **_settings(tmp_path, owned=owned)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = Client(channel)
            assert (await client.call("OpenAccount", client_ref="r1", owner="Owner r1")).ok
            await shim.drain()
            bk.fail("OpenAccount", grpc.StatusCode.INTERNAL)
            missed = await client.call("OpenAccount", client_ref="r2", owner="Owner r2")
            assert missed.ok, "Bank's answer"
            await sink.wait_for(2, where=lambda c: c.exchange.method.endswith("/OpenAccount"))
            assert (await client.call("ListAccounts", page_size=10)).ok
            (listing,) = await sink.wait_for(1, where=lambda c: c.exchange.method.endswith("/ListAccounts"))
            assert shim.steps is not None
            return shim.steps.keys, listing, shim.counters, missed.message.account_id
    finally:
        await bank.stop()
        await bk.stop()


async def test_a_missed_write_that_minted_its_key_marks_that_key(tmp_path: Path) -> None:
    marks, listing, counters, account = await _open_while_bk_fails(tmp_path, owned=True)
    assert list(marks) == [account]
    assert marks[account].method.endswith("/OpenAccount")
    assert marks[account].reason.startswith("Bank applied it (OK), BK answered INTERNAL")
    assert counters.get("unkeyed_writes_out_of_step", "/custody.v1.Custody/OpenAccount") == 0
    assert listing.verdict is Verdict.TAINTED, "BK's listing lacks the account it never got"


async def test_without_owners_a_missed_unkeyed_write_marks_nothing(tmp_path: Path) -> None:
    """Without an owner for the minted id, its effect cannot be placed: it marks nothing, is counted, and
    what it changed is a real difference until the books are reconciled."""
    marks, listing, counters, _ = await _open_while_bk_fails(tmp_path, owned=False)
    assert marks == {}
    assert counters.get("unkeyed_writes_out_of_step", "/custody.v1.Custody/OpenAccount") == 1
    assert listing.verdict is Verdict.MISMATCH


async def test_a_new_accounts_own_difference_is_real_while_another_key_is_out_of_step(tmp_path: Path) -> None:
    """An account opened (both sides answer OK) while another account is out of step: BK's answer differs
    (it shouts the owner's name). The new account was on neither book before, so no missed write can
    explain its answer: the difference is a real mismatch, not `tainted` by the other key's mark. A
    refusal that depends on the book (a client_ref taken) stays tainted while any key is out of step."""
    bank, bk = await serve("bank"), await serve("bk", bugs={"owner-shouted"})
    try:
        async with (
            running_shim(bank.address, bk.address, **_settings(tmp_path, owned=True)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = Client(channel)
            bk.fail("OpenAccount", grpc.StatusCode.INTERNAL)
            missed = await client.call("OpenAccount", client_ref="r1", owner="Owner r1")
            await sink.wait_for(1, where=lambda c: c.exchange.method.endswith("/OpenAccount"))
            assert shim.steps is not None
            assert list(shim.steps.keys) == [missed.message.account_id]
            bk.fails.clear()
            assert (await client.call("OpenAccount", client_ref="r2", owner="Owner r2")).ok
            assert not (await client.call("OpenAccount", client_ref="r1", owner="Owner r1 again")).ok
            _, opened, taken = await sink.wait_for(
                3, where=lambda c: c.exchange.method.endswith("/OpenAccount")
            )
    finally:
        await bank.stop()
        await bk.stop()
    assert opened.verdict is Verdict.MISMATCH, opened.reason
    assert any("owner" in d.path for d in opened.differences), opened.differences
    assert taken.verdict is Verdict.TAINTED, "Bank refused r1 (taken); BK, which missed r1, opened it"
