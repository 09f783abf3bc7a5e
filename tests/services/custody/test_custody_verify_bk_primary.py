"""With BK primary, the keys out of step are BK's ids (the clients speak BK's): a check reads Bank with
the Bank id each pairs with. Read with BK's id, Bank knows no such account, and no check could ever
conclude."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from shim.config import load_file
from shim.testing import running_shim
from shim.verify import DIFFERS
from tests.services.custody import DESCRIPTOR_SET
from tests.services.custody.client import Client
from tests.services.custody.server import serve

HERE = Path(__file__).parent


def _settings(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "custody.binpb").write_bytes(DESCRIPTOR_SET)
    shutil.copyfile(HERE / "shim.toml", tmp_path / "shim.toml")
    settings = load_file(tmp_path / "shim.toml")
    settings.pop("mode")  # shadow, as the file has it: this test's own is bk-primary
    return settings


async def test_a_key_marked_with_bk_primary_is_read_on_bank_by_its_bank_id(tmp_path: Path) -> None:
    """A deposit Bank, mirrored, failed: the account (BK's id) goes out of step. Its check reads both
    books, Bank's by its own id, and finds them differing by the deposit; not 'unreadable'."""
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    store = str(tmp_path / "shim.db")
    try:
        async with (
            running_shim(
                bank.address, bk.address, mode="bk-primary", store={"url": store}, **_settings(tmp_path)
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = Client(channel)
            opened = await client.call("OpenAccount", client_ref="r1", owner="Owner r1")
            account = opened.message.account_id
            assert account.startswith("acc_"), "BK's id: BK is primary"
            await shim.drain()
            bank.fail("Deposit", grpc.StatusCode.INTERNAL)
            assert (await client.call("Deposit", account_id=account, amount="10.00")).ok
            await sink.wait_for(1, where=lambda c: c.exchange.method.endswith("/Deposit"))
            assert shim.steps is not None
            assert list(shim.steps.keys) == [account]
            assert shim.store is not None
            checks: dict[str, tuple[float, str, str]] = {}
            deadline = asyncio.get_running_loop().time() + 20
            while account not in checks:
                assert asyncio.get_running_loop().time() < deadline, "no check of the key within 20 s"
                await asyncio.sleep(0.05)
                checks = await shim.store.marks.last_verifications()
            _, result, detail = checks[account]
    finally:
        await bank.stop()
        await bk.stop()
    assert result == DIFFERS, detail
    assert "10" in detail, "Bank's balance lacks the deposit BK took"
