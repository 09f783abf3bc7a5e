"""Which planted bug of BK explains a real difference (the sample's own knowledge).

The shim knows nothing of the sample; the demo does. After the run, every
comparison with real differences is attributed to one of the planted bugs
listed in the package docstring, or counted as unexplained:

- bug 2 (unknown account): the statuses are NOT_FOUND (Bank) and
  INVALID_ARGUMENT (BK), or a TradeSession rejection carries those codes;
- bug 3 (oversell): Bank refused what BK booked (FAILED_PRECONDITION vs OK, a
  TradeSession order rejected by Bank and booked by BK, a BookTrades batch
  with other counts), and from then on every difference on that account's
  positions and cash, since BK's book now holds a trade Bank's does not;
- bug 1 (fee rounding): every real difference is a money amount off by less
  than a dollar (a cent per trade: fees, and the cash and totals they feed);
- the adapter's planted bug (`sample_ledger.adapter`, BK native only): a ledger
  entry amount between -1 and 0 comes out positive (with, at most, fee
  rounding differences beside it).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from google.protobuf import message

from comparators import Comparison, Difference, Verdict
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb

TITLES = {
    1: "1. fee rounding: BK rounds half-even, Bank half-up",
    2: "2. unknown account: BK answers INVALID_ARGUMENT, Bank NOT_FOUND",
    3: "3. oversell: BK books a sell Bank refuses (and its book diverges from then on)",
}
ADAPTER_BUG = 4
ADAPTER_TITLE = "4. adapter: a ledger entry amount between -1 and 0 loses its sign"
_MONEY = ("fee", "total_fees", "cash", "unsettled_cash", "amount", "net_cash", "cost_basis")
_REQUESTS: dict[str, type[message.Message]] = {
    "BookTrades": pb.PostTradeRequest,
    "TradeSession": pb.TradeSessionRequest,
}


def _account(method: str, requests: tuple[bytes, ...]) -> str:
    name = method.rsplit("/", 1)[-1]
    cls = _REQUESTS.get(name) or getattr(pb, f"{name}Request", None)
    if cls is None or not requests:
        return ""
    request = cls()
    try:
        request.ParseFromString(requests[0])
    except message.DecodeError:
        return ""
    if isinstance(request, pb.TradeSessionRequest):
        return request.order.account_id
    return str(getattr(request, "account_id", ""))


def _rounding(diff: Difference) -> bool:
    """A money amount off by whole cents, less than a dollar in all."""
    if diff.path.rsplit(".", 1)[-1] not in _MONEY:
        return False
    try:
        left, right = Decimal(str(diff.bank or "0")), Decimal(str(diff.bk or "0"))
    except InvalidOperation:
        return False
    delta = abs(left - right)
    return Decimal(0) < delta < Decimal(1) and delta % Decimal("0.01") == 0


def _sign_lost(diff: Difference) -> bool:
    """An entry amount Bank has between -1 and 0 that BK's adapter wrote positive."""
    if not diff.path.endswith(".amount"):
        return False
    try:
        left, right = Decimal(str(diff.bank or "0")), Decimal(str(diff.bk or "0"))
    except InvalidOperation:
        return False
    return Decimal(-1) < left < 0 < right < 1


def _refused_by_bank(diffs: tuple[Difference, ...]) -> bool:
    for diff in diffs:
        if diff.path == "status.code" and (diff.bank, diff.bk) == ("FAILED_PRECONDITION", "OK"):
            return True
        if diff.path.endswith(".rejected") and diff.kind.value == "removed":
            return True  # TradeSession: Bank's rejection, where BK booked
        if diff.path in ("booked", "rejected"):
            return True  # BookTrades counts
    return False


def _unknown_account(diffs: tuple[Difference, ...]) -> bool:
    return any(
        (diff.path == "status.code" or diff.path.endswith("rejected.code"))
        and (diff.bank, diff.bk) == ("NOT_FOUND", "INVALID_ARGUMENT")
        for diff in diffs
    )


@dataclass
class Attribution:
    """A sink that keeps the mismatches, and attributes them once the run is over."""

    _lock: threading.Lock = field(default_factory=threading.Lock)
    _mismatches: list[tuple[str, tuple[Difference, ...]]] = field(default_factory=list)

    def __call__(self, comparison: Comparison) -> None:
        if comparison.verdict is not Verdict.MISMATCH:
            return
        account = _account(comparison.method, comparison.exchange.requests)
        with self._lock:
            self._mismatches.append((account, comparison.real_differences))

    def attribute(self) -> tuple[Counter[int], list[tuple[str, tuple[Difference, ...]]], dict[int, str]]:
        """Calls explained by each bug, the unexplained ones, and an example per bug."""
        with self._lock:
            mismatches = list(self._mismatches)
        diverged = {account for account, diffs in mismatches if _refused_by_bank(diffs)}
        explained: Counter[int] = Counter()
        examples: dict[int, str] = {}
        unexplained = []
        for account, diffs in mismatches:
            if _unknown_account(diffs):
                bug = 2
            elif _refused_by_bank(diffs):
                bug = 3
            elif any(_sign_lost(d) for d in diffs) and all(_sign_lost(d) or _rounding(d) for d in diffs):
                bug = ADAPTER_BUG
            elif all(_rounding(d) for d in diffs):
                bug = 1
            elif account in diverged:
                bug = 3
            else:
                unexplained.append((account, diffs))
                continue
            explained[bug] += 1
            first = diffs[0]
            examples.setdefault(bug, f"{first.path}: {first.bank!r} vs {first.bk!r}")
        return explained, unexplained, examples
