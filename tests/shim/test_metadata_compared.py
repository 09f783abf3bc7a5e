"""The metadata Bank answers with is compared with BK's, on both data planes: a key BK leaves out or
sends with another value is a difference; the client still gets Bank's, as Bank sent it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio

from comparators import DiffKind, Verdict
from shim.testing import running_shim
from tests.backends import Behaviour, scripted_server
from tests.helpers import PLANES


def _answering(
    headers: tuple[tuple[str, str], ...], trailers: tuple[tuple[str, str], ...], refuse: bool = False
) -> Behaviour:
    async def behaviour(
        requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]
    ) -> list[bytes]:
        received = [r async for r in requests]
        if refuse:  # an answer that is only a status: its headers come as trailers
            context.set_trailing_metadata(headers + trailers)
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such page")
        await context.send_initial_metadata(headers)
        context.set_trailing_metadata(trailers)
        return [b"+".join(received)]

    return behaviour


@pytest.mark.parametrize("plane", PLANES)
@pytest.mark.parametrize("refuse", [False, True], ids=["answered", "refused"])
async def test_a_key_bk_leaves_out_or_changes_is_a_difference(plane: str, refuse: bool) -> None:
    bank = await scripted_server(_answering((("x-page", "2"), ("etag", "v1")), (("x-left", "9"),), refuse))
    bk = await scripted_server(_answering((("x-page", "3"),), (("x-left", "9"), ("x-bk-only", "1")), refuse))
    try:
        async with (
            running_shim(bank.address, bk.address, dataplane=plane) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            call = channel.unary_unary("/test.Pages/Next")(b"p")
            if refuse:
                with pytest.raises(aio.AioRpcError):
                    await call
            else:
                assert await call == b"p"
            seen = (*(await call.initial_metadata() or ()), *(await call.trailing_metadata() or ()))
            assert {("x-page", "2"), ("etag", "v1"), ("x-left", "9")} <= set(seen), "Bank's, as Bank sent it"
            (comparison,) = await sink.wait_for(1)
    finally:
        await bank.stop()
        await bk.stop()
    assert comparison.verdict is Verdict.MISMATCH
    assert sorted((d.path, d.kind, d.bank, d.bk) for d in comparison.differences) == [
        ("metadata.etag", DiffKind.REMOVED, "v1", None),
        ("metadata.x-page", DiffKind.CHANGED, "2", "3"),
    ]


@pytest.mark.parametrize("plane", PLANES)
async def test_the_same_metadata_matches(plane: str) -> None:
    same = _answering((("x-page", "2"), ("etag", "v1")), (("x-left", "9"),))
    bank, bk = await scripted_server(same), await scripted_server(same)
    try:
        async with (
            running_shim(bank.address, bk.address, dataplane=plane) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            assert await channel.unary_unary("/test.Pages/Next")(b"p") == b"p"
            (comparison,) = await sink.wait_for(1)
    finally:
        await bank.stop()
        await bk.stop()
    assert (comparison.verdict, comparison.differences) == (Verdict.MATCH, ())
