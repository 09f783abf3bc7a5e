"""How a report is shown: the terminal tables, the JSON schema, and the HTML page (in a real browser too).

The report is built from crafted records in a SQLite file (`Records` from
test_evidence), then rendered. The browser test runs Debian's chromium
headless; .ci/run installs it, and the test skips where it is missing.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from shim.evidence import Report, build_report
from shim.report import SCHEMA_VERSION, html, terminal, to_json
from shim.store import Store
from tests.helpers import run_shim
from tests.shim.test_evidence import REFUND, SPAN, T0, Records

HOSTILE = '<script>alert("bk")</script>'
TAINTED = "0.00 (a write BK missed)"  # BK's value in the tainted call


def _records(at: float = T0) -> Records:
    r = Records()
    r.add(at=at + 10, bank_ms=2.0, bk_ms=3.0, count=6)
    r.add("match", at=at + 20, tolerated=[("price", "decimal formatting")], count=3)
    r.add("mismatch", at=at + 30, real=[("fee", "0.03", HOSTILE)], bank_ms=4.0, bk_ms=9.0)
    r.add("mismatch", at=at + 40, real=[("request_id", "r1", "r2")], noise=["request_id"], count=2)
    r.add(
        "mismatch",
        at=at + 45,
        real=[("status.code", "NOT_FOUND", "INVALID_ARGUMENT")],
        bank_code=5,
        bk_code=3,
    )
    r.add("tainted", at=at + 50, real=[("cash", "100.00", TAINTED)], reason="missed write")
    r.add("shadow-error", at=at + 60, bk_code=None, bk_ms=None, reason="shadow timeout after 2s")
    r.add("skipped", at=at + 70, bk_code=None, bk_ms=None, reason="not mirrored")
    r.add("error", at=at + 75, reason="the comparison failed: ValueError('undecodable')")
    r.add(method=REFUND, at=at + 80, count=2)
    return r


async def _report(path: Path, *, calls: bool = True, min_sampled: int = 2) -> Report:
    store = Store.open(str(path))
    await store.start()
    try:
        await _records().write(store)
        return await build_report(
            store,
            since=T0,
            until=T0 + SPAN,
            relative=0.2,
            absolute=0.0003,
            min_sampled=min_sampled,  # by default the two calls asked twice are enough for these figures
            calls=calls,
            limit=50,
        )
    finally:
        await store.close()


@pytest.fixture
async def report(tmp_path: Path) -> Report:
    return await _report(tmp_path / "shim.db")


def test_the_terminal_shows_every_figure(report: Report) -> None:
    """The tables hold each method's counts, rates, latencies, code pairs, paths and their class, the paths
    of tainted calls, rules, and the calls that did not match (errors too)."""
    out = io.StringIO()
    terminal(report, Console(file=out, width=250, color_system=None))
    text = out.getvalue()
    assert "Methods are named without their package (pay.v1) where that is unambiguous." in text
    first, second = _rows(text, "│ Payments/Get ")[:2]
    assert first == [
        "Payments/Get",
        "17",  # calls
        "13",  # compared: matched and mismatches
        "12",  # answered: by Bank, OK (the NOT_FOUND it refused is not)
        "9 (69.2%)",  # matched
        "2 (15.4%)",  # real mismatches: fee and status.code; request_id is noise
        "4 (23.5%)",  # unproven: tainted, shadow error, skipped, error
        "3",  # tolerated
    ]
    assert second == [
        "Payments/Get",
        "1",  # tainted
        "1",  # shadow errors
        "1",  # skipped
        "1",  # errors
        "0",  # dropped
        "2",  # noise
        "1 / 4",  # Bank p50 / p99: ten of the 17 calls took 1 ms, one 4 ms
        "2 / 9",  # BK p50 / p99: 15 measured, eight took 2 ms, one 9 ms
    ]
    assert re.search(r"Payments/Get\s+│\s+NOT_FOUND\s+│\s+INVALID_ARGUMENT\s+│\s+1 │", text)
    assert re.search(r"Payments/Get\s+│\s+OK\s+│\s+no answer\s+│\s+2 │", text)
    assert re.search(r"│ request_id\s+│\s+2 │\s+15.4% │\s+100% │ noise │", text)
    assert re.search(r"│ fee\s+│\s+1 │\s+7.69% │\s+0% │ real\s+│ \"0.03\" → ", text)
    mismatched, tainted = text.split("Differing paths of tainted calls")
    assert "cash" not in mismatched.split("Differing paths (real differences")[1], "not among mismatches"
    assert re.search(r"Payments/Get\s+│ cash\s+│\s+1 │ \"100.00\" → \"0.00 \(a write BK missed\)\"", tainted)
    assert re.search(r"Payments/Get\s+│ decimal formatting │\s+3 │", text)
    assert "shadow timeout after 2s" in text, "--calls lists the calls that did not match"
    assert re.search(r"│ tainted\s+│ A1\s+│ OK → OK\s+│ missed write: cash", text), "why tainted, first"
    assert "the comparison failed: ValueError('undecodable')" in text, "errors among them"


def _rows(text: str, start: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in text.splitlines()
        if line.startswith(start)
    ]


async def test_a_noise_rate_measured_on_too_few_calls_says_so(tmp_path: Path) -> None:
    """Two calls asked twice are fewer than the 20 a noise rate needs: request_id is real, and both the
    terminal and the page say on how few calls its noise rate was measured."""
    report = await _report(tmp_path / "shim.db", min_sampled=20)
    get = report.method("pay.v1.Payments/Get")
    assert get is not None
    (request_id,) = [p for p in get.paths if p.path == "request_id"]
    assert (request_id.noise_rate, request_id.classification) == (1.0, "real")
    out = io.StringIO()
    terminal(report, Console(file=out, width=250, color_system=None))
    text = out.getvalue()
    assert re.search(r"│ request_id\s+│\s+2 │\s+15.4% │ 100% \(of 2: too few\) │ real\s+│", text), text
    assert (
        "Bank's rates count once 20 of a method's calls (at a header, of its service's calls) were asked"
        in text
    )
    assert "100% (of 2: too few)" in html(report)
    enough = await _report(tmp_path / "again.db", min_sampled=2)
    out = io.StringIO()
    terminal(enough, Console(file=out, width=250, color_system=None))
    assert "too few" not in out.getvalue()
    assert "too few" not in html(enough)


async def test_a_headers_noise_rate_taken_from_the_service_says_so(tmp_path: Path) -> None:
    """Refund, a write, was never asked twice; Get, of the same service, was, 20 times, and Bank varied
    its x-request-id header each time: Refund's difference there is noise by the service's rate, and
    the terminal, the page and the JSON say whose rate it is and on how many calls."""
    r = Records()
    r.add("mismatch", real=[("metadata.x-request-id", "a", "b")], noise=["metadata.x-request-id"], count=20)
    r.add("mismatch", method=REFUND, at=T0 + 20, real=[("metadata.x-request-id", "c", "d")], count=4)
    store = Store.open(str(tmp_path / "shim.db"))
    await store.start()
    try:
        await r.write(store)
        report = await build_report(
            store, since=T0, until=T0 + SPAN, relative=0.2, absolute=0.0003, min_sampled=20
        )
    finally:
        await store.close()
    refund = report.method("pay.v1.Payments/Refund")
    assert refund is not None
    assert (refund.real_mismatches, refund.noise_mismatches) == (0, 4)
    out = io.StringIO()
    terminal(report, Console(file=out, width=250, color_system=None))
    text = out.getvalue()
    row = (
        r"│ Payments/Refund │ metadata.x-request-id │\s+4 │\s+100% │ 100% \(the service's, of 20\) │ noise │"
    )
    assert re.search(row, text), text
    assert "100% (the service's, of 20)" in html(report)
    assert "(at a header, of its service's calls)" in text
    (path,) = next(m for m in to_json(report)["methods"] if m["method"] == "pay.v1.Payments/Refund")["paths"]
    assert (path["noise_of"], path["noise_sampled"], path["class"]) == ("pay.v1.Payments", 20, "noise")


def test_the_terminal_says_when_nothing_is_stored() -> None:
    """An empty window is one plain sentence."""
    out = io.StringIO()
    empty = Report(T0, T0 + 1, T0, ":memory:", 0.2, 0.0003, 20, (), None, 10)
    terminal(empty, Console(file=out, width=120, color_system=None))
    assert "No comparison is stored in this window." in out.getvalue()


def _check_schema(data: dict[str, Any]) -> None:
    """docs/report-json.md, as assertions."""
    assert set(data) == {
        "schema_version",
        "generated_at",
        "window",
        "store",
        "noise",
        "methods",
        "calls",
        "calls_limit",
        "replicas",
        "bk_build",
    }
    assert data["schema_version"] == SCHEMA_VERSION == 3
    if data["bk_build"] is not None:
        assert set(data["bk_build"]) == {"build", "declared", "who", "reason"}
    for r in data["replicas"]:
        assert set(r) == {"name", "calls", "compared", "first_seen", "last_seen"}
    assert set(data["window"]) == {"since", "until"}
    assert set(data["noise"]) == {"relative", "absolute", "min_sampled"}
    for m in data["methods"]:
        assert set(m) == {
            "method",
            "calls",
            "compared",
            "answered",
            "unanswered_status_codes",
            "matched",
            "matched_rate",
            "mismatches",
            "real_mismatches",
            "real_mismatch_rate",
            "noise_mismatches",
            "tainted",
            "shadow_errors",
            "skipped",
            "errors",
            "unproven",
            "unproven_rate",
            "tolerated",
            "tolerated_by_rule",
            "noise_sampled",
            "dropped",
            "dropped_by_name",
            "latency_ms",
            "status_codes",
            "paths",
            "tainted_paths",
            "series",
            "lost",
            "lost_by_name",
            "by_replica",
        }
        for share in m["by_replica"]:
            assert set(share) == {
                "replica",
                "calls",
                "compared",
                "unproven",
                "tainted",
                "skipped",
                "shadow_errors",
                "errors",
                "dropped",
                "dropped_by_name",
                "lost",
                "lost_by_name",
            }
        assert all(
            isinstance(m[k], int)
            for k in (
                "calls", "compared", "answered", "matched", "real_mismatches", "errors", "unproven", "dropped"
            )
        )  # fmt: skip
        assert set(m["latency_ms"]) == {"bank", "bk"}
        assert all(set(side) == {"count", "p50", "p99"} for side in m["latency_ms"].values())
        assert all(set(c) == {"bank", "bk", "calls"} for c in m["status_codes"])
        assert all(set(c) == {"bank", "bk", "calls"} for c in m["unanswered_status_codes"])
        assert all(set(t) == {"rule", "calls"} for t in m["tolerated_by_rule"])
        for p in m["paths"]:
            assert set(p) == {
                "path",
                "kind",
                "calls",
                "bk_rate",
                "noise_calls",
                "noise_sampled",
                "noise_rate",
                "noise_of",
                "class",
                "example",
            }
            assert p["class"] in ("real", "noise")
            assert set(p["example"]) == {"bank", "bk", "key", "request"}
        for t in m["tainted_paths"]:
            assert set(t) == {"path", "kind", "calls", "example"}
            assert set(t["example"]) == {"bank", "bk"}
        assert all(set(b) == {"start", "end", "compared", "real_mismatches"} for b in m["series"])
    for c in data["calls"] or ():
        assert set(c) == {
            "id",
            "at",
            "method",
            "verdict",
            "mismatch",
            "reason",
            "routing_key",
            "correlation_id",
            "status",
            "latency_ms",
            "differences",
        }


def test_json_follows_its_schema(report: Report) -> None:
    """to_json gives the documented keys, JSON-serialisable, with the figures of the report."""
    data = json.loads(json.dumps(to_json(report)))
    _check_schema(data)
    assert data["window"] == {"since": "2027-01-15T08:00:00.000Z", "until": "2027-01-15T08:50:00.000Z"}
    get = data["methods"][0]
    assert (get["method"], get["calls"], get["compared"], get["real_mismatches"]) == (
        "pay.v1.Payments/Get",
        17,
        13,
        2,
    )
    assert get["real_mismatch_rate"] == pytest.approx(2 / 13)
    assert (get["tainted"], get["shadow_errors"], get["skipped"], get["errors"]) == (1, 1, 1, 1)
    assert (get["unproven"], get["unproven_rate"]) == (4, pytest.approx(4 / 17))
    assert get["tainted_paths"] == [
        {"path": "cash", "kind": "changed", "calls": 1, "example": {"bank": "100.00", "bk": TAINTED}}
    ]
    assert "cash" not in {p["path"] for p in get["paths"]}
    assert get["latency_ms"]["bk"] == {"count": 15, "p50": 2.0, "p99": 9.0}
    assert {"bank": "NOT_FOUND", "bk": "INVALID_ARGUMENT", "calls": 1} in get["status_codes"]
    assert (get["answered"], get["unanswered_status_codes"]) == (
        12,
        [{"bank": "NOT_FOUND", "bk": "INVALID_ARGUMENT", "calls": 1}],
    ), "of the clean comparisons only: the tainted, skipped, shadow-error and error calls are neither"
    fee = next(p for p in get["paths"] if p["path"] == "fee")
    assert fee["example"] == {"bank": "0.03", "bk": HOSTILE, "key": "A1", "request": None}
    assert len(get["series"]) == 30
    assert [c["verdict"] for c in data["calls"]] == ["error", "skipped", "shadow-error", "tainted"] + [
        "mismatch"
    ] * 4
    assert data["calls_limit"] == 50


async def test_json_without_calls_says_null(tmp_path: Path) -> None:
    """Without --calls, "calls" is null: not asked for, rather than none found."""
    report = await _report(tmp_path / "shim.db", calls=False)
    assert to_json(report)["calls"] is None


def test_html_is_self_contained_escaped_and_charted(report: Report) -> None:
    """One page: no external URL, no script, values escaped, the two kinds of chart as inline SVG; the
    unproven share, the errors and the paths of tainted calls shown."""
    page = html(report)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page.lower(), "no script, and a value holding one is escaped"
    assert "&lt;script&gt;alert(" in page  # shown as JSON text: &#34;&lt;script&gt;alert(\\&#34;bk\\&#34;)...
    assert page.count("<svg") == 3, "a rate chart per method, and one latency chart"
    assert "<polyline" in page
    assert "pay.v1.Payments/Get" in page
    assert "How to read this page" in page
    assert "Verdicts explained" in page
    assert "Noise explained" in page
    assert "<style>" in page
    assert "<th>unproven</th>" in page
    assert "4 (23.5%)" in " ".join(page.split())
    tainted = page[page.index("<h2>Differing paths of tainted calls</h2>") :]
    tainted = tainted[: tainted.index("<h2>", 1)]
    assert "<code>cash</code>" in tainted
    assert "&#34;0.00 (a write BK missed)&#34;" in tainted
    assert "<code>fee</code>" not in tainted, "a mismatch's path is not a tainted one"
    assert "ValueError(&#39;undecodable&#39;)" in page, "error calls are listed with their reason"


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not on PATH (.ci/run installs Debian's chromium package)")
    return path


def test_a_real_browser_renders_the_page_without_errors(report: Report, tmp_path: Path) -> None:
    """Headless chromium loads the page: its DOM has the title and the SVG charts, and no console error."""
    chromium = _chromium()
    page = tmp_path / "report.html"
    page.write_text(html(report), encoding="utf-8")
    done = subprocess.run(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "<title>Parity report: Bank and BK</title>" in dom
    assert dom.count("<svg") == 3
    assert "&lt;script&gt;" in dom
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console


_shim = run_shim


async def _recent_store(path: Path) -> None:
    """The crafted records, as of a few minutes ago (the CLI's windows end now)."""
    store = Store.open(str(path))
    await store.start()
    try:
        await _records(at=time.time() - 600).write(store)
    finally:
        await store.close()


async def test_the_report_command_prints_json_and_writes_html(tmp_path: Path) -> None:
    """`shim report --json --html FILE`: JSON on stdout, the page in FILE, where it went on stderr."""
    db = tmp_path / "shim.db"
    await _recent_store(db)
    page = tmp_path / "out.html"
    done = _shim("report", "--store", str(db), "--since", "1h", "--json", "--calls", "--html", str(page))
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    _check_schema(data)
    assert [m["method"] for m in data["methods"]] == ["pay.v1.Payments/Get", "pay.v1.Payments/Refund"]
    assert f"HTML report written to {page}" in done.stderr
    assert "<svg" in page.read_text(encoding="utf-8")
    assert '<div class="verdict fail" id="gate">' in page.read_text(
        encoding="utf-8"
    )  # the defaults: 100 compared

    only = _shim("report", "--store", str(db), "--method", "pay.v1.Payments/Refund", "--json")
    assert [m["method"] for m in json.loads(only.stdout)["methods"]] == ["pay.v1.Payments/Refund"]

    table = _shim("report", "--store", str(db))
    assert table.returncode == 0, table.stderr
    assert "Payments/Get" in table.stdout
    assert "Per method" in table.stdout

    earlier = _shim("report", "--store", str(db), "--from", "2020-01-01T00:00:00Z", "--until", "2020-01-02")
    assert earlier.returncode == 0, earlier.stderr
    assert "No comparison is stored in this window." in earlier.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "1h", "--from", "2026-01-01T00:00:00Z"], "not allowed with argument"),
        (["--until", "2026-01-01T00:00:00Z"], "--until goes with --from"),
        (["--from", "yesterday"], "is not an ISO 8601 time"),
        (["--since", "soon"], "is not a duration"),
        (["--limit", "0"], "is not a whole number of 1 or more"),
        (
            ["--from", "2999-01-01T00:00:00Z"],
            "--from 2999-01-01T00:00:00Z is in the future",
        ),  # not "--until..."
    ],
)
async def test_the_report_command_rejects_bad_flags(tmp_path: Path, args: list[str], message: str) -> None:
    """A bad window or limit is one line on stderr and exit status 2."""
    db = tmp_path / "shim.db"
    await _recent_store(db)
    done = _shim("report", "--store", str(db), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stderr.startswith("shim: error: ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_report_command_refuses_a_store_that_does_not_exist(tmp_path: Path) -> None:
    """A report on a missing SQLite file is an error, rather than a new empty store that reports nothing."""
    missing = tmp_path / "typo.db"
    done = _shim("report", "--store", str(missing))
    assert done.returncode == 2
    assert f"shim: error: no store at {missing}" in done.stderr
    assert not missing.exists()


async def test_an_html_report_that_cannot_be_written_fails_before_anything_is_printed(tmp_path: Path) -> None:
    db = tmp_path / "shim.db"
    await _recent_store(db)
    done = _shim("report", "--store", str(db), "--html", str(tmp_path / "missing" / "report.html"))
    assert done.returncode == 2
    assert done.stdout == ""  # no report printed before the error
    assert done.stderr.startswith("shim: error: cannot write ")
    assert "missing/report.html" in done.stderr


async def test_a_method_that_matches_nothing_is_warned_about(tmp_path: Path) -> None:
    """A --method with no stored comparison (a typo) says so on stderr; the report runs. A short name is
    a usage error, as for `shim gate --require-method` (it was a warning here, an error there)."""
    db = tmp_path / "shim.db"
    await _recent_store(db)
    done = _shim(
        "report", "--store", str(db), "--method", "pay.v1.Payments/Refnd", "--method", "pay.v1.Payments/Get"
    )
    assert done.returncode == 0, done.stderr
    assert "Payments/Get" in done.stdout
    assert done.stderr.strip() == (
        'shim: warning: --method "pay.v1.Payments/Refnd" matches no stored comparison'
        ' (methods are named "package.Service/Method")'
    )
    short = _shim("report", "--store", str(db), "--method", "Refund")
    assert short.returncode == 2
    assert "argument --method: 'Refund' is not a \"package.Service/Method\" name" in short.stderr


LONG = (
    "/com.example.payments.settlement.v1.SettlementInstructions/SubmitSettlementInstructionForApproval",
    "/com.example.ledger.v2.Accounts/Get",  # shown as Accounts/Get: no other method is
    "/com.example.ledger.v3.Accounts/Get",  # ... but here another is: both keep their full names
)


@pytest.mark.parametrize("width", [80, 100, 120])
async def test_the_terminal_shows_whole_method_names_at_80_to_120_columns(tmp_path: Path, width: int) -> None:
    """Short names when unambiguous, full ones when not, and a long name folds onto the next line rather
    than being cut short: its pieces in the method column, put together, are the whole name."""
    records = Records()
    for method in LONG:
        records.add("mismatch", method=method, at=T0 + 10, real=[("fee", "0.03", "0.02")])
    store = Store.open(str(tmp_path / "shim.db"))
    await store.start()
    try:
        await records.write(store)
        report = await build_report(
            store, since=T0, until=T0 + SPAN, relative=0.2, absolute=0.0003, min_sampled=20
        )
    finally:
        await store.close()
    out = io.StringIO()
    terminal(report, Console(file=out, width=width, color_system=None))
    text = out.getvalue()
    assert "…" not in text
    per_method = text[text.index("Per method") : text.index("Per method: unproven")]
    column = "".join(row[0] for row in _rows(per_method, "│ ") if row and row[0] != "method")
    shown = {
        LONG[0].lstrip("/"): "SettlementInstructions/SubmitSettlementInstructionForApproval",
        LONG[1].lstrip("/"): LONG[1].lstrip("/"),
        LONG[2].lstrip("/"): LONG[2].lstrip("/"),
    }
    assert column == "".join(shown[m.method] for m in report.methods)
    assert "Methods are named without their package (com.example.payments.settlement.v1)" in text
    assert max(len(line) for line in text.splitlines()) <= width


def test_the_page_opens_with_the_gates_verdict(report: Report) -> None:
    """With the gate's result, the page says PASS or FAIL before anything else, with the failed criteria."""
    from shim.gate import evaluate

    failing = evaluate(
        report,
        min_compared=1,
        min_answered=10,
        max_mismatch_rate=0.0,
        max_unproven_rate=0.0,
        required_methods=(),
    )
    page = html(report, failing)
    verdict = page[page.index('<div class="verdict fail" id="gate">') :]
    assert page.index('id="gate"') < page.index("How to read this page") < page.index("<h2>Per method</h2>")
    assert "<h2>Gate: FAIL</h2>" in verdict
    assert f"{len(failing.failed)} of {len(failing.criteria)} criteria are not met" in verdict
    assert "<code>pay.v1.Payments/Get</code> real mismatch rate: 15.38% (2 of 13)\n(needs ≤ 0%)" in verdict
    passing = evaluate(
        report,
        min_compared=1,
        min_answered=10,
        max_mismatch_rate=1.0,
        max_unproven_rate=1.0,
        required_methods=(),
    )
    assert '<div class="verdict pass" id="gate">' in html(report, passing)
    assert 'id="gate"' not in html(report)  # no gate given: no verdict


async def test_the_pages_verdict_is_the_gates_whatever_the_reports_window(tmp_path: Path) -> None:
    """The page's verdict is `shim gate`'s: the evidence of `[gate] window` up to now, every method, the
    config's criteria; never the page's own window (`--since`, `--from`) or its `--method`. Clean calls
    10 minutes old, and real mismatches 30 hours old: with `[gate] window = "2d"` the gate fails and so does
    the page, whatever the page's window; with "1h" both pass, even on a page of the last 72 hours."""
    db = tmp_path / "shim.db"
    now = time.time()
    r = Records()
    r.add(at=now - 600, count=100)
    r.add(method=REFUND, at=now - 600, count=100)
    r.add("mismatch", at=now - 30 * 3600, real=[("fee", "0.03", "0.02")], count=50)
    store = Store.open(str(db))
    await store.start()
    try:
        await r.write(store)
    finally:
        await store.close()
    page = tmp_path / "page.html"
    for window, verdict in (("2d", "fail"), ("1h", "pass")):
        config = tmp_path / f"shim-{window}.toml"
        config.write_text(f'[store]\nurl = "{db}"\n[gate]\nwindow = "{window}"\nmin_compared = 100\n')
        gate = _shim("gate", "--config", str(config))
        assert gate.returncode == (1 if verdict == "fail" else 0), gate.stdout + gate.stderr
        for flags in ((), ("--since", "1h"), ("--since", "72h"), ("--method", "pay.v1.Payments/Refund")):
            done = _shim("report", "--config", str(config), *flags, "--html", str(page))
            assert done.returncode == 0, done.stderr
            text = page.read_text(encoding="utf-8")
            assert f'<div class="verdict {verdict}" id="gate">' in text, (window, flags)
            shown = text[text.index('id="gate"') : text.index("</div>", text.index('id="gate"'))]
            assert f"the evidence of the last {window} ([gate] window)" in shown, shown


async def test_the_page_folds_long_values_and_never_breaks_a_name_mid_word(tmp_path: Path) -> None:
    long = "{" + ", ".join(f'"field_{n}": "value {n}"' for n in range(20)) + "}"  # rich details, say
    records = Records()
    records.add(
        "mismatch", at=T0 + 10, real=[("status.rich_details", None, long), ("unsettled_cash", "1.00", "1.0")]
    )
    store = Store.open(str(tmp_path / "shim.db"))
    await store.start()
    try:
        await records.write(store)
        report = await build_report(
            store, since=T0, until=T0 + SPAN, relative=0.2, absolute=0.0003, min_sampled=20
        )
    finally:
        await store.close()
    page = html(report)
    assert "break-all" not in page  # a path or a number is never cut in two to save width
    folded = page[page.index('<details class="long">') : page.index("</details>")]
    assert f"({len(json.dumps(long)):,}\ncharacters)" in folded  # the summary says how long it is
    assert json.dumps(long).replace('"', "&#34;") in folded  # and the whole value is one click away
    assert '<td class="l"><code>&#34;1.00&#34;</code></td>' in page  # a short value is shown as it is


async def test_the_series_fit_the_stretch_of_the_window_that_holds_comparisons(tmp_path: Path) -> None:
    """A day's window holding ten minutes of traffic: the chart spans those ten minutes, not the day."""
    records = Records()
    records.add(at=T0 + 3600, count=3)
    records.add("mismatch", at=T0 + 3900, real=[("fee", "0.03", "0.02")])
    records.add(at=T0 + 4200, count=2)
    store = Store.open(str(tmp_path / "shim.db"))
    await store.start()
    try:
        await records.write(store)
        report = await build_report(
            store, since=T0, until=T0 + 86400, relative=0.2, absolute=0.0003, min_sampled=20
        )
    finally:
        await store.close()
    (method,) = report.methods
    assert (method.series[0].start, method.series[-1].end) == (T0 + 3600, T0 + 4200)
    assert sum(b.compared for b in method.series) == method.compared == 6
    assert sum(b.real_mismatches for b in method.series) == 1
    assert (report.since, report.until) == (T0, T0 + 86400)  # the window itself is as asked
