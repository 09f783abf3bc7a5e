"""Ids the primary minted in a write that was not mirrored (the shadow full, the breaker open, the shim
overloaded): BK never made their counterparts, so a later call naming one cannot reach BK as the client
meant it.

Payments (tests/shim/_payments.py): a hold placed while BK's one place for mirrored calls is taken by a
slow move is not mirrored. Releasing it later named Bank's `H1` to BK as it was (the id never seen), BK
answered NOT_FOUND, and the release was a real mismatch blamed on BK, on no key. The hold's id is kept as
minted without a counterpart, with its account: the release is not sent (`unmapped-id`), on the account's
key, which the unmirrored hold put out of step.
"""

from __future__ import annotations

import pytest
from grpc import aio

from comparators import Verdict
from shim.testing import running_shim
from tests.backends import scripted_server
from tests.helpers import PLANES
from tests.shim._payments import IDS, METHODS, MOVE, REGISTRY, RELEASE_HOLD, Client, Payments, Served


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_call_naming_an_id_minted_by_a_write_that_was_not_mirrored_is_not_sent(
    dataplane: str,
) -> None:
    bank = Served(bank_side := Payments("bank"), await scripted_server(bank_side))
    bk = Served(bk_side := Payments("bk"), await scripted_server(bk_side))
    slow = bk_side.hold("Move")
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                registry=REGISTRY,
                ids=IDS,
                methods=METHODS,
                shadow_timeout=10.0,
                shadow={"max_in_flight": 1},
                dataplane=dataplane,
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = Client(channel)
            await client.move("B", "1")
            await slow.arrived.wait()  # BK's one place is taken
            hold = await client.place_hold("A", "5")  # not mirrored: no room
            slow.release.set()
            await sink.wait_for(1, where=lambda c: c.method == MOVE)
            released = await client.release_hold(hold.hold_id)
            assert released.hold_id == hold.hold_id
            (release,) = await sink.wait_for(1, where=lambda c: c.method == RELEASE_HOLD)
            assert shim.steps is not None
            marked = shim.steps.keys
    finally:
        await bk.stop()
        await bank.stop()
    assert (bk_side.sent("PlaceHold"), bk_side.sent("ReleaseHold")) == ([], []), "BK was sent neither"
    assert (release.verdict, release.exchange.routing_key) == (Verdict.SKIPPED, "A"), (
        release.verdict,
        release.reason,
        release.exchange.routing_key,
    )
    assert "no known counterpart on the shadow (unmapped-id)" in release.reason
    assert "A" in marked, marked
