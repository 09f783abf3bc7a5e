"""gRPC reflection while BK, behind adapters, answers (`bk-primary`, `bk`): the clients are served Bank's
interface, so reflection describes Bank's interface, from the shim's descriptors, not BK's own. Tested
with the sample's BK that serves only its native interface, and with the payments service of
tests/shim/_payments.py, whose sides serve no reflection at all; on both data planes."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from grpc import aio
from grpc_reflection.v1alpha import reflection_pb2 as rpb
from grpc_reflection.v1alpha import reflection_pb2_grpc as rpb_grpc

from sample_ledger.server import serve
from shim import dataplane as dataplanes
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.backends import scripted_server
from tests.helpers import PLANES
from tests.sample_ledger.test_adapter import _config
from tests.shim import _payments
from tests.shim.test_adapters import HERE

V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


async def _ask(channel: aio.Channel, request: rpb.ServerReflectionRequest, path: str = "") -> Any:
    if path:  # the v1 service: the same messages on the wire
        call = channel.stream_stream(
            path,
            request_serializer=rpb.ServerReflectionRequest.SerializeToString,
            response_deserializer=rpb.ServerReflectionResponse.FromString,
        )
    else:
        call = rpb_grpc.ServerReflectionStub(channel).ServerReflectionInfo  # type: ignore[no-untyped-call]
    (answer,) = [a async for a in call(iter([request]), timeout=10)]
    return answer


async def _services(channel: aio.Channel, path: str = "") -> list[str]:
    answer = await _ask(channel, rpb.ServerReflectionRequest(list_services=""), path)
    return sorted(s.name for s in answer.list_services_response.service)


@pytest.mark.parametrize("dataplane", PLANES)
@pytest.mark.parametrize("mode", ["bk-primary", "bk"])
async def test_reflection_describes_banks_interface_while_the_samples_native_bk_answers(
    mode: str, dataplane: str
) -> None:
    """The sample's BK serves bk.v1.Journal only: reflection lists and describes bank.v1.Ledger."""
    bank, native = await serve("bank"), await serve("bk-native")
    config = _config(bank.address, native.address, mode)
    config = replace(config, serving=replace(config.serving, dataplane=dataplane))
    running = (await dataplanes.start(config, [], None)).shim
    try:
        async with aio.insecure_channel(running.address) as channel:
            services = await _services(channel)
            described = await _ask(
                channel, rpb.ServerReflectionRequest(file_containing_symbol="bank.v1.Ledger")
            )
    finally:
        await running.stop(grace=1.0)
        await native.stop(None)
        await bank.stop(None)
    assert "bank.v1.Ledger" in services
    assert "bk.v1.Journal" not in services
    assert described.WhichOneof("message_response") == "file_descriptor_response"


@pytest.mark.parametrize("dataplane", PLANES)
async def test_reflection_describes_banks_interface_for_an_adapted_bk_that_serves_none(
    dataplane: str,
) -> None:
    """Payments with an adapter on Move, BK primary: BK serves no reflection, and the shim answers it,
    on the v1alpha and the v1 service alike."""

    async def nothing(requests: Any, context: Any) -> list[bytes]:
        return []

    bank, bk = await scripted_server(nothing), await scripted_server(nothing)
    methods = {"pay.v1.Payments/Move": MethodSettings(adapter=f"{HERE}:raising")}
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                mode="bk-primary",
                registry=_payments.REGISTRY,
                methods=methods,
                dataplane=dataplane,
            ) as (shim, _),
            aio.insecure_channel(shim.address) as channel,
        ):
            alpha, v1 = await _services(channel), await _services(channel, V1)
    finally:
        await bk.stop()
        await bank.stop()
    assert alpha == v1 == ["grpc.reflection.v1alpha.ServerReflection", "pay.v1.Payments"]
