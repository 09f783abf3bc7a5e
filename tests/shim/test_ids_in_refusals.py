"""A refusal worded alike on both sides, naming each side's own id, is the same refusal (docs/ids.md).

Payments (tests/shim/_payments.py) with one change: releasing a hold twice is refused, naming the hold:
Bank's "hold 'H1' already released", BK's "hold 'hd_…' already released". The hold's pair is known
(the request was translated by it), though neither answer holds an id where ids are declared: the pair
comes from the request. Before, the comparison read the two texts with no pair, and blamed BK. The same
holds for the refusal's rich details (google.rpc.Status), their message and a violation's description.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_status import rpc_status

from comparators import Verdict
from shim.testing import running_shim
from tests.backends import scripted_server
from tests.shim._payments import IDS, METHODS, REGISTRY, RELEASE_HOLD, Client, Payments, Served


class _Refusing(Payments):
    def _answer(self, method: str, request: Any) -> Any:
        if method == "ReleaseHold" and request.hold_id in self.released:
            return f"hold '{request.hold_id}' already released"
        return super()._answer(method, request)


async def _released_twice(bank_side: Payments, bk_side: Payments) -> tuple[str, list[Any], list[str]]:
    """Through a shim between the two sides, a hold placed, released, and released again (refused, with
    the hold's Bank id in its details, as the client got them): the hold's Bank id, the two ReleaseHold
    comparisons, and the hold ids BK was sent."""
    bank = Served(bank_side, await scripted_server(bank_side))
    bk = Served(bk_side, await scripted_server(bk_side))
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
    return hold.hold_id, releases, sent


async def test_a_refusal_naming_each_sides_own_id_from_the_request_matches() -> None:
    hold, releases, sent = await _released_twice(_Refusing("bank"), bk := _Refusing("bk"))
    assert sent == bk.released * 2, "released once, refused once"
    assert sent[0] != hold, "sent in BK's own id"
    assert [(c.verdict, c.differences) for c in releases] == [(Verdict.MATCH, ())] * 2


class _Wrong(_Refusing):
    """BK's refusal names another hold of its own."""

    def _answer(self, method: str, request: Any) -> Any:
        found = super()._answer(method, request)
        return found.replace(request.hold_id, "hd_other") if isinstance(found, str) else found


async def test_the_same_refusal_naming_another_hold_is_still_a_difference() -> None:
    """The pair from the request reads BK's text as Bank's only for the id the request named: BK naming
    another hold of its own is a real difference."""
    _, releases, _ = await _released_twice(_Refusing("bank"), _Wrong("bk"))
    assert [c.verdict for c in releases] == [Verdict.MATCH, Verdict.MISMATCH]
    assert [d.path for d in releases[1].differences] == ["status.details"]


class _RichRefusing(_Refusing):
    """The refusal with rich details saying it too: their message, and a violation's description."""

    async def _refuse(self, context: aio.ServicerContext[bytes, bytes], details: str) -> None:
        violation = error_details_pb2.PreconditionFailure.Violation(
            type="RELEASED", subject="hold", description=details
        )
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.PreconditionFailure(violations=[violation]))
        code = grpc.StatusCode.FAILED_PRECONDITION
        status = status_pb2.Status(code=code.value[0], message=details, details=[detail])
        await context.abort_with_status(rpc_status.to_status(status))


class _RichWrong(_RichRefusing, _Wrong):
    """BK's rich refusal names another hold of its own."""


async def test_a_refusal_whose_rich_details_name_each_sides_own_id_matches() -> None:
    """Before, the rich details' message and the violation's description were each a real mismatch: a BK
    with no bug failed the gate on every such refusal."""
    _, releases, _ = await _released_twice(_RichRefusing("bank"), _RichRefusing("bk"))
    assert [(c.verdict, c.differences) for c in releases] == [(Verdict.MATCH, ())] * 2


async def test_a_rich_refusal_naming_another_hold_is_still_a_difference() -> None:
    _, releases, _ = await _released_twice(_RichRefusing("bank"), _RichWrong("bk"))
    assert [c.verdict for c in releases] == [Verdict.MATCH, Verdict.MISMATCH]
    assert [d.path for d in releases[1].differences] == [
        "status.details",
        "status.rich_details.message",
        "status.rich_details.details[0].violations[0].description",
    ]
