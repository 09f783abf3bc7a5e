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
from shim.config import load_file, merged
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests._proto.grpc.testing import interop_pb2 as ipb
from tests._proto.grpc.testing import interop_pb2_grpc as ipb_grpc
from tests.backends import forwarding, interop_server, scripted_server
from tests.helpers import registry_of, until
from tests.shim.test_modes import NEEDS_ENVOY
from tests.shim.test_verify import SAMPLE

MiB = 1024 * 1024
INTEROP = registry_of(ipb.DESCRIPTOR)
NO_ROOM = "its request bytes waiting for it found no room in shadow.max_capture_total"


def _sample_settings(**overrides: Any) -> dict[str, Any]:
    settings = load_file(SAMPLE / "shim.toml")
    for name in ("bank", "bk", "mode"):
        settings.pop(name)
    return merged(settings, {"noise": {"reads": 0.0}}, overrides)


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
    """six concurrent 2 MiB answers with a 6 MiB total budget: no more than 6 MiB is ever held for
    comparison, the calls past it are compared no further and say why, and every byte is given back."""
    release = asyncio.Event()

    async def slow(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        _ = [r async for r in requests]
        await release.wait()
        return [b"a" * (2 * MiB)]

    bank, bk = await scripted_server(slow), await scripted_server(slow)
    try:
        async with (
            running_shim(
                bank.address, bk.address, shadow={"max_capture_total": 6 * MiB}, shadow_timeout=30
            ) as (
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
                    peak = max(peak, dispatcher.shared.budget.used)
                    await asyncio.sleep(0)

            watcher = asyncio.ensure_future(watch())
            release.set()
            answers = await asyncio.gather(*calls)
            comparisons = await sink.wait_for(6, within=30)
            await shim.drain()
            watcher.cancel()
            held_after = dispatcher.shared.budget.used
    finally:
        await bank.stop()
        await bk.stop()
    assert answers == [b"a" * (2 * MiB)] * 6
    assert peak <= 6 * MiB
    assert held_after == 0
    over = [c for c in comparisons if "shadow.max_capture_total" in c.exchange.note]
    assert over
    assert all(c.verdict is Verdict.SKIPPED for c in over)
    assert any(c.verdict is Verdict.MATCH for c in comparisons)


async def test_calls_holding_large_messages_never_take_the_room_small_calls_need() -> None:
    """Six streams each hold a 2 MiB request (never ending) under an 8 MiB total budget: they may take at most
    three quarters of it, so the small calls made meanwhile are all compared, and match. (Both methods are
    outside the descriptors, so the small calls are not ordered behind the streams.)"""

    async def echo(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        return [b"ok" if len(r) > 1024 else r async for r in requests]

    bank, bk = await scripted_server(echo), await scripted_server(echo)
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                registry=INTEROP,
                shadow={"max_capture_total": 8 * MiB},
                shadow_timeout=30,
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            dispatcher = shim.dispatcher
            assert dispatcher is not None
            held = [channel.stream_stream("/big.Big/Hold")() for _ in range(6)]
            for call in held:
                await call.write(b"x" * (2 * MiB))  # and never done writing
            await until(lambda: dispatcher.shared.budget.used >= 6 * MiB, "the large requests held", 10.0)
            large_held = dispatcher.shared.budget.used
            small = [await channel.unary_unary("/small.Small/Get")(b"q%d" % n, timeout=10) for n in range(20)]
            comparisons = await sink.wait_for(20, within=10, where=lambda c: "Small" in c.exchange.method)
            for call in held:
                call.cancel()
            await shim.drain()
    finally:
        await bank.stop()
        await bk.stop()
    assert small == [b"q%d" % n for n in range(20)]
    assert large_held <= 6 * MiB  # three quarters of 8 MiB: three of the six requests, the others not kept
    assert [c.verdict for c in comparisons] == [Verdict.MATCH] * 20, [c.exchange.note for c in comparisons]


async def test_requests_waiting_for_a_slow_bk_stay_within_the_total_budget() -> None:
    """Twelve 256 KiB writes on one key while BK holds the first, under a 1 MiB total budget: the requests
    waiting for BK are held within it too. Those it has room for wait, and reach BK once it goes on; the
    others are given up at once, never sent, recorded as such, and their key is out of step. Every client
    has Bank's answer, and every byte is given back. Before, every request waited for BK whatever the
    budget: here all twelve, 3 MiB; 40 such writes held 10 MiB."""
    release = asyncio.Event()
    reached_bk: list[int] = []

    async def bank_side(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        return [ipb.SimpleResponse().SerializeToString() async for _ in requests]

    async def bk_side(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        got = [ipb.SimpleRequest.FromString(r) async for r in requests]
        reached_bk.extend(len(r.payload.body) for r in got)
        await release.wait()
        return [ipb.SimpleResponse().SerializeToString() for _ in got]

    bank, bk = await scripted_server(bank_side), await scripted_server(bk_side)
    method = "/grpc.testing.TestService/UnaryCall"
    total, size, calls = MiB, 256 * 1024, 12
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                registry=INTEROP,
                shadow={"max_capture_total": total},
                shadow_timeout=30,
                methods={method.lstrip("/"): MethodSettings(key=("response_size",))},
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            dispatcher, steps = shim.dispatcher, shim.steps
            assert dispatcher is not None
            assert steps is not None
            peak = 0

            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, dispatcher.shared.budget.used)
                    await asyncio.sleep(0)

            watcher = asyncio.ensure_future(watch())
            call = channel.unary_unary(method)
            request = ipb.SimpleRequest(response_size=7, payload=ipb.Payload(body=b"x" * size))
            answers = [await call(request.SerializeToString(), timeout=30) for _ in range(calls)]
            await until(lambda: reached_bk == [size], "the first write held at BK")
            release.set()
            comparisons = await sink.wait_for(calls, within=30)
            await shim.drain()
            marked = steps.keys.get("7")
            watcher.cancel()
            held_after = dispatcher.shared.budget.used
    finally:
        release.set()
        await bank.stop()
        await bk.stop()
    assert answers == [ipb.SimpleResponse().SerializeToString()] * calls
    # the writes behind the first one waited in the shim for BK to go on: within the budget, with the first
    assert len(reached_bk) > 1
    assert len(reached_bk) * size <= total, len(reached_bk)
    assert peak <= total
    assert held_after == 0
    given_up = [c for c in comparisons if NO_ROOM in c.reason]
    assert len(given_up) == calls - len(reached_bk)
    assert all(c.verdict is Verdict.SHADOW_ERROR for c in given_up), [c.verdict for c in given_up]
    assert marked is not None
    assert NO_ROOM in marked.reason


async def test_a_stream_beyond_max_capture_gives_back_its_requests_as_they_are_sent() -> None:
    """A stream of twenty 100 KiB requests with `shadow.max_capture` 1 MiB, under a 2 MiB total budget: once
    it keeps no more for its comparison (1 MiB kept), each request waits for BK on the total budget, and is
    given back as it is sent. The whole stream reaches BK: were the requests sent still counted, the budget
    would have no room for them from the sixteenth on, and the stream would be given up."""
    arrived: list[int] = []

    async def bank_side(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        async for _ in requests:
            await context.write(b"ok")  # each as it comes: the primary has received the write
        return []

    async def bk_side(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        async for request in requests:
            arrived.append(len(request))
            await context.write(b"ok")
        return []

    bank, bk = await scripted_server(bank_side), await scripted_server(bk_side)
    size, count = 100 * 1024, 20
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                shadow={"max_capture": MiB, "max_capture_total": 2 * MiB},
                shadow_timeout=30,
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            dispatcher = shim.dispatcher
            assert dispatcher is not None
            call = channel.stream_stream("/big.Big/Put")()
            peak = 0
            for n in range(1, count + 1):
                await call.write(b"x" * size)
                await until(lambda: len(arrived) >= n, f"request {n} at BK")  # noqa: B023 (awaited here)
                peak = max(peak, dispatcher.shared.budget.used)
            await call.done_writing()
            answers = [a async for a in call]
            (comparison,) = await sink.wait_for(1, within=10)
            await shim.drain()
            held_after = dispatcher.shared.budget.used
    finally:
        await bank.stop()
        await bk.stop()
    assert answers == [b"ok"] * count
    assert arrived == [size] * count
    assert peak <= 2 * MiB
    assert held_after == 0
    assert comparison.exchange.note == "too large to compare: more than shadow.max_capture bytes"


async def test_a_request_that_does_not_decode_never_holds_up_other_clients_writes(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """Garbage bytes sent as a keyed write reach no key on any server of the interface (none can decode them):
    one held at BK forever is mirrored outside the order, and another client's deposits are mirrored and
    match at once, not after the shadow timeout."""
    bank, bk = ledgers
    async with forwarding(bk.address) as (proxy, front):
        proxy.held = {"/SettleTrades"}
        settings = _sample_settings(shadow_timeout=30.0)
        async with (
            running_shim(bank.address, front.address, **settings) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            stub: Any = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="G1", initial_deposit="10"))
            with pytest.raises(aio.AioRpcError):
                await channel.unary_unary("/bank.v1.Ledger/SettleTrades")(b"\xff\xff\xff\xff", timeout=5)
            await until(lambda: proxy.arrived == 1, "the garbage write held in front of BK", 10.0)
            for _ in range(3):
                await stub.Deposit(pb.DepositRequest(account_id="G1", amount="1"))
            deposits = await sink.wait_for(3, within=10, where=lambda c: c.method.endswith("/Deposit"))
            not_ordered = shim.counters.get("calls_not_ordered", "/bank.v1.Ledger/SettleTrades")
            proxy.held.clear()
    assert [c.verdict for c in deposits] == [Verdict.MATCH] * 3, [
        (c.exchange.note, c.real_differences) for c in deposits
    ]
    assert not_ordered == 1


async def test_idle_streams_never_starve_other_clients_writes(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """Ten sessions left open and idle with ten mirrored calls allowed: another client's deposits are still
    mirrored and compared, and its account stays in step."""
    bank, bk = ledgers
    settings = _sample_settings(shadow={"max_in_flight": 10})
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
                shadow={"max_in_flight": 4, "stream_idle": 0.2},
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
            held = shim.dispatcher.shared.budget.used
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


@NEEDS_ENVOY
async def test_through_envoy_a_request_over_the_size_limit_reaches_bank_and_is_not_mirrored() -> None:
    """Envoy lets a message of any size through, so Bank applies a request over `max_message_size`. The
    shim's own channel to BK refused to send it, and that refusal was recorded as BK answering
    RESOURCE_EXHAUSTED: a real mismatch blamed on BK. Its copy is not mirrored now, and says why."""
    seen: dict[str, list[int]] = {"bank": [], "bk": []}
    answer = ipb.SimpleResponse(payload=ipb.Payload(body=b"ok")).SerializeToString()

    def side(name: str) -> Any:
        async def answering(
            requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
        ) -> list[bytes]:
            seen[name].extend([len(r) async for r in requests])
            return [answer]

        return answering

    def request(size: int) -> bytes:
        return ipb.SimpleRequest(payload=ipb.Payload(body=b"x" * size)).SerializeToString()

    big, small = request(8192), request(1024)
    bank, bk = await scripted_server(side("bank")), await scripted_server(side("bk"))
    try:
        async with (
            running_shim(
                bank.address, bk.address, dataplane="envoy", registry=INTEROP, max_message_size=4096
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            unary = channel.unary_unary("/grpc.testing.TestService/UnaryCall")
            assert await unary(big, timeout=30) == answer
            assert await unary(small, timeout=30) == answer
            await shim.drain()
            verdicts = sorted((str(c.verdict), c.reason) for c in await sink.wait_for(2, within=30))
    finally:
        await bank.stop()
        await bk.stop()
    assert (seen["bank"], seen["bk"]) == ([len(big), len(small)], [len(small)])
    assert verdicts[0][0] == "match"
    assert verdicts[1][0] == "skipped", verdicts
    assert f"a message of {len(big)} bytes is larger than max_message_size" in verdicts[1][1], verdicts
