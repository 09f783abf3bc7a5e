"""gRPC's standard interop cases behave through the shim exactly as they do directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from grpc import aio

from shim._grpc_compat import send
from shim.testing import running_shim
from tests._proto.grpc.testing import interop_pb2 as pb
from tests._proto.grpc.testing import interop_pb2_grpc as pb_grpc
from tests.backends import ECHO_INITIAL, ECHO_TRAILING, Running, interop_server
from tests.helpers import registry_of

SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"


@dataclass(frozen=True)
class Result:
    """What a client observed: comparable between a direct run and a run through the shim."""

    code: grpc.StatusCode
    details: str | None
    initial: tuple[tuple[str, str | bytes], ...]
    trailing: tuple[tuple[str, str | bytes], ...]
    answers: tuple[str, ...]


def _payload(size: int) -> pb.Payload:
    return pb.Payload(body=b"\0" * size)


async def _finish(call: aio.Call, answers: list[str]) -> Result:
    return Result(
        code=await call.code(),
        details=await call.details(),
        initial=tuple(await call.initial_metadata() or ()),
        trailing=tuple(await call.trailing_metadata() or ()),
        answers=tuple(answers),
    )


async def _unary(call: aio.UnaryUnaryCall, describe: Callable[[object], str]) -> Result:
    try:
        answer = await call
        answers = [describe(answer)]
    except aio.AioRpcError:
        answers = []
    return await _finish(call, answers)


async def _read_all(call: aio.Call) -> list[str]:
    answers = []
    try:
        async for answer in call:  # type: ignore[attr-defined]
            answers.append(f"payload:{len(answer.payload.body)}")
    except aio.AioRpcError:
        pass
    return answers


async def empty_unary(stub: pb_grpc.TestServiceStub, channel: aio.Channel) -> Result:
    return await _unary(stub.EmptyCall(pb.Empty()), lambda r: type(r).__name__)


async def large_unary(stub: pb_grpc.TestServiceStub, channel: aio.Channel) -> Result:
    request = pb.SimpleRequest(response_size=314159, payload=_payload(271828))
    return await _unary(stub.UnaryCall(request), lambda r: f"payload:{len(r.payload.body)}")


async def client_streaming(stub: pb_grpc.TestServiceStub, channel: aio.Channel) -> Result:
    call = stub.StreamingInputCall()
    for size in (27182, 8, 1828, 45904):
        await call.write(pb.StreamingInputCallRequest(payload=_payload(size)))
    await call.done_writing()
    return await _unary(call, lambda r: f"aggregated:{r.aggregated_payload_size}")


async def server_streaming(stub: pb_grpc.TestServiceStub, channel: aio.Channel) -> Result:
    params = [pb.ResponseParameters(size=s) for s in (31415, 9, 2653, 58979)]
    call = stub.StreamingOutputCall(pb.StreamingOutputCallRequest(response_parameters=params))
    return await _finish(call, await _read_all(call))


async def ping_pong(stub: pb_grpc.TestServiceStub, channel: aio.Channel) -> Result:
    call = stub.FullDuplexCall()
    answers = []
    for response_size, request_size in ((31415, 27182), (9, 8), (2653, 1828), (58979, 45904)):
        await call.write(
            pb.StreamingOutputCallRequest(
                response_parameters=[pb.ResponseParameters(size=response_size)],
                payload=_payload(request_size),
            )
        )
        answer = await call.read()
        answers.append(f"payload:{len(answer.payload.body)}")
    await call.done_writing()
    assert await call.read() is aio.EOF
    return await _finish(call, answers)


async def empty_stream(stub: pb_grpc.TestServiceStub, channel: aio.Channel) -> Result:
    call = stub.FullDuplexCall()
    await call.done_writing()
    return await _finish(call, await _read_all(call))


async def custom_metadata(stub: pb_grpc.TestServiceStub, channel: aio.Channel) -> Result:
    metadata = ((ECHO_INITIAL, "test_initial_metadata_value"), (ECHO_TRAILING, b"\xab\xab\xab"))
    unary = await _unary(
        stub.UnaryCall(pb.SimpleRequest(response_size=314159, payload=_payload(271828)), metadata=metadata),
        lambda r: f"payload:{len(r.payload.body)}",
    )
    call = stub.FullDuplexCall(metadata=metadata)
    await call.write(pb.StreamingOutputCallRequest(response_parameters=[pb.ResponseParameters(size=314159)]))
    await call.done_writing()
    streamed = await _finish(call, await _read_all(call))
    assert dict(unary.initial)[ECHO_INITIAL] == "test_initial_metadata_value"
    assert dict(unary.trailing)[ECHO_TRAILING] == b"\xab\xab\xab"
    return Result(
        code=streamed.code,
        details=streamed.details,
        initial=unary.initial + streamed.initial,
        trailing=unary.trailing + streamed.trailing,
        answers=unary.answers + streamed.answers,
    )


async def _status_case(stub: pb_grpc.TestServiceStub, message: str) -> Result:
    status = pb.EchoStatus(code=2, message=message)
    unary = await _unary(stub.UnaryCall(pb.SimpleRequest(response_status=status)), lambda r: "answer")
    call = stub.FullDuplexCall()
    await call.write(pb.StreamingOutputCallRequest(response_status=status))
    await call.done_writing()
    streamed = await _finish(call, await _read_all(call))
    assert unary.code is grpc.StatusCode.UNKNOWN
    assert unary.details == message
    return Result(
        code=streamed.code,
        details=f"{unary.details}|{streamed.details}",
        initial=(),
        trailing=(),
        answers=unary.answers + streamed.answers,
    )


async def status_code_and_message(stub: pb_grpc.TestServiceStub, channel: aio.Channel) -> Result:
    return await _status_case(stub, "test status message")


async def special_status_message(stub: pb_grpc.TestServiceStub, channel: aio.Channel) -> Result:
    return await _status_case(stub, SPECIAL_MESSAGE)


async def unimplemented_method(stub: pb_grpc.TestServiceStub, channel: aio.Channel) -> Result:
    return await _unary(stub.UnimplementedCall(pb.Empty()), lambda r: "answer")


async def unimplemented_service(stub: pb_grpc.TestServiceStub, channel: aio.Channel) -> Result:
    other = pb_grpc.UnimplementedServiceStub(channel)
    return await _unary(other.UnimplementedCall(pb.Empty()), lambda r: "answer")


async def timeout_on_sleeping_server(stub: pb_grpc.TestServiceStub, channel: aio.Channel) -> Result:
    call = stub.FullDuplexCall(timeout=0.001)
    # the deadline may pass while the write is in flight: grpcio's own write would then replace
    # DEADLINE_EXCEEDED with INTERNAL in this client (grpc/grpc#36066), so write as the shim does
    request = pb.StreamingOutputCallRequest(payload=_payload(27182)).SerializeToString()
    await send(call, request)
    answers = await _read_all(call)
    result = await _finish(call, answers)
    return Result(result.code, None, (), (), result.answers)  # details are the local deadline text


async def cancel_after_begin(stub: pb_grpc.TestServiceStub, channel: aio.Channel) -> Result:
    call = stub.StreamingInputCall()
    await call.wait_for_connection()
    call.cancel()
    return Result(await call.code(), None, (), (), ())


async def cancel_after_first_response(stub: pb_grpc.TestServiceStub, channel: aio.Channel) -> Result:
    call = stub.FullDuplexCall()
    await call.write(
        pb.StreamingOutputCallRequest(
            response_parameters=[pb.ResponseParameters(size=31415)], payload=_payload(27182)
        )
    )
    answer = await call.read()
    call.cancel()
    return Result(await call.code(), None, (), (), (f"payload:{len(answer.payload.body)}",))


Case = Callable[[pb_grpc.TestServiceStub, aio.Channel], Awaitable[Result]]
CASES: list[Case] = [
    empty_unary,
    large_unary,
    client_streaming,
    server_streaming,
    ping_pong,
    empty_stream,
    custom_metadata,
    status_code_and_message,
    special_status_message,
    unimplemented_method,
    unimplemented_service,
    timeout_on_sleeping_server,
    cancel_after_begin,
    cancel_after_first_response,
]

EXPECTED_CODES = {
    "status_code_and_message": grpc.StatusCode.UNKNOWN,
    "special_status_message": grpc.StatusCode.UNKNOWN,
    "unimplemented_method": grpc.StatusCode.UNIMPLEMENTED,
    "unimplemented_service": grpc.StatusCode.UNIMPLEMENTED,
    "timeout_on_sleeping_server": grpc.StatusCode.DEADLINE_EXCEEDED,
    "cancel_after_begin": grpc.StatusCode.CANCELLED,
    "cancel_after_first_response": grpc.StatusCode.CANCELLED,
}


async def _run(case: Case, address: str) -> Result:
    async with aio.insecure_channel(address) as channel:
        return await case(pb_grpc.TestServiceStub(channel), channel)


@pytest.fixture
async def backends() -> AsyncIterator[tuple[Running, Running]]:
    bank, bk = await interop_server(), await interop_server()
    yield bank, bk
    await asyncio.gather(bank.stop(), bk.stop())


@pytest.mark.parametrize("described", [False, True], ids=["no-descriptors", "descriptors"])
@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
async def test_interop_case_through_shim_equals_direct(
    case: Case, described: bool, backends: tuple[Running, Running]
) -> None:
    """Each interop case gives the client the same result through the shim (shadow mode) as directly."""
    bank, bk = backends
    direct = await _run(case, bank.address)
    assert direct.code is EXPECTED_CODES.get(case.__name__, grpc.StatusCode.OK)
    registry = registry_of(pb.DESCRIPTOR) if described else None
    async with running_shim(bank.address, bk.address, registry=registry) as (shim, _sink):
        through = await _run(case, shim.address)
    assert through == direct
