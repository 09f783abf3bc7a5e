"""Helpers shared by the sample-ledger tests: connected servers and readers of error details."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc
from sample_ledger.server import RunningLedger, serve

BUY = pb.SIDE_BUY
SELL = pb.SIDE_SELL


@dataclass
class Connected:
    """A running ledger with a channel and a stub pointed at it."""

    kind: str
    running: RunningLedger
    channel: grpc.aio.Channel
    stub: Any

    async def open(self, account_id: str, deposit: str = "100000", currency: str = "") -> pb.Account:
        request = pb.OpenAccountRequest(account_id=account_id, owner_name=f"Owner of {account_id}")
        request.initial_deposit = deposit
        request.currency = currency
        return await self.stub.OpenAccount(request)

    async def trade(
        self, account_id: str, symbol: str, side: int, quantity: str, price: str, client_order_id: str = ""
    ) -> pb.Trade:
        return await self.stub.PostTrade(order(account_id, symbol, side, quantity, price, client_order_id))

    async def balance(self, account_id: str) -> tuple[Decimal, Decimal]:
        answer = await self.stub.GetBalance(pb.GetBalanceRequest(account_id=account_id))
        return Decimal(answer.cash), Decimal(answer.unsettled_cash)

    async def position(self, account_id: str, symbol: str) -> tuple[Decimal, Decimal, Decimal]:
        answer = await self.stub.GetPosition(pb.GetPositionRequest(account_id=account_id, symbol=symbol))
        return Decimal(answer.quantity), Decimal(answer.average_price), Decimal(answer.cost_basis)

    async def entries(self, account_id: str) -> list[pb.LedgerEntry]:
        request = pb.StreamLedgerEntriesRequest(account_id=account_id)
        return [entry async for entry in self.stub.StreamLedgerEntries(request)]


def order(
    account_id: str, symbol: str, side: int, quantity: str, price: str, client_order_id: str = ""
) -> pb.PostTradeRequest:
    return pb.PostTradeRequest(
        account_id=account_id,
        symbol=symbol,
        side=side,  # type: ignore[arg-type]
        quantity=quantity,
        price=price,
        client_order_id=client_order_id,
    )


@asynccontextmanager
async def connected(kind: str) -> AsyncIterator[Connected]:
    """Serve a fresh `kind` ledger on a free port, with a channel; close both on exit."""
    running = await serve(kind)
    channel = grpc.aio.insecure_channel(running.address)
    try:
        yield Connected(kind, running, channel, pb_grpc.LedgerStub(channel))
    finally:
        await channel.close()
        await running.stop(grace=1.0)


async def failure(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error `call` fails with (the test fails when it succeeds)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The google.rpc.Status sent in the trailers, if any."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, description) of every BadRequest field violation in the error's details."""
    status = rich_status(error)
    found: list[tuple[str, str]] = []
    for detail in status.details if status else ():
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found += [(v.field, v.description) for v in bad_request.field_violations]
    return found


def bad_fields(error: grpc.aio.AioRpcError) -> list[str]:
    return [field for field, _ in violations(error)]
