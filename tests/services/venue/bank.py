"""The venue as Bank runs it: dictionaries of plain values, Decimal cash, sequential ids.

Order ids are "O1", "O2", ...; execution ids "E1", "E2", .... Orders and accounts are dicts;
money is `Decimal` with two places.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from decimal import Decimal
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
    new,
)

CENT = Decimal("0.01")
HOUSE_LOT = 100  # the house fills at most this many shares of an order, at once
PAGE = 100
_AMOUNT = re.compile(r"[0-9]+(\.[0-9]{1,2})?")
_OPEN = (PARTIALLY_FILLED, MODIFIED)


def _amount(text: str) -> Decimal | None:
    """A decimal of at most two places ("100", "100.5", "100.50"), or None."""
    return Decimal(text).quantize(CENT) if _AMOUNT.fullmatch(text) else None


def _text(amount: Decimal) -> str:
    return str(amount.quantize(CENT))


class BankVenue:
    """Bank's book: everything in dicts keyed by name or id."""

    def __init__(self) -> None:
        self.cash: dict[str, Decimal] = {}
        self.positions: dict[str, dict[str, int]] = {}
        self.orders: dict[str, dict[str, Any]] = {}  # in the order they were placed
        self.fills: dict[str, list[dict[str, Any]]] = {}  # account -> its fills, oldest first
        self._next_order = itertools.count(1)
        self._next_exec = itertools.count(1)

    # -- what tests look at -------------------------------------------------------------------------

    @property
    def order_ids(self) -> list[str]:
        return list(self.orders)

    @property
    def exec_ids(self) -> list[str]:
        return [fill["exec_id"] for fills in self.fills.values() for fill in fills]

    # -- answers ------------------------------------------------------------------------------------

    def _account(self, name: str) -> Any:
        positions = {symbol: shares for symbol, shares in self.positions[name].items() if shares}
        open_orders = sum(1 for o in self.orders.values() if o["account"] == name and o["status"] in _OPEN)
        return new(
            "Account", account=name, cash=_text(self.cash[name]), positions=positions, open_orders=open_orders
        )

    @staticmethod
    def _fill(fill: dict[str, Any]) -> Any:
        return new("Fill", exec_id=fill["exec_id"], quantity=fill["quantity"], price=_text(fill["price"]))

    def _order(self, order: dict[str, Any]) -> Any:
        return new(
            "Order",
            order_id=order["order_id"],
            account=order["account"],
            symbol=order["symbol"],
            side=order["side"],
            quantity=order["quantity"],
            open_quantity=order["open"],
            status=order["status"],
            fills=[self._fill(f) for f in order["fills"]],
        )

    @staticmethod
    def _rejected(account: str, reason: str, order_id: str = "") -> Any:
        return new("TradeAck", order_id=order_id, account=account, status=REJECTED, reason=reason)

    # -- writes -------------------------------------------------------------------------------------

    def open_account(self, request: Any) -> Any:
        if not request.account:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "account is required")
        cash = _amount(request.cash)
        if cash is None:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "cash must be a decimal of at most 2 places")
        if request.account in self.cash:
            raise Refused(grpc.StatusCode.ALREADY_EXISTS, "account already exists")
        self.cash[request.account] = cash
        self.positions[request.account] = {}
        self.fills[request.account] = []
        return self._account(request.account)

    def _place(self, account: str, order: Any) -> Any:
        """A new order: filled at once against the house up to HOUSE_LOT shares, the rest resting."""
        price = _amount(order.limit_price)
        if not order.symbol or order.side not in (BUY, SELL) or order.quantity <= 0 or not price:
            return self._rejected(account, "invalid order")
        filled = min(order.quantity, HOUSE_LOT)
        cost = price * filled
        if order.side == BUY and cost > self.cash[account]:
            return self._rejected(account, "insufficient cash")
        if order.side == BUY:
            self.cash[account] -= cost
            self.positions[account][order.symbol] = self.positions[account].get(order.symbol, 0) + filled
        else:
            self.cash[account] += cost
            self.positions[account][order.symbol] = self.positions[account].get(order.symbol, 0) - filled
        order_id = f"O{next(self._next_order)}"
        fill = {"exec_id": f"E{next(self._next_exec)}", "quantity": filled, "price": price}
        self.fills[account].append(fill)
        rest = order.quantity - filled
        self.orders[order_id] = {
            "order_id": order_id,
            "account": account,
            "symbol": order.symbol,
            "side": order.side,
            "quantity": order.quantity,
            "open": rest,
            "status": PARTIALLY_FILLED if rest else FILLED,
            "fills": [fill],
        }
        return new(
            "TradeAck",
            order_id=order_id,
            account=account,
            status=self.orders[order_id]["status"],
            fills=[self._fill(fill)],
        )

    def trade(self, request: Any) -> Any:
        """One message of a trading session, answered by exactly one ack."""
        account = request.account
        if account not in self.cash:
            return self._rejected(account, "unknown account")
        action = request.WhichOneof("action")
        if action == "new":
            return self._place(account, request.new)
        if action is None:
            return self._rejected(account, "no action")
        named = request.cancel if action == "cancel" else request.modify
        order = self.orders.get(named.order_id)
        if order is None or order["account"] != account:
            return self._rejected(account, "unknown order")
        if order["status"] not in _OPEN:
            return self._rejected(account, "order not open", order["order_id"])
        if action == "cancel":
            order["open"], order["status"] = 0, CANCELLED
        else:
            if request.modify.quantity <= 0:
                return self._rejected(account, "invalid quantity", order["order_id"])
            order["open"], order["status"] = request.modify.quantity, MODIFIED
        return new("TradeAck", order_id=order["order_id"], account=account, status=order["status"])

    def submit_batch(self, requests: Sequence[Any]) -> Any:
        if not requests:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "a batch needs at least one order")
        account = requests[0].account
        if any(r.account != account for r in requests):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "a batch holds the orders of one account")
        if account not in self.cash:
            raise Refused(grpc.StatusCode.NOT_FOUND, "unknown account")
        order_ids, filled, fills = [], 0, []
        for request in requests:
            ack = self._place(account, request.order)
            if ack.status != REJECTED:
                order_ids.append(ack.order_id)
                filled += sum(f.quantity for f in ack.fills)
                fills.extend(ack.fills)
        return new("BatchSummary", account=account, order_ids=order_ids, filled_quantity=filled, fills=fills)

    def cancel_order(self, request: Any) -> Any:
        order = self.orders.get(request.order_id)
        if order is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, "unknown order")
        if order["status"] not in _OPEN:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, "order not open")
        order["open"], order["status"] = 0, CANCELLED
        return self._order(order)

    # -- reads --------------------------------------------------------------------------------------

    def get_order(self, request: Any) -> Any:
        order = self.orders.get(request.order_id)
        if order is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, "unknown order")
        return self._order(order)

    def list_open_orders(self, request: Any) -> Any:
        """Oldest first."""
        listed = [
            self._order(o)
            for o in self.orders.values()
            if o["status"] in _OPEN and (not request.symbol or o["symbol"] == request.symbol)
        ]
        return new("OrderList", orders=listed)

    def stream_fills(self, request: Any) -> list[Any]:
        if request.account not in self.fills:
            raise Refused(grpc.StatusCode.NOT_FOUND, "unknown account")
        return [self._fill(f) for f in self.fills[request.account]]

    def get_account(self, request: Any) -> Any:
        if request.account not in self.cash:
            raise Refused(grpc.StatusCode.NOT_FOUND, "unknown account")
        return self._account(request.account)

    def list_accounts(self, request: Any) -> Any:
        if request.page_size < 0:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative")
        names = sorted(n for n in self.cash if n > request.page_token)
        size = request.page_size or PAGE
        page = names[:size]
        more = len(names) > size
        return new(
            "AccountList",
            accounts=[self._account(n) for n in page],
            next_page_token=page[-1] if more else "",
        )
