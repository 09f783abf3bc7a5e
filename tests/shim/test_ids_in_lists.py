"""Ids minted in a list that a rule lets BK answer in another order, through a real shim (Python data plane).

`basket.v1.Desk` (tests/shim/basket.proto): `Place` places a basket of orders and answers with the orders
placed, each with the id its side minted; `Cancel` cancels one by id. Bank mints "O1", "O2", ... and
answers in the order sent; BK mints "ord-<hex>", writes prices with two decimals and answers newest first.
A rule lets the orders come in another order: `keyed` by the client's order id, or as a `multiset`.

Before, the ids of the list were paired by position whenever both sides held as many: Bank's first order
with BK's first, which is BK's last order. A later cancel of Bank's first order reached BK as a cancel of
another order: BK's book diverged from Bank's, and the difference was blamed on BK.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from comparators import Comparison, DiffKind, Verdict
from comparators.ids import IdKind
from shim.app import Shim
from shim.testing import CapturingSink, running_shim
from tests.backends import Running, called_method, scripted_server
from tests.services._protoc import registry_of

REGISTRY = registry_of(Path(__file__).resolve().parent / "basket.proto")
PLACE, CANCEL = "/basket.v1.Desk/Place", "/basket.v1.Desk/Cancel"
ORDER = IdKind(
    "order", minted=("basket.v1.Order.order_id",), references=("basket.v1.CancelRequest.order_id",)
)
PRICES = {"path": "basket.v1.Order.price", "rule": "decimal", "name": "prices"}
KEYED = {"path": "basket.v1.Placed.orders", "rule": "keyed", "key": ["client_order_id"], "name": "by key"}
MULTISET = {"path": "basket.v1.Placed.orders", "rule": "multiset", "name": "any order"}


def new(name: str, **fields: Any) -> Any:
    return REGISTRY.message_class(f"basket.v1.{name}")(**fields)


@dataclass
class Side:
    """One side's desk: it mints its own ids, keeps its orders and the cancels it received."""

    name: str
    running: Running | None = None
    orders: dict[str, Any] = field(default_factory=dict)  # order id -> Order
    cancels: list[str] = field(default_factory=list)  # the order ids it was asked to cancel
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def address(self) -> str:
        assert self.running is not None
        return self.running.address

    def _mint(self) -> str:
        return f"O{next(self._serial)}" if self.name == "bank" else f"ord-{secrets.token_hex(6)}"

    async def answer(self, requests: AsyncIterator[bytes], context: Any) -> list[bytes]:
        (raw,) = [r async for r in requests]
        if called_method() == PLACE:
            request = new("PlaceRequest").FromString(raw)
            placed = []
            for wanted in request.orders:
                price = wanted.price if self.name == "bank" else f"{float(wanted.price):.2f}"
                order = new(
                    "Order",
                    order_id=self._mint(),
                    client_order_id=wanted.client_order_id,
                    symbol=wanted.symbol,
                    quantity=wanted.quantity,
                    price=price,
                )
                self.orders[order.order_id] = order
                placed.append(order)
            if self.name == "bk":
                placed.reverse()  # newest first
            return [new("Placed", account=request.account, orders=placed).SerializeToString()]
        order_id = new("CancelRequest").FromString(raw).order_id
        self.cancels.append(order_id)
        order = self.orders.get(order_id)
        if order is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown order")
        order.cancelled = True
        return [order.SerializeToString()]

    def by_client_id(self, client_order_id: str) -> Any:
        (order,) = [o for o in self.orders.values() if o.client_order_id == client_order_id]
        return order


@pytest.fixture
async def sides() -> AsyncIterator[tuple[Side, Side]]:
    bank, bk = Side("bank"), Side("bk")
    bank.running, bk.running = await scripted_server(bank.answer), await scripted_server(bk.answer)
    try:
        yield bank, bk
    finally:
        await bk.running.stop()
        await bank.running.stop()


@contextlib.asynccontextmanager
async def _shim(bank: Side, bk: Side, rule: dict[str, Any]) -> AsyncIterator[tuple[Shim, CapturingSink, Any]]:
    async with (
        running_shim(
            bank.address,
            bk.address,
            registry=REGISTRY,
            ids=(ORDER,),
            rules=[rule, PRICES],
            shadow_timeout=10.0,
        ) as (shim, sink),
        aio.insecure_channel(shim.address) as channel,
    ):
        yield shim, sink, channel


async def _place(channel: aio.Channel, *orders: tuple[str, str, int, str]) -> Any:
    """Place (client order id, symbol, quantity, price) orders for account A; Bank's answer."""
    wanted = [new("NewOrder", client_order_id=c, symbol=s, quantity=q, price=p) for c, s, q, p in orders]
    raw = await channel.unary_unary(PLACE)(
        new("PlaceRequest", account="A", orders=wanted).SerializeToString()
    )
    return new("Placed").FromString(raw)


async def _cancel(channel: aio.Channel, order_id: str) -> Any:
    raw = await channel.unary_unary(CANCEL)(new("CancelRequest", order_id=order_id).SerializeToString())
    return new("Order").FromString(raw)


def _of(comparisons: list[Comparison], method: str) -> Comparison:
    (found,) = [c for c in comparisons if c.method == method]
    return found


BASKET = (("c1", "KO", 10, "1.5"), ("c2", "PEP", 20, "2.5"), ("c3", "MO", 30, "3.5"))


@pytest.mark.parametrize("rule", [KEYED, MULTISET], ids=["keyed", "multiset"])
async def test_a_cancel_of_a_basket_order_reaches_bk_as_bks_own_order(
    sides: tuple[Side, Side], rule: dict[str, Any]
) -> None:
    """BK answers the basket newest first, which the rule allows: Bank's O1 (c1) pairs with BK's order c1,
    found by its key or as the only order equal to it apart from the id, and a cancel of O1 cancels BK's
    c1 (before: BK's c3, the first of its answer)."""
    bank, bk = sides
    async with _shim(bank, bk, rule) as (shim, sink, channel):
        placed = await _place(channel, *BASKET)
        first = placed.orders[0]
        cancelled = await _cancel(channel, first.order_id)
        comparisons = await sink.wait_for(2)
        assert shim.ids is not None
        known = {
            c: shim.ids.known("bank", "order", bank.by_client_id(c).order_id) for c in ("c1", "c2", "c3")
        }
    assert (first.order_id, first.client_order_id, cancelled.cancelled) == ("O1", "c1", True)
    assert known == {c: bk.by_client_id(c).order_id for c in ("c1", "c2", "c3")}
    assert bk.cancels == [bk.by_client_id("c1").order_id]
    assert [o.client_order_id for o in bk.orders.values() if o.cancelled] == ["c1"]
    for method in (PLACE, CANCEL):
        assert (_of(comparisons, method).verdict, _of(comparisons, method).reason) == (Verdict.MATCH, "")


async def test_orders_a_multiset_cannot_tell_apart_are_not_paired_and_their_basket_matches(
    sides: tuple[Side, Side],
) -> None:
    """Two orders alike in all but their ids, and a third: which of BK's two is Bank's O1 is not known, so
    neither is paired (a cancel of O1 is not sent to BK, and says why), while the third is. The basket
    itself matches: to compare it, the two are read in order, as the rule pairs them."""
    bank, bk = sides
    async with _shim(bank, bk, MULTISET) as (shim, sink, channel):
        placed = await _place(channel, ("", "KO", 10, "1.5"), ("", "KO", 10, "1.5"), ("", "PEP", 20, "2.5"))
        await _cancel(channel, placed.orders[0].order_id)
        await _cancel(channel, placed.orders[2].order_id)
        comparisons = await sink.wait_for(3)
        assert shim.ids is not None
        known = [shim.ids.known("bank", "order", o.order_id) for o in placed.orders]
        unpaired = shim.counters.get("ids_unpaired", "order")
    (bk_pep,) = [o.order_id for o in bk.orders.values() if o.symbol == "PEP"]
    assert known == [None, None, bk_pep]
    assert unpaired == 2
    assert bk.cancels == [bk_pep]
    assert (_of(comparisons, PLACE).verdict, _of(comparisons, PLACE).reason) == (Verdict.MATCH, "")
    cancels = sorted(
        (c.verdict.value, [(d.kind, d.bank) for d in c.differences if d.kind is DiffKind.UNMAPPED_ID])
        for c in comparisons
        if c.method == CANCEL
    )
    assert cancels == [("match", []), ("skipped", [(DiffKind.UNMAPPED_ID, "O1")])]
