"""gRPC health checking through the shim: the overall check is the shim's own, a named service's is the
primary's, and nothing is SERVING through a shim that drains."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from shim.modes import DEFAULT
from shim.testing import running_shim
from tests._proto.grpc.testing import interop_pb2, interop_pb2_grpc
from tests.backends import OPTIONS, InteropService, Running, interop_server
from tests.helpers import PLANES

SERVICE = "grpc.testing.TestService"  # what the clients call, as the primary names it in its health
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


async def _primary(status: int) -> Running:
    """An interop server whose health says `status` for its service (SERVING overall)."""
    server = aio.server(options=OPTIONS)
    interop_pb2_grpc.add_TestServiceServicer_to_server(InteropService(), server)
    servicer = health.aio.HealthServicer()
    await servicer.set(SERVICE, status)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return Running(server, port)


@pytest.fixture
async def bank() -> AsyncIterator[Running]:
    server = await _primary(SERVING)
    yield server
    await server.stop()


async def _check(address: str, service: str) -> tuple[object, ...]:
    async with aio.insecure_channel(address) as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=10
            )
        except aio.AioRpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, answer.status


async def _call_with_client_side_health_checking(address: str) -> tuple[object, ...]:
    """A call from a client whose service config asks for health checking of SERVICE (what grpc then
    watches before it sends any call on a connection)."""
    config = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": SERVICE}}
    options = [("grpc.service_config", json.dumps(config))]
    async with aio.insecure_channel(address, options=options) as channel:
        try:
            await interop_pb2_grpc.TestServiceStub(channel).EmptyCall(interop_pb2.Empty(), timeout=10)
        except aio.AioRpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


async def _seen(address: str) -> tuple[object, ...]:
    return (
        await _check(address, SERVICE),
        await _check(address, "no.such.Service"),
        await _call_with_client_side_health_checking(address),
    )


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_named_services_health_is_the_primarys_and_client_side_health_checking_works(
    dataplane: str, bank: Running
) -> None:
    """A check naming a service gets the primary's answer (SERVING; NOT_FOUND for a service the primary does
    not know), so a client with client-side health checking on that service calls through the shim as it
    does directly; the overall check stays the shim's own. Before, the shim answered every named check
    NOT_FOUND, and such a client failed every call (UNAVAILABLE)."""
    direct = await _seen(bank.address)
    async with running_shim(bank.address, dataplane=dataplane) as (shim, _):
        through = await _seen(shim.address)
        overall = await _check(shim.address, "")
    assert direct[0] == (grpc.StatusCode.OK, SERVING)
    assert direct[1][0] == grpc.StatusCode.NOT_FOUND
    assert through == direct
    assert overall == (grpc.StatusCode.OK, SERVING)


@pytest.mark.parametrize("dataplane", PLANES)
async def test_the_overall_check_is_serving_through_the_shim_where_the_primary_serves_no_health(
    dataplane: str,
) -> None:
    """Not every answer is the primary's: the overall check (service "") is the shim's own, SERVING, where
    a primary with no health service answers UNIMPLEMENTED; a named check is still the primary's
    (docs/transparency.md)."""
    primary = await interop_server()  # no grpc.health.v1 service
    try:
        direct = (await _check(primary.address, ""))[0], (await _check(primary.address, SERVICE))[0]
        async with running_shim(primary.address, dataplane=dataplane) as (shim, _):
            overall = await _check(shim.address, "")
            named = (await _check(shim.address, SERVICE))[0]
    finally:
        await primary.stop()
    assert direct == (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNIMPLEMENTED)
    assert overall == (grpc.StatusCode.OK, SERVING)
    assert named == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("mode", ["shadow", "bk-primary"])
async def test_a_named_services_health_comes_from_the_primary_of_the_mode(mode: str) -> None:
    """Bank says its service is NOT_SERVING, BK that it is SERVING: the client is told what the side that
    answers its calls says (Bank in shadow mode, BK in bk-primary)."""
    bank, bk = await _primary(NOT_SERVING), await _primary(SERVING)
    try:
        async with running_shim(bank.address, bk.address, mode=mode) as (shim, _):
            through = await _check(shim.address, SERVICE)
    finally:
        await bank.stop()
        await bk.stop()
    assert through == (grpc.StatusCode.OK, NOT_SERVING if mode == "shadow" else SERVING)


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_watch_of_a_named_service_says_not_serving_once_the_shim_drains(
    dataplane: str, bank: Running
) -> None:
    """A client watching a named service gets the primary's SERVING, then NOT_SERVING as soon as the shim
    starts to stop, as a watcher of the overall health does: a client-side health check stops sending."""
    async with (
        running_shim(bank.address, dataplane=dataplane) as (shim, _),
        aio.insecure_channel(shim.address) as channel,
    ):
        stub = health_pb2_grpc.HealthStub(channel)
        named = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        overall = stub.Watch(health_pb2.HealthCheckRequest())
        first = ((await named.read()).status, (await overall.read()).status)
        stopping = asyncio.get_running_loop().create_task(shim.stop(grace=2.0))
        second = (
            (await asyncio.wait_for(named.read(), 10)).status,
            (await asyncio.wait_for(overall.read(), 10)).status,
        )
        await stopping
    assert (first, second) == ((SERVING, SERVING), (NOT_SERVING, NOT_SERVING))


async def test_a_watch_of_a_named_service_never_holds_a_switch_of_modes() -> None:
    """A client-side health check keeps its watch open as long as its connection: a switch of modes goes on
    without waiting for it (the watch stays with the primary it began on), and the next check is the new
    primary's. Held like a call in flight, it would have every switch refused."""
    bank, bk = await _primary(NOT_SERVING), await _primary(SERVING)
    try:
        async with (
            running_shim(bank.address, bk.address) as (shim, _),
            aio.insecure_channel(shim.address) as channel,
        ):
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=SERVICE))
            watched = (await watch.read()).status
            await shim.modes.switch({DEFAULT: "bk-primary"}, within=1.0)
            after = await _check(shim.address, SERVICE)
            watch.cancel()
    finally:
        await bank.stop()
        await bk.stop()
    assert (watched, after) == (NOT_SERVING, (grpc.StatusCode.OK, SERVING))
