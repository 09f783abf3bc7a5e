"""Input parsing and error plumbing shared by Bank and BK.

Only what a client sends is handled here: parsing decimal strings, checking
request fields, and turning a refusal into a gRPC status. The words a side uses
to explain a refusal, how it formats numbers and all business rules live in
that side's own modules.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from sample_ledger._proto.bank.v1 import ledger_pb2 as pb

T = TypeVar("T")

_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?\Z")
_SYMBOL = re.compile(r"[A-Z][A-Z0-9.\-]{0,11}\Z")
_CURRENCY = re.compile(r"[A-Z]{3}\Z")

QUANTITY_PLACES = 4
PRICE_PLACES = 6
MONEY_PLACES = 2
QUANTITY_LIMIT = Decimal(10) ** 9
PRICE_LIMIT = Decimal(10) ** 9
MONEY_LIMIT = Decimal(10) ** 12
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_ACCOUNT_ID_LENGTH = 64
DEFAULT_CURRENCY = "USD"


class Problem(enum.Enum):
    """What is wrong with one request field; each side words it its own way."""

    REQUIRED = "required"
    NOT_A_DECIMAL = "not_a_decimal"
    NOT_POSITIVE = "not_positive"
    ZERO = "zero"
    TOO_MANY_PLACES = "too_many_places"
    OUT_OF_RANGE = "out_of_range"
    BAD_SYMBOL = "bad_symbol"
    BAD_CURRENCY = "bad_currency"
    UNSPECIFIED_SIDE = "unspecified_side"
    NEGATIVE_PAGE_SIZE = "negative_page_size"
    TOO_LONG = "too_long"


@dataclass(frozen=True)
class Violation:
    """One bad request field; `limit` is the bound broken, when there is one."""

    field: str
    problem: Problem
    limit: Decimal | int | None = None


class InvalidInput(Exception):
    """A request failed the shared field checks; carries one violation per bad field."""

    def __init__(self, violations: Iterable[Violation]) -> None:
        self.violations = tuple(violations)
        super().__init__(", ".join(f"{v.field}: {v.problem.value}" for v in self.violations))


class LedgerError(Exception):
    """A refusal to send back as a gRPC status, with BadRequest details when it has violations."""

    def __init__(
        self, code: grpc.StatusCode, message: str, violations: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.code = code
        self.message = message
        self.violations = tuple(violations)  # (field, description)
        super().__init__(message)

    def to_status(self) -> Any:
        """The grpc.Status carrying a google.rpc.Status with a BadRequest detail."""
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
                for field, description in self.violations
            ]
        )
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        status.details.add().Pack(bad_request)
        return rpc_status.to_status(status)


Wording = Callable[[InvalidInput], LedgerError]


def words_for(headline: str, phrases: Mapping[Problem, str]) -> Wording:
    """A Wording that explains each violation with `phrases` (formatted with `limit`)."""

    def word(invalid: InvalidInput) -> LedgerError:
        described = [(v.field, phrases[v.problem].format(limit=v.limit)) for v in invalid.violations]
        message = headline + ": " + "; ".join(f"{field} {text}" for field, text in described)
        return LedgerError(grpc.StatusCode.INVALID_ARGUMENT, message, described)

    return word


def as_ledger_error(error: Exception, wording: Wording) -> LedgerError:
    """`error` (an InvalidInput or a LedgerError) as a LedgerError."""
    if isinstance(error, InvalidInput):
        return wording(error)
    assert isinstance(error, LedgerError)
    return error


async def abort(context: Any, error: LedgerError) -> NoReturn:
    """End the call with `error`: rich details when it names fields, a plain status otherwise."""
    if error.violations:
        await context.abort_with_status(error.to_status())
    else:
        await context.abort(error.code, error.message)
    raise AssertionError("context.abort returned")  # pragma: no cover


async def answer(context: Any, build: Callable[[], T], wording: Wording) -> T:
    """Run the synchronous `build` (no awaits: atomic under asyncio) and abort on a refusal."""
    try:
        return build()
    except (InvalidInput, LedgerError) as error:
        await abort(context, as_ledger_error(error, wording))


class Checker:
    """Collects violations while parsing the fields of one request."""

    def __init__(self) -> None:
        self.violations: list[Violation] = []

    def done(self) -> None:
        """Raise InvalidInput when any field was bad."""
        if self.violations:
            raise InvalidInput(self.violations)

    def _bad(self, field: str, problem: Problem, limit: Decimal | int | None = None) -> None:
        self.violations.append(Violation(field, problem, limit))

    def decimal(
        self, field: str, text: str, *, places: int, limit: Decimal, positive: bool = False
    ) -> Decimal:
        """`text` parsed; with `positive` it must be > 0, otherwise non-zero; 0 when bad."""
        if not text:
            self._bad(field, Problem.REQUIRED)
            return Decimal(0)
        if not _PLAIN_DECIMAL.match(text):
            self._bad(field, Problem.NOT_A_DECIMAL)
            return Decimal(0)
        value = Decimal(text)
        if value == 0:
            self._bad(field, Problem.NOT_POSITIVE if positive else Problem.ZERO)
        elif positive and value < 0:
            self._bad(field, Problem.NOT_POSITIVE)
        elif abs(value) > limit:
            self._bad(field, Problem.OUT_OF_RANGE, limit)
        elif value != value.quantize(Decimal(1).scaleb(-places)):
            self._bad(field, Problem.TOO_MANY_PLACES, places)
        else:
            return value
        return Decimal(0)

    def required(self, field: str, text: str, *, max_length: int) -> str:
        if not text:
            self._bad(field, Problem.REQUIRED)
        elif len(text) > max_length:
            self._bad(field, Problem.TOO_LONG, max_length)
        return text

    def symbol(self, field: str, text: str) -> str:
        if not text:
            self._bad(field, Problem.REQUIRED)
        elif not _SYMBOL.match(text):
            self._bad(field, Problem.BAD_SYMBOL)
        return text

    def currency(self, field: str, text: str) -> str:
        if not text:
            return DEFAULT_CURRENCY
        if not _CURRENCY.match(text):
            self._bad(field, Problem.BAD_CURRENCY)
        return text

    def side(self, field: str, side: int) -> int:
        if side not in (pb.SIDE_BUY, pb.SIDE_SELL):
            self._bad(field, Problem.UNSPECIFIED_SIDE)
        return side

    def page_size(self, field: str, size: int) -> int:
        if size < 0:
            self._bad(field, Problem.NEGATIVE_PAGE_SIZE)
        if size <= 0:
            return DEFAULT_PAGE_SIZE
        return min(size, MAX_PAGE_SIZE)


@dataclass(frozen=True)
class TradeInput:
    """A PostTradeRequest whose fields passed the checks."""

    account_id: str
    symbol: str
    side: int
    quantity: Decimal
    price: Decimal
    client_order_id: str


def parse_trade(request: pb.PostTradeRequest) -> TradeInput:
    """The checked fields of a PostTradeRequest, or InvalidInput naming every bad field."""
    check = Checker()
    symbol = check.symbol("symbol", request.symbol)
    side = check.side("side", request.side)
    quantity = check.decimal(
        "quantity", request.quantity, places=QUANTITY_PLACES, limit=QUANTITY_LIMIT, positive=True
    )
    price = check.decimal("price", request.price, places=PRICE_PLACES, limit=PRICE_LIMIT, positive=True)
    check.done()
    return TradeInput(request.account_id, symbol, side, quantity, price, request.client_order_id)


@dataclass(frozen=True)
class AccountInput:
    """An OpenAccountRequest whose fields passed the checks; `initial_deposit` None when absent."""

    account_id: str
    owner_name: str
    currency: str
    initial_deposit: Decimal | None


def parse_open_account(request: pb.OpenAccountRequest) -> AccountInput:
    """The checked fields of an OpenAccountRequest, or InvalidInput naming every bad field."""
    check = Checker()
    account_id = check.required("account_id", request.account_id, max_length=MAX_ACCOUNT_ID_LENGTH)
    currency = check.currency("currency", request.currency)
    deposit = None
    if request.initial_deposit:
        deposit = check.decimal(
            "initial_deposit", request.initial_deposit, places=MONEY_PLACES, limit=MONEY_LIMIT, positive=True
        )
    check.done()
    return AccountInput(account_id, request.owner_name, currency, deposit)


def parse_amount(request: pb.DepositRequest) -> Decimal:
    """The non-zero amount of a DepositRequest, or InvalidInput."""
    check = Checker()
    amount = check.decimal("amount", request.amount, places=MONEY_PLACES, limit=MONEY_LIMIT)
    check.done()
    return amount


def parse_page_size(size: int) -> int:
    """The page size to use for a request's `page_size` (0: default; capped at the maximum)."""
    check = Checker()
    result = check.page_size("page_size", size)
    check.done()
    return result


def parse_symbol(symbol: str) -> str:
    """A GetPosition symbol, or InvalidInput."""
    check = Checker()
    check.symbol("symbol", symbol)
    check.done()
    return symbol
