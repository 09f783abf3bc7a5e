"""A report reads one snapshot of the store: comparisons stored while it runs (a live shim stores some every
moment, some of them from before the report's `until`) are in none of its counts, on SQLite and PostgreSQL.

Without it, a comparison stored between two of the report's queries is in some counts and not in others:
the mismatches of noise alone are taken from more mismatches than were counted, the real ones come out too
few, even negative, and the gate passes on them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shim.evidence import build_report
from shim.evidence.tally import _Tally, method_report
from shim.gate import evaluate
from shim.store import Store
from tests.helpers import postgres_schema_url
from tests.shim.test_evidence import GET, SPAN, T0, Records

NOISE = "metadata.x-request-id"  # Bank differs from itself there on every call


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file, or a PostgreSQL schema of the test's own."""
    if request.param == "sqlite":
        yield str(tmp_path / "shim.db")
        return
    with postgres_schema_url() as schema_url:
        yield schema_url


@pytest.fixture
async def stores(url: str) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one database: the report's, and another process's writing into it."""
    opened = []
    try:
        for _ in range(2):
            store = Store.open(url)
            await store.start()
            opened.append(store)
        yield opened[0], opened[1]
    finally:
        for store in opened:
            await store.close()


def _evidence() -> Records:
    """200 mismatches at Bank's request id (noise), 5 of them also at the fee (real); then, at the end of the
    window, 400 more of noise alone, `late`: stored while the reports run."""
    r = Records()
    r.add("mismatch", real=[(NOISE, "a", "b")], noise=[NOISE], count=195)
    r.add("mismatch", real=[(NOISE, "a", "b"), ("fee", "0.03", "0.02")], noise=[NOISE], count=5)
    r.add("mismatch", at=T0 + SPAN - 10, real=[(NOISE, "a", "b")], noise=[NOISE], count=400)
    return r


async def test_a_snapshot_sees_no_row_committed_while_it_reads(stores: tuple[Store, Store]) -> None:
    """`Store.snapshot` runs its statements on the rows committed when the first ran: rows another
    connection commits in between are not seen, and are seen by the next read."""
    store, other = stores
    evidence = _evidence()
    await Records(evidence.records[:200]).write(store)
    late = Records(evidence.records[200:])
    loop = asyncio.get_running_loop()

    def read(run: object) -> tuple[int, int]:
        assert callable(run)
        ((before,),) = run("SELECT COUNT(*) FROM comparisons", ())
        # the other store commits the late rows now, while this transaction is open
        asyncio.run_coroutine_threadsafe(late.write(other), loop).result(timeout=20)
        ((after,),) = run("SELECT COUNT(*) FROM comparisons", ())
        return before, after

    assert await store.snapshot(lambda db: read(db.run)) == (200, 200)
    assert await store.select("SELECT COUNT(*) FROM comparisons") == [(600,)]


async def test_a_report_counts_the_same_rows_in_every_figure_while_comparisons_are_stored(
    stores: tuple[Store, Store],
) -> None:
    """Reports built while another replica stores mismatches of noise alone, from before `until`: each
    counts 5 real mismatches (the fee's), never fewer, the noise ones within the mismatches it counted, no
    bucket below 0, and the gate fails on them every time."""
    store, other = stores
    evidence = _evidence()
    await Records(evidence.records[:200]).write(store)
    late = evidence.records[200:]
    written = 0

    async def store_late() -> None:
        nonlocal written
        for start in range(0, len(late), 4):
            await Records(late[start : start + 4]).write(other)
            written = start + 4

    writing = asyncio.create_task(store_late(), name="store-late")
    try:
        reports = 0
        while not writing.done() or reports < 3:
            report = await build_report(
                store, since=T0, until=T0 + SPAN, relative=0.2, absolute=0.0003, min_sampled=20
            )
            reports += 1
            (m,) = report.methods
            assert m.method == GET.lstrip("/")
            assert m.real_mismatches == 5, (written, m.mismatches, m.noise_mismatches)
            assert m.mismatches == m.real_mismatches + m.noise_mismatches == m.compared
            assert [(p.path, p.calls) for p in m.paths if p.classification == "real"] == [("fee", 5)]
            assert min(bucket.real_mismatches for bucket in m.series) >= 0
            gate = evaluate(
                report,
                min_compared=100,
                min_answered=10,
                max_mismatch_rate=0.0,
                max_unproven_rate=0.01,
                required_methods=(),
            )
            assert not gate.passed
        await writing
    finally:
        writing.cancel()
    assert written == len(late)


def test_counts_that_disagree_raise_rather_than_show_a_negative_count() -> None:
    """More mismatches of noise alone than mismatches (in all, or in one bucket) is an error, never a
    negative count of real mismatches that a gate would pass."""
    t = _Tally(2)
    t.verdicts["mismatch"] = 3
    t.compared_by_bucket = [3, 0]
    t.mismatches_by_bucket = [3, 0]
    t.noise_by_bucket = [1, 1]  # 2 of 3 in all, but 1 in a bucket that counted none
    with pytest.raises(AssertionError, match="disagree"):
        method_report(GET, t, [T0, T0 + 1, T0 + 2])
    t.noise_by_bucket = [3, 0]
    assert method_report(GET, t, [T0, T0 + 1, T0 + 2]).real_mismatches == 0
