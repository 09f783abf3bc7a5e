"""What a call may hold: messages have a bounded size by default, the shadow side's memory has a total bound,
and calls that never finish neither hold memory nor starve other clients' mirrors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from comparators import Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim.config import load_file
from shim.testing import running_shim
from tests._proto.grpc.testing import interop_pb2 as ipb
from tests._proto.grpc.testing import interop_pb2_grpc as ipb_grpc
from tests.backends import interop_server, scripted_server
from tests.helpers import registry_of, until
from tests.shim.test_verify import SAMPLE

MiB = 1024 * 1024
INTEROP = registry_of(ipb.DESCRIPTOR)


def _sample_settings(**overrides: Any) -> dict[str, Any]:
    settings = load_file(SAMPLE / "shim.toml")
    for name in ("bank", "bk", "mode"):
        settings.pop(name)
    return {**settings, "noise_reads": 0.0, **overrides}


async def test_a_request_over_the_default_size_limit_is_refused_and_never_forwarded() -> None:
    """By default a message may be 64 MiB: a 65 MiB request gets RESOURCE_EXHAUSTED and Bank never sees it."""
    seen: list[int] = []

    async def bank_side(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        seen.extend([len(r) async for r in requests])
        return [b"ok"]

    # both sides would take the large request: only the shim's own limit refuses it
    bank = await scripted_server(bank_side, max_message=128 * MiB)
    bk = await scripted_server(bank_side, max_message=128 * MiB)
    try:
        async with (
            running_shim(bank.address, bk.address) as (shim, _),
            aio.insecure_channel(
                shim.address, options=[("grpc.max_send_message_length", 128 * MiB)]
            ) as channel,
        ):
            with pytest.raises(aio.AioRpcError) as refused:
                await channel.unary_unary("/big.Big/Put")(b"x" * (65 * MiB), timeout=30)
            small = await channel.unary_unary("/big.Big/Put")(b"x" * MiB, timeout=30)
            await shim.drain()
    finally:
        await bank.stop()
        await bk.stop()
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert small == b"ok"
    assert seen == [MiB, MiB]  # the small one, on each side; the large one reached neither


async def test_the_shadow_side_holds_at_most_its_total_budget_and_gives_it_back() -> None:
    """Six concurrent 2 MiB answers with a 5 MiB total budget: no more than 5 MiB is ever held for
    comparison, the calls past it are compared no further and say why, and every byte is given back."""
    release = asyncio.Event()

    async def slow(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        _ = [r async for r in requests]
        await release.wait()
        return [b"a" * (2 * MiB)]

    bank, bk = await scripted_server(slow), await scripted_server(slow)
    try:
        async with (
            running_shim(bank.address, bk.address, shadow_max_capture_total=5 * MiB, shadow_timeout=30) as (
                shim,
                sink,
            ),
            aio.insecure_channel(shim.address) as channel,
        ):
            dispatcher = shim.dispatcher
            assert dispatcher is not None
            get = channel.unary_unary("/slow.Slow/Get")
            calls = [asyncio.ensure_future(get(b"q", timeout=30)) for _ in range(6)]
            peak = 0

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, dispatcher.budget.used)
                    await asyncio.sleep(0)

            watcher = asyncio.ensure_future(watch())
            release.set()
            answers = await asyncio.gather(*calls)
            comparisons = await sink.wait_for(6, within=30)
            await shim.drain()
            watcher.cancel()
            held_after = dispatcher.budget.used
    finally:
        await bank.stop()
        await bk.stop()
    assert answers == [b"a" * (2 * MiB)] * 6
    assert peak <= 5 * MiB
    assert held_after == 0
    over = [c for c in comparisons if "shadow.max_capture_total" in c.exchange.note]
    assert over
    assert all(c.verdict is Verdict.SKIPPED for c in over)
    assert any(c.verdict is Verdict.MATCH for c in comparisons)


async def test_idle_streams_never_starve_other_clients_writes(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """Ten sessions left open and idle with ten mirrored calls allowed: another client's deposits are still
    mirrored and compared, and its account stays in step."""
    bank, bk = ledgers
    settings = _sample_settings(shadow_max_in_flight=10)
    async with (
        running_shim(bank.address, bk.address, **settings) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        stub: Any = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
        await stub.OpenAccount(pb.OpenAccountRequest(account_id="W1", initial_deposit="10"))
        idle = [stub.TradeSession() for _ in range(10)]  # opened, nothing sent: they just stay there
        await until(
            lambda: shim.counters.get("calls", "/bank.v1.Ledger/TradeSession") == 10,
            "10 sessions mirrored",
            10.0,
        )
        for _ in range(3):
            await stub.Deposit(pb.DepositRequest(account_id="W1", amount="1"))
        deposits = await sink.wait_for(3, where=lambda c: c.method.endswith("/Deposit"))
        assert shim.steps is not None
        marks = dict(shim.steps.keys)
        for call in idle:
            call.cancel()
    assert [c.verdict for c in deposits] == [Verdict.MATCH] * 3
    assert marks == {}


async def test_an_idle_stream_gives_its_place_to_a_new_one() -> None:
    """With the places of streams all taken by streams idle past shadow.stream_idle, a new stream is mirrored:
    the longest idle one is given up, keeps nothing more, and its record says why once its call ends."""
    bank, bk = await interop_server(), await interop_server()
    request = ipb.StreamingOutputCallRequest(response_parameters=[ipb.ResponseParameters(size=3)])
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                registry=INTEROP,
                shadow_max_in_flight=4,
                shadow_stream_idle=0.2,
                shadow_timeout=30,
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            stub = ipb_grpc.TestServiceStub(channel)
            idle = [stub.FullDuplexCall() for _ in range(2)]  # the places of streams: half of 4
            await until(
                lambda: shim.counters.get("calls", "/grpc.testing.TestService/FullDuplexCall") == 2,
                "both streams mirrored",
                10.0,
            )
            await asyncio.sleep(0.3)  # past shadow.stream_idle: what this test is about
            fresh = stub.FullDuplexCall()
            await fresh.write(request)
            answer = await fresh.read()
            await fresh.done_writing()
            assert await fresh.read() is aio.EOF
            matched = await sink.wait_for(1, where=lambda c: c.verdict is Verdict.MATCH)
            given_up = shim.counters.get("shadow_idle_given_up")
            for call in idle:  # the idle calls end normally: their records come now
                await call.done_writing()
                assert await call.read() is aio.EOF
            records = await sink.wait_for(3)
            assert shim.dispatcher is not None
            held = shim.dispatcher.budget.used
    finally:
        await bank.stop()
        await bk.stop()
    assert len(answer.payload.body) == 3
    assert matched[0].method.endswith("/FullDuplexCall")
    assert given_up == 1
    assert sorted(c.verdict.value for c in records) == ["match", "match", "shadow-error"]
    (gone,) = [c for c in records if c.verdict is Verdict.SHADOW_ERROR]
    assert "idle for 0.2s, its place was needed by another call" in gone.reason
    assert held == 0
