"""A realistic traffic generator for a `bank.v1.Ledger` endpoint (Bank, BK, or a proxy in front).

`run_workload` opens accounts and drives a seeded mix of trades, reads,
listings, cancellations, deposits, settlements and streams through a
`LedgerStub`. Accounts are split between `concurrency` workers; each worker
makes its calls one after another, so no account ever has two calls in flight.
Error answers are counted, never raised.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from types import MappingProxyType
from typing import Any, TypeVar

import grpc

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from sample_ledger._proto.bank.v1 import ledger_pb2_grpc as pb_grpc

T = TypeVar("T")
CallHook = Callable[[str, grpc.StatusCode], None]

TICKERS: Mapping[str, Decimal] = MappingProxyType(
    {
        symbol: Decimal(price)
        for symbol, price in [
            ("AAPL", "189.50"), ("MSFT", "411.20"), ("AMZN", "178.15"), ("GOOGL", "152.80"),
            ("META", "486.10"), ("NVDA", "875.30"), ("TSLA", "175.40"), ("JPM", "198.60"),
            ("V", "279.90"), ("JNJ", "155.25"), ("WMT", "60.35"), ("PG", "161.70"),
            ("XOM", "118.45"), ("UNH", "492.00"), ("HD", "345.80"), ("KO", "61.20"),
            ("PEP", "170.05"), ("DIS", "112.95"), ("NFLX", "610.40"), ("INTC", "30.85"),
        ]
    }
)  # fmt: skip
CALL_TIMEOUT = 30.0

# Relative weights of the operations a worker picks from (account opening comes first).
MIX: dict[str, int] = {
    "trade": 41,
    "oversell": 3,
    "unknown_account": 1,
    "read": 25,
    "list_trades": 3,  # up to 3 pages each
    "cancel": 3,
    "deposit": 5,
    "settle": 2,
    "stream": 2,
    "book_trades": 2,
    "session": 2,
    "list_accounts": 1,
}


@dataclass(frozen=True)
class WorkloadStats:
    """What a workload did: `total` calls, and how many per (method, status code name)."""

    total: int
    counts: Mapping[tuple[str, str], int]

    def count(self, method: str | None = None, code: str | None = None) -> int:
        """Calls of `method` (any when None) that ended with `code` (any when None)."""
        return sum(
            n
            for (m, c), n in self.counts.items()
            if (method is None or m == method) and (code is None or c == code)
        )


@dataclass
class _Account:
    account_id: str
    holdings: Counter[str] = field(default_factory=Counter)
    open_trades: list[tuple[str, str, int, int]] = field(default_factory=list)  # (id, symbol, side, qty)

    def book(self, trade_id: str, symbol: str, side: int, quantity: int) -> None:
        self.holdings[symbol] += quantity if side == pb.SIDE_BUY else -quantity
        self.open_trades.append((trade_id, symbol, side, quantity))


class _Worker:
    def __init__(
        self,
        stub: Any,
        rng: random.Random,
        account_ids: list[str],
        budget: int,
        hook: Callable[[str, Any], None],
        mix: Mapping[str, int] = MappingProxyType(MIX),
        follow_pages: bool = True,
    ) -> None:
        self.mix = {name: weight for name, weight in mix.items() if weight > 0}
        self.follow_pages = follow_pages
        self.stub = stub
        self.rng = rng
        self.pending_ids = account_ids
        self.accounts: list[_Account] = []
        self.budget = budget
        self.hook = hook
        self.orders = 0

    async def call(self, method: str, make: Callable[[], Awaitable[T]]) -> T | None:
        self.budget -= 1
        try:
            result: T | None = await make()
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            result, code = None, error.code()
        self.hook(method, code)
        return result

    async def run(self, opened: asyncio.Barrier | None = None) -> None:
        await self._open_accounts()
        if opened is not None:
            # every worker's accounts are open before any listing: a listing sent while another
            # worker opens an account could be answered by Bank before the opening and by BK after
            await opened.wait()
        names, weights = list(self.mix), list(self.mix.values())
        while self.budget > 0 and self.accounts:
            operation = self.rng.choices(names, weights)[0]
            await getattr(self, "_" + operation)(self.rng.choice(self.accounts))

    async def _open_accounts(self) -> None:
        for account_id in self.pending_ids:
            if self.budget <= 0:
                return
            deposit = f"{self.rng.randint(20_000, 1_000_000)}.{self.rng.randint(0, 99):02d}"
            request = pb.OpenAccountRequest(account_id=account_id, owner_name=f"Owner {account_id}")
            request.initial_deposit = deposit
            await self.call("OpenAccount", partial(self.stub.OpenAccount, request, timeout=CALL_TIMEOUT))
            self.accounts.append(_Account(account_id))  # used even when refused: its errors get counted

    # ---- orders ---------------------------------------------------------------

    def _order(self, account: _Account, *, oversell: bool = False) -> pb.PostTradeRequest:
        """An order on `account`: 60% buys, 40% sells within holdings, or an oversell."""
        rng = self.rng
        held = [s for s, q in sorted(account.holdings.items()) if q > 0]
        sell = bool(held) and rng.random() < 0.4
        if oversell:
            symbol = rng.choice(held) if held and rng.random() < 0.7 else rng.choice(list(TICKERS))
            quantity = max(account.holdings[symbol], 0) + rng.randint(1, 50)
        elif sell and held:
            symbol = rng.choice(held)
            quantity = rng.randint(1, min(account.holdings[symbol], 500))
        else:
            sell = False
            symbol = rng.choice(list(TICKERS))
            quantity = rng.randint(1, 500)
        base = TICKERS[symbol] * (1 + Decimal(rng.randint(-200, 200)) / 10_000)
        places = rng.choice((2, 2, 3))
        self.orders += 1
        return pb.PostTradeRequest(
            account_id=account.account_id,
            symbol=symbol,
            side=pb.SIDE_SELL if sell or oversell else pb.SIDE_BUY,
            quantity=str(quantity),
            price=str(base.quantize(Decimal(1).scaleb(-places))),
            client_order_id=f"{account.account_id}-o{self.orders}",
        )

    async def _post(self, account: _Account, order: pb.PostTradeRequest) -> None:
        trade = await self.call("PostTrade", lambda: self.stub.PostTrade(order, timeout=CALL_TIMEOUT))
        if trade is not None:
            account.book(trade.trade_id, order.symbol, order.side, int(order.quantity))

    async def _trade(self, account: _Account) -> None:
        await self._post(account, self._order(account))

    async def _oversell(self, account: _Account) -> None:
        # one fat-fingered trader per worker: oversells land on the worker's first account, so that
        # the accounts where BK's planted oversell bug books what Bank refuses stay few
        account = self.accounts[0]
        await self._post(account, self._order(account, oversell=True))

    async def _unknown_account(self, account: _Account) -> None:
        ghost = _Account(account.account_id + "-closed")
        if self.rng.random() < 0.5:
            await self._post(ghost, self._order(ghost))
        else:
            request = pb.GetBalanceRequest(account_id=ghost.account_id)
            await self.call("GetBalance", lambda: self.stub.GetBalance(request, timeout=CALL_TIMEOUT))

    # ---- reads ----------------------------------------------------------------

    async def _read(self, account: _Account) -> None:
        account_id, stub, kind = account.account_id, self.stub, self.rng.randrange(4)
        if kind == 0:
            request0 = pb.GetBalanceRequest(account_id=account_id)
            await self.call("GetBalance", lambda: stub.GetBalance(request0, timeout=CALL_TIMEOUT))
        elif kind == 1:
            held = sorted(s for s, q in account.holdings.items() if q)
            symbol = (
                self.rng.choice(held) if held and self.rng.random() < 0.8 else self.rng.choice(list(TICKERS))
            )
            request = pb.GetPositionRequest(account_id=account_id, symbol=symbol)
            await self.call("GetPosition", lambda: stub.GetPosition(request, timeout=CALL_TIMEOUT))
        elif kind == 2:
            request2 = pb.GetPortfolioRequest(account_id=account_id)
            await self.call("GetPortfolio", lambda: stub.GetPortfolio(request2, timeout=CALL_TIMEOUT))
        else:
            request3 = pb.GetAccountRequest(account_id=account_id)
            await self.call("GetAccount", lambda: stub.GetAccount(request3, timeout=CALL_TIMEOUT))

    async def _list_trades(self, account: _Account) -> None:
        symbol = (
            self.rng.choice(sorted(account.holdings)) if account.holdings and self.rng.random() < 0.3 else ""
        )
        request = pb.ListTradesRequest(account_id=account.account_id, page_size=self.rng.randint(5, 25))
        request.symbol = symbol
        for _ in range(3 if self.follow_pages else 1):
            page = await self.call("ListTrades", lambda: self.stub.ListTrades(request, timeout=CALL_TIMEOUT))
            if page is None or not page.next_page_token or self.budget <= 0:
                return
            request.page_token = page.next_page_token

    async def _list_accounts(self, account: _Account) -> None:
        request = pb.ListAccountsRequest(page_size=20)
        await self.call("ListAccounts", lambda: self.stub.ListAccounts(request, timeout=CALL_TIMEOUT))

    async def _stream(self, account: _Account) -> None:
        async def drain() -> int:
            request = pb.StreamLedgerEntriesRequest(account_id=account.account_id)
            return len(
                [entry async for entry in self.stub.StreamLedgerEntries(request, timeout=CALL_TIMEOUT)]
            )

        await self.call("StreamLedgerEntries", drain)

    # ---- other changes --------------------------------------------------------

    async def _cancel(self, account: _Account) -> None:
        candidates = [
            t for t in account.open_trades if t[2] == pb.SIDE_SELL or account.holdings[t[1]] >= t[3]
        ]
        if not candidates:
            await self._read(account)
            return
        trade_id, symbol, side, quantity = chosen = self.rng.choice(candidates)
        account.open_trades.remove(chosen)
        request = pb.CancelTradeRequest(
            account_id=account.account_id, trade_id=trade_id, reason="client request"
        )
        if await self.call("CancelTrade", lambda: self.stub.CancelTrade(request, timeout=CALL_TIMEOUT)):
            account.holdings[symbol] += -quantity if side == pb.SIDE_BUY else quantity

    async def _deposit(self, account: _Account) -> None:
        amount = Decimal(self.rng.randint(1_000, 5_000_000)) / 100
        if self.rng.random() < 0.1:
            amount = -amount
        request = pb.DepositRequest(account_id=account.account_id, amount=str(amount), reference="wire")
        await self.call("Deposit", lambda: self.stub.Deposit(request, timeout=CALL_TIMEOUT))

    async def _settle(self, account: _Account) -> None:
        request = pb.SettleTradesRequest(account_id=account.account_id)
        if await self.call("SettleTrades", lambda: self.stub.SettleTrades(request, timeout=CALL_TIMEOUT)):
            account.open_trades.clear()

    def _batch(self, account: _Account) -> list[pb.PostTradeRequest]:
        orders = []
        for _ in range(self.rng.randint(3, 10)):
            order = self._order(account)
            if order.side == pb.SIDE_SELL:  # keep later sells in the batch within what is held
                account.holdings[order.symbol] -= int(order.quantity)
            orders.append(order)
        for order in orders:
            if order.side == pb.SIDE_SELL:
                account.holdings[order.symbol] += int(order.quantity)
        if self.rng.random() < 0.15:
            orders.insert(
                self.rng.randrange(len(orders) + 1), pb.PostTradeRequest(account_id=account.account_id)
            )
        return orders

    async def _book_trades(self, account: _Account) -> None:
        orders = self._batch(account)
        summary = await self.call(
            "BookTrades", lambda: self.stub.BookTrades(iter(orders), timeout=CALL_TIMEOUT)
        )
        if summary is not None:
            valid = [o for o in orders if o.symbol]
            for trade_id, order in zip(summary.trade_ids, valid, strict=False):
                account.book(trade_id, order.symbol, order.side, int(order.quantity))

    async def _session(self, account: _Account) -> None:
        requests = [pb.TradeSessionRequest(order=order) for order in self._batch(account)]

        async def converse() -> list[pb.TradeSessionEvent]:
            call = self.stub.TradeSession(iter(requests), timeout=CALL_TIMEOUT)
            return [event async for event in call]

        events = await self.call("TradeSession", converse)
        for event in events or ():
            if event.HasField("booked"):
                trade = event.booked
                account.book(trade.trade_id, trade.symbol, trade.side, int(Decimal(trade.quantity)))


async def run_workload(
    channel: grpc.aio.Channel,
    calls: int,
    *,
    seed: int = 7,
    concurrency: int = 8,
    on_call: CallHook | None = None,
    account_prefix: str = "",
    mix: Mapping[str, int] | None = None,
    follow_pages: bool = True,
) -> WorkloadStats:
    """Drive `calls` seeded, realistic calls through `channel`; count the answers by method and code.

    Account ids are `account_prefix` (default "W<seed>") + "-" + a number, so
    give each run against the same server its own prefix or seed.

    `mix` overrides the relative weights of operations (see MIX; a weight of 0
    leaves an operation out); `follow_pages=False` reads only the first page of
    a listing, never sending a page token back.
    """
    if mix is not None and (unknown := set(mix) - set(MIX)):
        raise ValueError(f"unknown operations in mix: {', '.join(sorted(unknown))}")
    if calls <= 0:
        return WorkloadStats(0, MappingProxyType({}))
    stub = pb_grpc.LedgerStub(channel)  # type: ignore[no-untyped-call]
    prefix = account_prefix or f"W{seed}"
    workers_count = max(1, min(concurrency, calls))
    account_count = max(workers_count, round(calls / 60))
    counts: Counter[tuple[str, str]] = Counter()

    def hook(method: str, code: grpc.StatusCode) -> None:
        counts[(method, code.name)] += 1
        if on_call is not None:
            on_call(method, code)

    workers = [
        _Worker(
            stub,
            random.Random(f"{seed}:{index}"),
            [f"{prefix}-{n:05d}" for n in range(index, account_count, workers_count)],
            calls // workers_count + (1 if index < calls % workers_count else 0),
            hook,
            MappingProxyType({**MIX, **(mix or {})}),
            follow_pages,
        )
        for index in range(workers_count)
    ]
    opened = asyncio.Barrier(len(workers)) if workers else None
    await asyncio.gather(*(worker.run(opened) for worker in workers))
    return WorkloadStats(sum(counts.values()), MappingProxyType(dict(counts)))
