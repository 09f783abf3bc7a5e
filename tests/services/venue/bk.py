"""The venue as BK runs it: an append-only journal of events, projected into typed records.

Money is integer cents; order ids are "ord-<12 hex>" and execution ids "x-<12 hex>". Every
change is an event in `journal`; `clients` and `orders` are projections kept up to date as
events are applied. BK lists open orders newest first (Bank: oldest first).
"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from tests.services.venue.messages import (
    BUY,
    CANCELLED,
    FILLED,
    MODIFIED,
    PARTIALLY_FILLED,
    REJECTED,
    SELL,
    Refused,
    message_class,
)

MAX_HOUSE_FILL = 100
DEFAULT_PAGE_SIZE = 100
_MONEY = re.compile(r"(?P<units>[0-9]+)(?:\.(?P<cents>[0-9]{1,2}))?")

Fill, Order, TradeAck = message_class("Fill"), message_class("Order"), message_class("TradeAck")
Account, OrderList = message_class("Account"), message_class("OrderList")


def parse_cents(text: str) -> int | None:
    match = _MONEY.fullmatch(text)
    if match is None:
        return None
    return int(match["units"]) * 100 + int((match["cents"] or "0").ljust(2, "0"))


def format_cents(cents: int) -> str:
    units, rest = divmod(cents, 100)
    return f"{units}.{rest:02d}"


@dataclass(frozen=True)
class Execution:
    exec_id: str
    shares: int
    price_cents: int

    def to_fill(self) -> Any:
        return Fill(exec_id=self.exec_id, quantity=self.shares, price=format_cents(self.price_cents))


@dataclass
class OrderRecord:
    order_id: str
    client: str
    symbol: str
    side: int
    ordered: int
    resting: int
    state: int
    executions: list[Execution] = field(default_factory=list)

    @property
    def working(self) -> bool:
        return self.state in (PARTIALLY_FILLED, MODIFIED)

    def to_order(self) -> Any:
        return Order(
            order_id=self.order_id,
            account=self.client,
            symbol=self.symbol,
            side=self.side,
            quantity=self.ordered,
            open_quantity=self.resting,
            status=self.state,
            fills=[e.to_fill() for e in self.executions],
        )


@dataclass
class Client:
    name: str
    cents: int
    holdings: Counter[str] = field(default_factory=Counter)
    executions: list[Execution] = field(default_factory=list)


# -- events -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    client: str
    cents: int


@dataclass(frozen=True)
class Executed:
    order: OrderRecord
    execution: Execution


@dataclass(frozen=True)
class Amended:
    order_id: str
    resting: int
    state: int


Event = Opened | Executed | Amended


class BkVenue:
    """BK's book: a journal of events and the projections they build."""

    def __init__(self) -> None:
        self.journal: list[Event] = []
        self.clients: dict[str, Client] = {}
        self.orders: dict[str, OrderRecord] = {}

    def _apply(self, event: Event) -> None:
        self.journal.append(event)
        if isinstance(event, Opened):
            self.clients[event.client] = Client(event.client, event.cents)
        elif isinstance(event, Executed):
            order, execution = event.order, event.execution
            client = self.clients[order.client]
            sign = 1 if order.side == BUY else -1
            client.cents -= sign * execution.shares * execution.price_cents
            client.holdings[order.symbol] += sign * execution.shares
            client.executions.append(execution)
            order.executions.append(execution)
            self.orders[order.order_id] = order
        else:
            amended = self.orders[event.order_id]
            amended.resting, amended.state = event.resting, event.state

    # -- what tests look at -------------------------------------------------------------------------

    @property
    def order_ids(self) -> list[str]:
        return [e.order.order_id for e in self.journal if isinstance(e, Executed)]

    @property
    def exec_ids(self) -> list[str]:
        return [e.execution.exec_id for e in self.journal if isinstance(e, Executed)]

    # -- answers ------------------------------------------------------------------------------------

    def _snapshot(self, client: Client) -> Any:
        working = [o for o in self.orders.values() if o.client == client.name and o.working]
        return Account(
            account=client.name,
            cash=format_cents(client.cents),
            positions={symbol: shares for symbol, shares in client.holdings.items() if shares != 0},
            open_orders=len(working),
        )

    def _client(self, name: str) -> Client:
        try:
            return self.clients[name]
        except KeyError:
            raise Refused(grpc.StatusCode.NOT_FOUND, "unknown account") from None

    def _order_of(self, order_id: str) -> OrderRecord:
        try:
            return self.orders[order_id]
        except KeyError:
            raise Refused(grpc.StatusCode.NOT_FOUND, "unknown order") from None

    # -- writes -------------------------------------------------------------------------------------

    def open_account(self, request: Any) -> Any:
        if request.account == "":
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "account is required")
        cents = parse_cents(request.cash)
        if cents is None:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "cash must be a decimal of at most 2 places")
        if request.account in self.clients:
            raise Refused(grpc.StatusCode.ALREADY_EXISTS, "account already exists")
        self._apply(Opened(request.account, cents))
        return self._snapshot(self.clients[request.account])

    def _execute(self, client: Client, wanted: Any) -> Any:
        price = parse_cents(wanted.limit_price)
        valid = wanted.symbol != "" and wanted.side in (BUY, SELL) and wanted.quantity > 0
        if not valid or not price:
            return TradeAck(account=client.name, status=REJECTED, reason="invalid order")
        shares = min(wanted.quantity, MAX_HOUSE_FILL)
        if wanted.side == BUY and shares * price > client.cents:
            return TradeAck(account=client.name, status=REJECTED, reason="insufficient cash")
        resting = wanted.quantity - shares
        order = OrderRecord(
            order_id=f"ord-{secrets.token_hex(6)}",
            client=client.name,
            symbol=wanted.symbol,
            side=wanted.side,
            ordered=wanted.quantity,
            resting=resting,
            state=FILLED if resting == 0 else PARTIALLY_FILLED,
        )
        execution = Execution(f"x-{secrets.token_hex(6)}", shares, price)
        self._apply(Executed(order, execution))
        return TradeAck(
            order_id=order.order_id, account=client.name, status=order.state, fills=[execution.to_fill()]
        )

    def trade(self, request: Any) -> Any:
        """One message of a trading session, answered by exactly one ack."""
        client = self.clients.get(request.account)
        if client is None:
            return TradeAck(account=request.account, status=REJECTED, reason="unknown account")
        match request.WhichOneof("action"):
            case "new":
                return self._execute(client, request.new)
            case "cancel":
                target, resting, state = request.cancel.order_id, 0, CANCELLED
            case "modify":
                target, resting, state = request.modify.order_id, request.modify.quantity, MODIFIED
            case _:
                return TradeAck(account=client.name, status=REJECTED, reason="no action")
        order = self.orders.get(target)
        if order is None or order.client != client.name:
            return TradeAck(account=client.name, status=REJECTED, reason="unknown order")
        if not order.working:
            return TradeAck(
                order_id=order.order_id, account=client.name, status=REJECTED, reason="order not open"
            )
        if state == MODIFIED and resting < 1:
            return TradeAck(
                order_id=order.order_id, account=client.name, status=REJECTED, reason="invalid quantity"
            )
        self._apply(Amended(order.order_id, resting, state))
        return TradeAck(order_id=order.order_id, account=client.name, status=state)

    def submit_batch(self, requests: Sequence[Any]) -> Any:
        if len(requests) == 0:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "a batch needs at least one order")
        if len({r.account for r in requests}) > 1:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "a batch holds the orders of one account")
        client = self._client(requests[0].account)
        acks = [self._execute(client, r.order) for r in requests]
        placed = [a for a in acks if a.status != REJECTED]
        return message_class("BatchSummary")(
            account=client.name,
            order_ids=[a.order_id for a in placed],
            filled_quantity=sum(f.quantity for a in placed for f in a.fills),
            fills=[f for a in placed for f in a.fills],
        )

    def cancel_order(self, request: Any) -> Any:
        order = self._order_of(request.order_id)
        if not order.working:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, "order not open")
        self._apply(Amended(order.order_id, 0, CANCELLED))
        return order.to_order()

    # -- reads --------------------------------------------------------------------------------------

    def get_order(self, request: Any) -> Any:
        return self._order_of(request.order_id).to_order()

    def list_open_orders(self, request: Any) -> Any:
        """Newest first."""
        newest_first = reversed(list(self.orders.values()))
        return OrderList(
            orders=[o.to_order() for o in newest_first if o.working and request.symbol in ("", o.symbol)]
        )

    def stream_fills(self, request: Any) -> list[Any]:
        return [e.to_fill() for e in self._client(request.account).executions]

    def get_account(self, request: Any) -> Any:
        return self._snapshot(self._client(request.account))

    def list_accounts(self, request: Any) -> Any:
        if request.page_size < 0:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative")
        limit = request.page_size if request.page_size > 0 else DEFAULT_PAGE_SIZE
        after = [name for name in sorted(self.clients) if name > request.page_token]
        page, rest = after[:limit], after[limit:]
        return message_class("AccountList")(
            accounts=[self._snapshot(self.clients[name]) for name in page],
            next_page_token=page[-1] if rest else "",
        )
