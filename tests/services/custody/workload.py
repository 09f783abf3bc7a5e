"""A workload of custody clients, and a side's whole book in a form both sides share.

`run_workload(address, seed=, clients=, calls=)` runs `clients` clients at once, each on a
channel of its own and its own accounts, `calls` calls each. A client opens three accounts
("c<i>-0", "c<i>-1", "c<i>-2"), funds them, then makes a fixed tour of every trait (a transfer
of three decimals that rounds differently half-up and half-even, a transfer to the same
account, one beyond the balance, a reversal made twice, a read of an unknown client ref, a
freeze of "c<i>-2" followed by a read of it by ref and by a deposit into it and transfers from
and to it), then random calls. Normal transfers leave at least `MARGIN` in the paying account,
so a refusal for funds only ever comes from a transfer meant to be beyond the balance. What a
client does next depends only on the seed and on the answers' amounts, never on ids: with BK's
bugs off both sides get the same calls.

Every call is recorded (`Call`): which client made it, why (`intent`), the request, and how it
ended (`Answer`: status code, details, answer messages, rich details' violations).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from grpc import aio

from tests.services.custody.client import Answer, Client

MARGIN = Decimal(100)  # what a normal transfer or reversal leaves in the account it takes from
BEYOND = "1000000"  # more than any account of the workload ever holds
INTENTS = (
    "open",  # OpenAccount
    "fund",  # Deposit: the first money of an account
    "deposit",  # Deposit of two or three decimals
    "transfer",  # Transfer of two decimals between a client's two active accounts
    "transfer-3dp",  # Transfer of three decimals (the tour's first one always rounds differently)
    "same-account",  # Transfer with from_account == to_account
    "beyond-balance",  # Transfer of BEYOND
    "reverse",  # Reverse of a transfer not reversed yet
    "reverse-again",  # Reverse of a transfer reversed already
    "freeze",  # Freeze of the client's third account
    "by-ref",  # GetAccountByRef of an active account
    "by-ref-frozen",  # GetAccountByRef of the frozen account
    "unknown-ref",  # GetAccountByRef of a ref never opened
    "balance",  # GetBalance
    "movements",  # ListMovements
    "frozen-deposit",  # Deposit into the frozen account
    "frozen-transfer",  # Transfer from the frozen account
    "into-frozen",  # Transfer to the frozen account
)


@dataclass(frozen=True)
class Call:
    """One call of the workload and how it ended."""

    client: int
    seq: int  # the client's own count of calls, from 0
    intent: str  # one of INTENTS
    method: str  # "Transfer", ...
    request: dict[str, Any]
    answer: Answer
    sent: float = 0.0  # time.time() as the client sent it
    ended: float = 0.0  # ... and as its answer came


@dataclass
class Result:
    calls: list[Call] = field(default_factory=list)  # in the order they ended

    def of(self, *, method: str | None = None, intent: str | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if (method is None or c.method == method) and (intent is None or c.intent == intent)
        ]


@dataclass
class _Account:
    ref: str
    account_id: str = ""
    balance: Decimal = Decimal(0)
    frozen: bool = False


@dataclass
class _Moved:
    movement_id: str
    source: _Account | None
    target: _Account | None
    amount: Decimal
    transfer: bool
    reversed: bool = False


def _cents(rng: random.Random, low: int, high: int) -> str:
    return f"{rng.randint(low, high)}.{rng.randint(0, 99):02d}"


def rounds_apart(amount: str) -> bool:
    """Whether an amount rounds to different cents half-up and half-even ("12.345": 12.35, 12.34)."""
    digits = amount.partition(".")[2]
    return len(digits) == 3 and digits[2] == "5" and int(digits[1]) % 2 == 0


class _Session:
    """One client: its accounts as its answers tell them, and what it does next."""

    def __init__(self, index: int, client: Client, rng: random.Random, calls: int, result: Result) -> None:
        self.index = index
        self.client = client
        self.rng = rng
        self.left = calls
        self.seq = 0
        self.result = result
        self.accounts = [_Account(f"c{index}-{k}") for k in range(3)]
        self.moved: list[_Moved] = []
        self.unknown = 0

    @property
    def active(self) -> list[_Account]:
        return [a for a in self.accounts if a.account_id and not a.frozen]

    @property
    def frozen(self) -> _Account | None:
        return next((a for a in self.accounts if a.frozen), None)

    async def _do(self, intent: str, method: str, **request: Any) -> Answer:
        sent = time.time()
        answer = await self.client.call(method, **request)
        call = Call(self.index, self.seq, intent, method, request, answer, sent, time.time())
        self.result.calls.append(call)
        self.seq += 1
        self.left -= 1
        return answer

    def _booked(
        self, answer: Answer, source: _Account | None, target: _Account | None, transfer: bool
    ) -> None:
        if not answer.ok or not answer.message.movement_id:  # refused, or nothing booked
            return
        amount = Decimal(answer.message.amount)
        if source is not None:
            source.balance -= amount
        if target is not None:
            target.balance += amount
        self.moved.append(_Moved(answer.message.movement_id, source, target, amount, transfer))

    # -- the calls --------------------------------------------------------------------------------

    async def open(self, account: _Account) -> None:
        answer = await self._do("open", "OpenAccount", client_ref=account.ref, owner=f"Owner {account.ref}")
        if answer.ok:
            account.account_id = answer.message.account_id

    async def deposit(self, account: _Account, amount: str, intent: str = "deposit") -> None:
        answer = await self._do(intent, "Deposit", account_id=account.account_id, amount=amount)
        self._booked(answer, None, account, transfer=False)

    async def transfer(self, source: _Account, target: _Account, amount: str, intent: str) -> None:
        answer = await self._do(
            intent, "Transfer", from_account=source.account_id, to_account=target.account_id, amount=amount
        )
        self._booked(answer, source, target, transfer=True)

    async def reverse(self, moved: _Moved, intent: str = "reverse") -> None:
        answer = await self._do(intent, "Reverse", movement_id=moved.movement_id)
        if answer.ok:
            moved.reversed = True
            self._booked(answer, moved.target, moved.source, transfer=False)

    async def reverse_last_transfer(self, intent: str) -> None:
        transfers = [m for m in self.moved if m.transfer]
        if transfers:
            await self.reverse(transfers[-1], intent)
        else:  # the tour's transfer was refused: nothing to reverse
            await self.unknown_ref()

    async def freeze(self, account: _Account) -> None:
        if (await self._do("freeze", "Freeze", account_id=account.account_id)).ok:
            account.frozen = True

    async def by_ref(self, account: _Account, intent: str = "by-ref") -> None:
        await self._do(intent, "GetAccountByRef", client_ref=account.ref)

    async def unknown_ref(self) -> None:
        self.unknown += 1
        await self._do("unknown-ref", "GetAccountByRef", client_ref=f"c{self.index}-unknown-{self.unknown}")

    async def balance(self, account: _Account) -> None:
        await self._do("balance", "GetBalance", account_id=account.account_id)

    async def movements(self, account: _Account) -> None:
        await self._do("movements", "ListMovements", account_id=account.account_id)

    # -- choosing ---------------------------------------------------------------------------------

    def _pair(self) -> tuple[_Account, _Account] | None:
        """The client's two active accounts, paying one way or the other at random."""
        active = self.active
        if len(active) < 2:
            return None
        source, target = active[:2] if self.rng.random() < 0.5 else active[1::-1]
        return source, target

    def _amount(self, source: _Account, three_places: bool) -> str:
        if three_places:
            last = "5" if self.rng.random() < 0.7 else str(self.rng.randint(0, 9))
            amount = f"{_cents(self.rng, 1, 60)}{last}"
        else:
            amount = _cents(self.rng, 1, 60)
        return amount if Decimal(amount) + MARGIN <= source.balance else "1.00"

    def _payer_first(self, source: _Account, target: _Account, amount: str) -> tuple[_Account, _Account]:
        """The pair turned round when `source` would keep less than MARGIN."""
        return (source, target) if Decimal(amount) + MARGIN <= source.balance else (target, source)

    def _reversible(self) -> _Moved | None:
        candidates = [
            m
            for m in self.moved
            if m.transfer
            and not m.reversed
            and all(a is not None and not a.frozen for a in (m.source, m.target))
            and m.target is not None
            and m.target.balance >= m.amount + MARGIN
        ]
        return self.rng.choice(candidates) if candidates else None

    async def tour(self) -> None:
        """Every trait once, in an order that makes each one show."""
        first, second, third = self.accounts
        steps: list[Callable[[], Awaitable[None]]] = [
            *(lambda a=a: self.open(a) for a in self.accounts),
            *(lambda a=a: self.deposit(a, _cents(self.rng, 500, 2000), "fund") for a in self.accounts),
            lambda: self.transfer(
                first, second, f"{self.rng.randint(1, 60)}.{self.rng.randint(0, 9)}45", "transfer-3dp"
            ),
            lambda: self.transfer(first, first, "5.00", "same-account"),
            lambda: self.transfer(second, first, BEYOND, "beyond-balance"),
            lambda: self.reverse_last_transfer("reverse"),
            lambda: self.reverse_last_transfer("reverse-again"),
            self.unknown_ref,
            lambda: self.by_ref(first),
            lambda: self.balance(first),
            lambda: self.movements(first),
            lambda: self.freeze(third),
            lambda: self.by_ref(third, "by-ref-frozen"),
            lambda: self.deposit(third, "10.00", "frozen-deposit"),
            lambda: self.transfer(third, first, "1.00", "frozen-transfer"),
            lambda: self.transfer(first, third, "1.00", "into-frozen"),
        ]
        for step in steps:
            if self.left <= 0:
                return
            await step()

    async def random_call(self) -> None:
        rng = self.rng
        intent = rng.choices(_RANDOM_INTENTS, _RANDOM_WEIGHTS)[0]
        pair, frozen = self._pair(), self.frozen
        active = self.active
        if pair is None or not active:
            intent = "unknown-ref"
        account = rng.choice(active) if active else None
        if intent in ("frozen-deposit", "frozen-transfer", "into-frozen", "by-ref-frozen") and frozen is None:
            intent = "balance"
        moved = self._reversible() if intent == "reverse" else None
        again = [m for m in self.moved if m.reversed and m.transfer]
        if (intent == "reverse" and moved is None) or (intent == "reverse-again" and not again):
            intent = "balance"
        if intent == "unknown-ref" or account is None or pair is None:
            await self.unknown_ref()
            return
        source, target = pair
        if intent == "deposit":
            places = 3 if rng.random() < 0.3 else 2
            await self.deposit(account, f"{_cents(rng, 5, 200)}{rng.randint(0, 9) if places == 3 else ''}")
        elif intent in ("transfer", "transfer-3dp"):
            amount = self._amount(source, intent == "transfer-3dp")
            source, target = self._payer_first(source, target, amount)
            await self.transfer(source, target, amount, intent)
        elif intent == "same-account":
            await self.transfer(account, account, _cents(rng, 1, 20), intent)
        elif intent == "beyond-balance":
            await self.transfer(source, target, BEYOND, intent)
        elif intent == "reverse":
            assert moved is not None
            await self.reverse(moved)
        elif intent == "reverse-again":
            await self.reverse(rng.choice(again), intent)
        elif intent == "by-ref":
            await self.by_ref(account)
        elif intent == "by-ref-frozen":
            assert frozen is not None
            await self.by_ref(frozen, intent)
        elif intent == "balance":
            await self.balance(account)
        elif intent == "movements":
            await self.movements(account)
        elif intent == "frozen-deposit":
            assert frozen is not None
            await self.deposit(frozen, _cents(rng, 1, 50), intent)
        elif intent == "frozen-transfer":
            assert frozen is not None
            await self.transfer(frozen, account, _cents(rng, 1, 50), intent)
        else:
            assert intent == "into-frozen"
            assert frozen is not None
            await self.transfer(account, frozen, _cents(rng, 1, 50), intent)


_RANDOM = {
    "deposit": 10,
    "transfer": 14,
    "transfer-3dp": 8,
    "same-account": 2,
    "beyond-balance": 2,
    "reverse": 6,
    "reverse-again": 2,
    "by-ref": 6,
    "by-ref-frozen": 2,
    "unknown-ref": 3,
    "balance": 8,
    "movements": 5,
    "frozen-deposit": 1,
    "frozen-transfer": 1,
    "into-frozen": 1,
}
_RANDOM_INTENTS, _RANDOM_WEIGHTS = list(_RANDOM), list(_RANDOM.values())


async def run_workload(address: str, *, seed: int, clients: int, calls: int) -> Result:
    """`clients` clients at once against `address`, `calls` calls each; every call and its answer."""
    result = Result()

    async def one(index: int) -> None:
        async with aio.insecure_channel(address) as channel:
            session = _Session(index, Client(channel), random.Random(f"{seed}/{index}"), calls, result)
            await session.tour()
            while session.left > 0:
                await session.random_call()

    await asyncio.gather(*(one(index) for index in range(clients)))
    return result


# -- a side's whole book ------------------------------------------------------------------------------


def plain(decimal: str) -> str:
    """A decimal string without trailing zeros: "100.50" and "100.5" are both "100.5"; "0.00" is "0"."""
    value = Decimal(decimal).normalize()
    return format(value if value != 0 else Decimal(0), "f")


class BookUnreadable(Exception):
    """A side did not answer a read of its whole book."""


async def book_of(address: str) -> dict[str, dict[str, Any]]:
    """A side's whole state, without ids: client_ref -> owner, balance, frozen, and its movements in
    order as (direction "in"/"out", amount, the other account's client_ref or "" for outside)."""
    async with aio.insecure_channel(address) as channel:
        client = Client(channel)
        accounts: list[Any] = []
        token = ""
        while True:
            listed = await client.call("ListAccounts", page_size=7, page_token=token)
            if not listed.ok:
                raise BookUnreadable(f"ListAccounts on {address}: {listed.code} {listed.details}")
            accounts += list(listed.message.accounts)
            token = listed.message.next_page_token
            if not token:
                break
        ref_of = {a.account_id: a.client_ref for a in accounts}
        book: dict[str, dict[str, Any]] = {}
        for account in accounts:
            listed = await client.call("ListMovements", account_id=account.account_id)
            if not listed.ok:
                raise BookUnreadable(f"ListMovements on {address}: {listed.code} {listed.details}")
            movements = []
            for m in listed.messages:
                incoming = m.to_account == account.account_id
                other = m.from_account if incoming else m.to_account
                movements.append(("in" if incoming else "out", plain(m.amount), ref_of.get(other, "")))
            book[account.client_ref] = {
                "owner": account.owner,
                "balance": plain(account.balance),
                "frozen": account.frozen,
                "movements": movements,
            }
        return book
