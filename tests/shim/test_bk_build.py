"""A build of BK declared in service (`shim bk-build`): the gate judges no evidence from before it.

An older build's answers prove nothing about this one's: its matches would let a build that was never
compared pass, and its mismatches would fail a build that fixed them. The store is filled with crafted
comparisons (`Records`) of a payments service; the commands run as real processes.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest

from shim.evidence import build_report
from shim.gate import evidence_since
from shim.store import BkBuild, Store
from tests.helpers import run_shim
from tests.shim.test_evidence import GET, REFUND, Records

GET_NAME = GET.lstrip("/")
LOOSE = ("--min-compared", "10", "--max-unproven-rate", "0.05")


async def _evidence(path: Path, at: float, *, mismatches: int = 0) -> None:
    records = Records()
    records.add(at=at, count=20)
    records.add(method=REFUND, at=at, count=20)
    records.add("mismatch", at=at, real=[("fee", "0.03", "0.02")], count=mismatches)
    records.records = [replace(r, id=f"{at}-{r.id}") for r in records.records]  # ids of their own
    await records.write_to(str(path))


def _declare(store: Path, *args: str) -> str:
    done = run_shim("bk-build", "--store", str(store), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_a_declared_build_is_judged_on_its_own_evidence_alone(tmp_path: Path) -> None:
    """The old build's clean evidence passes the gate; once a new build is declared, none of it is judged,
    so the gate fails as having no call; the new build's own evidence, a mismatch among it, fails it
    again, now on that mismatch."""
    store = tmp_path / "shim.db"
    await _evidence(store, time.time() - 600)
    assert run_shim("gate", "--store", str(store), *LOOSE).returncode == 0

    said = _declare(store, "bk 2.4.1", "--reason", "deployed the fee fix")
    assert said.startswith("BK build bk 2.4.1 declared ")
    assert said.rstrip().endswith(": the gate judges the evidence from now on")

    unjudged = run_shim("gate", "--store", str(store), *LOOSE)
    assert unjudged.returncode == 1, unjudged.stdout
    assert "FAIL  -  evidence  no method has a call in the window" in unjudged.stdout
    assert "gate: BK build bk 2.4.1 declared " in unjudged.stdout
    assert "the evidence from before it is not judged" in unjudged.stdout

    await _evidence(store, time.time(), mismatches=1)  # after the declaration
    judged = run_shim("gate", "--store", str(store), *LOOSE)
    assert judged.returncode == 1, judged.stdout
    fails = [line.split()[:3] for line in judged.stdout.splitlines() if line.startswith("FAIL")]
    assert fails == [["FAIL", GET_NAME, "real"]]
    assert "1 of 21" in judged.stdout, "the new build's 21 comparisons, none of the old one's 40"


async def test_a_build_that_fixed_a_mismatch_is_not_failed_by_the_old_builds(tmp_path: Path) -> None:
    """The old build's real mismatch fails the gate; the fixed build, declared, passes on its own."""
    store = tmp_path / "shim.db"
    await _evidence(store, time.time() - 600, mismatches=3)
    assert run_shim("gate", "--store", str(store), *LOOSE).returncode == 1
    _declare(store, "bk 2.4.2", "--reason", "the fee fix")
    await _evidence(store, time.time())
    passed = run_shim("gate", "--store", str(store), *LOOSE)
    assert passed.returncode == 0, passed.stdout


async def test_the_build_in_service_is_the_latest_declared_at_a_time(tmp_path: Path) -> None:
    """`in_service(at)` is the latest declared at or before `at`; the gate's evidence starts there, or a
    window back when that is later. One declared after the time judged at (now, by a clock behind the one
    that stamped it) leaves no evidence: it starts at that time."""
    store = Store.open(str(tmp_path / "shim.db"))
    await store.start()
    try:
        assert await store.builds.in_service(2_000.0) is None
        assert await evidence_since(store, 100.0, 2_000.0) == 1_900.0
        for at, name in ((1_000.0, "one"), (1_500.0, "two"), (1_950.0, "three")):
            await store.builds.declare(BkBuild(at, name, "ops", "deploy"))
        assert await store.builds.in_service(999.0) is None
        assert await store.builds.in_service(1_000.0) == BkBuild(1_000.0, "one", "ops", "deploy")
        assert (await store.builds.in_service(1_949.0) or BkBuild(0, "", "", "")).build == "two"
        assert await evidence_since(store, 100.0, 1_949.0) == 1_949.0, "a build stamped after: no evidence"
        assert await evidence_since(store, 100.0, 2_100.0) == 2_000.0, "the window is later"
        assert await evidence_since(store, 1_000.0, 2_000.0) == 1_950.0, "the build is later"
        assert [b.build for b in await store.builds.history()] == ["three", "two", "one"]
        report = await build_report(
            store, since=0.0, until=1_600.0, relative=0.2, absolute=0.0, min_sampled=20
        )
        assert report.bk_build == BkBuild(1_500.0, "two", "ops", "deploy"), "as of the report's end"
    finally:
        await store.close()


async def test_the_report_shows_the_build_in_service_and_still_counts_the_older_evidence(
    tmp_path: Path,
) -> None:
    """The report is the engineers' view of the whole window: it names the build in service (terminal,
    JSON, HTML) and counts every comparison; the HTML page's verdict, the gate's, judges the build's
    evidence alone."""
    store = tmp_path / "shim.db"
    await _evidence(store, time.time() - 600)
    _declare(store, "bk <2.5>", "--reason", "canary & all", "--who", "ops")

    as_json = run_shim("report", "--store", str(store), "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document["bk_build"]["build"] == "bk <2.5>"
    assert (document["bk_build"]["who"], document["bk_build"]["reason"]) == ("ops", "canary & all")
    assert sum(m["calls"] for m in document["methods"]) == 40

    terminal = run_shim("report", "--store", str(store))
    assert "BK build in service: bk <2.5>, declared " in terminal.stdout
    assert "The gate judges no evidence from before it." in terminal.stdout

    page = tmp_path / "report.html"
    assert run_shim("report", "--store", str(store), "--html", str(page)).returncode == 0
    html = page.read_text()
    assert "BK build in service: <code>bk &lt;2.5&gt;</code>" in html
    assert "canary &amp; all" in html
    assert "criteria are not met on the evidence since BK build bk &lt;2.5&gt; was declared" in html


async def test_the_builds_are_listed_newest_first(tmp_path: Path) -> None:
    store = tmp_path / "shim.db"
    await _evidence(store, time.time() - 600)
    assert _declare(store).startswith("no build of BK declared")
    _declare(store, "one", "--reason", "first", "--who", "ann")
    said = _declare(store, "two", "--reason", "second\x1b[2J", "--who", "bob")
    assert "(was one, declared " in said
    lines = _declare(store).splitlines()
    assert [line.split("  ")[1:] for line in lines] == [
        ["two", "by bob: second\\x1b[2J"],
        ["one", "by ann: first"],
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["v2"], "a build is declared with --reason (audited)"),
        (["v2", "--reason", "  "], "a build is declared with --reason (audited)"),
        (["  ", "--reason", "deploy"], "is not a build's name"),
        (["v2\x07", "--reason", "deploy"], "is not a build's name"),
        (["x" * 201, "--reason", "deploy"], "is not a build's name"),
    ],
)
async def test_a_declaration_without_a_name_or_a_reason_is_refused(
    tmp_path: Path, args: list[str], message: str
) -> None:
    store = tmp_path / "shim.db"
    await _evidence(store, time.time() - 600)
    done = run_shim("bk-build", "--store", str(store), *args)
    assert (done.returncode, done.stdout) == (2, "")
    assert message in done.stderr
    assert done.stderr.startswith("shim: error: ")
    assert done.stderr.count("\n") == 1
    assert _declare(store).startswith("no build of BK declared"), "nothing was declared"


def test_a_store_that_does_not_exist_is_not_made(tmp_path: Path) -> None:
    done = run_shim("bk-build", "--store", str(tmp_path / "typo.db"), "v2", "--reason", "deploy")
    assert done.returncode == 2
    assert "no store at" in done.stderr
    assert not (tmp_path / "typo.db").exists()
