"""Whatever the shadow does, the client gets the primary's answer, undelayed, and the fault is recorded."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio

from comparators import DiffKind, Verdict
from shim.testing import running_shim
from tests._proto.grpc.testing import interop_pb2 as pb
from tests._proto.grpc.testing import interop_pb2_grpc as pb_grpc
from tests.backends import Running, interop_server, scripted_server
from tests.helpers import registry_of

UNARY = "/grpc.testing.TestService/UnaryCall"


@pytest.fixture
async def bank() -> AsyncIterator[Running]:
    running = await interop_server()
    yield running
    await running.stop()


def _request(size: int = 10) -> pb.SimpleRequest:
    return pb.SimpleRequest(response_size=size, payload=pb.Payload(body=b"q"))


async def test_slow_shadow_does_not_delay_the_client(bank: Running) -> None:
    """The client has its answer while BK is still working; the comparison follows once BK answers."""
    events: list[str] = []
    release = asyncio.Event()

    async def slow(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        body = [r async for r in requests]
        events.append("bk started")
        await release.wait()
        events.append("bk answered")
        return [pb.SimpleResponse(payload=pb.Payload(body=b"\0" * 10)).SerializeToString()] * len(body)

    bk = await scripted_server(slow)
    try:
        async with (
            running_shim(
                bank.address, bk.address, registry=registry_of(pb.DESCRIPTOR), shadow_timeout=30
            ) as (
                shim,
                sink,
            ),
            aio.insecure_channel(shim.address) as channel,
        ):
            answer = await pb_grpc.TestServiceStub(channel).UnaryCall(_request())
            events.append("client answered")
            assert len(answer.payload.body) == 10
            assert sink.comparisons == []
            release.set()
            (comparison,) = await sink.wait_for(1)
    finally:
        await bk.stop()
    assert events.index("client answered") < events.index("bk answered")
    assert comparison.verdict is Verdict.MATCH


async def _stuck(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
    """A BK that never answers (until its call is cancelled)."""
    await asyncio.Event().wait()
    return []


async def test_shadow_beyond_its_timeout_is_a_shadow_error(bank: Running) -> None:
    """A BK slower than the shadow timeout is cancelled and recorded as a shadow timeout."""
    bk = await scripted_server(_stuck)
    try:
        async with (
            running_shim(bank.address, bk.address, shadow_timeout=0.2) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            answer = await pb_grpc.TestServiceStub(channel).UnaryCall(_request(7))
            (comparison,) = await sink.wait_for(1)
    finally:
        await bk.stop()
    assert len(answer.payload.body) == 7
    assert comparison.verdict is Verdict.SHADOW_ERROR
    assert "shadow timeout" in comparison.reason


async def test_a_shadow_slower_than_the_clients_deadline_is_a_shadow_error(bank: Running) -> None:
    """The mirrored call carries the client's deadline: a BK that has not answered by then, though within
    the shadow timeout, gave no answer in time, a shadow error as past the shadow timeout, and counted by
    the breaker. A DEADLINE_EXCEEDED BK gives itself sooner is an answer, and compared. Before, grpc's timer
    ending the mirror was taken as BK answering DEADLINE_EXCEEDED: a real mismatch, which the breaker never
    counted (a BK gone silent opened it only through calls with no deadline)."""

    async def gives_up(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "gave up on its own")
        return []

    found = []
    for behaviour in (_stuck, gives_up):
        bk = await scripted_server(behaviour)
        try:
            async with (
                running_shim(
                    bank.address, bk.address, shadow_timeout=5.0, shadow={"breaker_failures": 2}
                ) as (
                    shim,
                    sink,
                ),
                aio.insecure_channel(shim.address) as channel,
            ):
                for size in (7, 8):
                    answer = await pb_grpc.TestServiceStub(channel).UnaryCall(_request(size), timeout=0.5)
                    assert len(answer.payload.body) == size
                comparisons = await sink.wait_for(2)
                found.append(
                    ([(c.verdict, c.reason) for c in comparisons], shim.counters.get("breaker_open"))
                )
        finally:
            await bk.stop()
    (late, opened), (refused, not_opened) = found
    assert [verdict for verdict, _ in late] == [Verdict.SHADOW_ERROR] * 2
    assert all(reason.startswith("no answer within the client's deadline (") for _, reason in late), late
    assert opened == 1
    assert refused == [(Verdict.MISMATCH, "")] * 2
    assert not_opened == 0


async def test_shadow_down_leaves_the_answer_unchanged(bank: Running) -> None:
    """With BK unreachable the client gets Bank's answer and the exchange is a shadow error."""
    # a port bound and never listened on refuses connections, and no server (the shim's own listener
    # on port 0 included) can be handed it while the socket holds it
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        gone = f"127.0.0.1:{closed.getsockname()[1]}"
        async with (
            running_shim(bank.address, gone) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            answer = await pb_grpc.TestServiceStub(channel).UnaryCall(_request(5))
            (comparison,) = await sink.wait_for(1)
    assert len(answer.payload.body) == 5
    assert comparison.verdict is Verdict.SHADOW_ERROR
    assert comparison.exchange.shadow is not None
    assert comparison.exchange.shadow.status == "UNAVAILABLE"


async def test_shadow_garbage_is_recorded_as_undecodable(bank: Running) -> None:
    """Bytes BK sends that do not decode leave the client's answer intact and show as `undecodable`."""

    async def garbage(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        _ = [r async for r in requests]
        return [b"\xff\xff\xff\xff"]

    bk = await scripted_server(garbage)
    try:
        async with (
            running_shim(bank.address, bk.address, registry=registry_of(pb.DESCRIPTOR)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            answer = await pb_grpc.TestServiceStub(channel).UnaryCall(_request(3))
            (comparison,) = await sink.wait_for(1)
    finally:
        await bk.stop()
    assert answer == pb.SimpleResponse(payload=pb.Payload(body=b"\0" * 3))
    assert comparison.verdict is Verdict.ERROR
    assert comparison.reason == "BK's answer does not decode (<message>)"
    assert [d.kind for d in comparison.differences] == [DiffKind.UNDECODABLE]
    assert comparison.differences[0].bk == "ffffffff"


async def test_client_cancel_propagates_and_is_recorded_as_cancelled() -> None:
    """A client that cancels cancels the primary call too; the exchange says a write's outcome is unknown."""
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def hang(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        _ = [r async for r in requests]
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return []

    bank, bk = await scripted_server(hang), await scripted_server(hang)
    try:
        async with (
            running_shim(bank.address, bk.address) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            call = channel.unary_unary("/ledger.Ledger/Post")(b"write")
            await started.wait()
            call.cancel()
            await asyncio.wait_for(cancelled.wait(), timeout=10)
            (comparison,) = await sink.wait_for(1)
    finally:
        await bank.stop()
        await bk.stop()
    assert await call.code() is grpc.StatusCode.CANCELLED
    assert comparison.verdict is Verdict.SKIPPED
    assert comparison.exchange.cancelled
    assert "cancelled" in comparison.reason
    assert "unknown" in comparison.reason


async def test_client_deadline_reaches_the_primary() -> None:
    """The primary sees the client's deadline, and a call that outlives it ends DEADLINE_EXCEEDED."""
    seen: list[float | None] = []

    async def sleepy(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        seen.append(context.time_remaining())
        await asyncio.Event().wait()
        return []

    bank = await scripted_server(sleepy)
    try:
        async with running_shim(bank.address) as (shim, _sink), aio.insecure_channel(shim.address) as channel:
            with pytest.raises(aio.AioRpcError) as info:
                await channel.unary_unary("/ledger.Ledger/Get")(b"read", timeout=0.5)
    finally:
        await bank.stop()
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(seen) == 1
    assert seen[0] is not None
    assert 0 < seen[0] <= 0.55  # clock rounding


async def test_eight_mib_requests_and_answers_pass(bank: Running) -> None:
    """An 8 MiB request and an 8 MiB answer pass through the shim and compare as a match."""
    bk = await interop_server()
    size = 8 * 1024 * 1024
    try:
        async with (
            running_shim(bank.address, bk.address, registry=registry_of(pb.DESCRIPTOR)) as (shim, sink),
            aio.insecure_channel(
                shim.address, options=[("grpc.max_receive_message_length", 2 * size)]
            ) as channel,
        ):
            request = pb.SimpleRequest(response_size=size, payload=pb.Payload(body=b"r" * size))
            answer = await pb_grpc.TestServiceStub(channel).UnaryCall(request)
            (comparison,) = await sink.wait_for(1)
    finally:
        await bk.stop()
    assert len(answer.payload.body) == size
    assert comparison.verdict is Verdict.MATCH


async def test_two_hundred_concurrent_calls_get_their_own_answers() -> None:
    """200 calls in flight at once each receive the answer to their own request."""

    async def echo(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        return [b"re:" + r async for r in requests]

    bank, bk = await scripted_server(echo), await scripted_server(echo)
    try:
        async with (
            running_shim(bank.address, bk.address) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            calls = [channel.unary_unary("/echo.Echo/Say")(f"call-{i}".encode()) for i in range(200)]
            answers = await asyncio.gather(*calls)
            comparisons = await sink.wait_for(200)
    finally:
        await bank.stop()
        await bk.stop()
    assert answers == [f"re:call-{i}".encode() for i in range(200)]
    assert {c.verdict for c in comparisons} == {Verdict.MATCH}


async def test_a_shadow_that_falls_behind_is_given_up_not_buffered_without_bound() -> None:
    """A BK that stops reading a long request stream is dropped once max_capture bytes wait for it."""
    never = asyncio.Event()

    async def count(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        return [str(sum([len(r) async for r in requests])).encode()]

    async def deaf(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        await never.wait()  # reads nothing: flow control soon stops the shim's writes
        return []

    bank, bk = await scripted_server(count), await scripted_server(deaf)
    chunk = b"z" * 256 * 1024
    try:
        async with (
            running_shim(
                bank.address, bk.address, shadow={"max_capture": 2 * 1024 * 1024}, shadow_timeout=30
            ) as (
                shim,
                sink,
            ),
            aio.insecure_channel(shim.address) as channel,
        ):
            answer = await channel.stream_unary("/bulk.Upload/Put")(iter([chunk] * 64))
            (comparison,) = await sink.wait_for(1)
    finally:
        await bank.stop()
        await bk.stop()
    assert answer == str(64 * len(chunk)).encode()
    assert comparison.verdict is Verdict.SHADOW_ERROR
    assert "given up" in comparison.reason


@pytest.mark.parametrize(("limit", "passes"), [(1024 * 1024, False), (-1, True)], ids=["1MiB", "unlimited"])
async def test_message_size_limit_is_configurable(limit: int, passes: bool) -> None:
    """With max_message_size 1 MiB a 2 MiB request is refused (RESOURCE_EXHAUSTED); unlimited passes it."""

    async def size(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        return [str(len(r)).encode() async for r in requests]

    bank = await scripted_server(size)
    try:
        async with (
            running_shim(bank.address, max_message_size=limit) as (shim, _sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            call = channel.unary_unary("/big.Big/Put")(b"m" * 2 * 1024 * 1024)
            if passes:
                assert await call == str(2 * 1024 * 1024).encode()
            else:
                with pytest.raises(aio.AioRpcError) as info:
                    await call
                assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await bank.stop()


async def test_calls_beyond_max_in_flight_are_not_mirrored_and_say_so() -> None:
    """With one shadow call allowed and BK stuck, later calls are answered and recorded as not mirrored."""
    release = asyncio.Event()

    async def echo(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        return [b"re:" + r async for r in requests]

    async def hold(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        answers = [b"re:" + r async for r in requests]
        await release.wait()
        return answers

    bank, bk = await scripted_server(echo), await scripted_server(hold)
    try:
        async with (
            running_shim(bank.address, bk.address, shadow={"max_in_flight": 1}, shadow_timeout=30) as (
                shim,
                sink,
            ),
            aio.insecure_channel(shim.address) as channel,
        ):
            answers = [await channel.unary_unary("/echo.Echo/Say")(f"{i}".encode()) for i in range(3)]
            skipped = await sink.wait_for(2)
            assert shim.counters.get("shadow_dropped") == 2
            release.set()
            comparisons = await sink.wait_for(3)
    finally:
        await bank.stop()
        await bk.stop()
    assert answers == [b"re:0", b"re:1", b"re:2"]
    assert [c.verdict for c in skipped] == [Verdict.SKIPPED, Verdict.SKIPPED]
    assert all("max_in_flight" in c.reason for c in skipped)
    assert comparisons[-1].verdict is Verdict.MATCH
