"""What the report makes of Bank's noise, from comparisons made by the comparator and stored as the shim
stores them, on SQLite and on PostgreSQL: a second ask of Bank's that failed excuses nothing."""

from __future__ import annotations

from collections.abc import Callable

from comparators import DescriptorRegistry, Exchange, Outcome, compare
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.evidence import Report, build_report
from shim.evidence.record import record_of
from shim.gate import evaluate
from shim.store import Store
from tests.comparators._exchanges import GET_BALANCE, REGISTRY, answer
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
        report, min_compared=10, max_mismatch_rate=0.0, max_unproven_rate=0.01, required_methods=()
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
