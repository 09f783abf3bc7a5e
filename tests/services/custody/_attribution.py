"""Which of BK's planted bugs explains a difference, from what a workload's clients were answered.

The package docstring says where each planted bug shows; `Facts` finds, in a workload's calls
as Bank answered them, where the workload triggered each one; `explain` names the bugs that
account for one real difference of a comparison. A difference no bug explains is either a
benign difference reported as real or a difference the shim made itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from tests.services.custody._book import CENT
from tests.services.custody.workload import Result, rounds_apart

_STREAMED_AMOUNT = re.compile(r"\[\d+\]\.amount\Z")


@dataclass(frozen=True)
class Facts:
    """Where a workload triggered the planted bugs, in Bank's ids."""

    rounded: frozenset[str]  # movements booked a cent apart: transfers rounded apart and their reversals
    touched: frozenset[str]  # the accounts those movements moved money from or to
    touched_refs: frozenset[str]  # their client refs
    frozen_refs: frozenset[str]  # client refs of frozen accounts
    unknown_refs: frozenset[str]  # client refs asked for and never opened
    frozen_reads: int  # reads by ref Bank answered frozen: true
    same_account: int  # transfers to the account they are from

    @classmethod
    def of(cls, result: Result) -> Facts:
        rounded: set[str] = set()
        touched: set[str] = set()
        refs: dict[str, str] = {}
        for call in result.calls:
            if call.method == "OpenAccount" and call.answer.ok:
                refs[call.answer.message.account_id] = call.request["client_ref"]
        ok = [c for c in result.calls if c.answer.ok]
        for call in ok:
            if call.method == "Transfer" and rounds_apart(call.request["amount"]):
                moved = call.answer.message
                rounded.add(moved.movement_id)
                touched.update({moved.from_account, moved.to_account})
        for call in ok:  # a reversal books the amount of the movement it reverses: a cent apart too
            if call.method == "Reverse" and call.request["movement_id"] in rounded:
                rounded.add(call.answer.message.movement_id)
        frozen_refs = {
            refs.get(c.request["account_id"], "")
            for c in ok
            if c.method == "Freeze" and c.answer.message.frozen
        }
        reads = [c for c in ok if c.method == "GetAccountByRef"]
        return cls(
            rounded=frozenset(rounded),
            touched=frozenset(touched - {""}),
            touched_refs=frozenset(refs[a] for a in touched if a in refs),
            frozen_refs=frozenset(frozen_refs - {""}),
            unknown_refs=frozenset(
                c.request["client_ref"]
                for c in result.calls
                if c.method == "GetAccountByRef" and c.answer.code == "NOT_FOUND"
            ),
            frozen_reads=sum(1 for c in reads if c.answer.message.frozen),
            same_account=sum(
                1
                for c in result.calls
                if c.method == "Transfer" and c.request["from_account"] == c.request["to_account"]
            ),
        )

    def triggered(self) -> frozenset[str]:
        """The planted bugs the workload triggered (whether switched on or not)."""
        bugs = set()
        if self.rounded:
            bugs.add("fee-rounding")
        if self.unknown_refs:
            bugs.add("wrong-code")
        if self.frozen_reads:
            bugs.add("frozen-flag")
        if self.same_account:
            bugs.add("same-account")
        return frozenset(bugs)


def _decimal(value: object) -> Decimal | None:
    try:
        return Decimal(str(value)) if isinstance(value, str) and value else None
    except InvalidOperation:
        return None


def _a_cent_apart(bank: object, bk: object) -> bool:
    left, right = _decimal(bank), _decimal(bk)
    return left is not None and right is not None and abs(left - right) == CENT


def _rounded_as_the_bug_does(amount: str, bank: object, bk: object) -> bool:
    left, right = _decimal(bank), _decimal(bk)
    exact = Decimal(amount)
    return (left, right) == (exact.quantize(CENT, ROUND_HALF_UP), exact.quantize(CENT, ROUND_HALF_EVEN))


def explain(method: str, request: Any, path: str, bank: object, bk: object, facts: Facts) -> frozenset[str]:
    """The planted bugs that explain one real difference of a `method` call ("Transfer", ...) at `path`,
    Bank's value `bank` and BK's `bk`; empty when none does."""
    bugs: set[str] = set()
    if method == "Transfer" and request.from_account == request.to_account:
        if (path, bank, bk) in (("status.code", "INVALID_ARGUMENT", "OK"), ("<messages>", 0, 1)) or (
            path == "status.details" and bk == ""
        ):
            bugs.add("same-account")
    elif method == "Transfer" and path == "amount" and rounds_apart(request.amount):
        if _rounded_as_the_bug_does(request.amount, bank, bk):
            bugs.add("fee-rounding")
    elif method == "Reverse" and path == "amount" and request.movement_id in facts.rounded:
        if _a_cent_apart(bank, bk):
            bugs.add("fee-rounding")
    elif method in ("GetBalance", "Freeze") and path == "balance" and request.account_id in facts.touched:
        bugs.add("fee-rounding")
    elif method == "ListMovements" and _STREAMED_AMOUNT.match(path) and request.account_id in facts.touched:
        if _a_cent_apart(bank, bk):
            bugs.add("fee-rounding")
    elif method == "GetAccountByRef":
        ref = request.client_ref
        if path == "balance" and ref in facts.touched_refs:
            bugs.add("fee-rounding")
        elif path == "frozen" and ref in facts.frozen_refs and bank is True and bk in (False, None):
            bugs.add("frozen-flag")
        elif (path, bank, bk) == (
            "status.code",
            "NOT_FOUND",
            "INVALID_ARGUMENT",
        ) and ref in facts.unknown_refs:
            bugs.add("wrong-code")
    return frozenset(bugs)
