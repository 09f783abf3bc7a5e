"""`shim reconcile`: the whole book read from both sides, with the sample's [reconcile] table."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

import sample_ledger
from sample_ledger._money import to_money
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger._proto.bk.v1 import journal_pb2 as jpb
from sample_ledger._proto.bk.v1 import journal_pb2_grpc as jpb_grpc
from sample_ledger.server import RunningLedger, make_servicer, serve
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
    code, out, err = await _reconcile("--bank", bank.address, "--bk", bk.address, "--store", ":memory:")
    assert code == 0, out + err
    assert f"Both sides agree: {ACCOUNTS} keys (bank.v1.Ledger/ListAccounts), 2 reads each" in " ".join(
        out.split()
    )


async def test_a_store_named_that_is_not_there_is_an_error_not_a_sweep_without_it(
    books: tuple[RunningLedger, RunningLedger, Any, Any], tmp_path: Path
) -> None:
    """`--store` naming a path with no store (mistyped) would sweep without the id map and the keys out of
    step, every key BK minted then read as on one side only: it is an error, naming the path, and no
    store is made there. `--store :memory:` sweeps without a store."""
    bank, bk, _, _ = books
    missing = tmp_path / "shim.bd"
    code, out, err = await _reconcile("--bank", bank.address, "--bk", bk.address, "--store", missing)
    assert code == 2, out + err
    assert f"no store at {missing}: nothing was recorded there (check --store)" in err
    assert not missing.exists()


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
            "--store", ":memory:", "--json",
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
            "--bank", bank.address, "--bk", "127.0.0.1:1", "--store", ":memory:", "--timeout", "2s"
        )
    finally:
        await bank.stop(None)
    assert code == 2
    [line] = err.splitlines()  # one line, as every command's error: no stray line of a progress bar
    assert line.startswith("shim: error: listing bank.v1.Ledger/ListAccounts on BK failed: UNAVAILABLE"), err


Patch = Callable[[Any], None]


@asynccontextmanager
async def _ledger(kind: str, patch: Patch | None = None) -> AsyncIterator[str]:
    """A sample ledger whose servicer `patch` changes before it serves: its address."""
    servicer = make_servicer(kind, fixed=True)
    if patch is not None:
        patch(servicer)
    server = aio.server()
    pb_grpc.add_LedgerServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


def _reads_fail(code: grpc.StatusCode, details: str) -> Patch:
    """The state reads answer `code`, the listing still works."""

    def patch(servicer: Any) -> None:
        async def fail(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(code, details)

        servicer.GetBalance = servicer.GetPortfolio = fail

    return patch


def _reads_hang(servicer: Any) -> None:
    """The state reads never answer (until the server stops)."""

    async def hang(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        await asyncio.Event().wait()

    servicer.GetBalance = servicer.GetPortfolio = hang


async def _open(address: str, accounts: Sequence[str], deposit: str = "") -> None:
    async with aio.insecure_channel(address) as channel:
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        for account in accounts:
            await stub.OpenAccount(pb.OpenAccountRequest(account_id=account, initial_deposit="1000"))
        if deposit:  # a deposit only this side got, on the first account
            await stub.Deposit(pb.DepositRequest(account_id=accounts[0], amount=deposit))


@pytest.mark.parametrize(
    ("bank_patch", "bk_patch", "more", "reason"),
    [
        (_reads_fail(grpc.StatusCode.UNAVAILABLE, "bank overloaded"), None, (), "on Bank: UNAVAILABLE"),
        (
            _reads_fail(grpc.StatusCode.INTERNAL, "db shard 3 down"),
            _reads_fail(grpc.StatusCode.INTERNAL, "journal replica lagging"),
            (),
            "on Bank: INTERNAL db shard 3 down",
        ),
        (_reads_hang, _reads_hang, ("--timeout", "500ms"), "DEADLINE_EXCEEDED"),
    ],
    ids=["bank-unavailable", "both-internal", "both-deadline"],
)
async def test_keys_whose_state_cannot_be_read_are_reported_and_never_agree(
    bank_patch: Patch | None, bk_patch: Patch | None, more: tuple[str, ...], reason: str, tmp_path: Path
) -> None:
    """State reads that fail (Bank UNAVAILABLE, both INTERNAL in different words under a rule ignoring
    the wording, both past --timeout) show nothing of the keys, whatever BK holds: every key is reported
    unreadable with why, in JSON and on the terminal, and the exit status is 1, never 0."""
    async with _ledger("bank", bank_patch) as bank, _ledger("bk", bk_patch) as bk:
        await _open(bank, ["A1", "A2"])
        await _open(bk, ["A1", "A2"], deposit="500")
        sides = ("--bank", bank, "--bk", bk, "--store", ":memory:", *more)
        code, out, err = await _reconcile(*sides, "--json")
        assert code == 1, out + err
        report = json.loads(out)
        assert [r["key"] for r in report["unreadable"]] == ["A1", "A2"]
        assert all(reason in r["reason"] for r in report["unreadable"]), report["unreadable"]
        code, out, err = await _reconcile(*sides)
    assert code == 1, out + err
    text = " ".join(out.split())
    assert "Both sides agree" not in text
    assert "2 keys could not be read" in text
    assert "A1" in text
    assert "A2" in text


async def test_keys_neither_side_has_are_reported_unreadable(tmp_path: Path) -> None:
    """A keys file naming keys neither side holds (both answer NOT_FOUND): those keys are unreadable, the
    one both hold agrees, exit 1."""
    keys = tmp_path / "keys.txt"
    keys.write_text("A1\nZZ-typo-1\nZZ-typo-2\n", encoding="utf-8")
    async with _ledger("bank") as bank, _ledger("bk") as bk:
        await _open(bank, ["A1"])
        await _open(bk, ["A1"])
        code, out, err = await _reconcile(
            "--bank", bank, "--bk", bk, "--store", ":memory:", "--keys-file", keys, "--json"
        )
    assert code == 1, out + err
    report = json.loads(out)
    assert (report["keys"], report["differing"]) == (3, [])
    unreadable = {r["key"]: r["reason"] for r in report["unreadable"]}
    assert set(unreadable) == {"ZZ-typo-1", "ZZ-typo-2"}
    assert "on Bank: NOT_FOUND" in unreadable["ZZ-typo-1"]


async def test_two_empty_listings_are_an_error_not_an_agreement(tmp_path: Path) -> None:
    """Neither side lists any key: a sweep of nothing would say both sides agree, so it is refused with
    one line saying so, exit 2."""
    async with _ledger("bank") as bank, _ledger("bk") as bk:
        code, out, err = await _reconcile("--bank", bank, "--bk", bk, "--store", ":memory:")
    assert (code, out) == (2, ""), err
    assert err.strip() == (
        "shim: error: neither Bank nor BK lists any key (bank.v1.Ledger/ListAccounts): "
        "a sweep of nothing would say both sides agree"
    )


def _listing_repeats_its_token(servicer: Any) -> None:
    async def listing(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
        return pb.ListAccountsResponse(accounts=[pb.Account(account_id="A1")], next_page_token="again")

    servicer.ListAccounts = listing


async def test_a_listing_whose_page_token_comes_back_is_exit_2(tmp_path: Path) -> None:
    """BK's listing answers the same next page token every time: the sweep stops, exit 2, naming it."""
    async with _ledger("bank") as bank, _ledger("bk", _listing_repeats_its_token) as bk:
        await _open(bank, ["A1"])
        reconciling = _reconcile("--bank", bank, "--bk", bk, "--store", ":memory:")
        code, out, err = await asyncio.wait_for(reconciling, 60)
    assert (code, out) == (2, ""), err
    assert "listing bank.v1.Ledger/ListAccounts on BK: the page token 'again' came back a second time" in err
