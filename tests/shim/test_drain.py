"""Graceful drain: health turns NOT_SERVING, calls in flight finish, and mirrored writes still running
when the shim stops are recorded (their keys out of step), never lost silently."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

import sample_ledger
from comparators import DescriptorRegistry, Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.routing import MethodSettings
from shim.store import Store
from shim.testing import running_shim
from tests.backends import scripted_server

REGISTRY = DescriptorRegistry.from_files([Path(sample_ledger.__file__).parent / "bank.binpb"])
DEPOSIT = "/bank.v1.Ledger/Deposit"


async def test_health_is_serving_then_not_serving_once_the_shim_drains() -> None:
    """The shim answers grpc.health.v1 itself: SERVING while it runs; a watcher sees NOT_SERVING as soon
    as the shim starts to stop."""

    async def echo(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        return [b"re:" + r async for r in requests]

    bank = await scripted_server(echo)
    try:
        async with running_shim(bank.address) as (shim, _), aio.insecure_channel(shim.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            checked = await stub.Check(health_pb2.HealthCheckRequest())
            watch = stub.Watch(health_pb2.HealthCheckRequest())
            first = await watch.read()
            stopping = asyncio.get_running_loop().create_task(shim.stop(grace=1.0))
            second = await asyncio.wait_for(watch.read(), timeout=10)
            await stopping
    finally:
        await bank.stop()
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert (checked.status, first.status, second.status) == (serving, serving, not_serving)


async def test_a_mirrored_write_still_running_at_stop_is_recorded_and_its_key_out_of_step(
    tmp_path: Path,
) -> None:
    """BK holds a deposit when the shim stops: the client had Bank's answer; the shadow call is given up
    and recorded as such, and the account is out of step in the store for the next shim to know."""
    bk_arrived, release = asyncio.Event(), asyncio.Event()

    async def bank(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        _ = [r async for r in requests]
        return [pb.Balance(account_id="A", cash="5").SerializeToString()]

    async def bk(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        _ = [r async for r in requests]
        bk_arrived.set()
        await release.wait()
        return [pb.Balance(account_id="A", cash="5").SerializeToString()]

    bank_server, bk_server = await scripted_server(bank), await scripted_server(bk)
    store = tmp_path / "shim.db"
    try:
        async with running_shim(
            bank_server.address,
            bk_server.address,
            registry=REGISTRY,
            store={"url": str(store)},
            shadow_timeout=60.0,
            methods={"bank.v1.Ledger/Deposit": MethodSettings(key=("account_id",))},
        ) as (shim, sink):
            async with aio.insecure_channel(shim.address) as channel:
                answer = await channel.unary_unary(DEPOSIT)(
                    pb.DepositRequest(account_id="A", amount="5").SerializeToString(), timeout=10
                )
            await asyncio.wait_for(bk_arrived.wait(), timeout=10)
            await asyncio.wait_for(shim.stop(grace=0.2), timeout=20)  # well before the 60 s shadow timeout
            (comparison,) = sink.comparisons
    finally:
        release.set()
        await bank_server.stop()
        await bk_server.stop()
    assert pb.Balance.FromString(answer).cash == "5"
    assert comparison.verdict is Verdict.SHADOW_ERROR, repr(comparison.exchange.shadow)
    assert comparison.exchange.shadow is not None
    assert comparison.exchange.shadow.code == grpc.StatusCode.CANCELLED.value[0]
    assert "the shim stopped" in comparison.reason
    reopened = Store.open(str(store))
    await reopened.start()
    try:
        (mark,) = await reopened.marks.out_of_step()
        (stored,) = await reopened.select("SELECT verdict, reason FROM comparisons")
    finally:
        await reopened.close()
    assert (mark.key, mark.method) == ("A", DEPOSIT)
    assert "the shim stopped" in mark.reason
    assert stored[0] == "shadow-error"
