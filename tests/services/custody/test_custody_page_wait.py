"""A mirrored call waits for the pair of an id it names only from a call that entered the lanes before it.

Custody's page tokens are minted by ListAccounts, a read with no key, and are valid for one query
(`scope = "query"`): every client listing with the same page size mints Bank's token "2" for its
second page. The call that named "2" first learned no pair for it (BK's book was one account short, so
its listing had no next page). A later listing mints "2" again; its mirror waits, as every call
without a key does, behind the writes before it, and one of those writes waits behind the call naming
"2". That call must not wait for the later listing's pair: each would wait for the other until
`ordering.max_wait`, and every call behind them with it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from comparators import Comparison, Verdict
from shim.config import load_file
from shim.testing import running_shim
from tests.dataplane._copies import EnvoyCopy
from tests.helpers import NEEDS_ENVOY, until
from tests.services.custody import DESCRIPTOR_SET
from tests.services.custody.client import Client
from tests.services.custody.messages import message_class
from tests.services.custody.server import serve

HERE = Path(__file__).parent
MAX_WAIT = 120.0  # far longer than the test may take: a call waiting this long fails it


def _settings(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "custody.binpb").write_bytes(DESCRIPTOR_SET)
    shutil.copyfile(HERE / "shim.toml", tmp_path / "shim.toml")
    settings = load_file(tmp_path / "shim.toml")
    settings["ordering"] = {"max_wait": MAX_WAIT}
    return settings


def _named(method: str) -> Any:
    def where(c: Comparison) -> bool:
        return c.exchange.method.endswith("/" + method)

    return where


@pytest.mark.parametrize("plane", ["python", pytest.param("envoy", marks=NEEDS_ENVOY)])
async def test_a_page_token_minted_again_by_a_later_listing_does_not_hold_the_call_that_names_it(
    tmp_path: Path, plane: str
) -> None:
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        async with (
            running_shim(bank.address, bk.address, dataplane=plane, **_settings(tmp_path)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = Client(channel)
            opened = []
            for ref in ("r1", "r2"):
                opened.append(await client.call("OpenAccount", client_ref=ref, owner=f"Owner {ref}"))
            await shim.drain()
            # Bank alone gets a third account: its first page of two has a next page, BK's none
            async with aio.insecure_channel(bank.address) as direct:
                assert (await Client(direct).call("OpenAccount", client_ref="r3", owner="x")).ok
            first = await client.call("ListAccounts", page_size=2)
            assert first.message.next_page_token == "2"
            await shim.drain()  # "2" is unpaired now: BK's answer had no token

            release = bk.hold("OpenAccount")  # a write BK is slow to apply
            assert (await client.call("OpenAccount", client_ref="r4", owner="Owner r4")).ok
            named = await client.call("ListAccounts", page_size=2, page_token="2")
            assert named.ok, "Bank's answer, whatever the mirror does"
            account = opened[0].message.account_id
            assert (await client.call("Deposit", account_id=account, amount="5.00")).ok
            again = await client.call("ListAccounts", page_size=2)  # mints "2" again
            assert again.message.next_page_token == "2"
            release.set()

            deposits = await sink.wait_for(1, within=30, where=_named("Deposit"))
            lists = await sink.wait_for(3, within=30, where=_named("ListAccounts"))
    finally:
        await bank.stop()
        await bk.stop()
    assert [d.verdict for d in deposits] == [Verdict.MATCH], "mirrored, not held until max_wait"
    request = message_class("ListAccountsRequest")
    by_token = {request.FromString(c.exchange.requests[0]).page_token: c for c in lists[1:]}
    assert by_token["2"].verdict is Verdict.SKIPPED
    assert by_token["2"].reason == (
        "the request names page '2' (request.page_token),"
        " with no known counterpart on the shadow (unmapped-id)"
    )
    assert by_token[""].verdict is Verdict.MATCH, "the later listing learned its own pair"


@NEEDS_ENVOY
async def test_a_next_page_whose_copy_comes_before_the_answer_that_minted_its_token_waits_for_it(
    tmp_path: Path,
) -> None:
    """On Envoy, a client's next page and the copy of the answer that gave it its token travel on two
    streams: the next page's request can reach the comparison plane first. Its mirror waits for the pair of
    the token from the earlier listing (still being answered), and the page is compared, not skipped."""
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    method = "/custody.v1.Custody/ListAccounts"
    plane = aio.server()
    try:
        async with (
            running_shim(bank.address, bk.address, dataplane="envoy", **_settings(tmp_path)) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
            aio.insecure_channel(bank.address) as direct,
        ):
            client = Client(channel)
            for ref in ("r1", "r2", "r3"):
                assert (await client.call("OpenAccount", client_ref=ref, owner=f"Owner {ref}")).ok
            await shim.drain()
            # the test is Envoy now: it sends the plane the copies of two listings Bank answered
            processor = shim.front.processor
            plane.add_generic_rpc_handlers([processor.handler()])
            port = plane.add_insecure_port("127.0.0.1:0")
            await plane.start()
            request = message_class("ListAccountsRequest")
            first, second = request(page_size=2), request(page_size=2, page_token="2")
            first_answer = await Client(direct).call("ListAccounts", page_size=2)
            assert first_answer.message.next_page_token == "2"
            second_answer = await Client(direct).call("ListAccounts", page_size=2, page_token="2")
            async with aio.insecure_channel(f"127.0.0.1:{port}") as to_plane:

                def listings() -> list[Any]:
                    return [m for m in processor._mirrors if m.method == method]

                earlier = EnvoyCopy(to_plane, method)
                earlier.request(first.SerializeToString())
                await until(
                    lambda: [m.admission.admitted.is_set() for m in listings()] == [True], "first listed"
                )
                later = EnvoyCopy(to_plane, method)
                later.request(second.SerializeToString())
                await until(lambda: len(listings()) == 2, "the next page's copy taken up")
                (next_page,) = (m for m in listings() if m.requests == [second.SerializeToString()])
                # the next page's mirror has reached its ids (or given up on them) before the answer comes
                await until(
                    lambda: (
                        next_page.waiting_for
                        in ("the counterparts of the ids it names", "the primary's answer")
                    ),
                    "the next page's ids looked up",
                )
                earlier.answer(first_answer.message.SerializeToString())
                later.answer(second_answer.message.SerializeToString())
                await earlier.over()
                await later.over()
                lists = await sink.wait_for(2, within=30, where=_named("ListAccounts"))
    finally:
        await plane.stop(None)
        await bank.stop()
        await bk.stop()
    assert [(c.verdict, c.reason) for c in lists] == [(Verdict.MATCH, "")] * 2, (
        "BK's own token, its page compared"
    )
