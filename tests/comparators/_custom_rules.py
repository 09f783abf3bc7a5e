"""User rules as a config names them ("tests.comparators._custom_rules:same_prefix"): plain callables."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def same_prefix(bank: Any, bk: Any) -> bool:
    """Ids equal up to their first "-": "ORD-1" and "ORD-2" are the same order book."""
    return isinstance(bank, str) and isinstance(bk, str) and bank.split("-")[0] == bk.split("-")[0]


def broken(bank: Any, bk: Any) -> bool:
    """A rule with a bug: it raises whatever it is given."""
    raise RuntimeError("this rule is broken")


class WithinPercent:
    """Decimal strings no further apart than `percent` % of Bank's value."""

    def __init__(self, percent: float) -> None:
        self.limit = Decimal(str(percent)) / 100

    def __call__(self, bank: Any, bk: Any) -> bool:
        left, right = Decimal(bank), Decimal(bk)
        return abs(left - right) <= abs(left) * self.limit


class Named:
    """A rule that names itself: its own `name` is what a tolerated difference carries."""

    name = "named by itself"

    def __call__(self, bank: Any, bk: Any) -> bool:
        return True


def kill_worker(bank: Any, bk: Any) -> bool:
    """A rule that takes its comparison worker process down (when the value asks for it)."""
    if bank in ("die", b"die"):
        import os

        os._exit(3)
    return False


def slow(bank: Any, bk: Any) -> bool:
    """A rule that takes its time, as the comparison of large answers does."""
    import time

    time.sleep(0.3)
    return True


def same_owner(bank: Any, bk: Any) -> bool:
    """Two accounts (messages) of one owner, whatever the case of the name."""
    return bool(bank.owner_name.casefold() == bk.owner_name.casefold())


def same_quoted_name(bank: Any, bk: Any) -> bool:
    """Two texts quoting one person's name, 'First Last', whatever else they say."""
    import re

    found = [re.search(r"'(\w+ \w+)'", text) if isinstance(text, str) else None for text in (bank, bk)]
    return all(found) and found[0].group(1) == found[1].group(1)  # type: ignore[union-attr]
