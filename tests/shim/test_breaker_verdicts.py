"""What the shadow breaker takes for a verdict on BK's health, and what it does with a probe that gives none.

Only what BK did counts (it answered; it could not be reached; it did not answer in time): a call the shim
decided not to send, or that the client or the shim cut short, neither opens the breaker nor closes it, and
a probe that ends so (or is never mirrored: shed, left out by sampling) lets the next call probe instead.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

from comparators import Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger
from shim._breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from shim.app import Shim
from shim.testing import running_shim
from tests.backends import scripted_server
from tests.helpers import scrape_metrics
from tests.shim import _payments as pay
from tests.shim.test_evidence_store import _sqlite_locked
from tests.shim.test_shedding import KEYED, LOCATIONS, REGISTRY, RULES, SHED_LAG, _until_calm

DEPOSIT = "/bank.v1.Ledger/Deposit"


def _breaker_of(shim: Shim) -> Breaker:
    assert shim.dispatcher is not None
    return shim.dispatcher.shared.breaker


async def test_a_probe_the_client_gives_up_on_lets_the_next_call_probe_and_the_gauge_says_half_open() -> None:
    """BK down opens the breaker; BK back, the probe is a call whose client deadline passes before Bank
    answers: that says nothing of BK, so the next call probes, BK answers it, and mirroring resumes.
    `shim_shadow_breaker_open` is 1 while the breaker is not closed, half-open included. (Before, the
    probe stayed out for good: the breaker never closed and nothing was mirrored again.)"""

    async def echo(requests: AsyncIterator[bytes], context: aio.ServicerContext[bytes, bytes]) -> list[bytes]:
        got = [r async for r in requests]
        if got == [b"slow"]:
            await asyncio.sleep(1.0)
        return [b"re:" + r for r in got]

    bank = await scripted_server(echo)
    holder = socket.socket()  # BK is down: a port bound and never listened on, until BK comes back on it
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    revived = None
    try:
        async with (
            running_shim(
                bank.address,
                f"127.0.0.1:{port}",
                shadow={"breaker_failures": 1, "breaker_open_for": 0.0},  # the call after an opening probes
                metrics_listen="127.0.0.1:0",
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            say = channel.unary_unary("/echo.Echo/Say")
            breaker = _breaker_of(shim)
            assert shim.exporter is not None

            async def gauge() -> float:
                assert shim.exporter is not None
                metrics = await asyncio.to_thread(scrape_metrics, shim.exporter.port)
                return metrics["shim_shadow_breaker_open", ()]

            assert await say(b"down") == b"re:down"
            await shim.drain()
            assert breaker.state == OPEN
            assert await gauge() == 1
            holder.close()
            revived = await scripted_server(echo, port=port)  # BK is back
            assert shim.dispatcher is not None
            await asyncio.wait_for(shim.dispatcher.shared.channel.channel_ready(), timeout=10)
            with pytest.raises(
                grpc.aio.AioRpcError
            ) as raised:  # the probe: the client's deadline passes first
                await say(b"slow", timeout=0.2)
            assert raised.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            await shim.drain()
            assert (breaker.state, breaker.probe) == (HALF_OPEN, 0)  # released: the next call probes
            assert await gauge() == 1
            assert await say(b"after") == b"re:after"
            await shim.drain()
            after = (await sink.wait_for(3))[2]  # after "down" (a shadow error) and "slow" (skipped)
            assert after.verdict is Verdict.MATCH, after.reason
            assert breaker.state == CLOSED
            assert await gauge() == 0
            assert shim.counters.get("shadow_breaker_skipped") == 0
    finally:
        holder.close()
        await bank.stop()
        if revived is not None:
            await revived.stop()


async def test_a_probe_left_out_by_sampling_lets_the_next_call_probe(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """A read sampling leaves out is never mirrored: when it was let through as the probe, the next call
    probes instead, and BK's answer to that one closes the breaker. (Before, the breaker stayed half-open
    with its probe out for good.)"""
    bank, bk = ledgers
    async with running_shim(
        bank.address,
        bk.address,
        registry=REGISTRY,
        methods=KEYED,
        rules=RULES,
        rule_locations=LOCATIONS,
        sampling={"reads": 0.0},
        shadow={"breaker_failures": 1, "breaker_open_for": 0.0},
    ) as (shim, sink):
        async with grpc.aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="A1", initial_deposit="10"))
            await shim.drain()
            breaker = _breaker_of(shim)
            breaker.record(ok=False)  # a shadow failure: open, and the next call is the probe
            assert breaker.state == OPEN
            await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))  # the probe, left out
            await shim.drain()
            assert (breaker.state, breaker.probe) == (HALF_OPEN, 0)
            await stub.Deposit(pb.DepositRequest(account_id="A1", amount="5"))
            await shim.drain()
        (deposit,) = await sink.wait_for(1, where=lambda c: c.method == DEPOSIT)
        assert deposit.verdict is Verdict.MATCH, deposit.reason
        assert breaker.state == CLOSED
        assert shim.counters.get("reads_not_sampled", "/bank.v1.Ledger/GetBalance") == 1


async def test_a_read_shed_while_the_breaker_awaits_its_probe_leaves_the_probe_to_the_next_call(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """Shedding is decided before the breaker is asked: a read shed for a late event loop is no probe, and
    the next call is. (Before, the shed read took the probe with it and the breaker never closed.)"""
    bank, bk = ledgers
    async with running_shim(
        bank.address,
        bk.address,
        registry=REGISTRY,
        methods=KEYED,
        rules=RULES,
        rule_locations=LOCATIONS,
        shadow={"shed_lag": SHED_LAG, "breaker_failures": 1, "breaker_open_for": 0.0},
    ) as (shim, sink):
        async with grpc.aio.insecure_channel(shim.address) as channel:
            stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
            await stub.OpenAccount(pb.OpenAccountRequest(account_id="A1", initial_deposit="10"))
            await shim.drain()
            breaker = _breaker_of(shim)
            breaker.record(ok=False)  # a shadow failure: open, and the next call is the probe
            await _until_calm(shim.loop_lag)
            time.sleep(0.5)  # noqa: ASYNC251  # blocking the loop is the point: the read is shed
            await stub.GetBalance(pb.GetBalanceRequest(account_id="A1"))
            await _until_calm(shim.loop_lag)
            assert (breaker.state, breaker.probe) == (OPEN, 0)  # the shed read never asked it
            await stub.Deposit(pb.DepositRequest(account_id="A1", amount="5"))
            await shim.drain()
        (deposit,) = await sink.wait_for(1, where=lambda c: c.method == DEPOSIT)
        assert deposit.verdict is Verdict.MATCH, deposit.reason
        assert breaker.state == CLOSED
        assert shim.counters.get("shadow_shed", "/bank.v1.Ledger/GetBalance") == 1
        assert shim.counters.get("shadow_breaker_skipped", "/bank.v1.Ledger/GetBalance") == 0


async def test_calls_not_sent_for_an_id_without_counterpart_never_open_the_breaker() -> None:
    """Clients naming a movement BK has no counterpart for: the shim sends none of those calls (`unmapped`),
    which says nothing of BK, so a healthy BK keeps being mirrored. (Before, `breaker_failures` such calls
    opened the breaker, and every call of every client went unmirrored, blamed on shadow failures.)"""
    bank, bk = await pay.serve("bank"), await pay.serve("bk")
    bk.payments.fail("Move", grpc.StatusCode.INTERNAL)  # BK refuses the Move: Bank's M1 has no counterpart
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                registry=pay.REGISTRY,
                ids=pay.IDS,
                methods=pay.METHODS,
                shadow={"breaker_failures": 2, "breaker_open_for": 3600.0},
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = pay.Client(channel)
            movement = await client.move("A", "10.00")
            for _ in range(3):
                await client.reverse(movement.movement_id)
            await shim.drain()
            reversals = await sink.wait_for(3, where=lambda c: c.method == pay.REVERSE)
            assert all(c.reason.endswith("(unmapped-id)") for c in reversals), reversals
            assert bk.payments.sent("Reverse") == []
            await client.place_hold("B", "1.00")
            await shim.drain()
            (hold,) = await sink.wait_for(1, where=lambda c: c.method == pay.PLACE_HOLD)
            assert hold.verdict is Verdict.MATCH, hold.reason
            assert _breaker_of(shim).state == CLOSED
            assert shim.counters.get("breaker_open") == 0
    finally:
        await bk.stop()
        await bank.stop()


async def test_writes_held_by_a_hung_store_never_open_the_breaker(tmp_path: Path) -> None:
    """A store that does not answer holds each write's intent, so the writes are not sent to BK within
    `ordering.max_wait`: the shim's doing, not BK's, and the breaker stays closed; once the store answers,
    writes are mirrored again. (Before, `breaker_failures` such writes opened the breaker.)"""
    bank, bk = await pay.serve("bank"), await pay.serve("bk")
    path = tmp_path / "shim.db"
    try:
        async with (
            running_shim(
                bank.address,
                bk.address,
                registry=pay.REGISTRY,
                ids=pay.IDS,
                methods=pay.METHODS,
                store={"url": str(path)},
                ordering={"max_wait": 0.3},
                shadow={"breaker_failures": 2, "breaker_open_for": 3600.0},
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            client = pay.Client(channel)
            async with _sqlite_locked(
                path
            )():  # another connection holds the database: the shim's writes wait
                for account in ("B", "C", "D"):
                    await client.place_hold(account, "1.00")
                await shim.drain()
                held = await sink.wait_for(3, where=lambda c: c.method == pay.PLACE_HOLD)
                assert all("not sent within ordering.max_wait" in c.reason for c in held), held
                assert bk.payments.sent("PlaceHold") == []
                assert _breaker_of(shim).state == CLOSED
            assert shim.store is not None
            await shim.store.flush()  # the store answers again, and has caught up
            await client.place_hold("E", "1.00")
            await shim.drain()
            after = (await sink.wait_for(4, where=lambda c: c.method == pay.PLACE_HOLD))[3]
            assert after.verdict is Verdict.MATCH, after.reason
            assert shim.counters.get("breaker_open") == 0
    finally:
        await bk.stop()
        await bank.stop()
