"""A refusal worded alike on both sides, naming each side's own id, is the same refusal (docs/ids.md).

Payments (tests/shim/_payments.py) with one change: releasing a hold twice is refused, naming the hold:
Bank's "hold 'H1' already released", BK's "hold 'hd_…' already released". The hold's pair is known
(the request was translated by it), though neither answer holds an id where ids are declared: the pair
comes from the request. Before, the comparison read the two texts with no pair, and blamed BK.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc import aio

from comparators import Verdict
from shim.testing import running_shim
from tests.backends import scripted_server
from tests.shim._payments import IDS, METHODS, REGISTRY, RELEASE_HOLD, Client, Payments, Served


class _Refusing(Payments):
    def _answer(self, method: str, request: Any) -> Any:
        if method == "ReleaseHold" and request.hold_id in self.released:
            return f"hold '{request.hold_id}' already released"
        return super()._answer(method, request)


async def _serve(side: str) -> Served:
    payments = _Refusing(side)
    return Served(payments, await scripted_server(payments))


async def test_a_refusal_naming_each_sides_own_id_from_the_request_matches() -> None:
    bank, bk = await _serve("bank"), await _serve("bk")
    try:
        async with (
            running_shim(
                bank.address, bk.address, registry=REGISTRY, ids=IDS, methods=METHODS, shadow_timeout=10.0
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = Client(channel)
            hold = await client.place_hold("A", "5")
            await client.release_hold(hold.hold_id)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.release_hold(hold.hold_id)
            assert refused.value.details() == f"hold '{hold.hold_id}' already released"
            releases = await sink.wait_for(2, where=lambda c: c.method == RELEASE_HOLD)
        sent = [r.hold_id for r in bk.payments.sent("ReleaseHold")]
    finally:
        await bk.stop()
        await bank.stop()
    assert sent == bk.payments.released * 2, "released once, refused once"
    assert sent[0] != hold.hold_id, "sent in BK's own id"
    assert [(c.verdict, c.differences) for c in releases] == [(Verdict.MATCH, ())] * 2


async def test_the_same_refusal_naming_another_hold_is_still_a_difference() -> None:
    """The pair from the request reads BK's text as Bank's only for the id the request named: BK naming
    another hold of its own is a real difference."""

    class _Wrong(_Refusing):
        def _answer(self, method: str, request: Any) -> Any:
            found = super()._answer(method, request)
            return found.replace(request.hold_id, "hd_other") if isinstance(found, str) else found

    bank = Served(_Refusing("bank"), await scripted_server(_Refusing("bank")))
    wrong = _Wrong("bk")
    bk = Served(wrong, await scripted_server(wrong))
    try:
        async with (
            running_shim(
                bank.address, bk.address, registry=REGISTRY, ids=IDS, methods=METHODS, shadow_timeout=10.0
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = Client(channel)
            hold = await client.place_hold("A", "5")
            await client.release_hold(hold.hold_id)
            with pytest.raises(grpc.aio.AioRpcError):
                await client.release_hold(hold.hold_id)
            releases = await sink.wait_for(2, where=lambda c: c.method == RELEASE_HOLD)
    finally:
        await bk.stop()
        await bank.stop()
    assert [c.verdict for c in releases] == [Verdict.MATCH, Verdict.MISMATCH]
    assert [d.path for d in releases[1].differences] == ["status.details"]
