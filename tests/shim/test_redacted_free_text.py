"""Redacted values quoted in free text never reach the evidence as they were: a mark's reason that quotes
Bank's refusal, and a recording's metadata, hash them as comparisons do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

from comparators.redact import Redactor
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.recording.format import Recording
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.backends import scripted_server
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
