"""`Shim.drain()` on Envoy counts the calls whose copies are still on their way to the comparison plane.

The clients' answers come from Envoy, and each call's copy trails it. A drain that waited only for the
mirrored calls already begun returned while copies were still coming: a test then read BK's book (or a
shim stopped) before the last writes were mirrored (seen on a loaded machine: every account differed).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from grpc import aio

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.dataplane import envoy as envoy_process
from shim.dataplane.processor import Processor
from shim.testing import running_shim

pytestmark = pytest.mark.skipif(envoy_process.binary() is None, reason="no Envoy binary on this platform")
DEPOSITS = 12


async def _balance(address: str) -> Decimal:
    async with aio.insecure_channel(address) as channel:
        stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        answer = await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"), timeout=10)
    return Decimal(answer.cash)  # BK writes its amounts in a form of its own


async def test_drain_waits_for_the_copies_envoy_has_yet_to_hand_over(
    ledgers: tuple[RunningLedger, RunningLedger], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the comparison plane taking no copy, the clients have every answer; `drain()` does not end
    until the plane has taken the copies Envoy sent, and mirrored them: BK's book is then Bank's."""
    bank, bk = ledgers
    taking = asyncio.Event()
    process = Processor.process

    async def held(
        self: Processor, requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await taking.wait()
        async for answer in process(self, requests, context):
            yield answer

    monkeypatch.setattr(Processor, "process", held)
    # copies wait in Envoy up to the shadow timeout (deferred_close_timeout): ample here
    async with running_shim(bank.address, bk.address, dataplane="envoy", shadow_timeout=10.0) as (shim, _):
        async with aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="A1", owner_name="Ada"), timeout=10)
            for n in range(DEPOSITS):
                await stub.Deposit(pb.DepositRequest(account_id="A1", amount=f"{n + 1}.00"), timeout=10)
        draining = asyncio.ensure_future(shim.drain())
        done, _ = await asyncio.wait([draining], timeout=0.5)
        assert not done, "drain() ended with every copy still in Envoy"
        taking.set()
        await asyncio.wait_for(draining, 30)
        assert await _balance(bk.address) == await _balance(bank.address)
        assert await _balance(bank.address) == sum(range(1, DEPOSITS + 1))
