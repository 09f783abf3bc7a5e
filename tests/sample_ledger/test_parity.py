"""Randomised parity: one seeded sequence of operations against Bank and BK gives equal normalised answers.

The sequence never triggers a planted bug (no quantity that is an integer
congruent to 1 mod 4, no unknown account, no oversell). Answers are normalised
for the benign differences: trade ids mapped to their booking order, decimals
compared as Decimal, timestamps, venue and free-text reasons dropped, unordered
lists sorted, page tokens reduced to "is there a next page".
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from sample_ledger._bk_journal import derive
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from tests.sample_ledger._support import BUY, SELL, Connected, bad_fields, connected, order

ACCOUNTS = ["P1", "P2", "P3", "P4"]
SYMBOLS = ["AAPL", "BRK.B", "KO", "MSFT", "XOM"]
DECIMAL_FIELDS = {
    "quantity",
    "price",
    "fee",
    "notional",
    "cash",
    "unsettled_cash",
    "amount",
    "average_price",
    "cost_basis",
    "net_cash",
    "total_notional",
    "total_fees",
}
DROPPED_FIELDS = {"opened_at", "booked_at", "as_of", "settled_at", "posted_at", "venue", "reason"}


@dataclass
class Side:
    """One implementation under test and the trade ids it minted, in booking order."""

    ledger: Connected
    ids: dict[str, str] = field(default_factory=dict)

    def trade_id(self, index: int) -> str:
        return list(self.ids)[index]

    def normalise(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: self.normalise(v, k) for k, v in value.items() if k not in DROPPED_FIELDS}
        if isinstance(value, list):
            items = [self.normalise(v, key) for v in value]
            if key in ("positions",):
                return sorted(items, key=lambda p: p["symbol"])
            return sorted(items) if key == "settled_trade_ids" else items
        if key in DECIMAL_FIELDS:
            return Decimal(value) if value else ""
        if key in ("trade_id", "trade_ids", "settled_trade_ids") and value:
            return self.ids.setdefault(value, f"#{len(self.ids)}")
        if key == "next_page_token":
            return bool(value)
        return value

    async def outcome(self, call: Callable[[Any], Awaitable[Any]]) -> Any:
        """The normalised answer to `call`, or the error's code and BadRequest fields."""
        try:
            answer = await call(self.ledger.stub)
        except grpc.aio.AioRpcError as error:
            return ("error", error.code().name, bad_fields(error))
        messages = answer if isinstance(answer, list) else [answer]
        return [self.normalise(json_format.MessageToDict(m, True, True)) for m in messages]


async def _collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


def _safe_quantity(quantity: Decimal) -> bool:
    """False for the quantities that trigger planted bug 1 (integers congruent to 1 mod 4)."""
    return not (quantity == quantity.to_integral_value() and int(quantity) % 4 == 1)


class Scenario:
    """Draws operations from a seeded generator and checks both sides answer alike."""

    def __init__(self, seed: int, bank: Connected, bk: Connected) -> None:
        self.rng = random.Random(seed)
        self.bank, self.bk = Side(bank), Side(bk)
        self.opened: list[str] = []
        self.orders = 0
        self.log: list[str] = []

    async def both(self, what: str, make: Callable[[Side], Callable[[Any], Awaitable[Any]]]) -> Any:
        self.log.append(what)
        bank = await self.bank.outcome(make(self.bank))
        bk = await self.bk.outcome(make(self.bk))
        assert bank == bk, f"step {len(self.log)}: {what}\n  bank: {bank}\n  bk:   {bk}"
        return bank

    def held(self, account_id: str, symbol: str) -> Decimal:
        positions = self.bank.ledger.running.servicer.book.accounts[account_id].positions
        return positions[symbol].quantity if symbol in positions else Decimal(0)

    def quantity(self, at_most: Decimal | None = None) -> Decimal | None:
        choices = [Decimal(q) for q in ["2", "3", "4", "6", "7", "8", "10", "11", "12", "40", "99", "300"]]
        choices += [Decimal(q) for q in ["0.5", "2.25", "7.5", "0.0004", "15.0625"]]
        if at_most is not None:
            choices = [q for q in choices if q <= at_most]
            if _safe_quantity(at_most):
                choices += [at_most] * 3  # selling out resets the average
        return self.rng.choice(choices) if choices else None

    def price(self) -> str:
        return str(Decimal(self.rng.randint(100, 500_000)).scaleb(-self.rng.choice([2, 2, 3, 4])))

    def trade_order(self, planned: dict[tuple[str, str], Decimal]) -> pb.PostTradeRequest:
        """A valid order that oversells nothing, given the sells `planned` but not yet booked."""
        rng, account_id, symbol = self.rng, self.rng.choice(self.opened), self.rng.choice(SYMBOLS)
        self.orders += 1
        free = self.held(account_id, symbol) - planned.get((account_id, symbol), Decimal(0))
        quantity = self.quantity(free) if rng.random() < 0.4 and free > 0 else None
        side = SELL if quantity is not None else BUY
        if quantity is None:
            quantity = self.quantity()
        assert quantity is not None
        if side == SELL:
            planned[account_id, symbol] = planned.get((account_id, symbol), Decimal(0)) + quantity
        return order(account_id, symbol, side, str(quantity), self.price(), f"o{self.orders}")

    def bad_order(self) -> pb.PostTradeRequest:
        request = self.trade_order({})
        request.side = pb.SIDE_SELL if self.rng.random() < 0.5 else pb.SIDE_UNSPECIFIED
        field_name = self.rng.choice(["symbol", "quantity", "price"])
        setattr(request, field_name, self.rng.choice(["", "-1", "0", "1.123456789", "x"]))
        return request

    async def step(self) -> None:
        rng = self.rng
        if not self.opened or rng.random() < 0.04:
            account_id = rng.choice([*ACCOUNTS, "bad id" * 20])
            currency = rng.choice(["", "", "EUR", "usd"])
            deposit = rng.choice(["", "1000000", "2500.5", "0.001"])
            request = pb.OpenAccountRequest(account_id=account_id, currency=currency, initial_deposit=deposit)
            result = await self.both(f"open {account_id}", lambda s: lambda stub: stub.OpenAccount(request))
            if result[0] != "error":
                self.opened.append(account_id)
            return
        account_id = rng.choice(self.opened)
        pick = rng.random()
        if pick < 0.40:
            request = self.trade_order({})
            await self.both(f"trade {request}", lambda s: lambda stub: stub.PostTrade(request))
        elif pick < 0.43:
            bad = self.bad_order()
            await self.both(f"bad trade {bad}", lambda s: lambda stub: stub.PostTrade(bad))
        elif pick < 0.50:
            amount = rng.choice(["100", "-250.75", "0", "12.5", "1.001"])
            deposit = pb.DepositRequest(account_id=account_id, amount=amount)
            await self.both(f"deposit {amount}", lambda s: lambda stub: stub.Deposit(deposit))
        elif pick < 0.58 and self.bank.ids:
            await self.cancel(account_id)
        elif pick < 0.70:
            symbol = rng.choice(SYMBOLS)
            position = pb.GetPositionRequest(account_id=account_id, symbol=symbol)
            await self.both("position", lambda s: lambda stub: stub.GetPosition(position))
        elif pick < 0.76:
            portfolio = pb.GetPortfolioRequest(account_id=account_id)
            await self.both("portfolio", lambda s: lambda stub: stub.GetPortfolio(portfolio))
        elif pick < 0.82:
            balance = pb.GetBalanceRequest(account_id=account_id)
            await self.both("balance", lambda s: lambda stub: stub.GetBalance(balance))
        elif pick < 0.86:
            await self.list_trades(account_id)
        elif pick < 0.88:
            await self.list_accounts()
        elif pick < 0.91:
            settle = pb.SettleTradesRequest(account_id=account_id)
            if rng.random() < 0.3:
                settle.settle_through.CopyFrom(Timestamp(seconds=rng.choice([1, 4_000_000_000])))
            await self.both("settle", lambda s: lambda stub: stub.SettleTrades(settle))
        elif pick < 0.93:
            stream = pb.StreamLedgerEntriesRequest(account_id=account_id)
            await self.both("entries", lambda s: lambda stub: _collect(stub.StreamLedgerEntries(stream)))
        elif pick < 0.965:
            await self.batch("BookTrades")
        else:
            await self.batch("TradeSession")

    async def cancel(self, account_id: str) -> None:
        index = self.rng.randrange(max(0, len(self.bank.ids) - 8), len(self.bank.ids))  # mostly recent
        owner = self.bank.ledger.running.servicer.book.trades[self.bank.trade_id(index)].account_id
        if self.rng.random() < 0.1:
            owner = account_id
        if self.rng.random() < 0.05:
            request = pb.CancelTradeRequest(account_id=owner, trade_id="no-such-trade")
            await self.both("cancel unknown", lambda s: lambda stub: stub.CancelTrade(request))
            return

        def make(side: Side) -> Callable[[Any], Awaitable[Any]]:
            request = pb.CancelTradeRequest(account_id=owner, trade_id=side.trade_id(index), reason="test")
            return lambda stub: stub.CancelTrade(request)

        await self.both(f"cancel #{index} on {owner}", make)

    async def list_trades(self, account_id: str) -> None:
        size = self.rng.choice([0, 1, 2, 3, 7])
        symbol = self.rng.choice(["", "", *SYMBOLS])

        def make(side: Side) -> Callable[[Any], Awaitable[Any]]:
            async def pages(stub: Any) -> list[Any]:
                found, token = [], ""
                while True:
                    request = pb.ListTradesRequest(account_id=account_id, page_size=size, page_token=token)
                    request.symbol = symbol
                    found.append(await stub.ListTrades(request))
                    token = found[-1].next_page_token
                    if not token:
                        return found

            return pages

        await self.both(f"list trades {size} {symbol}", make)

    async def list_accounts(self) -> None:
        async def pages(stub: Any) -> list[Any]:
            found, token = [], ""
            while True:
                found.append(await stub.ListAccounts(pb.ListAccountsRequest(page_size=2, page_token=token)))
                token = found[-1].next_page_token
                if not token:
                    return found

        await self.both("list accounts", lambda s: pages)

    async def batch(self, method: str) -> None:
        planned: dict[tuple[str, str], Decimal] = {}
        orders = [
            self.trade_order(planned) if self.rng.random() < 0.85 else self.bad_order()
            for _ in range(self.rng.randint(0, 6))
        ]
        if method == "BookTrades":
            await self.both(f"book {orders}", lambda s: lambda stub: stub.BookTrades(iter(orders)))
        else:
            requests = [pb.TradeSessionRequest(order=o) for o in orders]
            await self.both(
                f"session {orders}", lambda s: lambda stub: _collect(stub.TradeSession(iter(requests)))
            )

    async def final_state(self) -> None:
        for account_id in self.opened:
            await self.final_account(account_id)

    async def final_account(self, account_id: str) -> None:
        balance = pb.GetBalanceRequest(account_id=account_id)
        portfolio = pb.GetPortfolioRequest(account_id=account_id)
        entries = pb.StreamLedgerEntriesRequest(account_id=account_id)
        await self.both("final balance", lambda s: lambda stub: stub.GetBalance(balance))
        await self.both("final portfolio", lambda s: lambda stub: stub.GetPortfolio(portfolio))
        await self.both("final entries", lambda s: lambda stub: _collect(stub.StreamLedgerEntries(entries)))


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_bank_and_bk_agree_on_a_random_sequence(seed: int) -> None:
    """250 seeded operations of every kind give Bank and BK equal answers once normalised."""
    async with connected("bank") as bank, connected("bk") as bk:
        scenario = Scenario(seed, bank, bk)
        for _ in range(250):
            await scenario.step()
        await scenario.final_state()
        kinds = {what.split()[0] for what in scenario.log}
        assert {"trade", "cancel", "settle", "book", "session", "entries", "list"} <= kinds
        assert len(scenario.bank.ids) > 50
        journal = bk.running.servicer.book.journal
        assert derive(journal.transactions) == journal.cached()


@pytest.mark.parametrize(
    "request_",
    [
        order("P1", "AAPL", BUY, "5", "10"),  # planted bug 1: fee 0.03 against 0.02
        order("P1", "AAPL", SELL, "5", "10"),  # planted bug 3: oversell
        order("P9", "AAPL", BUY, "3", "10"),  # planted bug 2: unknown account
    ],
)
async def test_parity_check_catches_each_planted_bug(request_: pb.PostTradeRequest) -> None:
    """The comparison is not vacuous: one order triggering a planted bug fails it."""
    async with connected("bank") as bank, connected("bk") as bk:
        scenario = Scenario(0, bank, bk)
        await scenario.both(
            "open", lambda s: lambda stub: stub.OpenAccount(pb.OpenAccountRequest(account_id="P1"))
        )
        with pytest.raises(AssertionError, match="step 2"):
            await scenario.both("bug", lambda s: lambda stub: stub.PostTrade(request_))
