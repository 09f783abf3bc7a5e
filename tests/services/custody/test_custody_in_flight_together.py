"""Two writes on one account in flight at Bank together: Bank may apply them in either order, and BK is
sent them in the order they came to the shim. A freeze held at Bank while a deposit on the same account
goes through: Bank deposits, then freezes; BK is sent the freeze first (it came first), then refuses the
deposit. The two writes' answers differ by the order alone (the freeze's answer holds the balance): each
is `tainted`, naming the other, not a real mismatch blamed on BK (docs/ordering.md). Before, both were
real mismatches. Sent one after the other, the
same two writes are no difference at all, on both sides refused alike."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpc import aio

from comparators import Comparison, Verdict
from shim.config import load_file
from shim.testing import CapturingSink, running_shim
from tests.backends import Forwarder, forwarding
from tests.helpers import PLANES, until
from tests.services.custody import DESCRIPTOR_SET
from tests.services.custody.client import Client
from tests.services.custody.server import Served, serve

HERE = Path(__file__).parent


def _settings(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "custody.binpb").write_bytes(DESCRIPTOR_SET)
    shutil.copyfile(HERE / "shim.toml", tmp_path / "shim.toml")
    settings = load_file(tmp_path / "shim.toml")
    settings.pop("ordering")  # not strict: the deposit goes to Bank while the freeze is still there
    return settings


def _named(method: str) -> Any:
    def where(c: Comparison) -> bool:
        return c.exchange.method.endswith("/" + method)

    return where


@contextlib.asynccontextmanager
async def _custody(
    tmp_path: Path, dataplane: str
) -> AsyncIterator[tuple[Served, Forwarder, CapturingSink, Client]]:
    """Bank (behind a forwarder the test holds calls in), a BK with no bug, and a shim in front of them."""
    bank, bk = await serve("bank"), await serve("bk", bugs=set())
    try:
        async with (
            forwarding(bank.address) as (proxy, front),
            running_shim(front.address, bk.address, dataplane=dataplane, **_settings(tmp_path)) as (
                shim,
                sink,
            ),
            aio.insecure_channel(shim.address) as channel,
        ):
            yield bank, proxy, sink, Client(channel)
    finally:
        await bank.stop()
        await bk.stop()


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_write_whose_answers_differ_by_the_order_of_writes_in_flight_together_is_tainted(
    tmp_path: Path, dataplane: str
) -> None:
    async with _custody(tmp_path, dataplane) as (_, proxy, sink, client):
        together, apart = [(await client.call("OpenAccount", client_ref=ref, owner="Ada")) for ref in "TA"]
        assert (together.ok, apart.ok) == (True, True)
        await sink.wait_for(2, where=_named("OpenAccount"))
        gate = proxy.gated["/Freeze"] = asyncio.Event()
        account = together.message.account_id
        freeze = asyncio.ensure_future(client.call("Freeze", account_id=account))
        await until(lambda: proxy.arrived == 1, "the freeze held at Bank")
        deposited = await client.call("Deposit", account_id=account, amount="5")
        gate.set()
        assert deposited.ok, "Bank deposited before it froze"
        assert (await freeze).ok
        del proxy.gated["/Freeze"]
        # the same two writes, one after the other: both sides freeze, then refuse the deposit
        other = apart.message.account_id
        assert (await client.call("Freeze", account_id=other)).ok
        refused = await client.call("Deposit", account_id=other, amount="5")
        assert refused.code == "FAILED_PRECONDITION"
        deposits = await sink.wait_for(2, where=_named("Deposit"))
        freezes = await sink.wait_for(2, where=_named("Freeze"))
    # each shows what the other did first on one side only: the freeze's answer Bank's balance after the
    # deposit, BK's before it; the deposit Bank's applied, BK's refused (the account frozen)
    (froze, deposit), (then_froze, then_refused) = (
        [next(c for c in found if c.exchange.routing_key == key) for found in (freezes, deposits)]
        for key in (account, other)
    )
    tainted = [(c.verdict, c.reason.split(" on its key")[0]) for c in (froze, deposit)]
    assert tainted == [
        (Verdict.TAINTED, "in flight at the primary together with custody.v1.Custody/Deposit"),
        (Verdict.TAINTED, "in flight at the primary together with custody.v1.Custody/Freeze"),
    ], [(c.verdict, c.reason, c.differences) for c in (froze, deposit)]
    assert all(c.differences for c in (froze, deposit)), "kept, as a tainted call's are"
    assert [(c.verdict, c.reason) for c in (then_froze, then_refused)] == [(Verdict.MATCH, "")] * 2


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_write_judged_while_the_other_is_still_in_flight_at_bank_is_tainted(
    tmp_path: Path, dataplane: str
) -> None:
    """A deposit held on its way to Bank while a freeze on the account is applied there, its answer late:
    Bank freezes, then refuses the deposit. The deposit came first, so BK is sent it first (and deposits),
    and it is judged while the freeze's answer has still not come. It is tainted all the same, naming the
    freeze in flight, and so is the freeze, whose answer (the balance) then differs too."""
    async with _custody(tmp_path, dataplane) as (bank, proxy, sink, client):
        opened = await client.call("OpenAccount", client_ref="H", owner="Ada")
        await sink.wait_for(1, where=_named("OpenAccount"))
        account = opened.message.account_id
        gate = proxy.gated["/Deposit"] = asyncio.Event()
        proxy.late["/Freeze"] = 2.0
        deposit = asyncio.ensure_future(client.call("Deposit", account_id=account, amount="5"))
        await until(lambda: proxy.arrived == 1, "the deposit held on its way to Bank")
        freeze = asyncio.ensure_future(client.call("Freeze", account_id=account))
        await until(lambda: bank.book.accounts[account].frozen, "the freeze applied at Bank")
        gate.set()
        assert (await deposit).code == "FAILED_PRECONDITION", "Bank froze first"
        (judged,) = await sink.wait_for(1, where=_named("Deposit"))
        assert not freeze.done(), "judged while the freeze's answer had not come"
        assert (await freeze).ok
        (frozen,) = await sink.wait_for(1, where=_named("Freeze"))
    assert (judged.verdict, judged.reason.split(" on its key")[0]) == (
        Verdict.TAINTED,
        "in flight at the primary together with custody.v1.Custody/Freeze",
    ), (judged.verdict, judged.reason, judged.differences)
    # the freeze's answer differs too (BK's balance holds the deposit): tainted, by the key the deposit left
    # out of step (refused on one side, applied on the other), or by the deposit in flight with it
    assert frozen.verdict is Verdict.TAINTED, (frozen.reason, frozen.differences)


@pytest.mark.parametrize("dataplane", PLANES)
async def test_a_read_answered_while_a_write_on_its_key_was_in_flight_at_bank_is_tainted(
    tmp_path: Path, dataplane: str
) -> None:
    """A deposit held at Bank while the account's balance is read: Bank answers the read before it applies
    the deposit. The deposit came first, so BK is sent the read after it, and its balance holds the deposit.
    The read's answers differ by the order alone: tainted, naming the deposit, not a real mismatch blamed on
    BK. Before, a real mismatch. The same read once the deposit is answered matches."""
    async with _custody(tmp_path, dataplane) as (_, proxy, sink, client):
        opened = await client.call("OpenAccount", client_ref="R", owner="Ada")
        await sink.wait_for(1, where=_named("OpenAccount"))
        account = opened.message.account_id
        gate = proxy.gated["/Deposit"] = asyncio.Event()
        deposit = asyncio.ensure_future(client.call("Deposit", account_id=account, amount="5"))
        await until(lambda: proxy.arrived == 1, "the deposit held at Bank")
        before = await client.call("GetBalance", account_id=account)
        gate.set()
        assert (await deposit).ok
        after = await client.call("GetBalance", account_id=account)
        assert (before.message.balance, after.message.balance) != ("", ""), (before, after)
        assert before.message.balance != after.message.balance, "Bank answered the read before it deposited"
        reads = await sink.wait_for(2, where=_named("GetBalance"))
    raced, settled = sorted(reads, key=lambda c: c.exchange.started_at)
    assert raced.differences, "BK's balance holds the deposit, Bank's does not"
    assert (raced.verdict, raced.reason.split(" on its key")[0]) == (
        Verdict.TAINTED,
        "answered while custody.v1.Custody/Deposit was in flight at the primary",
    ), (raced.verdict, raced.reason, raced.differences)
    assert (settled.verdict, settled.reason) == (Verdict.MATCH, "")
