"""Recording through Envoy: in `bank` mode the calls are copied to the processor only to be recorded
(never mirrored, with no BK at all); in `shadow` mode they are recorded and mirrored; without recording,
`bank` mode's routes copy nothing, as before."""

from __future__ import annotations

from pathlib import Path

import pytest
from grpc import aio

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.dataplane import EnvoyPlane
from shim.dataplane import envoy as envoy_process
from shim.recording.format import Recording
from shim.testing import running_shim
from tests.shim.test_recording_capture import KEYED, LEDGER, REGISTRY, SECRET, _every_kind

pytestmark = pytest.mark.skipif(envoy_process.binary() is None, reason="no Envoy binary on this platform")
REDACT = {"fields": ["bank.v1.OpenAccountRequest.owner_name", "bank.v1.Account.owner_name"]}
KINDS = [
    "OpenAccount",
    "Deposit",
    "GetBalance",
    "BookTrades",
    "TradeSession",
    "StreamLedgerEntries",
    "GetBalance",
]


def _copied(plane: object) -> set[str]:
    """What the routes of the clients' methods copy to the processor ("" for none); gRPC reflection is
    answered by the primary alone, never copied."""
    assert isinstance(plane, EnvoyPlane)
    return {e.mirror for e in plane.routes if e.cluster != "python" and "ServerReflection" not in e.path}


async def test_bank_mode_without_bk_records_every_call_kind(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    bank, _ = ledgers
    path = tmp_path / "calls.jsonl"
    async with (
        running_shim(
            bank.address,
            dataplane="envoy",
            registry=REGISTRY,
            methods=KEYED,
            record={"path": str(path)},
            store={"correlation_header": "x-request-id"},
            redact=REDACT,
        ) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
    ):
        assert shim.config.bk is None
        assert _copied(shim.front) == {"record:bank"}
        got = await _every_kind(pb_grpc.LedgerStub(channel))  # type: ignore[no-untyped-call]
    recording = Recording(path)
    ending = recording.check()
    assert (ending.whole, ending.reason, ending.lost) == (True, "stopped", 0)
    calls = list(recording.calls())
    assert [c.method.removeprefix(LEDGER) for c in calls] == KINDS
    opened, deposit, _, book, session, entries, missing = calls
    assert [c.keys for c in calls] == [("A1",)] * 6 + [("NOPE",)]
    assert opened.correlation_id == "req-1"
    names = {k for k, _ in opened.metadata}
    assert "x-request-id" in names
    assert not {"authorization", "x-api-key", ":path", "content-type"} & names
    assert SECRET.encode() not in path.read_bytes()
    assert pb.OpenAccountRequest.FromString(opened.requests[0]).owner_name.startswith("redacted:")
    assert [pb.Balance.FromString(m) for m in deposit.responses] == [got["Deposit"]]
    assert len(book.requests) == 2
    assert [pb.BookTradesSummary.FromString(m) for m in book.responses] == [got["BookTrades"]]
    assert [pb.TradeSessionEvent.FromString(m) for m in session.responses] == got["TradeSession"]
    assert [pb.LedgerEntry.FromString(m) for m in entries.responses] == got["StreamLedgerEntries"]
    assert (missing.code, missing.details) == (got["missing"].code().value[0], got["missing"].details())


async def test_bank_mode_without_recording_copies_nothing(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    bank, bk = ledgers
    async with running_shim(bank.address, bk.address, mode="bank", dataplane="envoy", registry=REGISTRY) as (
        shim,
        _,
    ):
        assert _copied(shim.front) == {""}
        assert shim.recorder is None


async def test_shadow_mode_records_and_mirrors(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    bank, bk = ledgers
    path = tmp_path / "calls.jsonl.gz"
    async with (
        running_shim(
            bank.address,
            bk.address,
            dataplane="envoy",
            registry=REGISTRY,
            methods=KEYED,
            record={"path": str(path)},
        ) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        assert _copied(shim.front) == {"bk"}
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="M1", currency="USD"))
        for n in range(5):
            await stub.Deposit(pb.DepositRequest(account_id="M1", amount=str(n + 1), reference=f"r{n}"))
        compared = await sink.wait_for(6)
        assert {c.method for c in compared} == {LEDGER + "OpenAccount", LEDGER + "Deposit"}
    recording = Recording(path)
    assert recording.check().calls == 6
    assert recording.header.mode == "shadow"
    calls = list(recording.calls())
    assert [c.method.removeprefix(LEDGER) for c in calls] == ["OpenAccount"] + ["Deposit"] * 5
    assert [pb.DepositRequest.FromString(c.requests[0]).reference for c in calls[1:]] == [
        f"r{n}" for n in range(5)
    ]
    assert all(c.keys == ("M1",) and c.code == 0 and len(c.responses) == 1 for c in calls)
