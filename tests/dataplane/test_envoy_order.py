"""Through Envoy, no mirrored write reaches BK out of its key's order.

Bank and BK keep, per key, the sequence of writes they applied, and take a random few milliseconds over
each (so that writes sent out of order would be applied out of order). Many clients, each on its own
connection, write to a few shared keys; a client sends a write on a key only after the previous write
on that key was answered (by whichever client), which is the order the shim promises to keep. At the end
each key's sequence on BK is Bank's. A large write's copy is still reaching the plane when the copy of
the small write the client made once it was answered is whole: the small one waits for it.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpc import aio

from comparators import Verdict
from shim.dataplane import envoy as envoy_process
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests._proto.grpc.testing import interop_pb2 as pb
from tests.backends import scripted_server
from tests.dataplane._copies import EnvoyCopy
from tests.helpers import registry_of, until

pytestmark = pytest.mark.skipif(envoy_process.binary() is None, reason="no Envoy binary on this platform")

KEYS = 6
CLIENTS = 24
WRITES = 40  # per client
METHOD = "/grpc.testing.TestService/UnaryCall"
ROUNDS = 10  # a large write, then a small one, on a key of their own


def _ledger(applied: dict[int, list[bytes]], seed: int) -> Any:
    rng = random.Random(seed)

    async def apply(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        request = pb.SimpleRequest.FromString(b"".join([r async for r in requests]))
        await asyncio.sleep(rng.random() * 0.004)
        applied[request.response_size].append(request.payload.body)
        return [pb.SimpleResponse(payload=request.payload).SerializeToString()]

    return apply


async def test_each_keys_writes_reach_bk_in_the_order_bank_applied_them() -> None:
    bank_log: dict[int, list[bytes]] = defaultdict(list)
    bk_log: dict[int, list[bytes]] = defaultdict(list)
    bank, bk = await scripted_server(_ledger(bank_log, 1)), await scripted_server(_ledger(bk_log, 2))
    locks = [asyncio.Lock() for _ in range(KEYS)]
    try:
        async with running_shim(
            bank.address,
            bk.address,
            dataplane="envoy",
            registry=registry_of(pb.DESCRIPTOR),
            methods={METHOD.lstrip("/"): MethodSettings(key=("response_size",))},
            shadow_timeout=10.0,
        ) as (shim, sink):

            async def client(n: int) -> None:
                rng = random.Random(100 + n)
                async with aio.insecure_channel(shim.address, options=[("client", n)]) as channel:
                    call = channel.unary_unary(METHOD)
                    for w in range(WRITES):
                        key = rng.randrange(KEYS)
                        body = f"c{n}-w{w}".encode()
                        request = pb.SimpleRequest(response_size=key, payload=pb.Payload(body=body))
                        async with locks[key]:  # the next write on this key waits for this one's answer
                            await call(request.SerializeToString(), timeout=30)

            await asyncio.gather(*(client(n) for n in range(CLIENTS)))
            comparisons = await sink.wait_for(CLIENTS * WRITES, within=60)
    finally:
        await bank.stop()
        await bk.stop()
    assert {c.verdict for c in comparisons} == {Verdict.MATCH}
    assert sum(len(v) for v in bank_log.values()) == CLIENTS * WRITES
    assert dict(bk_log) == dict(bank_log)


def _in_order(applied: dict[int, list[bytes]]) -> Any:
    async def apply(requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        request = pb.SimpleRequest.FromString(b"".join([r async for r in requests]))
        applied[request.response_size].append(request.payload.body[:5])
        return [pb.SimpleResponse(payload=pb.Payload(body=request.payload.body[:5])).SerializeToString()]

    return apply


async def test_a_write_made_once_a_large_writes_answer_came_reaches_bk_after_it() -> None:
    """A client writes a 1 MiB request on a key, has its answer, then a small one on the key. Before, the
    small write's copy, whole first, took its place first: BK got it before the large one."""
    bank_log: dict[int, list[bytes]] = defaultdict(list)
    bk_log: dict[int, list[bytes]] = defaultdict(list)
    bank, bk = await scripted_server(_in_order(bank_log)), await scripted_server(_in_order(bk_log))
    try:
        async with running_shim(
            bank.address,
            bk.address,
            dataplane="envoy",
            registry=registry_of(pb.DESCRIPTOR),
            methods={METHOD.lstrip("/"): MethodSettings(key=("response_size",))},
            shadow_timeout=10.0,
        ) as (shim, sink):
            options = [("grpc.max_send_message_length", 4 << 20)]
            async with aio.insecure_channel(shim.address, options=options) as channel:
                call = channel.unary_unary(METHOD)
                for key in range(ROUNDS):
                    for body in (b"large" + b"x" * (1 << 20), b"small"):
                        request = pb.SimpleRequest(response_size=key, payload=pb.Payload(body=body))
                        await call(request.SerializeToString(), timeout=30)
            comparisons = await sink.wait_for(2 * ROUNDS, within=60)
    finally:
        await bank.stop()
        await bk.stop()
    assert {c.verdict for c in comparisons} == {Verdict.MATCH}
    assert dict(bank_log) == {key: [b"large", b"small"] for key in range(ROUNDS)}
    assert dict(bk_log) == dict(bank_log)
    assert shim.counters.get("calls_placed_before_earlier_copies", METHOD) == 0


def _write(body: bytes) -> bytes:
    return pb.SimpleRequest(response_size=7, payload=pb.Payload(body=body)).SerializeToString()


def _answer(body: bytes) -> bytes:
    return pb.SimpleResponse(payload=pb.Payload(body=body[:5])).SerializeToString()


async def _copies_plane(shim: Any) -> tuple[aio.Server, str]:
    """A server the test sends the comparison plane's processor copies through, as Envoy would."""
    plane = aio.server()
    assert shim.front is not None
    assert shim.front.processor is not None
    plane.add_generic_rpc_handlers([shim.front.processor.handler()])
    port = plane.add_insecure_port("127.0.0.1:0")
    await plane.start()
    return plane, f"127.0.0.1:{port}"


async def test_a_copy_waits_for_an_earlier_copy_still_arriving_and_both_reach_bk_in_their_order() -> None:
    bk_log: dict[int, list[bytes]] = defaultdict(list)
    bank, bk = await scripted_server(_in_order(defaultdict(list))), await scripted_server(_in_order(bk_log))
    large, small = _write(b"large" + b"x" * 100_000), _write(b"small")
    try:
        async with running_shim(
            bank.address,
            bk.address,
            dataplane="envoy",
            registry=registry_of(pb.DESCRIPTOR),
            methods={METHOD.lstrip("/"): MethodSettings(key=("response_size",))},
            shadow_timeout=10.0,
        ) as (shim, sink):
            plane, address = await _copies_plane(shim)
            try:
                async with aio.insecure_channel(address) as channel:
                    first = EnvoyCopy(channel, METHOD)
                    rest = first.begin(large, 50_000)  # half of it has reached the plane
                    await until(lambda: shim.front.processor.copies == 1, "the first copy taken up")
                    second = EnvoyCopy(channel, METHOD)
                    second.request(small)
                    second.answer(_answer(b"small"))
                    await second.over()
                    assert bk_log == {}, "the small write waits for the large one, received before it"
                    first.rest(rest)
                    first.answer(_answer(b"large"))
                    await first.over()
                    comparisons = await sink.wait_for(2, within=30)
            finally:
                await plane.stop(None)
    finally:
        await bank.stop()
        await bk.stop()
    assert [c.verdict for c in comparisons] == [Verdict.MATCH] * 2
    assert bk_log == {7: [b"large", b"small"]}
    assert shim.counters.get("calls_placed_before_earlier_copies", METHOD) == 0


async def test_a_copy_still_arriving_after_envoys_hold_is_passed_over_and_its_keys_go_out_of_step() -> None:
    """Envoy holds a copy for the plane the shadow's timeout (1 s here): a copy still arriving that long
    after a later one was whole holds it no longer. The later write is counted; the earlier one, placed
    after it, marks its key out of step."""
    bk_log: dict[int, list[bytes]] = defaultdict(list)
    bank, bk = await scripted_server(_in_order(defaultdict(list))), await scripted_server(_in_order(bk_log))
    large, small = _write(b"large" + b"x" * 100_000), _write(b"small")
    try:
        async with running_shim(
            bank.address,
            bk.address,
            dataplane="envoy",
            registry=registry_of(pb.DESCRIPTOR),
            methods={METHOD.lstrip("/"): MethodSettings(key=("response_size",))},
            shadow_timeout=1.0,
        ) as (shim, sink):
            plane, address = await _copies_plane(shim)
            try:
                async with aio.insecure_channel(address) as channel:
                    first = EnvoyCopy(channel, METHOD)
                    rest = first.begin(large, 50_000)
                    await until(lambda: shim.front.processor.copies == 1, "the first copy taken up")
                    second = EnvoyCopy(channel, METHOD)
                    second.request(small)
                    second.answer(_answer(b"small"))
                    await second.over()
                    (passed,) = await sink.wait_for(1, within=10)
                    assert (passed.verdict, bk_log) == (Verdict.MATCH, {7: [b"small"]})
                    assert shim.counters.get("calls_placed_before_earlier_copies", METHOD) == 1
                    assert shim.dispatcher.shared.steps.mark_of("7") is None
                    first.rest(rest)
                    first.answer(_answer(b"large"))
                    await first.over()
                    await sink.wait_for(2, within=10)
            finally:
                await plane.stop(None)
    finally:
        await bank.stop()
        await bk.stop()
    assert bk_log == {7: [b"small", b"large"]}
    mark = shim.dispatcher.shared.steps.mark_of("7")
    assert mark is not None
    assert "took its place after copies Envoy received after it" in mark.reason
