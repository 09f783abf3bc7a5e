"""`shim reconcile`: the whole book read from both sides, with the sample's [reconcile] table."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

import sample_ledger
from sample_ledger._money import to_money
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger._proto.bk.v1 import journal_pb2 as jpb
from sample_ledger._proto.bk.v1 import journal_pb2_grpc as jpb_grpc
from sample_ledger.server import RunningLedger, serve
from shim.store import OutOfStep, Store

CONFIG = Path(sample_ledger.__file__).parent / "shim.toml"
ACCOUNTS = 105  # more than one page of 100


async def _reconcile(*args: str | Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shim", "reconcile", "--config", str(CONFIG), *map(str, args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _same_book(stubs: list[Any]) -> None:
    """The same accounts, cash and trades on every ledger (whole shares in pairs: fees are exact)."""
    for n in range(ACCOUNTS):
        account = f"R{n:03d}"
        for stub in stubs:
            await stub.OpenAccount(pb.OpenAccountRequest(account_id=account, initial_deposit="1000"))
            if n % 10 == 0:
                order = pb.PostTradeRequest(
                    account_id=account, symbol="KO", side=pb.SIDE_BUY, quantity="20", price="61.2"
                )
                await stub.PostTrade(order)


@pytest.fixture
async def books() -> AsyncIterator[tuple[RunningLedger, RunningLedger, Any, Any]]:
    """A sample Bank and BK holding the same book, and a stub of each."""
    bank, bk = await serve("bank"), await serve("bk")
    async with aio.insecure_channel(bank.address) as to_bank, aio.insecure_channel(bk.address) as to_bk:
        stubs = [pb_grpc.LedgerStub(to_bank), pb_grpc.LedgerStub(to_bk)]  # type: ignore[no-untyped-call]
        await _same_book(stubs)
        try:
            yield bank, bk, stubs[0], stubs[1]
        finally:
            await bk.stop(None)
            await bank.stop(None)


async def test_equal_books_reconcile_and_exit_0(
    books: tuple[RunningLedger, RunningLedger, Any, Any], tmp_path: Path
) -> None:
    """Every account on both sides (paged through, each with its own page tokens), its balance and
    positions equal within the sample's rules: exit 0."""
    bank, bk, _, _ = books
    code, out, err = await _reconcile(
        "--bank", bank.address, "--bk", bk.address, "--store", tmp_path / "none.db"
    )
    assert code == 0, out + err
    assert f"Both sides agree: {ACCOUNTS} keys (bank.v1.Ledger/ListAccounts), 2 reads each" in " ".join(
        out.split()
    )
    assert not (tmp_path / "none.db").exists()  # no store was made where there was none


async def test_a_planted_difference_is_reported_and_exits_1(
    books: tuple[RunningLedger, RunningLedger, Any, Any], tmp_path: Path
) -> None:
    """A deposit BK alone got, and an account only Bank has: exactly those two keys are reported,
    the first with its cash, the second as listed by Bank only, and the key already known to be out
    of step says so."""
    bank, bk, bank_stub, bk_stub = books
    await bk_stub.Deposit(pb.DepositRequest(account_id="R007", amount="5"))
    await bank_stub.OpenAccount(pb.OpenAccountRequest(account_id="R999"))
    store = Store.open(str(tmp_path / "shim.db"))
    await store.start()
    store.marks.put([OutOfStep("R007", 1.0, "/bank.v1.Ledger/Deposit", "BK applied it, Bank did not")])
    await store.close()
    code, out, err = await _reconcile(
        "--bank", bank.address, "--bk", bk.address, "--store", tmp_path / "shim.db", "--json"
    )
    assert code == 1, err
    report = json.loads(out)
    assert report["keys"] == ACCOUNTS + 1
    differing = {d["key"]: d for d in report["differing"]}
    assert set(differing) == {"R007", "R999"}
    cash = [(d["method"], d["path"], d["bank"], d["bk"]) for d in differing["R007"]["differences"]]
    assert cash == [("bank.v1.Ledger/GetBalance", "cash", "1000.00", "1005")]
    assert differing["R007"]["out_of_step"] == "BK applied it, Bank did not"
    (listed,) = differing["R999"]["differences"]
    assert (listed["path"], listed["kind"], listed["bank"], listed["bk"]) == (
        "accounts[account_id=R999]", "removed", "R999", None,
    )  # fmt: skip


async def test_reconcile_reads_a_native_bk_through_the_adapters(tmp_path: Path) -> None:
    """BK speaking only its own interface: the same sweep through the sample's adapters finds the one
    account whose positions differ."""
    bank, native = await serve("bank"), await serve("bk-native")
    try:
        async with (
            aio.insecure_channel(bank.address) as to_bank,
            aio.insecure_channel(native.address) as to_bk,
        ):
            bank_stub = pb_grpc.LedgerStub(to_bank)  # type: ignore[no-untyped-call]
            journal = jpb_grpc.JournalStub(to_bk)  # type: ignore[no-untyped-call]
            for account in ("N1", "N2"):
                await bank_stub.OpenAccount(pb.OpenAccountRequest(account_id=account, initial_deposit="100"))
                opening = to_money(Decimal(100), "USD")
                await journal.RegisterClient(
                    jpb.RegisterClientRequest(number=account, currency="USD", opening_cash=opening)
                )
            await bank_stub.PostTrade(
                pb.PostTradeRequest(account_id="N2", symbol="KO", side=pb.SIDE_BUY, quantity="2", price="1")
            )
        code, out, err = await _reconcile(
            "--bank", bank.address, "--bk", native.address, "--adapters", "sample_ledger.adapter",
            "--store", tmp_path / "none.db", "--json",
        )  # fmt: skip
    finally:
        await native.stop(None)
        await bank.stop(None)
    assert code == 1, err
    report = json.loads(out)
    assert [d["key"] for d in report["differing"]] == ["N2"]
    paths = {d["path"] for d in report["differing"][0]["differences"]}
    assert paths == {"cash", "unsettled_cash", "positions"}  # Bank booked a trade BK never saw


async def test_an_unreachable_side_is_exit_2_with_the_reason(tmp_path: Path) -> None:
    """A side that cannot be listed: no verdict, exit 2, and which side and why."""
    bank = await serve("bank")
    try:
        code, _, err = await _reconcile(
            "--bank", bank.address, "--bk", "127.0.0.1:1", "--store", tmp_path / "none.db", "--timeout", "2s"
        )
    finally:
        await bank.stop(None)
    assert code == 2
    assert "listing bank.v1.Ledger/ListAccounts on BK failed: UNAVAILABLE" in err
