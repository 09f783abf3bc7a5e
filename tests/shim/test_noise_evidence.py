"""What the report makes of Bank's noise, from comparisons made by the comparator and stored as the shim
stores them, on SQLite and on PostgreSQL: a second ask of Bank's that failed excuses nothing, and Bank's
noise at a path excuses only BK differences of a kind Bank's own two answers showed there."""

from __future__ import annotations

import io
from collections.abc import Callable

from google.protobuf import timestamp_pb2
from rich.console import Console

from comparators import DescriptorRegistry, Exchange, Outcome, compare
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.evidence import Report, build_report
from shim.evidence.record import record_of
from shim.gate import evaluate
from shim.report import terminal
from shim.store import Store
from tests.comparators._exchanges import GET_BALANCE, REGISTRY, answer
from tests.shim import _payments as pay
from tests.shim import test_evidence

store_url, store = test_evidence.store_url, test_evidence.store  # fixtures: SQLite, PostgreSQL
T0 = 1_800_000_000.0
DEADLINE_EXCEEDED, FAILED_PRECONDITION = 4, 9
Make = Callable[[int], tuple[Outcome, Outcome, Outcome]]  # call i -> Bank's answer, BK's, Bank's again


async def _report(store: Store, method: str, make: Make, calls: int, registry: DescriptorRegistry) -> Report:
    """`calls` reads of `method` compared and stored, then reported (min_sampled 20)."""
    records = []
    for i in range(calls):
        first, bk, again = make(i)
        exchange = Exchange(method, (b"",), first, bk, is_write=False, started_at=T0 + i, secondary=again)
        records.append(record_of(compare(exchange, registry), "test:1:aaaaaa"))
    store.comparisons.put(records)
    await store.flush()
    return await build_report(
        store, since=T0, until=T0 + calls, relative=0.2, absolute=0.0003, min_sampled=20
    )


def _gate_passes(report: Report) -> bool:
    return evaluate(
        report,
        min_compared=10,
        min_answered=10,
        max_mismatch_rate=0.0,
        max_unproven_rate=0.01,
        required_methods=(),
    ).passed


async def test_second_asks_that_failed_excuse_no_refusal_of_bks(store: Store) -> None:
    """One read in ten asked again times out; BK refuses 8% of the reads Bank answered. The failed second
    asks are no samples: BK's refusals are real mismatches, and the gate fails."""
    balance = answer(pb.Balance(account_id="A1", currency="EUR", cash="100.00"))

    def make(i: int) -> tuple[Outcome, Outcome, Outcome]:
        bk = Outcome(code=FAILED_PRECONDITION, details="account frozen") if i < 16 else balance
        again = Outcome(code=DEADLINE_EXCEEDED, details="Deadline Exceeded") if i % 10 == 9 else balance
        return balance, bk, again

    report = await _report(store, GET_BALANCE, make, 200, REGISTRY)
    (method,) = report.methods
    assert method.noise_sampled == 180
    assert (method.mismatches, method.real_mismatches) == (16, 16)
    assert {p.path: p.noise_rate for p in method.paths} == {
        "status.code": 0.0,
        "status.details": 0.0,
        "<messages>": 0.0,
    }
    assert not _gate_passes(report)


def _as_of(seconds: int | None) -> Outcome:
    at = timestamp_pb2.Timestamp(seconds=seconds) if seconds is not None else None
    return answer(pb.Balance(account_id="A1", cash="1", as_of=at))


async def test_a_clock_bank_changes_excuses_no_bk_answer_without_it(store: Store) -> None:
    """Bank's as_of changes between its two answers (kind changed); BK never sends as_of (removed): BK's
    differences are real, reported at as_of with their own kind, and the gate fails."""
    report = await _report(
        store, GET_BALANCE, lambda i: (_as_of(1000 + i), _as_of(None), _as_of(1001 + i)), 100, REGISTRY
    )
    (method,) = report.methods
    assert (method.mismatches, method.real_mismatches, method.noise_mismatches) == (100, 100, 0)
    (path,) = method.paths
    assert (path.path, path.kind, path.noise_calls, path.classification) == ("as_of", "removed", 0, "real")
    assert not _gate_passes(report)


async def test_a_clock_bank_changes_still_excuses_bks_changing_it(store: Store) -> None:
    """BK's as_of differs from Bank's as Bank's own two answers do (changed): noise, as before."""
    report = await _report(
        store, GET_BALANCE, lambda i: (_as_of(1000 + i), _as_of(1002 + i), _as_of(1001 + i)), 100, REGISTRY
    )
    (method,) = report.methods
    assert (method.real_mismatches, method.noise_mismatches) == (0, 100)
    assert [(p.path, p.kind, p.noise_rate, p.classification) for p in method.paths] == [
        ("as_of", "changed", 1.0, "noise")
    ]
    assert _gate_passes(report)


async def test_a_field_bank_sends_now_and_then_excuses_bk_leaving_it_out(store: Store) -> None:
    """Bank sends as_of in one of its two answers (added or removed between them): BK leaving it out at
    about that rate is noise; present and absent are one kind of difference."""

    def make(i: int) -> tuple[Outcome, Outcome, Outcome]:
        return _as_of(1000), _as_of(None if i % 2 else 1000), _as_of(None if i % 4 < 2 else 1000)

    (method,) = (await _report(store, GET_BALANCE, make, 100, REGISTRY)).methods
    assert [(p.path, p.classification) for p in method.paths] == [("as_of", "noise")]
    assert method.real_mismatches == 0


def _movement(amount: str | None) -> Outcome:
    fields = {"movement_id": "M1", "account_id": "A"} | ({"amount": amount} if amount is not None else {})
    return answer(pay.new("Movement", **fields))


async def test_on_payments_a_changing_amount_excuses_no_missing_one(store: Store) -> None:
    """The payments service: Bank's amount changes between its two answers now and then (kind changed); BK
    drops the amount (removed) on as many calls, and changes it on some: only the changes are noise."""

    def make(i: int) -> tuple[Outcome, Outcome, Outcome]:
        bk = _movement(None) if i % 10 == 0 else _movement("5.01") if i % 10 == 1 else _movement("5")
        return _movement("5"), bk, _movement("5.01" if i % 5 == 0 else "5")

    report = await _report(store, pay.LIST_MOVEMENTS, make, 100, pay.REGISTRY)
    (method,) = report.methods
    rows = {(p.path, p.kind): (p.calls, p.noise_calls, p.classification) for p in method.paths}
    assert rows == {("[*].amount", "removed"): (10, 0, "real"), ("[*].amount", "changed"): (10, 20, "noise")}
    assert (method.real_mismatches, method.noise_mismatches) == (10, 10)
    assert not _gate_passes(report)
    out = io.StringIO()
    terminal(report, Console(file=out, width=200, color_system=None))
    assert "[*].amount (removed)" in out.getvalue()  # a path shown once per kind says which row is which
    assert "[*].amount (changed)" in out.getvalue()
