"""BK answering a new write with an id it gave an earlier one is a conflict, wherever the earlier pair is.

Payments (tests/shim/_payments.py) with BK's bug: its Move on account C answers with the first movement's
id (it made nothing new). With the earlier pair in memory, the third Move is a mismatch: BK's id reads as
the first movement. With room for one pair in memory (`store.id_cache = 1`) the earlier pair was only in
the store, the conflicting pair was taken as new, and the third Move matched: the bug hidden.
"""

from __future__ import annotations

from typing import Any

import pytest
from grpc import aio

from comparators import Verdict
from shim.testing import running_shim
from tests.backends import scripted_server
from tests.shim._payments import IDS, METHODS, MOVE, REGISTRY, Client, Payments, Served, new


class _ReusingBk(Payments):
    def _answer(self, method: str, request: Any) -> Any:
        out = super()._answer(method, request)
        if method == "Move" and request.account_id == "C":
            first = next(iter(self.movements))
            return [new("Movement", movement_id=first, account_id="C", amount=request.amount)]
        return out


@pytest.mark.parametrize("cache", [1000, 1])
async def test_bk_answering_a_new_write_with_an_old_id_is_a_mismatch(tmp_path: Any, cache: int) -> None:
    bank = Served(banks := Payments("bank"), await scripted_server(banks))
    bk = Served(bks := _ReusingBk("bk"), await scripted_server(bks))
    store = {"url": str(tmp_path / "shim.db"), "id_cache": cache}
    try:
        async with (
            running_shim(
                bank.address, bk.address, registry=REGISTRY, ids=IDS, methods=METHODS, store=store
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = Client(channel)
            for count, account in enumerate(("A", "B", "C"), start=1):
                await client.move(account, "1.00")
                moves = await sink.wait_for(count, where=lambda c: c.method == MOVE)
            conflicts = shim.counters.get("id_conflicts", "movement")
    finally:
        await bk.stop()
        await bank.stop()
    assert [c.verdict for c in moves] == [Verdict.MATCH, Verdict.MATCH, Verdict.MISMATCH]
    assert [d.path for d in moves[2].differences] == ["movement_id"]
    assert conflicts == 1
