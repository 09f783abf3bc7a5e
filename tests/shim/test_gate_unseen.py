"""Calls the shim did not see (their copies never reached it: `shim.dataplane.unseen`) are stored as skipped
records under `UNSEEN`, no method's: the gate counts them, unproven, against every method it judges, on
SQLite and PostgreSQL, and `shim gate` names them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from comparators import Exchange, compare
from sample_ledger._proto.bank.v1 import ledger_pb2 as pb
from shim.dataplane.unseen import UNSEEN, record_unseen
from shim.evidence import build_report
from shim.evidence.record import record_of
from shim.gate import evaluate
from shim.store import ComparisonRecord, Store
from tests.comparators._exchanges import GET_BALANCE, REGISTRY, answer
from tests.helpers import postgres_schema_url

GET = GET_BALANCE.lstrip("/")
REPLICA = "r:1:aaaaaa"


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file, or a PostgreSQL schema of the test's own."""
    if request.param == "sqlite":
        yield str(tmp_path / "shim.db")
        return
    with postgres_schema_url() as schema_url:
        yield schema_url


def _records(matches: int, unseen: int, at: float) -> list[ComparisonRecord]:
    """`matches` clean matches of GetBalance, and `unseen` calls recorded as the shim records the calls it
    did not see."""
    good = answer(pb.Balance(account_id="A1", cash="1"))
    exchange = Exchange(GET_BALANCE, (b"",), good, good, is_write=False, started_at=at)
    records = [record_of(compare(exchange, REGISTRY), REPLICA) for _ in range(matches)]
    missed: list[Exchange] = []
    record_unseen(missed.append, unseen)
    return records + [record_of(compare(ex, REGISTRY), REPLICA) for ex in missed]


async def _store(url: str, records: list[ComparisonRecord]) -> Store:
    store = Store.open(url)
    await store.start()
    store.comparisons.put(records)
    await store.flush()
    return store


async def test_calls_the_shim_did_not_see_count_against_every_method(url: str) -> None:
    """5,000 calls unseen beside 200 clean matches: the method is not proven, the unseen calls named in its
    count; 1 unseen beside 200 is within 1%; unseen calls alone fail the gate, named."""
    now = time.time()
    store = await _store(url, _records(200, 5000, now - 10))
    try:
        report = await build_report(
            store, since=now - 3600, until=now + 60, relative=0.2, absolute=0.0003, min_sampled=20
        )
    finally:
        await store.close()
    unseen = report.method(UNSEEN)
    assert unseen is not None
    assert unseen.skipped == 5000
    result = evaluate(
        report,
        min_compared=100,
        min_answered=10,
        max_mismatch_rate=0.0,
        max_unproven_rate=0.01,
        required_methods=(),
    )
    assert [(c.method, c.name, c.measured) for c in result.failed] == [
        (
            GET,
            "unproven",
            "not proven: 96.15% of 5,200 calls (tainted 0, skipped 0, shadow-error 0, error 0, dropped 0,"
            " (calls the shim did not see) 5,000)",
        )
    ]
    assert {c.method for c in result.criteria} == {GET}, "no criterion of its own: it is no method"


async def test_a_few_unseen_calls_and_unseen_calls_alone(tmp_path: Path) -> None:
    """One unseen call beside 200 clean ones is 0.4975% unproven: within 1%. Unseen calls alone are no
    method's evidence: the gate fails, naming them."""
    now = time.time()
    few = await _store(str(tmp_path / "few.db"), _records(200, 1, now - 10))
    alone = await _store(str(tmp_path / "alone.db"), _records(0, 30, now - 10))
    try:
        reports = [
            await build_report(
                store, since=now - 3600, until=now + 60, relative=0.2, absolute=0.0003, min_sampled=20
            )
            for store in (few, alone)
        ]
    finally:
        await few.close()
        await alone.close()
    judged = [
        evaluate(
            r,
            min_compared=100,
            min_answered=10,
            max_mismatch_rate=0.0,
            max_unproven_rate=0.01,
            required_methods=(),
        )
        for r in reports
    ]
    assert judged[0].passed
    assert judged[0].criteria[-1].measured.startswith("0.4975% of 201 calls")
    assert [(c.name, c.measured) for c in judged[1].failed] == [
        ("evidence", "no method has a call in the window; 30 (calls the shim did not see)")
    ]


async def test_shim_gate_fails_on_unseen_calls_and_names_them(tmp_path: Path) -> None:
    """`shim gate` on a store holding 5,000 calls the shim did not see beside 200 clean ones exits 1."""
    path = tmp_path / "shim.db"
    store = await _store(str(path), _records(200, 5000, time.time() - 10))
    await store.close()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "shim", "gate", "--store", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    (failed,) = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert "unproven" in failed
    assert "(calls the shim did not see) 5,000" in failed
