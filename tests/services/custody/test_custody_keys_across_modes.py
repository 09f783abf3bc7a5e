"""With BK primary, the calls on one account are on one routing key, however the client names it.

The client keeps Bank's account id after the switch: a Deposit names it by its key path, a Reverse names
a movement whose owner the pair holds, a GetAccountByRef names the account by its alias. Keys out of step
with BK primary are BK's ids: the owner was given as BK's account id, but the key path and the alias
stayed Bank's, so the three calls sat in two lanes, unordered against each other, and a mark on one key
did not taint the reads of the other.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from grpc import aio

from shim.config import load_file
from shim.testing import running_shim
from tests.services.custody import DESCRIPTOR_SET
from tests.services.custody.client import Client
from tests.services.custody.server import serve

HERE = Path(__file__).parent


def _settings(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "custody.binpb").write_bytes(DESCRIPTOR_SET)
    shutil.copyfile(HERE / "shim.toml", tmp_path / "shim.toml")
    return load_file(tmp_path / "shim.toml")


async def test_a_kept_bank_id_by_key_owner_or_alias_is_one_key_with_bk_primary(tmp_path: Path) -> None:
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        async with (
            running_shim(bank.address, bk.address, **_settings(tmp_path)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = Client(channel)
            opened = await client.call("OpenAccount", client_ref="r1", owner="Owner r1")
            account = opened.message.account_id
            moved = await client.call("Deposit", account_id=account, amount="10.00")
            await shim.drain()
            await shim.modes.switch({"*": "bk-primary"}, within=10)
            assert (await client.call("Deposit", account_id=account, amount="1.00")).ok
            assert (await client.call("Reverse", movement_id=moved.message.movement_id)).ok
            assert (await client.call("GetAccountByRef", client_ref="r1")).ok
            await shim.drain()
            assert shim.ids is not None
            bk_account = shim.ids.known("bank", "account", account)
        after = sink.comparisons[2:]
    finally:
        await bank.stop()
        await bk.stop()
    assert bk_account is not None
    assert bk_account != account
    assert [(c.exchange.method.rpartition("/")[2], c.exchange.routing_key) for c in after] == [
        ("Deposit", bk_account),
        ("Reverse", bk_account),
        ("GetAccountByRef", bk_account),
    ]
