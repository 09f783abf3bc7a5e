"""Whatever fault BK or Bank shows, the client gets Bank's answer exactly, the fault is recorded and counted,
and the shim goes on serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc import aio

from comparators import REFUSALS, Comparison, DiffKind, Verdict
from shim._breaker import CLOSED, OPEN
from shim.app import Shim
from shim.routing import MethodSettings
from shim.testing import CapturingSink, running_shim
from tests._proto.grpc.testing import interop_pb2 as pb
from tests._proto.grpc.testing import interop_pb2_grpc as pb_grpc
from tests.backends import (
    ECHO_INITIAL,
    ECHO_TRAILING,
    OPTIONS,
    InteropService,
    Running,
    called_method,
    echo_metadata,
    interop_server,
    scripted_server,
)
from tests.helpers import registry_of

SERVICE = "/grpc.testing.TestService"
UNARY = f"{SERVICE}/UnaryCall"
STREAM = f"{SERVICE}/StreamingOutputCall"
DUPLEX = f"{SERVICE}/FullDuplexCall"
SIZES = (11, 22, 33, 44, 55)  # Bank's five answers to a streaming call, told apart by their size
METADATA = ((ECHO_INITIAL, "fault-matrix"), (ECHO_TRAILING, b"\x00\xfftrailer"))
MiB = 1024 * 1024
REGISTRY = registry_of(pb.DESCRIPTOR)
# the interop service changes nothing: its methods are reads (no write marks keys out of step)
SETTINGS = {
    "registry": REGISTRY,
    "methods": {m.lstrip("/"): MethodSettings(read=True) for m in (UNARY, STREAM, DUPLEX)},
}
NON_OK = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]

Behaviour = Callable[[AsyncIterator[bytes], aio.ServicerContext[bytes, bytes]], Awaitable[list[bytes]]]


@dataclass(frozen=True)
class Observed:
    """What a client saw of one call: comparable between a call to Bank and the same call through the shim."""

    code: grpc.StatusCode
    details: str | None
    initial: tuple[tuple[str, str | bytes], ...]
    trailing: tuple[tuple[str, str | bytes], ...]
    answers: tuple[bytes, ...]


async def _finish(call: aio.Call, answers: list[bytes]) -> Observed:
    return Observed(
        code=await call.code(),
        details=await call.details(),
        initial=tuple(await call.initial_metadata() or ()),
        trailing=tuple(await call.trailing_metadata() or ()),
        answers=tuple(answers),
    )


async def _unary(channel: aio.Channel, request: pb.SimpleRequest) -> Observed:
    call = pb_grpc.TestServiceStub(channel).UnaryCall(request, metadata=METADATA)
    try:
        answers = [(await call).SerializeToString()]
    except aio.AioRpcError:
        answers = []
    return await _finish(call, answers)


async def _read_all(call: aio.Call) -> list[bytes]:
    answers = []
    try:
        async for answer in call:  # type: ignore[attr-defined]
            answers.append(answer.SerializeToString())
    except aio.AioRpcError:
        pass
    return answers


async def _streamed(channel: aio.Channel, request: pb.StreamingOutputCallRequest) -> Observed:
    call = pb_grpc.TestServiceStub(channel).StreamingOutputCall(request, metadata=METADATA)
    return await _finish(call, await _read_all(call))


async def _duplex(channel: aio.Channel, request: pb.StreamingOutputCallRequest) -> Observed:
    call = pb_grpc.TestServiceStub(channel).FullDuplexCall(iter([request]), metadata=METADATA)
    return await _finish(call, await _read_all(call))


Invoke = Callable[[aio.Channel, Any], Awaitable[Observed]]


async def _observe(address: str, invoke: Invoke, request: Any) -> Observed:
    async with aio.insecure_channel(address) as channel:
        return await invoke(channel, request)


def _stream_request(
    sizes: tuple[int, ...] = SIZES, status: pb.EchoStatus | None = None
) -> pb.StreamingOutputCallRequest:
    return pb.StreamingOutputCallRequest(
        response_parameters=[pb.ResponseParameters(size=s) for s in sizes], response_status=status
    )


def _answer(size: int) -> bytes:
    return pb.StreamingOutputCallResponse(payload=pb.Payload(body=b"\0" * size)).SerializeToString()


def _bk_streaming(
    sizes: Callable[[tuple[int, ...]], tuple[int, ...]], then: grpc.StatusCode | None = None
) -> Behaviour:
    """A BK that answers a streaming call with the messages for `sizes(asked)`, then ends with `then`
    (OK when None)."""

    async def behaviour(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        if called_method() != STREAM:
            return await _obliging(requests, context)
        await echo_metadata(context)  # as the interop service does: the metadata is no difference here
        (raw,) = [r async for r in requests]
        asked = tuple(p.size for p in pb.StreamingOutputCallRequest.FromString(raw).response_parameters)
        for size in sizes(asked):
            await context.write(_answer(size))
        if then is not None:
            await context.abort(then, "bk reset the stream")
        return []

    return behaviour


async def _obliging(
    requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
) -> list[bytes]:
    """A BK that answers every interop call OK, whatever status the request asks for."""
    await echo_metadata(context)
    received = [r async for r in requests]
    if called_method() == UNARY:
        (raw,) = received
        size = pb.SimpleRequest.FromString(raw).response_size
        return [pb.SimpleResponse(payload=pb.Payload(body=b"\0" * size)).SerializeToString()]
    return [
        _answer(p.size)
        for raw in received
        for p in pb.StreamingOutputCallRequest.FromString(raw).response_parameters
    ]


async def _interop_on(port: int) -> Running:
    """The interop service on a given loopback port (a BK that comes back where it was)."""
    server = aio.server(options=OPTIONS)
    pb_grpc.add_TestServiceServicer_to_server(InteropService(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    assert bound == port
    await server.start()
    return Running(server, bound)


async def _still_serving(shim: Shim, sink: CapturingSink) -> Comparison:
    """A normal call after the fault gets its answer and compares as a match; its comparison."""
    await shim.drain()  # the fault's comparisons are all in: the next one is this call's
    seen = len(sink.comparisons)
    async with aio.insecure_channel(shim.address) as channel:
        answer = await pb_grpc.TestServiceStub(channel).UnaryCall(pb.SimpleRequest(response_size=9))
    assert answer == pb.SimpleResponse(payload=pb.Payload(body=b"\0" * 9))
    comparison = (await sink.wait_for(seen + 1))[seen]
    await shim.drain()  # and counted: the sink may see it before the pipeline counts it
    assert comparison.method == UNARY
    assert comparison.verdict is Verdict.MATCH
    return comparison


def _kinds(comparison: Comparison) -> list[tuple[str, DiffKind]]:
    return [(d.path, d.kind) for d in comparison.differences]


@pytest.fixture
async def bank() -> AsyncIterator[Running]:
    running = await interop_server()
    yield running
    await running.stop()


# -- 1. BK resets a stream half way ------------------------------------------------------------


async def test_bk_resetting_a_stream_half_way_leaves_the_client_banks_whole_stream(bank: Running) -> None:
    """BK sends 2 of 5 answers then INTERNAL: the client gets Bank's 5 and OK; status and removed diffs."""
    direct = await _observe(bank.address, _streamed, _stream_request())
    bk = await scripted_server(_bk_streaming(lambda asked: asked[:2], then=grpc.StatusCode.INTERNAL))
    try:
        async with running_shim(bank.address, bk.address, **SETTINGS) as (shim, sink):
            through = await _observe(shim.address, _streamed, _stream_request())
            (comparison,) = await sink.wait_for(1)
            await shim.drain()
            assert shim.counters.get("verdict_mismatch", STREAM) == 1
            await _still_serving(shim, sink)
    finally:
        await bk.stop()
    assert through == direct
    assert through.code is grpc.StatusCode.OK
    assert through.answers == tuple(_answer(s) for s in SIZES)
    assert comparison.verdict is Verdict.MISMATCH
    assert _kinds(comparison) == [
        ("status.code", DiffKind.STATUS),
        ("status.details", DiffKind.STATUS),
        ("[2]", DiffKind.REMOVED),
        ("[3]", DiffKind.REMOVED),
        ("[4]", DiffKind.REMOVED),
    ]
    assert (comparison.differences[0].bank, comparison.differences[0].bk) == ("OK", "INTERNAL")
    assert comparison.differences[1].bk == "bk reset the stream"
    shadow = comparison.exchange.shadow
    assert shadow is not None
    assert shadow.messages == tuple(_answer(s) for s in SIZES[:2])


async def test_bk_unavailable_half_way_through_a_stream_is_a_shadow_error(bank: Running) -> None:
    """BK sends 2 of 5 answers then UNAVAILABLE: the client gets Bank's 5; a shadow error, counted."""
    direct = await _observe(bank.address, _streamed, _stream_request())
    bk = await scripted_server(_bk_streaming(lambda asked: asked[:2], then=grpc.StatusCode.UNAVAILABLE))
    try:
        async with running_shim(bank.address, bk.address, **SETTINGS) as (shim, sink):
            through = await _observe(shim.address, _streamed, _stream_request())
            (comparison,) = await sink.wait_for(1)
            await shim.drain()
            assert shim.counters.get("verdict_shadow-error", STREAM) == 1
            await _still_serving(shim, sink)
    finally:
        await bk.stop()
    assert through == direct
    assert comparison.verdict is Verdict.SHADOW_ERROR
    assert comparison.reason == "shadow unavailable: bk reset the stream"
    assert comparison.differences == ()


# -- 2. BK returns a different number of stream messages ---------------------------------------


@pytest.mark.parametrize(
    ("bk_sizes", "expected"),
    [
        ((11, 22, 33), [("[3]", DiffKind.REMOVED), ("[4]", DiffKind.REMOVED)]),
        ((*SIZES, 66, 77), [("[5]", DiffKind.ADDED), ("[6]", DiffKind.ADDED)]),
    ],
    ids=["bk-sends-3", "bk-sends-7"],
)
async def test_a_different_number_of_stream_messages_is_a_mismatch_at_their_positions(
    bank: Running, bk_sizes: tuple[int, ...], expected: list[tuple[str, DiffKind]]
) -> None:
    """BK sending 3 or 7 answers where Bank sends 5 (both OK) shows as removed or added at those positions."""
    direct = await _observe(bank.address, _streamed, _stream_request())
    bk = await scripted_server(_bk_streaming(lambda asked: bk_sizes))
    try:
        async with running_shim(bank.address, bk.address, **SETTINGS) as (shim, sink):
            through = await _observe(shim.address, _streamed, _stream_request())
            (comparison,) = await sink.wait_for(1)
            await shim.drain()
            assert shim.counters.get("verdict_mismatch", STREAM) == 1
            await _still_serving(shim, sink)
    finally:
        await bk.stop()
    assert through == direct
    assert through.answers == tuple(_answer(s) for s in SIZES)
    assert comparison.verdict is Verdict.MISMATCH
    assert _kinds(comparison) == expected
    for difference in comparison.differences:  # the answer one side sent, nothing on the other
        assert (difference.bank is None) == (difference.kind is DiffKind.ADDED)
        assert (difference.bk is None) == (difference.kind is DiffKind.REMOVED)
    shadow = comparison.exchange.shadow
    assert shadow is not None
    assert shadow.messages == tuple(_answer(s) for s in bk_sizes)


# -- 3. Bank errors of every status code --------------------------------------------------------


@pytest.mark.parametrize("bk_answers", ["ok", "same"])
@pytest.mark.parametrize("code", NON_OK, ids=[c.name for c in NON_OK])
async def test_every_bank_error_reaches_the_client_exactly_and_is_compared(
    bank: Running, code: grpc.StatusCode, bk_answers: str
) -> None:
    """Bank failing with a code: the client gets it and its details; BK OK: status mismatch; alike: a match
    for a refusal (nothing was done on either side), skipped for a failure that is none (INTERNAL,
    UNKNOWN, ...: two broken calls are no agreement). UNAVAILABLE before any answer says Bank never
    received the call: not compared (skipped), however BK answered; the stream that had answers first is
    compared."""
    status = pb.EchoStatus(code=code.value[0], message=f"bank says {code.name} ✗")
    unary = pb.SimpleRequest(response_size=5, response_status=status)
    streaming = _stream_request(SIZES[:3], status)
    cases: list[tuple[str, Invoke, Any]] = [
        (UNARY, _unary, unary),
        (STREAM, _streamed, streaming),
        (DUPLEX, _duplex, streaming),
    ]
    direct = [await _observe(bank.address, invoke, request) for _, invoke, request in cases]
    bk = await (scripted_server(_obliging) if bk_answers == "ok" else interop_server())
    try:
        async with running_shim(bank.address, bk.address, **SETTINGS) as (shim, sink):
            through = [await _observe(shim.address, invoke, request) for _, invoke, request in cases]
            comparisons = {c.method: c for c in await sink.wait_for(len(cases))}
            await shim.drain()
            failed_alike = bk_answers == "same" and code.value[0] not in REFUSALS
            verdict = (
                "verdict_mismatch"
                if bk_answers == "ok"
                else "verdict_skipped"
                if failed_alike
                else "verdict_match"
            )
            never_received = [code is grpc.StatusCode.UNAVAILABLE and m != STREAM for m, _, _ in cases]
            verdicts = [
                "verdict_skipped" if never else verdict
                for never, _ in zip(never_received, cases, strict=True)
            ]
            assert [shim.counters.get(v, m) for v, (m, _, _) in zip(verdicts, cases, strict=True)] == [
                1,
                1,
                1,
            ]
            await _still_serving(shim, sink)
    finally:
        await bk.stop()
    assert through == direct
    assert [o.code for o in through] == [code] * len(cases)
    assert [o.details for o in through] == [status.message] * len(cases)
    assert through[1].answers == tuple(_answer(s) for s in SIZES[:3])  # the answers before the error
    for (method, _, _), never in zip(cases, never_received, strict=True):
        comparison = comparisons[method]
        if never:
            assert (comparison.verdict, comparison.differences) == (Verdict.SKIPPED, ()), method
            assert "the primary never received the call" in comparison.reason
            continue
        if failed_alike:
            assert (comparison.verdict, comparison.differences) == (Verdict.SKIPPED, ()), method
            assert comparison.reason == f"both sides failed ({code.name}): proves nothing"
            continue
        if bk_answers == "same":
            assert comparison.verdict is Verdict.MATCH, method
            continue
        assert comparison.verdict is Verdict.MISMATCH, method
        by_path = {d.path: d for d in comparison.differences}
        assert by_path["status.code"].kind is DiffKind.STATUS
        assert (by_path["status.code"].bank, by_path["status.code"].bk) == (code.name, "OK")
        assert (by_path["status.details"].bank, by_path["status.details"].bk) == (status.message, "")


# -- 4. 32 MiB messages ------------------------------------------------------------------------


async def _thirty_two_mib(bank: Running, **settings: object) -> tuple[pb.SimpleResponse, Comparison]:
    size = 32 * MiB
    bk = await interop_server()
    try:
        async with (
            running_shim(bank.address, bk.address, **SETTINGS, shadow_timeout=30, **settings) as (
                shim,
                sink,
            ),
            aio.insecure_channel(
                shim.address, options=[("grpc.max_receive_message_length", 2 * size)]
            ) as channel,
        ):
            request = pb.SimpleRequest(response_size=size, payload=pb.Payload(body=b"r" * size))
            answer = await pb_grpc.TestServiceStub(channel).UnaryCall(request, timeout=30)
            (comparison,) = await sink.wait_for(1, within=30)
            await _still_serving(shim, sink)
    finally:
        await bk.stop()
    return answer, comparison


async def test_thirty_two_mib_request_and_answer_pass_and_match(bank: Running) -> None:
    """A 32 MiB request and answer pass through (the default limit is 64 MiB) and match within max_capture."""
    answer, comparison = await _thirty_two_mib(bank, shadow={"max_capture": 128 * MiB})
    assert answer == pb.SimpleResponse(payload=pb.Payload(body=b"\0" * 32 * MiB))
    assert comparison.verdict is Verdict.MATCH
    assert comparison.exchange.note == ""


async def test_thirty_two_mib_beyond_max_capture_is_recorded_as_too_large_to_compare(bank: Running) -> None:
    """32 MiB each way over the default 64 MiB max_capture: the client gets it all; skipped as too large."""
    answer, comparison = await _thirty_two_mib(bank)
    assert answer == pb.SimpleResponse(payload=pb.Payload(body=b"\0" * 32 * MiB))
    assert "too large to compare" in comparison.exchange.note
    assert comparison.verdict is Verdict.SKIPPED
    assert "too large to compare" in comparison.reason
    assert comparison.differences == ()


# -- 5. 1,000 concurrent streams ---------------------------------------------------------------


async def test_a_thousand_concurrent_streams_get_their_own_answers_and_all_match(bank: Running) -> None:
    """1,000 server-streaming calls at once (max_in_flight 1000) each get their own answers; 1,000 matches."""
    calls = 1000
    bk = await interop_server()
    try:
        async with (
            running_shim(
                bank.address, bk.address, **SETTINGS, shadow={"max_in_flight": calls}, shadow_timeout=30
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            stub = pb_grpc.TestServiceStub(channel)

            async def one(i: int) -> list[int]:
                call = stub.StreamingOutputCall(_stream_request((i, i + 1, i + 2)), timeout=60)
                return [len(answer.payload.body) async for answer in call]

            answers = await asyncio.gather(*(one(i) for i in range(calls)))
            comparisons = await sink.wait_for(calls, within=60)
            await shim.drain()
            assert shim.counters.get("shadow_dropped") == 0
            assert shim.counters.get("verdict_match", STREAM) == calls
    finally:
        await bk.stop()
    assert answers == [[i, i + 1, i + 2] for i in range(calls)]
    assert len(comparisons) == calls
    assert {c.verdict for c in comparisons} == {Verdict.MATCH}
    mirrored = sorted(
        pb.StreamingOutputCallRequest.FromString(c.exchange.requests[0]).response_parameters[0].size
        for c in comparisons
    )
    assert mirrored == list(range(calls))  # every call compared once, none twice


# -- 6. BK dies mid-run and comes back ---------------------------------------------------------


async def test_bk_dying_mid_run_and_coming_back(bank: Running) -> None:
    """BK down mid-run: Bank's answers go on, shadow errors counted, breaker opens; BK back: match, closed."""
    bk: Running | None = await interop_server()
    port = bk.port
    down = 4
    say = pb.SimpleRequest(response_size=3)
    expected = pb.SimpleResponse(payload=pb.Payload(body=b"\0" * 3))
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                **SETTINGS,
                shadow={
                    "breaker_failures": 3,
                    "breaker_open_for": 0.0,
                },  # the call after an opening is a probe
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            stub = pb_grpc.TestServiceStub(channel)
            assert shim.dispatcher is not None
            assert await stub.UnaryCall(say) == expected
            (before,) = await sink.wait_for(1)
            assert before.verdict is Verdict.MATCH

            await bk.stop()  # BK dies
            bk = None
            for _ in range(down):
                assert await stub.UnaryCall(say) == expected
                await shim.drain()  # each failure is known to the breaker before the next call
            failed = (await sink.wait_for(1 + down))[1:]
            assert [c.verdict for c in failed] == [Verdict.SHADOW_ERROR] * down
            assert all(c.reason.startswith("shadow unavailable") for c in failed)
            assert shim.counters.get("verdict_shadow-error", UNARY) == down
            assert shim.dispatcher.shared.breaker.state == OPEN
            assert shim.counters.get("breaker_open") == 2  # at the 3rd failure, and after the failed probe

            bk = await _interop_on(port)  # BK is back where it was
            await asyncio.wait_for(shim.dispatcher.shared.channel.channel_ready(), timeout=15)
            assert await stub.UnaryCall(say) == expected
            (probe,) = (await sink.wait_for(2 + down))[1 + down :]
            assert probe.verdict is Verdict.MATCH
            await shim.drain()
            assert shim.dispatcher.shared.breaker.state == CLOSED
            assert shim.counters.get("breaker_closed") == 1
            after = await _still_serving(shim, sink)
            assert after.exchange.shadow is not None
            assert shim.counters.get("verdict_match", UNARY) == 3
    finally:
        if bk is not None:
            await bk.stop()
