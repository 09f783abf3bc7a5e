"""Redacted values quoted in free text never reach the evidence or the log as they were: a mark's reason
that quotes Bank's refusal, a recording's metadata, and the log lines of an adapter's error, hash them as
comparisons do."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio
from structlog.testing import capture_logs

from comparators import Comparison, Exchange, Outcome, Verdict
from comparators.redact import Redactor
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from shim import pipeline as pipeline_module
from shim.adapters import Backend
from shim.metrics import Counters
from shim.pipeline import ComparisonPipeline
from shim.recording.format import Recording
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.backends import Behaviour, called_method, scripted_server
from tests.comparators._exchanges import REGISTRY

OPEN = "/bank.v1.Ledger/OpenAccount"
OWNER = "bank.v1.OpenAccountRequest.owner_name"
NAME = "Ada Lovelace"
KEY = "free-text-key"


def _request() -> bytes:
    return pb.OpenAccountRequest(account_id="A1", owner_name=NAME).SerializeToString()


async def _refusing(
    requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
) -> list[bytes]:
    _ = [r async for r in requests]
    await context.send_initial_metadata((("x-owner", NAME),))
    await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"owner '{NAME}' already has an account")
    return []


async def _applying(
    requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
) -> list[bytes]:
    _ = [r async for r in requests]
    return [pb.Account(account_id="A1").SerializeToString()]


async def test_a_mark_quoting_banks_refusal_hashes_the_redacted_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bank refuses quoting the owner, BK applies the write: the key's mark (stored, logged, the reason of
    later tainted comparisons) quotes the refusal with the owner's hash."""
    monkeypatch.setenv("SHIM_REDACT_KEY", KEY)
    bank, bk = await scripted_server(_refusing), await scripted_server(_applying)
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                registry=REGISTRY,
                methods={"bank.v1.Ledger/OpenAccount": MethodSettings(key=("account_id",))},
                redact={"fields": [OWNER]},
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            with pytest.raises(aio.AioRpcError):
                await channel.unary_unary(OPEN)(_request())
            await sink.wait_for(1)
            assert shim.steps is not None
            reasons = [mark.reason for mark in shim.steps.keys.values()]
    finally:
        await bank.stop()
        await bk.stop()
    hashed = Redactor((OWNER,), REGISTRY, KEY.encode()).hash(NAME)
    assert reasons == [
        f"Bank answered ALREADY_EXISTS (owner '{hashed}' already has an account), BK applied it (OK)"
    ]


async def test_a_recording_hashes_redacted_values_its_metadata_quotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header quoting the request's redacted owner is recorded with its hash, as the details are; a
    replay then finds BK's echo of the (hashed) request equal to it."""
    monkeypatch.setenv("SHIM_REDACT_KEY", KEY)
    bank = await scripted_server(_refusing)
    path = tmp_path / "calls.jsonl"
    try:
        async with (
            running_shim(
                bank.address, registry=REGISTRY, record={"path": str(path)}, redact={"fields": [OWNER]}
            ) as (
                shim,
                _,
            ),
            aio.insecure_channel(shim.address) as channel,
        ):
            with pytest.raises(aio.AioRpcError):
                await channel.unary_unary(OPEN)(_request())
    finally:
        await bank.stop()
    hashed = Redactor((OWNER,), REGISTRY, KEY.encode()).hash(NAME)
    (call,) = Recording(path).calls()
    assert dict((*call.initial_metadata, *call.trailing_metadata))["x-owner"] == hashed
    assert call.details == f"owner '{hashed}' already has an account"
    assert NAME not in path.read_text()


async def _refusing_owner(request: pb.OpenAccountRequest, bk: Backend) -> pb.Account:
    """An adapter raising an error that quotes the request's redacted owner."""
    raise ValueError(f"owner {request.owner_name} is not allowed")


async def _open_then_read(request: pb.OpenAccountRequest, bk: Backend) -> pb.Account:
    """An adapter opening the account on BK, then reading it back (BK is gone by then)."""
    stub = bk.stub(pb_grpc.LedgerStub)
    await stub.OpenAccount(request)
    account: pb.Account = await stub.GetAccount(pb.GetAccountRequest(account_id=request.account_id))
    return account


async def _unavailable_on_the_second_call(
    requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
) -> list[bytes]:
    _ = [r async for r in requests]
    if called_method().endswith("/GetAccount"):
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"the account of '{NAME}' is not reachable")
    return [pb.Account(account_id="A1").SerializeToString()]


@pytest.mark.parametrize(
    ("adapter", "bk_behaviour", "event"),
    [
        ("_refusing_owner", _applying, "adapter error"),
        ("_open_then_read", _unavailable_on_the_second_call, "adapted write cut short"),
    ],
)
async def test_an_adapters_error_quoting_a_redacted_value_is_logged_hashed(
    monkeypatch: pytest.MonkeyPatch, adapter: str, bk_behaviour: Behaviour, event: str
) -> None:
    """An adapter's error, and BK's UNAVAILABLE that cuts an adapted write short, quote the owner the
    request's redacted field carried: the shim's log line hashes it, as the comparison does, and names the
    exception's type and where it was raised, without its traceback (which quotes its message as it was).
    Before, both lines quoted the owner as it was, the first in its message and in its traceback."""
    monkeypatch.setenv("SHIM_REDACT_KEY", KEY)
    bank, bk = await scripted_server(_applying), await scripted_server(bk_behaviour)
    methods = {
        "bank.v1.Ledger/OpenAccount": MethodSettings(key=("account_id",), adapter=f"{__name__}:{adapter}")
    }
    try:
        with capture_logs() as logs:
            async with (
                running_shim(
                    bank.address, bk.address, registry=REGISTRY, methods=methods, redact={"fields": [OWNER]}
                ) as (shim, sink),
                aio.insecure_channel(shim.address) as channel,
            ):
                await channel.unary_unary(OPEN)(_request())
                (comparison,) = await sink.wait_for(1)
    finally:
        await bank.stop()
        await bk.stop()
    hashed = Redactor((OWNER,), REGISTRY, KEY.encode()).hash(NAME)
    assert NAME not in repr(comparison.differences)
    (logged,) = [e for e in logs if e["event"] == event]
    assert NAME not in json.dumps(logged, default=repr)
    assert hashed in json.dumps(logged)
    assert "exc_info" not in logged
    if event == "adapter error":
        assert logged["exception_type"] == "ValueError"
        assert logged["raised_at"].endswith("in _refusing_owner")


async def test_a_comparison_failing_on_a_redacted_value_is_logged_and_stored_hashed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A comparison that raises an error quoting a value of the call's redacted field (a fault of the
    comparison itself, made here): its log line and the reason stored with its `error` verdict hash it.
    Before, the line quoted it, in its message and its traceback, and so did the reason."""

    def failing(exchange: Exchange, *args: object) -> Comparison:
        raise ValueError(f"cannot compare the account of {NAME}")

    monkeypatch.setattr(pipeline_module, "compare", failing)
    seen: list[Comparison] = []
    redactor = Redactor((OWNER,), REGISTRY, KEY.encode())
    pipeline = ComparisonPipeline(REGISTRY, [seen.append], Counters(), executor="thread", redactor=redactor)
    answer = pb.Account(account_id="A1").SerializeToString()
    try:
        with capture_logs() as logs:
            pipeline.submit(Exchange(OPEN, (_request(),), Outcome(0, messages=(answer,)), Outcome(0)))
            await asyncio.wait_for(pipeline.drain(), timeout=10)
    finally:
        pipeline.close()
    hashed = redactor.hash(NAME)
    (comparison,) = seen
    assert comparison.verdict is Verdict.ERROR
    assert comparison.reason == f"the comparison failed: ValueError('cannot compare the account of {hashed}')"
    (logged,) = [e for e in logs if e["event"] == "comparison failed"]
    assert NAME not in json.dumps(logged, default=repr)
    assert logged["exception_type"] == "ValueError"
    assert "exc_info" not in logged
