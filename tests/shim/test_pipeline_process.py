"""Comparisons in worker processes: same verdicts as in a thread, and a dead worker is replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from comparators import Exchange, Outcome, Verdict
from shim import pipeline as pipeline_module
from shim.metrics import Counters
from shim.pipeline import ComparisonPipeline, WorkerSetup
from shim.store import Store
from shim.testing import CapturingSink, running_shim
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


async def test_comparisons_handed_to_a_worker_together_each_keep_their_own_verdict(
    pair: tuple[Running, Running],
) -> None:
    """Many calls at once: the exchanges submitted in one turn of the event loop go to the worker together,
    and each comes back with the differences of its own two answers, none lost or swapped."""
    bank, bk = pair
    async with running_shim(
        bank.address, bk.address, registry=registry_of(pb.DESCRIPTOR), comparison={"executor": "process"}
    ) as (shim, sink):
        bodies = [f"call {n}".encode() for n in range(200)]
        answers = await asyncio.gather(*(_call(shim.address, body) for body in bodies))
        comparisons = await sink.wait_for(len(bodies), within=60)
        await shim.drain()
        assert shim.pipeline is not None
        assert shim.pipeline.pending == 0
    assert answers == [_answer(body) for body in bodies]
    found = {}
    for comparison in comparisons:
        assert comparison.verdict is Verdict.MISMATCH
        (difference,) = comparison.differences
        request = pb.SimpleRequest.FromString(comparison.exchange.requests[0]).payload.body
        found[request] = (difference.bank, difference.bk)
    assert found == {body: (body, body.upper()) for body in bodies}


async def test_an_exchange_submitted_as_the_pipeline_closes_is_counted_dropped() -> None:
    """Exchanges wait a few milliseconds to go to a worker together; if the pipeline closes first (the shim
    stops), each is counted dropped and releases its bytes, and the pipeline is idle."""
    counters = Counters()
    pipeline = ComparisonPipeline(None, [], counters, executor="process", setup=WorkerSetup(None, (), ()))
    released: list[int] = []
    exchange = Exchange(method=UNARY, requests=(), primary=Outcome(code=0), shadow=Outcome(code=0))
    pipeline.submit(exchange, lambda: released.append(1))
    pipeline.close()
    await asyncio.wait_for(pipeline.drain(), 10)
    assert released == [1]
    assert counters.get("comparisons_dropped") == 1
    assert pipeline.pending == 0


async def test_comparisons_still_waiting_for_a_worker_at_stop_are_counted_dropped_in_the_store(
    pair: tuple[Running, Running], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Comparisons slower than the calls: when the shim stops, those a worker has not taken are cut off.
    Each is counted `comparisons_dropped` under its method, in the store's counts as the gate reads them;
    every call is stored or counted. Before, they were counted as nameless `comparison_errors`, which
    neither the store nor the gate sees: 13 of 20 vanished."""
    bank, bk = pair
    rules = (
        {
            "path": "grpc.testing.Payload.body",
            "rule": "custom",
            "callable": "tests.comparators._custom_rules:slow",
        },
    )
    store, calls = tmp_path / "shim.db", 20
    monkeypatch.setattr(pipeline_module, "GATHER", 0.0)  # each comparison handed over as it comes
    async with running_shim(
        bank.address,
        bk.address,
        registry=registry_of(pb.DESCRIPTOR),
        comparison={"executor": "process"},
        rules=rules,
        store={"url": str(store)},
    ) as (shim, sink):
        assert shim.pipeline is not None
        await shim.pipeline.start()
        for n in range(calls):  # one at a time: each comparison is handed to the worker on its own
            assert await _call(shim.address, b"x%d" % n) == _answer(b"x%d" % n)
        await shim.dispatcher.drain()
    # the shim has stopped: its pipeline had 1 s to drain, for 20 comparisons of 0.3 s each
    dropped = shim.counters.get("comparisons_dropped", UNARY)
    assert dropped > 0
    assert len(sink.comparisons) + dropped == calls
    reopened = Store.open(str(store))
    await reopened.start()
    try:
        ((stored,),) = await reopened.select("SELECT count(*) FROM comparisons")
        counted = await reopened.select("SELECT method, name, sum(value) FROM counts GROUP BY method, name")
    finally:
        await reopened.close()
    assert stored == len(sink.comparisons)
    assert counted == [(UNARY, "comparisons_dropped", dropped)]


async def test_exchanges_submitted_a_turn_apart_go_to_the_worker_together() -> None:
    """Under load the loop turns with an exchange or two each time: those submitted within `GATHER` make one
    hand-over (its cost is the loop's, about a comparison's own), and one submitted later makes another."""
    pipeline = ComparisonPipeline(None, [], Counters(), executor="process", setup=WorkerSetup(None, (), ()))
    await pipeline.start()
    pool = pipeline._compare_pool
    handed: list[int] = []
    submit = pool.submit

    def counting(fn: Any, exchanges: list[Exchange]) -> Any:
        handed.append(len(exchanges))
        return submit(fn, exchanges)

    pool.submit = counting  # type: ignore[method-assign]
    exchange = Exchange(method=UNARY, requests=(), primary=Outcome(code=0), shadow=Outcome(code=0))
    try:
        for _ in range(10):
            pipeline.submit(exchange)
            await asyncio.sleep(0)  # the loop turns
        await asyncio.wait_for(pipeline.drain(), 30)
        assert handed == [10]
        pipeline.submit(exchange)
        await asyncio.wait_for(pipeline.drain(), 30)
        assert handed == [10, 1]
    finally:
        pipeline.close()


async def test_a_batch_that_fails_as_a_whole_is_compared_again_one_by_one() -> None:
    """One exchange that cannot be handed to a worker process (here: it cannot be pickled; before, a
    result that could not be pickled back did the same) failed every comparison of its batch as `error`,
    calls of any method compared beside it. The batch is compared again one by one: the odd one fails
    alone, and the others keep their verdicts."""
    sink = CapturingSink()
    pipeline = ComparisonPipeline(
        None, [sink], Counters(), executor="process", setup=WorkerSetup(None, (), ())
    )
    await pipeline.start()
    plain = Exchange(method=UNARY, requests=(), primary=Outcome(code=0), shadow=Outcome(code=0))
    odd = Exchange(method=UNARY, requests=(), primary=Outcome(code=0), shadow=Outcome(code=0), note=lambda: 0)  # type: ignore[arg-type]
    try:
        for exchange in (plain, odd, plain):
            pipeline.submit(exchange)
        await asyncio.wait_for(pipeline.drain(), 30)
    finally:
        pipeline.close()
    verdicts = sorted(str(c.verdict) for c in sink.comparisons)
    assert verdicts == ["error", "match", "match"]
