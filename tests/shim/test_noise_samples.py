"""Which of Bank's second answers a running shim keeps as samples of noise: one that came with another status
than the first (Bank shed or timed out the second ask) is no sample, and neither is one a write through
another replica of a fleet may explain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

import sample_ledger
from comparators import DescriptorRegistry
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.routing import MethodSettings
from shim.testing import running_shim
from tests.backends import called_method, scripted_server
from tests.helpers import postgres_schema_url
from tests.shim import _payments as pay

REGISTRY = DescriptorRegistry.from_files([Path(sample_ledger.__file__).parent / "bank.binpb"])
GET_BALANCE, DEPOSIT = "/bank.v1.Ledger/GetBalance", "/bank.v1.Ledger/Deposit"
BY_ACCOUNT = MethodSettings(key=("account_id",))
LEDGER_METHODS = {"bank.v1.Ledger/GetBalance": BY_ACCOUNT, "bank.v1.Ledger/Deposit": BY_ACCOUNT}


class Book:
    """A ledger of one balance per account. Bank's second GetBalance can be shed (`shed_second_read`) or
    held until `release` is set (`hold_second_read`)."""

    def __init__(
        self, *, shed_second_read: grpc.StatusCode | None = None, hold_second_read: bool = False
    ) -> None:
        self.cash: dict[str, int] = {}
        self.reads = 0
        self.shed = shed_second_read
        self.hold = hold_second_read
        self.second_read = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(
        self, requests: AsyncIterator[bytes], context: aio.ServicerContext[Any, Any]
    ) -> list[bytes]:
        (raw,) = [r async for r in requests]
        if called_method() == DEPOSIT:
            deposit = pb.DepositRequest.FromString(raw)
            self.cash[deposit.account_id] = self.cash.get(deposit.account_id, 100) + int(deposit.amount)
            return [
                pb.Balance(
                    account_id=deposit.account_id, cash=str(self.cash[deposit.account_id])
                ).SerializeToString()
            ]
        request = pb.GetBalanceRequest.FromString(raw)
        self.reads += 1
        if self.reads == 2:
            self.second_read.set()
            if self.shed is not None:
                await context.abort(self.shed, "Bank is shedding load")
            if self.hold:
                await self.release.wait()
        cash = self.cash.get(request.account_id, 100)
        return [pb.Balance(account_id=request.account_id, cash=str(cash)).SerializeToString()]


async def test_a_second_answer_bank_shed_is_no_noise_sample() -> None:
    """Bank sheds the second ask of a read (RESOURCE_EXHAUSTED): the sample is discarded and counted, and
    the call is not one asked twice, so a status difference is never taken for Bank's noise."""
    bank_book, bk_book = Book(shed_second_read=grpc.StatusCode.RESOURCE_EXHAUSTED), Book()
    bank, bk = await scripted_server(bank_book), await scripted_server(bk_book)
    try:
        async with (
            running_shim(bank.address, bk.address, registry=REGISTRY, noise={"reads": 1.0}) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            await channel.unary_unary(GET_BALANCE)(pb.GetBalanceRequest(account_id="A").SerializeToString())
            (read,) = await sink.wait_for(1)
        assert bank_book.second_read.is_set()
        assert not read.noise_sampled
        assert read.noise == ()
        assert shim.counters.get("noise_calls", GET_BALANCE) == 1
        assert shim.counters.get("noise_discarded", GET_BALANCE) == 1
    finally:
        await bank.stop()
        await bk.stop()


async def test_a_second_answer_that_failed_is_no_noise_sample_on_payments() -> None:
    """The same on the payments service: Bank's second ListMovements fails UNAVAILABLE; no sample."""
    bank, bk = await pay.serve("bank"), await pay.serve("bk")
    lists = [0]

    def second_list(_: Any) -> bool:
        lists[0] += 1
        return lists[0] == 2

    bank.payments.fail("ListMovements", grpc.StatusCode.UNAVAILABLE, when=second_list)
    try:
        async with (
            running_shim(
                bank.address, bk.address, registry=pay.REGISTRY, noise={"reads": 1.0}, methods=pay.METHODS
            ) as (shim, sink),
            aio.insecure_channel(shim.address) as channel,
        ):
            assert await pay.Client(channel).list_movements("A") == []
            (read,) = await sink.wait_for(1)
        assert lists[0] == 2
        assert not read.noise_sampled
        assert shim.counters.get("noise_discarded", pay.LIST_MOVEMENTS) == 1
    finally:
        await bank.stop()
        await bk.stop()


async def test_a_write_through_another_replica_voids_the_noise_sample() -> None:
    """Two replicas on one PostgreSQL store: a deposit on an account through B while A asks Bank the read
    again. A's lanes never see B's write, so a second answer whose messages differ is no sample of Bank's
    noise (discarded, counted): Bank's two balances differ by the deposit, not by noise."""
    bank_book, bk_book = Book(hold_second_read=True), Book()
    bank, bk = await scripted_server(bank_book), await scripted_server(bk_book)
    try:
        with postgres_schema_url() as url:
            fleet: dict[str, Any] = {"registry": REGISTRY, "methods": LEDGER_METHODS, "store": {"url": url}}
            async with (
                running_shim(bank.address, bk.address, noise={"reads": 1.0}, **fleet) as (a, sink_a),
                running_shim(bank.address, bk.address, **fleet) as (b, sink_b),
                aio.insecure_channel(a.address) as via_a,
                aio.insecure_channel(b.address) as via_b,
            ):
                await via_a.unary_unary(GET_BALANCE)(pb.GetBalanceRequest(account_id="A").SerializeToString())
                await asyncio.wait_for(bank_book.second_read.wait(), timeout=10)
                deposit = pb.DepositRequest(account_id="A", amount="5").SerializeToString()
                await via_b.unary_unary(DEPOSIT)(deposit)
                await sink_b.wait_for(1)
                bank_book.release.set()
                (read,) = await sink_a.wait_for(1, where=lambda c: c.method == GET_BALANCE)
        assert not read.noise_sampled
        assert read.noise == ()
        assert a.counters.get("noise_discarded", GET_BALANCE) == 1
    finally:
        await bank.stop()
        await bk.stop()


async def test_in_a_fleet_headers_are_still_sampled() -> None:
    """On a shared store, a second answer with the first's status and messages is a sample: what differs
    in its headers (a request id) is noise, as on one replica."""

    async def stamped(requests: AsyncIterator[bytes], context: aio.ServicerContext[Any, Any]) -> list[bytes]:
        [r async for r in requests]
        stamped.calls += 1  # type: ignore[attr-defined]
        await context.send_initial_metadata((("x-request-id", f"r-{stamped.calls}"),))  # type: ignore[attr-defined]
        return [pb.Balance(account_id="A", cash="100").SerializeToString()]

    stamped.calls = 0  # type: ignore[attr-defined]
    bank, bk = await scripted_server(stamped), await scripted_server(Book())
    try:
        with postgres_schema_url() as url:
            async with (
                running_shim(
                    bank.address, bk.address, registry=REGISTRY, noise={"reads": 1.0}, store={"url": url}
                ) as (shim, sink),
                aio.insecure_channel(shim.address) as channel,
            ):
                await channel.unary_unary(GET_BALANCE)(
                    pb.GetBalanceRequest(account_id="A").SerializeToString()
                )
                (read,) = await sink.wait_for(1)
        assert read.noise_sampled
        assert [d.path for d in read.noise] == ["metadata.x-request-id"]
        assert shim.counters.get("noise_discarded", GET_BALANCE) == 0
    finally:
        await bank.stop()
        await bk.stop()


async def test_a_move_through_another_replica_voids_the_noise_sample_on_payments() -> None:
    """The payments service, two replicas on one PostgreSQL store: a Move on account A through B while A's
    second ListMovements of A is held at Bank. Bank's second answer lists the movement: no sample."""
    bank, bk = await pay.serve("bank"), await pay.serve("bk")
    lists = [0]

    def second_list(_: Any) -> bool:
        lists[0] += 1
        return lists[0] == 2

    held = bank.payments.hold("ListMovements", when=second_list)
    try:
        with postgres_schema_url() as url:
            fleet: dict[str, Any] = {"registry": pay.REGISTRY, "methods": pay.METHODS, "store": {"url": url}}
            async with (
                running_shim(bank.address, bk.address, noise={"reads": 1.0}, **fleet) as (a, sink_a),
                running_shim(bank.address, bk.address, **fleet) as (b, sink_b),
                aio.insecure_channel(a.address) as via_a,
                aio.insecure_channel(b.address) as via_b,
            ):
                assert await pay.Client(via_a).list_movements("A") == []
                await asyncio.wait_for(held.arrived.wait(), timeout=10)
                await pay.Client(via_b).move("A", "5")
                await sink_b.wait_for(1)
                held.release.set()
                (read,) = await sink_a.wait_for(1, where=lambda c: c.method == pay.LIST_MOVEMENTS)
        assert not read.noise_sampled
        assert a.counters.get("noise_discarded", pay.LIST_MOVEMENTS) == 1
    finally:
        await bank.stop()
        await bk.stop()
