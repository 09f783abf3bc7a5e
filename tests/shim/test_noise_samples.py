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
