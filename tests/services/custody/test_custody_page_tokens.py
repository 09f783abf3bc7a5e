"""A page token minted again for the same query, once the book changed, pairs anew: the latest pair wins.

Custody's Bank gives the offset of the next page ("2"); its BK gives an opaque token after the last
account returned. Once an account sorting earlier is opened, Bank's token for the first page of two is
"2" again and BK's names another account: both are right, for the book as it is now. With the first
pair kept, the second listing's tokens were a real difference, blamed on BK, in every listing after
it; and the next page would be asked of BK with its old token, a page off.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from grpc import aio

from comparators import Comparison, Verdict
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


def _listings(c: Comparison) -> bool:
    return c.exchange.method.endswith("/ListAccounts")


async def test_a_page_token_minted_again_after_the_book_changed_pairs_anew(tmp_path: Path) -> None:
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    store = str(tmp_path / "shim.db")
    try:
        async with (
            running_shim(bank.address, bk.address, store={"url": store}, **_settings(tmp_path)) as (
                shim,
                sink,
            ),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = Client(channel)
            for ref in ("r1", "r3", "r4"):
                assert (await client.call("OpenAccount", client_ref=ref, owner=f"Owner {ref}")).ok
            first = await client.call("ListAccounts", page_size=2)
            await shim.drain()
            assert (await client.call("OpenAccount", client_ref="r2", owner="Owner r2")).ok
            again = await client.call("ListAccounts", page_size=2)
            second_page = await client.call(
                "ListAccounts", page_size=2, page_token=again.message.next_page_token
            )
            await shim.drain()
            listings = await sink.wait_for(3, where=_listings)
            assert shim.counters.get("id_conflicts", "page") == 0
    finally:
        await bank.stop()
        await bk.stop()
    assert first.message.next_page_token == again.message.next_page_token == "2"
    assert [a.client_ref for a in second_page.message.accounts] == ["r3", "r4"]
    assert [(c.verdict, c.reason) for c in listings] == [(Verdict.MATCH, "")] * 3, (
        "BK's second token pairs with Bank's '2' now, and BK is asked the next page with it"
    )
    with contextlib.closing(sqlite3.connect(store)) as db:
        stored = db.execute("SELECT bank_id, bk_id FROM id_pairs WHERE kind = 'page'").fetchall()
    assert [(bank_id.rpartition("|")[2], bk_id.rpartition("|")[2]) for bank_id, bk_id in stored] == [
        ("2", base64.urlsafe_b64encode(b"r2").decode())
    ], "the store keeps the latest pair alone: a restarted shim or another replica reads that one"
