"""BK's native numbers: `bk.v1.Money` and `bk.v1.Shares` to and from exact Decimals.

Both messages hold ``units + nanos / 1e9`` with units and nanos of the same sign,
as google.type.Money does (-0.5 is units 0, nanos -500000000). The conversions
are exact: a value with more than 9 fractional digits, or too large for int64
units, has no message and is refused with ValueError, as is a message whose
nanos are out of range or of the other sign than its units.
"""

from __future__ import annotations

from decimal import Decimal

from sample_ledger._proto.bk.v1 import journal_pb2 as jpb

NANOS_PER_UNIT = 10**9
MAX_NANOS = NANOS_PER_UNIT - 1
MAX_UNITS = 2**63 - 1  # int64


def _split(value: Decimal, what: str) -> tuple[int, int]:
    """(units, nanos) of `value`, both carrying its sign."""
    if not value.is_finite():
        raise ValueError(f"{what} {value} is not a finite number")
    numerator, denominator = value.as_integer_ratio()
    total, remainder = divmod(numerator * NANOS_PER_UNIT, denominator)
    if remainder:
        raise ValueError(f"{what} {value} has more than 9 fractional digits")
    units, nanos = divmod(abs(total), NANOS_PER_UNIT)
    if units > MAX_UNITS:
        raise ValueError(f"{what} {value} does not fit in int64 units")
    sign = -1 if total < 0 else 1
    return sign * units, sign * nanos


def _join(units: int, nanos: int, what: str) -> Decimal:
    """units + nanos / 1e9, once checked."""
    if not -MAX_NANOS <= nanos <= MAX_NANOS:
        raise ValueError(f"{what} nanos {nanos} is outside -{MAX_NANOS}..{MAX_NANOS}")
    if (units > 0 and nanos < 0) or (units < 0 and nanos > 0):
        raise ValueError(f"{what} units {units} and nanos {nanos} have opposite signs")
    if nanos == 0:
        return Decimal(units)
    sign = "-" if units < 0 or nanos < 0 else ""
    fraction = f"{abs(nanos):09d}".rstrip("0")
    return Decimal(f"{sign}{abs(units)}.{fraction}")


def to_money(value: Decimal, currency: str) -> jpb.Money:
    """`value` in `currency` as a Money; ValueError when it cannot be one exactly."""
    units, nanos = _split(value, "money")
    return jpb.Money(currency=currency, units=units, nanos=nanos)


def from_money(money: jpb.Money) -> Decimal:
    """The exact amount of `money` (its currency aside); ValueError when it is malformed."""
    return _join(money.units, money.nanos, "money")


def to_shares(value: Decimal) -> jpb.Shares:
    """`value` as a Shares; ValueError when it cannot be one exactly."""
    units, nanos = _split(value, "shares")
    return jpb.Shares(units=units, nanos=nanos)


def from_shares(shares: jpb.Shares) -> Decimal:
    """The exact number of `shares`; ValueError when it is malformed."""
    return _join(shares.units, shares.nanos, "shares")
