"""Recording through the Python data plane, in `bank` mode with no BK at all, in front of the sample Bank:
every call kind kept with its answer; credentials left out; redacted fields hashed; whole key histories
sampled; bounds and a full queue end or count, never block; the clients' answers are the primary's."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio

import sample_ledger
from comparators import DescriptorRegistry
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger, serve
from shim.errors import StartupError
from shim.recording import recorder as recorder_module
from shim.recording.format import RecordedCall, Recording, fingerprint
from shim.recording.recorder import key_sampled
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.helpers import ROOT, run_shim, until

REGISTRY = DescriptorRegistry.from_files([Path(sample_ledger.__file__).parent / "bank.binpb"])
LEDGER = "/bank.v1.Ledger/"
KEYED = {
    f"bank.v1.Ledger/{name}": MethodSettings(key=("account_id",))
    for name in ("OpenAccount", "Deposit", "GetBalance", "StreamLedgerEntries", "BookTrades")
} | {"bank.v1.Ledger/TradeSession": MethodSettings(key=("order.account_id",))}
SECRET = "Ann Q. Secretowner"
KEY = "recording-test-key"
Call = Callable[[pb_grpc.LedgerStub], Awaitable[Any]]


@pytest.fixture
async def bank() -> AsyncIterator[RunningLedger]:
    served = await serve("bank")
    try:
        yield served
    finally:
        await served.stop(None)


REDACTED = ("bank.v1.OpenAccountRequest.owner_name", "bank.v1.Account.owner_name")


async def _recorded(
    bank: RunningLedger,
    path: Path,
    work: Callable[[pb_grpc.LedgerStub], Awaitable[Any]],
    redacted: tuple[str, ...] = REDACTED,
    **record: Any,
) -> tuple[Recording, Any]:
    """Run `work` against a shim in `bank` mode (no BK) recording to `path`; the recording once the shim
    has stopped, and what `work` returned."""
    async with (
        running_shim(
            bank.address,
            registry=REGISTRY,
            methods=KEYED,
            record={"path": str(path), **record},
            store={"correlation_header": "x-request-id"},
            redact={"fields": list(redacted)},
        ) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
    ):
        assert shim.config.mode == "bank"
        assert shim.config.bk is None
        assert not shim.dispatchers
        result = await work(pb_grpc.LedgerStub(channel))  # type: ignore[no-untyped-call]
    return Recording(path), result


def _order(account: str, n: int) -> pb.PostTradeRequest:
    return pb.PostTradeRequest(
        account_id=account, symbol="ACME", side=pb.SIDE_BUY, quantity="1", price="10", client_order_id=f"c{n}"
    )


async def _every_kind(stub: pb_grpc.LedgerStub) -> dict[str, Any]:
    got: dict[str, Any] = {}
    metadata = (("authorization", "Bearer t0psecret"), ("x-api-key", "k3y"), ("x-request-id", "req-1"))
    got["OpenAccount"] = await stub.OpenAccount(
        pb.OpenAccountRequest(account_id="A1", owner_name=SECRET, currency="USD", initial_deposit="1000"),
        metadata=metadata,
    )
    got["Deposit"] = await stub.Deposit(pb.DepositRequest(account_id="A1", amount="5", reference="r1"))
    got["GetBalance"] = await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
    got["BookTrades"] = await stub.BookTrades(iter([_order("A1", 1), _order("A1", 2)]))
    session = stub.TradeSession(iter([pb.TradeSessionRequest(order=_order("A1", n)) for n in (3, 4)]))
    got["TradeSession"] = [event async for event in session]
    got["StreamLedgerEntries"] = [
        e async for e in stub.StreamLedgerEntries(pb.StreamLedgerEntriesRequest(account_id="A1"))
    ]
    with pytest.raises(aio.AioRpcError) as missing:
        await stub.GetBalance(pb.GetBalanceRequest(account_id="NOPE"))
    got["missing"] = missing.value
    return got


async def test_every_call_kind_is_recorded_with_the_primarys_answer(
    bank: RunningLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHIM_REDACT_KEY", KEY)
    recording, got = await _recorded(bank, tmp_path / "calls.jsonl", _every_kind)
    ending = recording.check()
    assert (ending.whole, ending.reason, ending.lost) == (True, "stopped", 0)
    calls = list(recording.calls())
    assert [c.method.removeprefix(LEDGER) for c in calls] == [
        "OpenAccount",
        "Deposit",
        "GetBalance",
        "BookTrades",
        "TradeSession",
        "StreamLedgerEntries",
        "GetBalance",
    ]
    assert [c.seq for c in calls] == list(range(len(calls)))
    assert all(a.at <= b.at for a, b in itertools.pairwise(calls))
    opened, deposit, balance, book, session, entries, missing = calls
    # the header: what was recorded, and with what
    header = recording.header
    assert (header.mode, header.answered_by, header.origin, header.sampled) == (
        "bank",
        "bank",
        "running",
        1.0,
    )
    assert header.methods[LEDGER + "OpenAccount"] == fingerprint(REGISTRY, LEDGER + "OpenAccount")
    assert set(header.methods) == set(REGISTRY.methods)
    assert header.descriptors == REGISTRY.descriptor_set().SerializeToString()
    assert header.redacted == ("bank.v1.OpenAccountRequest.owner_name", "bank.v1.Account.owner_name")
    assert (
        header.redaction_key == hmac.new(KEY.encode(), b"shim-record-key-id", hashlib.sha256).hexdigest()[:16]
    )
    # writes and reads, keys, correlation id, credentials left out
    assert [c.is_write for c in calls] == [True, True, False, True, True, False, False]
    assert [c.keys for c in calls] == [("A1",)] * 6 + [("NOPE",)]
    assert opened.correlation_id == "req-1"
    assert deposit.correlation_id == ""
    assert ("x-request-id", "req-1") in opened.metadata
    assert not {"authorization", "x-api-key"} & {k for k, _ in opened.metadata}
    # the redacted field hashed, its value nowhere in the file
    sent = pb.OpenAccountRequest.FromString(opened.requests[0])
    assert sent.owner_name.startswith("redacted:")
    assert sent.account_id == "A1"
    assert pb.Account.FromString(opened.responses[0]).owner_name == sent.owner_name
    raw = (tmp_path / "calls.jsonl").read_bytes()
    assert SECRET.encode() not in raw
    assert b"t0psecret" not in raw
    assert b"k3y" not in raw
    # each answer as the client got it
    assert [pb.Balance.FromString(m) for m in deposit.responses] == [got["Deposit"]]
    assert [pb.Balance.FromString(m) for m in balance.responses] == [got["GetBalance"]]
    assert [pb.PostTradeRequest.FromString(m) for m in book.requests] == [_order("A1", 1), _order("A1", 2)]
    assert [pb.BookTradesSummary.FromString(m) for m in book.responses] == [got["BookTrades"]]
    assert len(session.requests) == 2
    assert [pb.TradeSessionEvent.FromString(m) for m in session.responses] == got["TradeSession"]
    assert [pb.LedgerEntry.FromString(m) for m in entries.responses] == got["StreamLedgerEntries"]
    assert len(entries.responses) >= 5
    assert {c.code for c in calls[:-1]} == {0}
    assert missing.code == got["missing"].code().value[0] == grpc.StatusCode.NOT_FOUND.value[0]
    assert missing.details == got["missing"].details()
    assert missing.responses == ()
    assert all(c.latency > 0 for c in calls)


async def test_rich_error_details_are_recorded_redacted(
    bank: RunningLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redacted field packed in the primary's rich error details (google.rpc.Status in the
    `grpc-status-details-bin` trailer, its details in Any) is recorded as its hash; the client still gets
    the primary's details as they were."""
    monkeypatch.setenv("SHIM_REDACT_KEY", KEY)
    described = "google.rpc.BadRequest.FieldViolation.description"

    async def refused(stub: pb_grpc.LedgerStub) -> aio.AioRpcError:
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="R1", currency="USD"))
        with pytest.raises(aio.AioRpcError) as caught:
            await stub.Deposit(pb.DepositRequest(account_id="R1", amount="not-a-number", reference="r"))
        return caught.value

    path = tmp_path / "calls.jsonl"
    recording, error = await _recorded(bank, path, refused, redacted=(*REDACTED, described))
    sent = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    assert isinstance(sent, bytes)
    (violation,) = _violations(sent)
    assert violation.description
    assert not violation.description.startswith("redacted:")
    _, deposit = list(recording.calls())
    kept = dict(deposit.trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(kept, bytes)
    (recorded,) = _violations(kept)
    expected = (
        "redacted:" + hmac.new(KEY.encode(), violation.description.encode(), hashlib.sha256).hexdigest()
    )
    assert recorded.description == expected[: len("redacted:") + 16]
    assert recorded.field == violation.field
    # (the status message is free text: not parsed, not redacted)
    assert violation.description.encode() not in status_pb2.Status.FromString(kept).details[0].value
    assert deposit.note == ""


async def test_a_status_message_quoting_a_redacted_value_is_recorded_with_its_hash(
    bank: RunningLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bank's refusal quotes the account the request named ("account 'X' not found"), a redacted field: the
    recording holds its hash there, as in the request; the client gets Bank's words as they were."""
    monkeypatch.setenv("SHIM_REDACT_KEY", KEY)
    secret = "ACCT-of-Ann-Q-Secretowner"

    async def missing(stub: pb_grpc.LedgerStub) -> aio.AioRpcError:
        with pytest.raises(aio.AioRpcError) as caught:
            await stub.GetBalance(pb.GetBalanceRequest(account_id=secret))
        return caught.value

    path = tmp_path / "calls.jsonl"
    redacted = (*REDACTED, "bank.v1.GetBalanceRequest.account_id")
    recording, error = await _recorded(bank, path, missing, redacted=redacted)
    assert secret in (error.details() or "")
    (call,) = recording.calls()
    hashed = "redacted:" + hmac.new(KEY.encode(), secret.encode(), hashlib.sha256).hexdigest()[:16]
    assert call.details == (error.details() or "").replace(secret, hashed)
    assert pb.GetBalanceRequest.FromString(call.requests[0]).account_id == hashed
    assert secret.encode() not in path.read_bytes()


def _violations(raw: bytes) -> list[error_details_pb2.BadRequest.FieldViolation]:
    status = status_pb2.Status.FromString(raw)
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    return list(bad_request.field_violations)


async def test_sampling_keeps_whole_key_histories(bank: RunningLedger, tmp_path: Path) -> None:
    accounts = [f"S{n}" for n in range(24)]

    async def work(stub: pb_grpc.LedgerStub) -> None:
        for account in accounts:
            await stub.OpenAccount(pb.OpenAccountRequest(account_id=account, currency="USD"))
            await stub.Deposit(pb.DepositRequest(account_id=account, amount="3", reference="r"))
            await stub.GetBalance(pb.GetBalanceRequest(account_id=account))
        await stub.ListAccounts(pb.ListAccountsRequest())  # no key: always recorded

    recording, _ = await _recorded(bank, tmp_path / "calls.jsonl.gz", work, sample=0.5)
    assert recording.check().whole
    assert recording.header.sampled == 0.5
    calls = list(recording.calls())
    by_key: dict[str, list[str]] = {}
    for call in calls:
        for key in call.keys:
            by_key.setdefault(key, []).append(call.method.removeprefix(LEDGER))
    sampled = {a for a in accounts if key_sampled(a, 0.5)}
    assert 0 < len(sampled) < len(accounts)  # both kinds of key are exercised
    assert set(by_key) == sampled
    assert all(history == ["OpenAccount", "Deposit", "GetBalance"] for history in by_key.values())
    assert calls[-1].method == LEDGER + "ListAccounts"
    assert calls[-1].keys == ()


async def test_max_bytes_ends_the_file_whole_and_the_shim_serves_on(
    bank: RunningLedger, tmp_path: Path
) -> None:
    big = "x" * 4000

    async def work(stub: pb_grpc.LedgerStub) -> list[str]:
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="B", currency="USD"))
        answers = []
        for n in range(40):
            balance = await stub.Deposit(
                pb.DepositRequest(account_id="B", amount="1", reference=big + str(n))
            )
            answers.append(balance.cash)
        return answers

    path = tmp_path / "calls.jsonl"
    recording, answers = await _recorded(bank, path, work, max_bytes=100_000)
    assert [float(cash) for cash in answers] == [n + 1.0 for n in range(40)]  # every client answered
    ending = recording.check()
    assert ending.whole
    assert ending.reason == "record.max_bytes reached"
    assert 0 < ending.calls < 40
    assert path.stat().st_size <= 100_000
    assert [c.method for c in recording.calls()] == [LEDGER + "OpenAccount"] + [LEDGER + "Deposit"] * (
        ending.calls - 1
    )


async def test_a_full_queue_loses_calls_counted_and_never_blocks_the_clients(
    bank: RunningLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    disk = threading.Event()  # a disk that does not take writes until it is set
    writing = threading.Event()
    add = recorder_module.RecordingWriter.add

    def slow_add(self: Any, call: RecordedCall, within: int | None = None) -> bool:
        writing.set()
        disk.wait(30)
        return add(self, call, within)

    monkeypatch.setattr(recorder_module.RecordingWriter, "add", slow_add)

    async def work(stub: pb_grpc.LedgerStub) -> tuple[int, int]:
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="Q0", currency="USD"))
        await until(writing.is_set, "the writer is busy with the first call")
        for n in range(1, 10):  # the writer is stuck: 2 wait in the queue, the rest are lost
            await stub.OpenAccount(pb.OpenAccountRequest(account_id=f"Q{n}", currency="USD"))
        shim_counters = counters[0]
        await until(lambda: shim_counters.get("recording_lost") == 7, "7 calls counted as lost")
        disk.set()
        return 10, shim_counters.get("recording_lost")

    counters: list[Any] = []
    original = recorder_module.Recorder.__init__

    def keep_counters(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        counters.append(self._counters)

    monkeypatch.setattr(recorder_module.Recorder, "__init__", keep_counters)
    recording, (made, lost) = await _recorded(bank, tmp_path / "calls.jsonl", work, queue=2)
    ending = recording.check()
    assert (ending.whole, ending.calls, ending.lost) == (True, 3, 7)
    assert lost == 7
    assert [c.keys for c in recording.calls()] == [("Q0",), ("Q1",), ("Q2",)]
    assert made == 10


async def test_an_unwritable_file_stops_the_shim_before_it_serves(
    bank: RunningLedger, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StartupError, match=r"^record\.path: .*cannot write the recording"):
        async with running_shim(
            bank.address, registry=REGISTRY, record={"path": str(tmp_path / "file" / "x")}
        ):
            pass


def test_serve_record_flag_sets_the_file(tmp_path: Path) -> None:
    done = run_shim(
        "serve",
        "--bank",
        "127.0.0.1:1",
        "--listen",
        "127.0.0.1:0",
        "--dataplane",
        "python",
        "--descriptor-set",
        ROOT / "sample_ledger" / "bank.binpb",
        "--record",
        tmp_path / "x.jsonl",
        "--workers",
        "2",
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "shim: error: record.path: recording to a file needs one shim process (workers = 1);"
        ' record.into = "store" takes the calls of several'
    )


async def test_max_duration_ends_the_file_whole_and_the_shim_serves_on(
    bank: RunningLedger, tmp_path: Path
) -> None:
    path = tmp_path / "calls.jsonl"
    async with (
        running_shim(
            bank.address, registry=REGISTRY, methods=KEYED, record={"path": str(path), "max_duration": 1.0}
        ) as (
            shim,
            _,
        ),
        aio.insecure_channel(shim.address) as channel,
    ):
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="T1", currency="USD"))
        assert shim.recorder is not None
        await until(lambda: path.exists(), "the recording ended after max_duration", within=10)
        balance = await stub.GetBalance(pb.GetBalanceRequest(account_id="T1"))  # served on, not recorded
        assert balance.account_id == "T1"
    ending = Recording(path).check()
    assert (ending.whole, ending.reason, ending.calls) == (True, "record.max_duration reached", 1)


async def test_sigterm_ends_the_recording_whole(bank: RunningLedger, tmp_path: Path) -> None:
    from tests.processes import shim_process

    path = tmp_path / "calls.jsonl.gz"
    async with shim_process(
        *("--bank", bank.address, "--listen", "127.0.0.1:0", "--dataplane", "python", "--store", ":memory:"),
        *("--descriptor-set", ROOT / "sample_ledger" / "bank.binpb", "--record", path),
    ) as shim:
        async with aio.insecure_channel(shim.ready["listen"]) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="G1", currency="USD"))
            await stub.Deposit(pb.DepositRequest(account_id="G1", amount="2", reference="r"))
        assert not path.exists()  # still being written: NAME.partial
        assert await shim.stop() == 0
    ending = Recording(path).check()
    assert (ending.whole, ending.reason, ending.calls, ending.lost) == (True, "stopped", 2, 0)


async def test_a_killed_shim_leaves_a_compressed_partial_that_replays_with_truncated(
    bank: RunningLedger, tmp_path: Path
) -> None:
    """SIGKILL leaves NAME.jsonl.gz.partial with every call written until then, and no gzip trailer:
    `shim replay --truncated` replays its calls (docs/recording.md)."""
    from tests.helpers import shim_command
    from tests.processes import shim_process

    path = tmp_path / "calls.jsonl.gz"
    partial = tmp_path / "calls.jsonl.gz.partial"

    def lines_written() -> int:  # whole lines, in what the file decompresses to so far
        return zlib.decompressobj(wbits=31).decompress(partial.read_bytes()).count(b"\n")

    def left() -> list[str]:
        return sorted(p.name for p in tmp_path.iterdir())

    async with shim_process(
        *("--bank", bank.address, "--listen", "127.0.0.1:0", "--dataplane", "python", "--store", ":memory:"),
        *("--descriptor-set", ROOT / "sample_ledger" / "bank.binpb", "--record", path),
    ) as shim:
        async with aio.insecure_channel(shim.ready["listen"]) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="K1", currency="USD"))
            await stub.Deposit(pb.DepositRequest(account_id="K1", amount="2", reference="r"))
        await until(lambda: partial.exists() and lines_written() == 3, "the header and 2 calls written")
        await shim.kill_9()
    assert left() == [partial.name]
    ending = Recording(partial, truncated=True).check()
    assert (ending.whole, ending.calls) == (False, 2)
    fixed = await serve("bk", fixed=True)
    try:
        code, out, err = await shim_command(
            *("replay", partial, "--truncated", "--config", ROOT / "sample_ledger" / "shim.toml"),
            *("--bk", fixed.address, "--store", tmp_path / "replayed.db"),
        )
    finally:
        await fixed.stop(None)
    assert code == 0, err
    assert "2 calls replayed" in out
    assert "replay: 2 match" in out
