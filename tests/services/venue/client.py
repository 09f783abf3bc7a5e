"""A client of `venue.v1.Venue` over a channel, without generated stubs."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any

from google.protobuf.message import Message
from grpc import aio

from tests.services.venue.messages import SERVICE, message_class, new


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _path(method: str) -> str:
    return f"/{SERVICE}/{method}"


class Session:
    """One `Trade` call: `await session.send(request)` answers with that request's ack."""

    def __init__(self, call: aio.StreamStreamCall[Any, Any]) -> None:
        self.call = call

    async def send(self, request: Any) -> Any:
        await self.call.write(request)
        ack = await self.call.read()  # a call that failed raises AioRpcError here
        if ack is aio.EOF:
            raise AssertionError("the session ended (OK) without acking a request")
        return ack

    async def close(self) -> None:
        """Half-close and wait for the call's end (raises AioRpcError when its status is not OK)."""
        await self.call.done_writing()
        if await self.call.read() is not aio.EOF:
            raise AssertionError("an ack without a request")

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if error is None:
            await self.close()
        else:
            self.call.cancel()


class VenueClient:
    """Each method of the venue as an awaitable; failures raise `grpc.aio.AioRpcError`."""

    def __init__(self, channel: aio.Channel) -> None:
        self.channel = channel

    def _unary(self, method: str, answer: str) -> Any:
        return self.channel.unary_unary(
            _path(method),
            request_serializer=_serialize,
            response_deserializer=message_class(answer).FromString,
        )

    async def open_account(self, account: str, cash: str) -> Any:
        return await self._unary("OpenAccount", "Account")(
            new("OpenAccountRequest", account=account, cash=cash)
        )

    def session(self) -> Session:
        call = self.channel.stream_stream(
            _path("Trade"),
            request_serializer=_serialize,
            response_deserializer=message_class("TradeAck").FromString,
        )()
        return Session(call)

    async def submit_batch(self, requests: Iterable[Any]) -> Any:
        call = self.channel.stream_unary(
            _path("SubmitBatch"),
            request_serializer=_serialize,
            response_deserializer=message_class("BatchSummary").FromString,
        )
        return await call(iter(list(requests)))

    async def cancel_order(self, order_id: str) -> Any:
        return await self._unary("CancelOrder", "Order")(new("CancelOrderRequest", order_id=order_id))

    async def get_order(self, order_id: str) -> Any:
        return await self._unary("GetOrder", "Order")(new("GetOrderRequest", order_id=order_id))

    async def list_open_orders(self, symbol: str = "") -> Any:
        return await self._unary("ListOpenOrders", "OrderList")(new("ListOpenOrdersRequest", symbol=symbol))

    async def stream_fills(self, account: str) -> list[Any]:
        call = self.channel.unary_stream(
            _path("StreamFills"),
            request_serializer=_serialize,
            response_deserializer=message_class("Fill").FromString,
        )
        return [fill async for fill in call(new("StreamFillsRequest", account=account))]

    async def get_account(self, account: str) -> Any:
        return await self._unary("GetAccount", "Account")(new("GetAccountRequest", account=account))

    async def list_accounts(self, page_size: int = 0, page_token: str = "") -> Any:
        request = new("ListAccountsRequest", page_size=page_size, page_token=page_token)
        return await self._unary("ListAccounts", "AccountList")(request)

    async def all_accounts(self, page_size: int = 0) -> list[Any]:
        """Every account, following the page tokens."""
        accounts, token = [], ""
        while True:
            page = await self.list_accounts(page_size, token)
            accounts.extend(page.accounts)
            token = page.next_page_token
            if not token:
                return accounts
