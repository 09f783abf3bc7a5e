"""What a recording says of its calls, as `shim replay` reads it, on the sample ledger: a `.partial` file
read with --truncated; a call of another service (the venue's: tests/services/venue/test_venue_replay.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from comparators import Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger, serve
from shim._proto.shim.v1 import admin_pb2 as apb
from shim._proto.shim.v1 import admin_pb2_grpc as apb_grpc
from shim.config import load_file
from shim.parts import load_registry
from shim.recording.format import PARTIAL, Header, RecordedCall, Recording, RecordingWriter
from shim.recording.recorder import key_sampled
from shim.replay.driver import BK_ANSWERED
from shim.replay.run import LOST, load_config
from shim.testing import running_shim
from tests.helpers import shim_command
from tests.shim.test_replay import SAMPLE, _one_line_error, _record, _replay, record_sample, request_ids


@pytest.fixture
async def fixed_bk() -> AsyncIterator[RunningLedger]:
    ledger = await serve("bk", fixed=True)
    yield ledger
    await ledger.stop(None)


def cut_short(recording: Path, out: Path, calls: int) -> Path:
    """The recording's first `calls` calls, as its shim leaves them when killed: only `OUT.partial`."""
    source = Recording(recording)
    writer = RecordingWriter(out, source.header)
    for n, call in enumerate(source.calls()):
        if n == calls:
            break
        writer.add(call)
    writer.flush()
    writer.abandon()
    return out.with_name(out.name + PARTIAL)


def _sample_settings(tmp_path: Path, bank: str, without_noise: bool = False) -> tuple[Any, dict[str, Any]]:
    """The sample's descriptors, and its config's settings as running_shim takes them (the upstreams and
    the mode the test's own; without `[noise]` too, when asked)."""
    registry = load_registry(load_config(SAMPLE, bank, str(tmp_path / "u.db")).descriptors.descriptor_sets)
    settings = load_file(SAMPLE)
    for name in ("bank", "bk", "mode", *(("noise",) if without_noise else ())):
        settings.pop(name, None)
    return registry, settings


async def test_truncated_reads_the_partial_file_the_error_names(
    fixed_bk: RunningLedger, tmp_path: Path
) -> None:
    """A recording whose shim was killed is only NAME.partial; the error for NAME says to replay it with
    --truncated, and `shim replay NAME --truncated` then reads NAME.partial (it said the same again)."""
    recording = await record_sample(tmp_path, calls=20)
    named = tmp_path / "killed.jsonl"
    partial = cut_short(recording, named, calls=12)
    replay_ = ("replay", named, "--config", SAMPLE, "--bk", fixed_bk.address)
    code, _, err = await shim_command(*replay_, "--store", tmp_path / "refused.db")
    assert code == 2, err
    assert f"{named}: not ended: only {partial.name} is there (read it with --truncated)" in err
    code, out, err = await shim_command(*replay_, "--store", tmp_path / "read.db", "--truncated")
    assert code == 0, err
    assert f"12 calls replayed from {partial} " in out
    assert "replay: 12 match" in out


def _recording_of(path: Path, method: str, methods: dict[str, str]) -> Path:
    """A whole recording of one call of `method`, its header listing `methods`."""
    writer = RecordingWriter(path, Header(created_at=time.time(), methods=methods, origin="empty"))
    call = RecordedCall(
        seq=0, at=time.time(), method=method, is_write=True, keys=(), correlation_id="c0", metadata=(),
        requests=(b"\x0a\x03abc",), responses=(b"\x0a\x03abc",), code=0,
    )  # fmt: skip
    writer.add(call)
    return writer.end()


async def test_a_call_of_another_service_is_refused_before_anything_is_sent(
    fixed_bk: RunningLedger, tmp_path: Path
) -> None:
    """A recording made with no descriptors lists no methods in its header: each call's method is checked
    against the config's descriptors too. One they lack is refused, naming it, before BK gets anything (it
    was sent, compared, and written into the store)."""
    other = _recording_of(tmp_path / "payments.jsonl", "/payments.v1.Payments/Pay", {})
    store = tmp_path / "other.db"
    _one_line_error(
        await shim_command("replay", other, "--config", SAMPLE, "--bk", fixed_bk.address, "--store", store),
        f"{other}: recorded from another service: /payments.v1.Payments/Pay is not in the config's"
        " descriptors",
        store,
    )


async def test_calls_recorded_while_bk_was_primary_go_to_bk_but_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recording begun in shadow holds Bank's answers until the mode is switched to bk-primary, then BK's
    (each such call's `answered_by`). Replayed, those calls still go to BK, so its book goes on as it did
    live, but each is `skipped`, saying why, never a match: compared with BK's own answer, the planted
    bug 2 (an unknown account refused INVALID_ARGUMENT, not NOT_FOUND) was a match. The gate fails."""
    monkeypatch.setenv("SHIM_ADMIN_TOKEN", "tok-replay")
    bank, bk = await serve("bank"), await serve("bk")  # BK with its planted bugs
    path = tmp_path / "switched.jsonl"
    registry, settings = _sample_settings(tmp_path, bank.address, without_noise=True)
    try:
        async with (
            running_shim(
                bank.address, bk.address, registry=registry, admin={"listen": "127.0.0.1:0"},
                record={"path": str(path), "origin": "empty"}, **settings,
            ) as (shim, _),
            aio.insecure_channel(shim.address, interceptors=request_ids("x-request-id")) as channel,
            aio.insecure_channel(f"127.0.0.1:{shim.admin_port}") as admin_channel,
        ):  # fmt: skip
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            admin = apb_grpc.AdminStub(admin_channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(
                pb.OpenAccountRequest(account_id="A", currency="USD", initial_deposit="100")
            )
            await shim.drain()
            switch = apb.SetModeRequest(mode="bk-primary", reason="test", who="ops", force=True)
            await admin.SetMode(switch, metadata=(("authorization", "Bearer tok-replay"),), timeout=30)
            await stub.Deposit(pb.DepositRequest(account_id="A", amount="5", reference="r1"))
            with pytest.raises(aio.AioRpcError) as refused:
                await stub.Deposit(pb.DepositRequest(account_id="NOPE", amount="5", reference="r2"))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # BK's answer (bug 2)
            await shim.drain()
    finally:
        await bank.stop(None)
        await bk.stop(None)
    recording = Recording(path)
    assert recording.header.answered_by == "bank"
    assert [c.answered_by for c in recording.calls()] == ["", "bk", "bk"]
    replayed = await serve("bk")  # the same BK build, bug 2 in it
    store = tmp_path / "replayed.db"
    try:
        verdicts, done = await _replay(path, store, replayed.address)
        async with aio.insecure_channel(replayed.address) as channel:
            read = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            balance = await read.GetBalance(pb.GetBalanceRequest(account_id="A"))
    finally:
        await replayed.stop(None)
    assert Decimal(balance.cash) == Decimal("105")  # BK was sent the deposit BK answered live
    got = [(c.method.rsplit("/", 1)[1], c.verdict, c.reason) for c in verdicts.comparisons]
    assert sorted(got) == sorted([
        ("OpenAccount", Verdict.MATCH, ""),
        ("Deposit", Verdict.SKIPPED, BK_ANSWERED),
        ("Deposit", Verdict.SKIPPED, BK_ANSWERED),
    ]), got  # fmt: skip
    assert done.summary.answered_by_bk == 2  # type: ignore[attr-defined]
    code, out, _ = await shim_command("gate", "--store", store, "--min-compared", "1")
    assert code == 1, out


def _order(account: str, n: int) -> pb.TradeSessionRequest:
    order = pb.PostTradeRequest(
        account_id=account, symbol="ACME", side=pb.SIDE_BUY, quantity="1", price="10", client_order_id=f"o{n}"
    )
    return pb.TradeSessionRequest(order=order)


async def _a_session_on_two_accounts(address: str) -> None:
    """A and B opened, a session of an order on A then one on B, then B read."""
    async with aio.insecure_channel(address, interceptors=request_ids("x-request-id")) as channel:
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        for account in ("A", "B"):
            await stub.OpenAccount(
                pb.OpenAccountRequest(account_id=account, currency="USD", initial_deposit="1000")
            )

        async def orders() -> AsyncIterator[pb.TradeSessionRequest]:
            yield _order("A", 0)
            yield _order("B", 1)

        async for _ in stub.TradeSession(orders()):
            pass
        await stub.GetPosition(pb.GetPositionRequest(account_id="B", symbol="ACME"))
        await stub.GetBalance(pb.GetBalanceRequest(account_id="B"))


async def test_a_session_is_recorded_on_every_key_its_messages_name(tmp_path: Path) -> None:
    """A session's keys are those of all its messages, as live, not its first message's alone: `--key B`
    replays the session that traded on B, so B's reads after it match (they were mismatches: BK never
    had B's trade)."""
    bank = await serve("bank")
    try:
        recording = await _record(SAMPLE, bank.address, tmp_path, _a_session_on_two_accounts)
    finally:
        await bank.stop(None)
    session = next(c for c in Recording(recording).calls() if c.method.endswith("/TradeSession"))
    assert session.keys == ("A", "B")
    ledger = await serve("bk", fixed=True)
    try:
        verdicts, _ = await _replay(recording, tmp_path / "b.db", ledger.address, key="B")
    finally:
        await ledger.stop(None)
    got = {c.method.rsplit("/", 1)[1]: c.verdict for c in verdicts.comparisons}
    assert "TradeSession" in got  # on A too, whose history --key B leaves out (docs/replay.md)
    assert (got["GetPosition"], got["GetBalance"]) == (Verdict.MATCH, Verdict.MATCH)


async def test_sampling_keeps_a_session_on_a_sampled_key_it_names_after_its_first(tmp_path: Path) -> None:
    """Under `record.sample`, a session whose first order is on a key not sampled (A) and whose second is on
    one sampled (B) is part of B's history: it is recorded, with A under `unsampled` (it was left out,
    and B's history with it)."""
    assert not key_sampled("A", 0.5)
    assert key_sampled("B", 0.5)
    bank = await serve("bank")
    path = tmp_path / "sampled.jsonl"
    registry, settings = _sample_settings(tmp_path, bank.address)
    try:
        record = {"path": str(path), "origin": "empty", "sample": 0.5}
        async with running_shim(bank.address, registry=registry, record=record, **settings) as (shim, _):
            await _a_session_on_two_accounts(shim.address)
    finally:
        await bank.stop(None)
    got = [(c.method.rsplit("/", 1)[1], c.keys, c.unsampled) for c in Recording(path).calls()]
    assert got == [
        ("OpenAccount", ("B",), ()),
        ("TradeSession", ("A", "B"), ("A",)),
        ("GetPosition", ("B",), ()),
        ("GetBalance", ("B",), ()),
    ]


def killed(recording: Path) -> Path:
    """What a kill leaves of a recording: its lines but the end line, only as `NAME.partial`."""
    lines = recording.read_bytes().splitlines(keepends=True)
    assert b'"end"' in lines[-1]
    partial = recording.with_name(recording.name + PARTIAL)
    partial.write_bytes(b"".join(lines[:-1]))
    recording.unlink()
    return partial


async def test_a_recording_cut_short_knows_the_calls_lost_before_the_cut(tmp_path: Path) -> None:
    """Each call says how many calls the recorder had lost when it wrote it, so a recording cut short (no
    end line to count them) still knows: a deposit too large to record is lost, and the read after it,
    replayed with --truncated against a correct BK, is tainted, not a mismatch (it was: the state was
    taken for known)."""
    bank = await serve("bank")
    path = tmp_path / "lossy.jsonl"
    registry, settings = _sample_settings(tmp_path, bank.address)
    try:
        record = {"path": str(path), "origin": "empty", "max_call_bytes": 300}
        async with (
            running_shim(bank.address, registry=registry, record=record, **settings) as (shim, _),
            aio.insecure_channel(shim.address, interceptors=request_ids("x-request-id")) as channel,
        ):
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(
                pb.OpenAccountRequest(account_id="A", currency="USD", initial_deposit="100")
            )
            await stub.Deposit(pb.DepositRequest(account_id="A", amount="5", reference="r" * 400))  # lost
            await stub.GetBalance(pb.GetBalanceRequest(account_id="A"))
    finally:
        await bank.stop(None)
    partial = killed(path)
    ending = Recording(partial, truncated=True).check()
    assert (ending.whole, ending.calls, ending.lost) == (False, 2, 1)
    ledger = await serve("bk", fixed=True)
    try:
        verdicts, done = await _replay(partial, tmp_path / "cut.db", ledger.address, truncated=True)
    finally:
        await ledger.stop(None)
    got = {c.method.rsplit("/", 1)[1]: c.verdict for c in verdicts.comparisons}
    assert got == {"OpenAccount": Verdict.MATCH, "GetBalance": Verdict.TAINTED}
    assert done.summary.tainted_from_start == LOST.format(lost=1)  # type: ignore[attr-defined]
    # how many the recorder had lost when it wrote each line: the opening's line may be written after the
    # deposit was lost (its writer a little behind), never before the loss is counted on the read's
    lost = [c.lost for c in Recording(partial, truncated=True).calls()]
    assert lost in ([0, 1], [1, 1]), lost
