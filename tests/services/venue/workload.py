"""A concurrent, realistic mix of venue calls through one address, and a side's whole book read back.

`run_workload` opens the accounts, then runs `sessions` trading sessions and `calls` other calls,
shuffled, on `concurrency` asyncio tasks:

- a session places a few new orders, then cancels or modifies orders its own acks minted (the ids
  travel inside the one stream), sometimes naming an id no side ever minted; now and then an order
  is invalid or needs more cash than any account will ever hold;
- a batch (client streaming) places a few orders of one account;
- a unary cancel names an order a finished session or batch minted (each such order at most once),
  or an invented id;
- reads: `GetOrder` (of a minted or an invented id), `ListOpenOrders` (no routing key),
  `StreamFills`, `GetAccount`.

Several sessions may trade on one account at once. Every choice comes from the seed; with
`concurrency=1` the run is the same call for call, so both sides end with equal books. With more,
only the interleaving varies, and nothing the books hold depends on it: accounts never interact,
cash is ample for every order but the deliberately unaffordable ones, and only the session that
minted an order touches it until the session ends.

The workload checks each answer it can predict (every session ack, the size of a batch, which
cancels are refused) and records what went otherwise in `errors`. Refusals it asked for (an
invented id, a cancel of an order no longer open) are counted in `refusals`.

`book_of` reads one side's state through `ListAccounts`, `GetAccount`, `StreamFills` and
`ListOpenOrders`, without ids, so that the two sides' books compare with `==`.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio

from tests.services.venue.client import Session, VenueClient
from tests.services.venue.messages import (
    BUY,
    CANCELLED,
    PARTIALLY_FILLED,
    REJECTED,
    SELL,
    SIDES,
    STATUS_NAMES,
    new,
)

SYMBOLS = ("AAPL", "KO", "INTC", "MSFT")
CASH = "10000000.00"  # no affordable order mix of a run comes near it
UNAFFORDABLE = "999999.99"  # a hundred shares at this price: more than any account ever holds
HOUSE_LOT = 100
# the other calls, by weight
MIX = (("batch", 3), ("cancel", 3), ("get_order", 2), ("list_open", 1), ("fills", 1), ("account", 2))

NOT_FOUND, FAILED_PRECONDITION = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION


@dataclass
class WorkloadResult:
    accounts: list[str]
    calls: Counter[str] = field(default_factory=Counter)  # gRPC calls made, by method
    acks: Counter[str] = field(default_factory=Counter)  # session acks: "FILLED", "REJECTED: unknown order"
    refusals: Counter[str] = field(default_factory=Counter)  # asked-for refusals: "CancelOrder NOT_FOUND"
    errors: list[str] = field(default_factory=list)  # every answer other than predicted
    minted: list[str] = field(default_factory=list)  # order ids the client was given
    exec_ids: list[str] = field(default_factory=list)  # execution ids the client was given
    invented: set[str] = field(default_factory=set)  # ids named that no side minted
    in_session_references: int = 0  # session messages naming an order an earlier ack of that session minted


@dataclass
class _Placed:
    order_id: str
    account: str
    resting: bool  # open when its minting call ended


@dataclass
class _Run:
    client: VenueClient
    result: WorkloadResult
    placed: list[_Placed] = field(
        default_factory=list
    )  # orders of finished calls, not yet cancelled by a call
    named: list[str] = field(default_factory=list)  # every order id of a finished call

    def invent(self, rng: random.Random) -> str:
        order_id = f"O{rng.randint(900_000_000, 999_999_999)}"  # Bank's format, never reached
        self.result.invented.add(order_id)
        return order_id

    def expect(self, method: str, call: str, got: object, wanted: object) -> None:
        if got != wanted:
            self.result.errors.append(f"{method} {call}: got {got}, expected {wanted}")


def _order(rng: random.Random) -> tuple[Any, str, str]:
    """A new order and the ack status and reason it must get."""
    roll = rng.random()
    symbol = rng.choice(SYMBOLS)
    if roll < 0.08:
        return (
            new("NewOrder", symbol=symbol, side=BUY, quantity=0, limit_price="10.00"),
            "REJECTED",
            "invalid order",
        )
    if roll < 0.18:
        order = new("NewOrder", symbol=symbol, side=BUY, quantity=HOUSE_LOT, limit_price=UNAFFORDABLE)
        return order, "REJECTED", "insufficient cash"
    quantity = rng.randint(1, HOUSE_LOT) if rng.random() < 0.3 else rng.randint(HOUSE_LOT + 1, 400)
    price = f"{rng.randint(1, 200)}.{rng.choice(('00', '05', '10', '25', '50', '99'))}"
    side = BUY if rng.random() < 0.7 else SELL
    status = "FILLED" if quantity <= HOUSE_LOT else "PARTIALLY_FILLED"
    return new("NewOrder", symbol=symbol, side=side, quantity=quantity, limit_price=price), status, ""


def _ack(ack: Any) -> tuple[str, str]:
    return STATUS_NAMES[ack.status], ack.reason


async def _session(run: _Run, rng: random.Random, account: str) -> None:
    result = run.result
    result.calls["Trade"] += 1
    mine: dict[str, bool] = {}  # order id -> resting
    async with run.client.session() as session:
        for _ in range(rng.randint(2, 4)):
            order, status, reason = _order(rng)
            ack = await _send(run, session, new("TradeRequest", account=account, new=order), (status, reason))
            if ack.status != REJECTED:
                mine[ack.order_id] = ack.status == PARTIALLY_FILLED
                result.minted.append(ack.order_id)
                result.exec_ids.extend(f.exec_id for f in ack.fills)
        for _ in range(rng.randint(1, 3)):
            known = bool(mine) and rng.random() >= 0.15
            target = rng.choice(list(mine)) if known else run.invent(rng)
            if known:
                result.in_session_references += 1
            if rng.random() < 0.5:
                request = new("TradeRequest", account=account, cancel=new("CancelOrder", order_id=target))
                done = "CANCELLED"
            else:
                modify = new("ModifyOrder", order_id=target, quantity=rng.randint(1, 300))
                request = new("TradeRequest", account=account, modify=modify)
                done = "MODIFIED"
            wanted = (
                (done, "")
                if mine.get(target)
                else ("REJECTED", "order not open" if known else "unknown order")
            )
            ack = await _send(run, session, request, wanted)
            if ack.status == CANCELLED:
                mine[target] = False
    run.placed.extend(_Placed(order_id, account, resting) for order_id, resting in mine.items())
    run.named.extend(mine)


async def _send(run: _Run, session: Session, request: Any, wanted: tuple[str, str]) -> Any:
    ack = await session.send(request)
    got = _ack(ack)
    run.result.acks[got[0] if got[0] != "REJECTED" else f"REJECTED: {got[1]}"] += 1
    run.expect("Trade", request.WhichOneof("action"), got, wanted)
    return ack


async def _batch(run: _Run, rng: random.Random, account: str) -> None:
    run.result.calls["SubmitBatch"] += 1
    planned = [_order(rng) for _ in range(rng.randint(1, 4))]
    summary = await run.client.submit_batch(
        new("NewOrderRequest", account=account, order=o) for o, _, _ in planned
    )
    placed = [status for _, status, _ in planned if status != "REJECTED"]
    run.expect("SubmitBatch", account, len(summary.order_ids), len(placed))
    wanted_fill = sum(min(o.quantity, HOUSE_LOT) for o, status, _ in planned if status != "REJECTED")
    run.expect("SubmitBatch", account, summary.filled_quantity, wanted_fill)
    run.result.minted.extend(summary.order_ids)
    for order_id, status in zip(summary.order_ids, placed, strict=False):
        run.placed.append(_Placed(order_id, account, status == "PARTIALLY_FILLED"))
        run.named.append(order_id)


async def _refusable(run: _Run, method: str, call: Awaitable[Any], refusal: grpc.StatusCode | None) -> Any:
    """The answer of a call that must fail with `refusal` (None: must succeed); None when refused."""
    run.result.calls[method] += 1
    try:
        answer = await call
    except aio.AioRpcError as error:
        if error.code() == refusal:
            run.result.refusals[f"{method} {error.code().name}"] += 1
        else:
            run.result.errors.append(f"{method}: {error.code().name} {error.details()}")
        return None
    if refusal is not None:
        run.result.errors.append(f"{method}: answered, expected {refusal.name}")
    return answer


async def _cancel(run: _Run, rng: random.Random, account: str) -> None:
    if run.placed and rng.random() >= 0.2:
        placed = run.placed.pop(rng.randrange(len(run.placed)))
        cancelled = await _refusable(
            run,
            "CancelOrder",
            run.client.cancel_order(placed.order_id),
            None if placed.resting else FAILED_PRECONDITION,
        )
        if cancelled is not None:
            run.expect("CancelOrder", placed.order_id, STATUS_NAMES[cancelled.status], "CANCELLED")
        return
    await _refusable(run, "CancelOrder", run.client.cancel_order(run.invent(rng)), NOT_FOUND)


async def _get_order(run: _Run, rng: random.Random, account: str) -> None:
    if run.named and rng.random() >= 0.15:
        await _refusable(run, "GetOrder", run.client.get_order(rng.choice(run.named)), None)
    else:
        await _refusable(run, "GetOrder", run.client.get_order(run.invent(rng)), NOT_FOUND)


async def _list_open(run: _Run, rng: random.Random, account: str) -> None:
    symbol = rng.choice(("", *SYMBOLS))
    await _refusable(run, "ListOpenOrders", run.client.list_open_orders(symbol), None)


async def _fills(run: _Run, rng: random.Random, account: str) -> None:
    await _refusable(run, "StreamFills", run.client.stream_fills(account), None)


async def _account(run: _Run, rng: random.Random, account: str) -> None:
    await _refusable(run, "GetAccount", run.client.get_account(account), None)


_CALLS: dict[str, Callable[[_Run, random.Random, str], Awaitable[None]]] = {
    "session": _session,
    "batch": _batch,
    "cancel": _cancel,
    "get_order": _get_order,
    "list_open": _list_open,
    "fills": _fills,
    "account": _account,
}


async def run_workload(
    address: str,
    *,
    seed: int,
    accounts: int,
    sessions: int,
    calls: int,
    concurrency: int,
    rate: float = 0.0,
) -> WorkloadResult:
    """Open `accounts` accounts, then run `sessions` sessions and `calls` other calls, shuffled, on
    `concurrency` tasks, through `address`; with `rate`, no more than that many of them begin each
    second (open loop: a slow answer does not slow the next call down)."""
    rng = random.Random(seed)
    names = [f"ACC-{i:02d}" for i in range(accounts)]
    result = WorkloadResult(accounts=names)
    kinds, weights = zip(*MIX, strict=True)
    plan = ["session"] * sessions + rng.choices(kinds, weights, k=calls)
    rng.shuffle(plan)
    work: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for index, kind in enumerate(plan):
        work.put_nowait((index, kind))
    async with aio.insecure_channel(address) as channel:
        run = _Run(VenueClient(channel), result)
        for name in names:
            await _refusable(run, "OpenAccount", run.client.open_account(name, CASH), None)

        began = asyncio.get_running_loop().time()

        async def worker() -> None:
            while not work.empty():
                index, kind = work.get_nowait()
                if rate > 0:  # this call's slot in the schedule
                    slot = began + index / rate - asyncio.get_running_loop().time()
                    if slot > 0:
                        await asyncio.sleep(slot)
                one = random.Random(f"{seed}:{index}")
                try:
                    await _CALLS[kind](run, one, one.choice(names))
                except aio.AioRpcError as error:
                    result.errors.append(f"{kind} #{index}: {error.code().name} {error.details()}")

        workers = [asyncio.create_task(worker(), name=f"venue workload {i}") for i in range(concurrency)]
        await asyncio.gather(*workers)
    return result


async def book_of(address: str) -> dict[str, dict[str, Any]]:
    """One side's whole book, per account, without ids: cash, positions, open orders, fills and the
    orders still resting (fills and resting orders sorted: only what they are counts, not their order)."""
    side_names = {number: name for name, number in SIDES.items()}
    async with aio.insecure_channel(address) as channel:
        client = VenueClient(channel)
        listed = await client.all_accounts(page_size=3)  # small pages: the page tokens are followed
        resting = (await client.list_open_orders()).orders
        book: dict[str, dict[str, Any]] = {}
        for entry in listed:
            account = await client.get_account(entry.account)
            fills = await client.stream_fills(entry.account)
            book[entry.account] = {
                "cash": account.cash,
                "positions": dict(account.positions),
                "open_orders": account.open_orders,
                "fills": sorted((f.quantity, f.price) for f in fills),
                "resting": sorted(
                    (o.symbol, side_names[o.side], o.quantity, o.open_quantity, STATUS_NAMES[o.status])
                    for o in resting
                    if o.account == entry.account
                ),
            }
        return book
