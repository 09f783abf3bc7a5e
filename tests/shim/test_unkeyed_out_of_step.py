"""A write out of step that has no key, on the payments service (`tests.shim._payments`): a reverse naming
a movement nobody minted has no key, and BK does not answer it in time.

It marks no key, so it taints nothing: a later read of an account is compared as before. It is kept all
the same, in the store, as the mark of no key: `shim resync --list` shows it, Bank is not retired while it
is there (what BK's book lacks could not be told once Bank is gone), a restarted shim still knows it, and
`shim resync --force ''` clears it once the books are reconciled. Before, it was a log line and a counter
only, and Bank could be retired over it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from comparators import Verdict
from shim._proto.shim.v1 import admin_pb2 as apb
from shim._proto.shim.v1 import admin_pb2_grpc as apb_grpc
from shim.testing import running_shim
from tests.helpers import shim_command
from tests.shim import _payments as pay

TOKEN = "s3cret-admin-token"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIM_ADMIN_TOKEN", TOKEN)


def _settings(store: Path) -> dict[str, Any]:
    return {
        "registry": pay.REGISTRY,
        "ids": pay.IDS,
        "methods": pay.METHODS,
        "shadow_timeout": 0.3,
        "store": {"url": str(store)},
        "admin": {"listen": "127.0.0.1:0"},
    }


async def _retire(admin_port: int) -> aio.AioRpcError:
    """Ask to retire Bank (unforced); the refusal."""
    async with aio.insecure_channel(f"127.0.0.1:{admin_port}") as channel:
        admin: Any = apb_grpc.AdminStub(channel)  # type: ignore[no-untyped-call]
        request = apb.SetModeRequest(mode="bk", reason="the point of no return", who="ops", retire_bank=True)
        with pytest.raises(aio.AioRpcError) as refused:
            await admin.SetMode(request, metadata=AUTH, timeout=30)
    return refused.value


async def test_an_unkeyed_write_out_of_step_taints_nothing_and_keeps_bank_from_being_retired(
    tmp_path: Path,
) -> None:
    store = tmp_path / "shim.db"
    bank, bk = await pay.serve("bank"), await pay.serve("bk")
    gate = bk.payments.hold("Reverse")
    try:
        async with (
            running_shim(bank.address, bk.address, **_settings(store)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = pay.Client(channel)
            await client.move("A1", "5.00")
            with pytest.raises(aio.AioRpcError) as reversed_:
                await client.reverse("M999")
            await sink.wait_for(2)
            await shim.drain()
            assert shim.steps is not None
            assert shim.steps.keys == {}  # no key marked: nothing is tainted by it
            no_key = shim.steps.no_key
            assert no_key is not None
            assert (no_key.key, no_key.method) == ("", pay.REVERSE)
            listed = await client.list_movements("A1")
            (*_, listing) = await sink.wait_for(3)
            refused = await _retire(shim.admin_port)
        gate.release.set()
        # a shim started again on the same store knows it too
        async with running_shim(bank.address, bk.address, **_settings(store)) as (again, _):
            assert again.steps is not None
            assert again.steps.keys == {}
            restarted = again.steps.no_key
            refused_again = await _retire(again.admin_port)
        shown = await shim_command("resync", "--store", store, "--list")
        unverifiable = await shim_command("resync", "--store", store, "")
        cleared = await shim_command("resync", "--store", store, "--force", "")
        after = await shim_command("resync", "--store", store, "--list")
    finally:
        gate.release.set()
        await bank.stop()
        await bk.stop()
    assert reversed_.value.code() is grpc.StatusCode.NOT_FOUND
    assert [m.movement_id for m in listed] == ["M1"]
    assert (listing.method, listing.verdict) == (pay.LIST_MOVEMENTS, Verdict.MATCH)
    for refusal in (refused, refused_again):
        assert refusal.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "1 key is out of step ((writes with no key))" in (refusal.details() or ""), refusal.details()
    assert restarted is not None
    assert (restarted.method, restarted.reason) == (pay.REVERSE, no_key.reason)
    assert shown[0] == 0, shown
    (line,) = shown[1].splitlines()
    assert line.startswith("(writes with no key)\tsince "), line
    assert "pay.v1.Payments/Reverse: Bank answered NOT_FOUND" in line, line
    assert "shim resync --force ''" in line, line
    assert unverifiable[0] == 2, unverifiable
    assert "name no key that could be read" in unverifiable[2], unverifiable
    assert cleared[0] == 0, cleared
    assert cleared[1].strip() == "(writes with no key): in step again (forced, not verified)", cleared
    assert after[1].startswith("no key is out of step"), after
