"""One side's custody book: its state, its rules, and the way it writes numbers and ids.

Every method takes the decoded request and returns the answer message(s), or raises `Refused`
with the status the call ends with. Methods run without awaiting anything, so each is atomic
under asyncio. The side ("bank" or "bk") and the planted bugs switched on are the only things
that make two books answer differently; the package docstring lists every such difference.
"""

from __future__ import annotations

import base64
import itertools
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any

import grpc

from tests.services.custody.messages import REGISTRY, new

SIDES = ("bank", "bk")
BUGS = frozenset({"fee-rounding", "wrong-code", "frozen-flag", "same-account"})
# planted only when a test asks: BK's OpenAccount answers the owner's name in capitals (its book keeps it
# as given), a difference in the answer of a write that mints its own key
OPT_IN_BUGS = frozenset({"owner-shouted"})
CENT = Decimal("0.01")
AMOUNT_LIMIT = Decimal(10) ** 12
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
_AMOUNT = re.compile(r"[0-9]{1,13}(?:\.[0-9]{1,3})?\Z")

# the status details of each refusal: the same words on both sides, never an id
BAD_AMOUNT = "amount must be a positive decimal with at most 3 decimal places"
SAME_ACCOUNT = "cannot transfer to the same account"
NO_CLIENT_REF = "client_ref is required"
REF_TAKEN = "client ref already in use"
UNKNOWN_REF = "unknown client ref"
UNKNOWN_ACCOUNT = "unknown account"
UNKNOWN_MOVEMENT = "unknown movement"
BAD_PAGE_SIZE = "page_size must not be negative"
BAD_PAGE_TOKEN = "unknown page token"
FROZEN = "account is frozen"
ALREADY_REVERSED = "movement already reversed"
INSUFFICIENT_FUNDS = "insufficient funds"


@dataclass(frozen=True)
class Violation:
    """One google.rpc.PreconditionFailure violation."""

    type: str  # FROZEN, ALREADY_REVERSED or INSUFFICIENT_FUNDS
    subject: str  # the account id or movement id, in the refusing side's own id space
    description: str


class Refused(Exception):
    """A call the book refuses as a whole: the status it ends with (and its one violation, if any)."""

    def __init__(self, code: grpc.StatusCode, details: str, violation: Violation | None = None) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.violation = violation


def _precondition(kind: str, subject: str, description: str) -> Refused:
    return Refused(grpc.StatusCode.FAILED_PRECONDITION, description, Violation(kind, subject, description))


def _timestamp(ns: int) -> Any:
    """A google.protobuf.Timestamp of the registry's own pool (the one custody messages are built in)."""
    timestamp: Any = REGISTRY.message_class("google.protobuf.Timestamp")
    return timestamp(seconds=ns // 10**9, nanos=ns % 10**9)


@dataclass
class AccountState:
    account_id: str
    client_ref: str
    owner: str
    balance: Decimal = Decimal(0)
    frozen: bool = False


@dataclass
class MovementState:
    movement_id: str
    from_account: str  # "" for money coming in
    to_account: str  # "" for money going out
    amount: Decimal  # whole cents, positive
    booked_at_ns: int
    reversed: bool = False


@dataclass
class Book:
    """The accounts and movements of one side ("bank" or "bk"), with BK's planted `bugs`."""

    side: str
    bugs: frozenset[str] = BUGS
    clock: Callable[[], int] = time.time_ns
    accounts: dict[str, AccountState] = field(default_factory=dict)  # by account id, in opening order
    movements: dict[str, MovementState] = field(default_factory=dict)  # by movement id, in booking order
    _by_ref: dict[str, str] = field(default_factory=dict)
    _counters: dict[str, itertools.count[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise ValueError(f"unknown side {self.side!r}; expected one of {', '.join(SIDES)}")
        unknown = set(self.bugs) - BUGS - OPT_IN_BUGS
        if unknown:
            raise ValueError(f"unknown planted bugs {sorted(unknown)}; known: {sorted(BUGS | OPT_IN_BUGS)}")
        if self.side == "bank":
            self.bugs = frozenset()  # the bugs are BK's

    # -- how this side writes ids, numbers and times ------------------------------------------

    def _mint(self, bank_prefix: str, bk_prefix: str) -> str:
        if self.side == "bank":
            counter = self._counters.setdefault(bank_prefix, itertools.count(1))
            return f"{bank_prefix}{next(counter)}"
        return f"{bk_prefix}_{secrets.token_hex(5)}"

    def decimal(self, value: Decimal) -> str:
        """Bank: exactly two decimals ("100.50", "0.00"); BK: no trailing zeros ("100.5", "0")."""
        if self.side == "bank":
            return format(value.quantize(CENT), "f")
        normal = value.normalize()
        return format(normal if normal != 0 else Decimal(0), "f")

    def _now(self) -> int:
        """Bank stamps nanoseconds, BK microseconds; each from its own clock."""
        ns = self.clock()
        return ns - ns % 1000 if self.side == "bk" else ns

    def _has(self, bug: str) -> bool:
        return bug in self.bugs

    # -- messages -----------------------------------------------------------------------------

    def _account_message(self, account: AccountState, frozen: bool | None = None) -> Any:
        return new(
            "Account",
            account_id=account.account_id,
            client_ref=account.client_ref,
            owner=account.owner,
            balance=self.decimal(account.balance),
            frozen=account.frozen if frozen is None else frozen,
        )

    def _movement_message(self, movement: MovementState) -> Any:
        return new(
            "Movement",
            movement_id=movement.movement_id,
            from_account=movement.from_account,
            to_account=movement.to_account,
            amount=self.decimal(movement.amount),
            booked_at=_timestamp(movement.booked_at_ns),
        )

    # -- lookups ------------------------------------------------------------------------------

    def _account(self, account_id: str) -> AccountState:
        account = self.accounts.get(account_id)
        if account is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, UNKNOWN_ACCOUNT)
        return account

    def _amount(self, text: str, rounding: str = ROUND_HALF_UP) -> Decimal:
        """A request amount, rounded to cents; INVALID_ARGUMENT unless positive with at most 3 decimals."""
        if not _AMOUNT.match(text):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, BAD_AMOUNT)
        amount = Decimal(text).quantize(CENT, rounding=rounding)
        if not 0 < amount <= AMOUNT_LIMIT:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, BAD_AMOUNT)
        return amount

    def _book(self, source: AccountState | None, target: AccountState | None, amount: Decimal) -> Any:
        """Move `amount` from `source` to `target` (None: outside the book), once both are checked."""
        for account in (source, target):
            if account is not None and account.frozen:
                raise _precondition("FROZEN", account.account_id, FROZEN)
        if source is not None and source.balance < amount:
            raise _precondition("INSUFFICIENT_FUNDS", source.account_id, INSUFFICIENT_FUNDS)
        if source is not None:
            source.balance -= amount
        if target is not None:
            target.balance += amount
        movement = MovementState(
            movement_id=self._mint("M", "mv"),
            from_account=source.account_id if source is not None else "",
            to_account=target.account_id if target is not None else "",
            amount=amount,
            booked_at_ns=self._now(),
        )
        self.movements[movement.movement_id] = movement
        return self._movement_message(movement)

    # -- the methods --------------------------------------------------------------------------

    def OpenAccount(self, request: Any) -> Any:
        if not request.client_ref:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, NO_CLIENT_REF)
        if request.client_ref in self._by_ref:
            raise Refused(grpc.StatusCode.ALREADY_EXISTS, REF_TAKEN)
        account = AccountState(self._mint("A", "acc"), request.client_ref, request.owner)
        self.accounts[account.account_id] = account
        self._by_ref[account.client_ref] = account.account_id
        answer = self._account_message(account)
        if self._has("owner-shouted"):
            answer.owner = account.owner.upper()
        return answer

    def GetAccountByRef(self, request: Any) -> Any:
        account_id = self._by_ref.get(request.client_ref)
        if account_id is None:
            code = grpc.StatusCode.INVALID_ARGUMENT if self._has("wrong-code") else grpc.StatusCode.NOT_FOUND
            raise Refused(code, UNKNOWN_REF)
        account = self.accounts[account_id]
        return self._account_message(account, frozen=False if self._has("frozen-flag") else None)

    def GetBalance(self, request: Any) -> Any:
        account = self._account(request.account_id)
        return new("Balance", account_id=account.account_id, balance=self.decimal(account.balance))

    def Deposit(self, request: Any) -> Any:
        amount = self._amount(request.amount)
        return self._book(None, self._account(request.account_id), amount)

    def Transfer(self, request: Any) -> Any:
        rounding = ROUND_HALF_EVEN if self._has("fee-rounding") else ROUND_HALF_UP
        amount = self._amount(request.amount, rounding)
        if request.from_account == request.to_account and not self._has("same-account"):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, SAME_ACCOUNT)
        source, target = self._account(request.from_account), self._account(request.to_account)
        if source is target:  # BK: nothing to move, nothing booked
            return new(
                "Movement",
                movement_id="",
                from_account=source.account_id,
                to_account=target.account_id,
                amount=self.decimal(Decimal(0)),
                booked_at=_timestamp(self._now()),
            )
        return self._book(source, target, amount)

    def Reverse(self, request: Any) -> Any:
        original = self.movements.get(request.movement_id)
        if original is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, UNKNOWN_MOVEMENT)
        if original.reversed:
            raise _precondition("ALREADY_REVERSED", original.movement_id, ALREADY_REVERSED)
        source = self.accounts[original.to_account] if original.to_account else None
        target = self.accounts[original.from_account] if original.from_account else None
        answer = self._book(source, target, original.amount)
        original.reversed = True
        return answer

    def Freeze(self, request: Any) -> Any:
        account = self._account(request.account_id)
        account.frozen = True
        return self._account_message(account)

    def ListMovements(self, request: Any) -> list[Any]:
        account_id = self._account(request.account_id).account_id
        return [
            self._movement_message(m)
            for m in self.movements.values()
            if account_id in (m.from_account, m.to_account)
        ]

    def ListAccounts(self, request: Any) -> Any:
        if request.page_size < 0:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, BAD_PAGE_SIZE)
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        refs = sorted(self._by_ref)
        start = self._page_start(refs, request.page_token)
        page = refs[start : start + size]
        more = start + size < len(refs)
        return new(
            "AccountList",
            accounts=[self._account_message(self.accounts[self._by_ref[ref]]) for ref in page],
            next_page_token=self._page_token(start + size, page[-1]) if more else "",
        )

    def _page_token(self, offset: int, last_ref: str) -> str:
        """Bank: the decimal offset of the next account ("50"); BK: opaque, after the last ref returned."""
        if self.side == "bank":
            return str(offset)
        return base64.urlsafe_b64encode(last_ref.encode()).decode()

    def _page_start(self, refs: list[str], token: str) -> int:
        if not token:
            return 0
        if self.side == "bank":
            if not token.isdigit():
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, BAD_PAGE_TOKEN)
            return int(token)
        try:
            last = base64.urlsafe_b64decode(token.encode()).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, BAD_PAGE_TOKEN) from exc
        if last not in self._by_ref:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, BAD_PAGE_TOKEN)
        return refs.index(last) + 1
