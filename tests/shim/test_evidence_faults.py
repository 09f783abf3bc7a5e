"""Inputs that used to fool the evidence: each now leaves a record that proves what it should, no more."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

import sample_ledger
from comparators import Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.config import load_file, merged
from shim.routing import Router
from shim.testing import running_shim
from tests.helpers import PLANES, shim_command, until
from tests.processes import shim_process
from tests.services.venue import REGISTRY as VENUE
from tests.services.venue.client import VenueClient
from tests.services.venue.messages import BUY, new
from tests.services.venue.server import serve as serve_venue
from tests.shim import _payments as pay
from tests.tcp_relay import TcpRelay

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = Path(sample_ledger.__file__).parent
DEPOSIT, GET_BALANCE = "/bank.v1.Ledger/Deposit", "/bank.v1.Ledger/GetBalance"
OPEN = "/bank.v1.Ledger/OpenAccount"


def _sample_settings(**overrides: Any) -> dict[str, Any]:
    settings = load_file(SAMPLE / "shim.toml")
    for name in ("bank", "bk", "mode"):
        settings.pop(name)
    return merged(settings, {"noise": {"reads": 0.0}}, overrides)


@contextlib.contextmanager
def _down_port() -> Iterator[str]:
    """An address that refuses connections: a port held bound and never listened on (nobody else gets it)."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{holder.getsockname()[1]}"
    finally:
        holder.close()


async def test_one_garbage_write_marks_no_key_and_the_gate_still_fails(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """A request that does not decode names no key: it marks nothing (no "every key" mark), so BK's planted
    wrong code on a later read is a real mismatch, and `shim gate` fails. The garbage write itself, that
    both sides failed alike, proves nothing: it leaves Deposit not proven. Bank answered neither (the read
    it refused with NOT_FOUND): neither method is proven answered."""
    bank, bk = ledgers
    store = tmp_path / "shim.db"
    async with (
        running_shim(bank.address, bk.address, **_sample_settings(store={"url": str(store)})) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        with pytest.raises(aio.AioRpcError) as garbage:
            await channel.unary_unary(DEPOSIT)(b"\xff\xff\xff\xff")
        stub: Any = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="G1", initial_deposit="10"))
        with pytest.raises(aio.AioRpcError):
            await stub.GetBalance(pb.GetBalanceRequest(account_id="NOBODY"))  # BK's planted wrong code
        await shim.drain()
        assert shim.steps is not None
        marks = dict(shim.steps.keys)
        assert shim.store is not None
        await shim.store.flush()
        gate = await shim_command("gate", "--store", store, "--min-compared", "1")
    assert garbage.value.code() is not grpc.StatusCode.OK
    assert marks == {}
    read = next(c for c in sink.comparisons if c.method == GET_BALANCE)
    assert read.verdict is Verdict.MISMATCH
    assert gate[0] == 1, gate[1] + gate[2]
    failed = [line.split() for line in gate[1].splitlines() if line.startswith("FAIL")]
    assert [words[1:5] for words in failed] == [
        ["bank.v1.Ledger/Deposit", "compared", "not", "proven:"],
        ["bank.v1.Ledger/Deposit", "answered", "not", "proven:"],
        ["bank.v1.Ledger/Deposit", "unproven", "not", "proven:"],
        ["bank.v1.Ledger/GetBalance", "answered", "not", "proven:"],
        ["bank.v1.Ledger/GetBalance", "real", "mismatch", "rate"],
    ]
    assert (
        "0 of 1 clean comparisons answered by Bank; the rest, by status (Bank → BK): NOT_FOUND → " in gate[1]
    )
    deposit = next(c for c in sink.comparisons if c.method == DEPOSIT)
    assert deposit.verdict is Verdict.SKIPPED
    assert deposit.reason == f"both sides failed ({garbage.value.code().name}): proves nothing"


async def test_a_write_bank_never_received_is_not_sent_to_bk(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """With Bank down, a write gets UNAVAILABLE (as without the shim), BK is not sent it, and it is recorded
    as skipped because the primary never received it: neither a mismatch of BK's nor a key out of step."""
    _, bk = ledgers
    with _down_port() as bank:
        async with (
            running_shim(bank, bk.address, **_sample_settings()) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            stub: Any = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            with pytest.raises(aio.AioRpcError) as refused:
                await stub.OpenAccount(
                    pb.OpenAccountRequest(account_id="D1", initial_deposit="10"), timeout=5
                )
            (comparison,) = await sink.wait_for(1)
            await shim.drain()
            assert shim.steps is not None
            marks = dict(shim.steps.keys)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "D1" not in bk.servicer.book.accounts
    assert comparison.verdict is Verdict.SKIPPED
    assert comparison.exchange.shadow is None
    assert (
        comparison.reason
        == "not mirrored: the primary never received the write (UNAVAILABLE before any answer)"
    )
    assert comparison.exchange.routing_key == "D1"
    assert marks == {}


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_write_bank_applied_before_its_answer_was_lost_reaches_bk_and_its_key_goes_out_of_step(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path, dataplane: str
) -> None:
    """Bank applies a deposit, and its connection is reset before the answer reaches the shim (a Bank
    process that dies as it answers, a network cut): the client gets UNAVAILABLE, as it would without the
    shim, but Bank received the write, and may have applied it (here it did). BK is sent it too, its account
    goes out of step (and is checked), and the next read matches. Before, such a write was taken as never
    received: not sent to BK, no key marked, Bank's balance 15 against BK's 10, and the next read a real
    mismatch blamed on BK."""
    bank, bk = ledgers
    config = tmp_path / "shim.toml"
    config.write_text(
        (SAMPLE / "shim.toml")
        .read_text()
        .replace('"bank.binpb"', json.dumps(str(SAMPLE / "bank.binpb")))
        .replace('"rules.toml"', json.dumps(str(SAMPLE / "rules.toml")))
        + "\n[shadow]\nshed_lag = 0\n[envoy]\ncomparison_nice = 0\n",
        encoding="utf-8",
    )
    db = tmp_path / "shim.db"
    async with TcpRelay(bank.address) as relay:
        args = ["--listen", "127.0.0.1:0", "--bank", relay.address, "--bk", bk.address, "--mode", "shadow"]
        args += ["--store", str(db), "--config", str(config), "--dataplane", dataplane]
        async with shim_process(*args) as shim, aio.insecure_channel(shim.ready["listen"]) as channel:
            stub: Any = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="CUT1", initial_deposit="10"), timeout=10)
            await until(lambda: "CUT1" in bk.servicer.book.accounts, "the opening mirrored")
            relay.lose_answer(b"CUT1")
            with pytest.raises(aio.AioRpcError) as lost:
                await stub.Deposit(pb.DepositRequest(account_id="CUT1", amount="5"), timeout=10)
            assert relay.lost.is_set()
            assert bank.servicer.book.accounts["CUT1"].cash == Decimal("15")  # Bank applied it
            bk_book = bk.servicer.book
            await until(lambda: bk_book.cash(bk_book.accounts["CUT1"])[0] == 15, "the deposit mirrored")

            def marked() -> list[dict[str, Any]]:
                return [
                    e for e in shim.events() if e.get("event") == "key out of step" and e.get("key") == "CUT1"
                ]

            await until(marked, "the account marked out of step")
            await stub.GetBalance(pb.GetBalanceRequest(account_id="CUT1"), timeout=10)

            def verdicts() -> list[tuple[str, str, str]]:
                with contextlib.closing(sqlite3.connect(db)) as conn:
                    rows = conn.execute(
                        "SELECT method, verdict, reason FROM comparisons ORDER BY at"
                    ).fetchall()
                return [(str(m), str(v), str(r)) for m, v, r in rows]

            await until(lambda: len(verdicts()) == 3, "the three calls stored")
    assert lost.value.code() is grpc.StatusCode.UNAVAILABLE
    (mark,) = marked()[:1]
    assert "UNAVAILABLE" in mark["reason"], mark
    opened, deposit, read = verdicts()
    assert (opened[:2], read[:2]) == ((OPEN, "match"), (GET_BALANCE, "match"))
    assert deposit[:2] == (DEPOSIT, "skipped")
    assert "the primary's connection was lost once it had the call" in deposit[2], deposit


async def test_an_unkeyed_write_that_times_out_on_bk_marks_nothing() -> None:
    """A reverse naming an id nobody minted has no key; when BK does not answer it in time, no key (and no
    "every key") goes out of step: it is counted as an unkeyed write out of step instead."""
    bank, bk = await pay.serve("bank"), await pay.serve("bk")
    gate = bk.payments.hold("Reverse")
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                registry=pay.REGISTRY,
                ids=pay.IDS,
                methods=pay.METHODS,
                shadow_timeout=0.3,
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            with pytest.raises(aio.AioRpcError) as refused:
                await pay.Client(channel).reverse("M999")
            (comparison,) = await sink.wait_for(1)
            await shim.drain()
            assert shim.steps is not None
            marks = dict(shim.steps.keys)
            unkeyed = shim.counters.get("unkeyed_writes_out_of_step", pay.REVERSE)
    finally:
        gate.release.set()
        await bank.stop()
        await bk.stop()
    assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    assert comparison.verdict is Verdict.SHADOW_ERROR
    assert marks == {}
    assert unkeyed == 1


async def test_calls_the_breaker_skips_keep_their_correlation_id_and_key(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """A call not mirrored because the breaker is open is stored with the client's request id and its key, so
    it can be traced to the client's call."""
    bank, _ = ledgers
    with _down_port() as bk:
        settings = _sample_settings(
            shadow={"breaker_failures": 1, "breaker_open_for": 3600.0},
        )
        async with (
            running_shim(bank.address, bk, **settings) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            stub: Any = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            for n, account in enumerate(("B1", "B2")):
                await stub.OpenAccount(
                    pb.OpenAccountRequest(account_id=account), metadata=(("x-request-id", f"req-{n}"),)
                )
                await shim.drain()
            comparisons = await sink.wait_for(2)
    skipped = comparisons[1]
    assert skipped.verdict is Verdict.SKIPPED
    assert "breaker is open" in skipped.reason
    assert (skipped.exchange.correlation_id, skipped.exchange.routing_key) == ("req-1", "B2")


async def test_reads_sampling_leaves_out_are_not_recorded_skipped_while_the_breaker_is_open(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """With `sampling.reads` below 1, a read the breaker keeps from BK is recorded `skipped` only when
    sampling would have mirrored it (by its keys here, as for a mirrored read); the others are counted as
    not sampled, as they would have been with BK up. Every write is recorded, sampled or not."""
    bank, _ = ledgers
    router = Router(None, {}, read_rate=0.5, by_key=True)
    accounts = [f"S{n}" for n in range(40)]
    sampled = {a for a in accounts if router.sampled((a,))}
    assert 0 < len(sampled) < len(accounts)
    with _down_port() as bk:
        settings = _sample_settings(
            sampling={"reads": 0.5, "by_key": True},
            shadow={"breaker_failures": 1, "breaker_open_for": 3600.0},
        )
        async with (
            running_shim(bank.address, bk, **settings) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            stub: Any = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            for account in accounts:
                await stub.OpenAccount(pb.OpenAccountRequest(account_id=account, initial_deposit="10"))
            for account in accounts:
                await stub.GetBalance(pb.GetBalanceRequest(account_id=account))
            await shim.drain()
            await sink.wait_for(len(accounts) + len(sampled))
            not_sampled = shim.counters.get("reads_not_sampled", GET_BALANCE)
            comparisons = sink.comparisons
    reads = [c for c in comparisons if c.method == GET_BALANCE]
    assert {c.verdict for c in reads} == {Verdict.SKIPPED}
    assert sorted(c.exchange.routing_key for c in reads) == sorted(sampled)
    assert not_sampled == len(accounts) - len(sampled)
    assert len(comparisons) - len(reads) == len(accounts), "every write recorded"


async def test_a_session_left_open_holds_no_key_while_unkeyed_calls_and_other_keys_go_on(
    tmp_path: Path,
) -> None:
    """A bidi session idle after its first order, an unkeyed cancel of an id nobody minted, an unkeyed
    listing, and writes and reads on another account: all are mirrored and compared while the session
    stays open, none waits for it into a shadow timeout."""
    bank, bk = await serve_venue("bank"), await serve_venue("bk")
    settings = load_file(ROOT / "tests" / "services" / "venue" / "shim.toml")
    try:
        async with (
            running_shim(bank.address, bk.address, shadow_timeout=1.0, **_venue(settings)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = VenueClient(channel)
            for account in ("A", "B"):
                await client.open_account(account, "100000")
            async with client.session() as session:
                order = new("NewOrder", symbol="KO", side=BUY, quantity=150, limit_price="1")
                await session.send(new("TradeRequest", account="A", new=order))
                with pytest.raises(aio.AioRpcError):
                    await client.cancel_order("O424242")
                await client.list_open_orders("KO")
                await client.submit_batch([new("NewOrderRequest", account="B", order=order)] * 2)
                await client.get_account("B")
                # while the session is still open: none of these waits for it
                others = await sink.wait_for(6, within=5.0, where=lambda c: not c.method.endswith("/Trade"))
            trade = await sink.wait_for(1, where=lambda c: c.method.endswith("/Trade"))
    finally:
        await bank.stop()
        await bk.stop()
    assert sorted(c.method.rpartition("/")[2] for c in others) == [
        "CancelOrder",
        "GetAccount",
        "ListOpenOrders",
        "OpenAccount",
        "OpenAccount",
        "SubmitBatch",
    ]
    assert [c.verdict for c in [*others, *trade]] == [Verdict.MATCH] * 7


def _venue(settings: dict[str, Any]) -> dict[str, Any]:
    settings = dict(settings)
    for name in ("bank", "bk", "mode"):
        settings.pop(name, None)
    return {**settings, "registry": VENUE}


async def test_calls_both_sides_fail_alike_prove_nothing_and_the_gate_fails(tmp_path: Path) -> None:
    """Bank and BK both failing a write with INTERNAL, and a read with DATA_LOSS, agree on nothing: the
    client gets Bank's failure as without the shim, each call is stored skipped (never a match), the
    write's key is out of step (whether either side applied it is unknown), and `shim gate` fails both
    methods as not proven: none compared, none answered, all unproven."""
    store = tmp_path / "shim.db"
    bank, bk = await pay.serve("bank"), await pay.serve("bk")
    for side in (bank, bk):
        side.payments.fail("Move", grpc.StatusCode.INTERNAL)
        side.payments.fail("ListMovements", grpc.StatusCode.DATA_LOSS)
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                registry=pay.REGISTRY,
                ids=pay.IDS,
                methods=pay.METHODS,
                store={"url": str(store)},
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = pay.Client(channel)
            with pytest.raises(aio.AioRpcError) as write:
                await client.move("A1", "5")
            with pytest.raises(aio.AioRpcError) as read:
                await client.list_movements("A2")
            comparisons = await sink.wait_for(2)
            await shim.drain()
            assert shim.steps is not None
            marks = dict(shim.steps.keys)
            assert shim.store is not None
            await shim.store.flush()
            gate = await shim_command("gate", "--store", store, "--min-compared", "1")
    finally:
        await bank.stop()
        await bk.stop()
    assert (write.value.code(), read.value.code()) == (grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS)
    assert sorted((c.method, c.verdict, c.reason) for c in comparisons) == [
        (pay.LIST_MOVEMENTS, Verdict.SKIPPED, "both sides failed (DATA_LOSS): proves nothing"),
        (pay.MOVE, Verdict.SKIPPED, "both sides failed (INTERNAL): proves nothing"),
    ]
    assert list(marks) == ["A1"]
    assert gate[0] == 1, gate[1] + gate[2]
    failed = [line.split()[1:3] for line in gate[1].splitlines() if line.startswith("FAIL")]
    assert failed == [
        ["pay.v1.Payments/ListMovements", "compared"],
        ["pay.v1.Payments/ListMovements", "answered"],
        ["pay.v1.Payments/ListMovements", "unproven"],
        ["pay.v1.Payments/Move", "compared"],
        ["pay.v1.Payments/Move", "answered"],
        ["pay.v1.Payments/Move", "unproven"],
    ]
    assert "skipped 1" in gate[1]
