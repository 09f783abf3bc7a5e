"""Comparisons in worker processes: same verdicts as in a thread, and a dead worker is replaced."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from grpc import aio

from comparators import Verdict
from shim.testing import running_shim
from tests._proto.grpc.testing import interop_pb2 as pb
from tests.backends import Running, scripted_server
from tests.helpers import registry_of

UNARY = "/grpc.testing.TestService/UnaryCall"


def _answer(body: bytes) -> bytes:
    return pb.SimpleResponse(payload=pb.Payload(body=body)).SerializeToString()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Running, Running]]:
    """Bank answers the request's bytes; BK answers them upper-cased."""

    async def bank(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        return [_answer(pb.SimpleRequest.FromString(r).payload.body) async for r in requests]

    async def bk(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        return [_answer(pb.SimpleRequest.FromString(r).payload.body.upper()) async for r in requests]

    servers = await scripted_server(bank), await scripted_server(bk)
    yield servers
    for server in servers:
        await server.stop()


async def _call(address: str, body: bytes) -> bytes:
    async with aio.insecure_channel(address) as channel:
        request = pb.SimpleRequest(payload=pb.Payload(body=body)).SerializeToString()
        answer: bytes = await channel.unary_unary(UNARY)(request)
        return answer


async def test_a_worker_process_compares_under_the_rules(pair: tuple[Running, Running]) -> None:
    """In a worker process the descriptors and rules are the shim's: a tolerated difference keeps its rule."""
    bank, bk = pair
    rules = ({"path": "grpc.testing.Payload.body", "rule": "ignore", "name": "case of the body"},)
    async with running_shim(
        bank.address,
        bk.address,
        registry=registry_of(pb.DESCRIPTOR),
        comparison={"executor": "process"},
        rules=rules,
    ) as (shim, sink):
        assert await _call(shim.address, b"abc") == _answer(b"abc")
        (comparison,) = await sink.wait_for(1, within=60)
    assert comparison.verdict is Verdict.MATCH
    assert [(d.path, d.rule) for d in comparison.differences] == [("payload.body", "case of the body")]


async def test_a_dead_worker_is_replaced_and_counted(pair: tuple[Running, Running]) -> None:
    """A comparison that kills its worker is stored as an `error` (it counts against the gate) and counted;
    the next one runs in a new worker."""
    bank, bk = pair
    rules = (
        {
            "path": "grpc.testing.Payload.body",
            "rule": "custom",
            "callable": "tests.comparators._custom_rules:kill_worker",
        },
    )
    async with running_shim(
        bank.address,
        bk.address,
        registry=registry_of(pb.DESCRIPTOR),
        comparison={"executor": "process"},
        rules=rules,
    ) as (shim, sink):
        assert await _call(shim.address, b"die") == _answer(b"die")
        await shim.drain()
        assert shim.counters.get("comparison_errors") == 1
        (failed,) = await sink.wait_for(1, within=60)
        assert await _call(shim.address, b"live") == _answer(b"live")
        _, comparison = await sink.wait_for(2, within=60)
    assert failed.verdict is Verdict.ERROR
    assert failed.reason.startswith("the comparison failed: BrokenProcessPool(")
    assert comparison.verdict is Verdict.MISMATCH
    assert comparison.differences[0].path == "payload.body"
