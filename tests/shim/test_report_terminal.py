"""`shim report` in the terminal: every real path is listed, however many noise paths have more calls, and
what the store holds is escaped on every line, "Also lost:" included."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from shim.evidence import build_report
from shim.report import TOP_PATHS, terminal
from shim.store import Store
from tests.shim.test_evidence import SPAN, T0, Records

ROOT = Path(__file__).resolve().parents[2]


async def test_every_real_path_is_listed_before_the_noise_ones(tmp_path: Path) -> None:
    """11 noise paths (Bank's trace headers, in every call) outnumber the one real path, the fee, in 3 calls:
    the fee is listed first with its example, then the noise paths up to 10 rows, then how many are left."""
    noisy = [f"metadata.x-trace-{i:02d}" for i in range(11)]
    r = Records()
    r.add("mismatch", real=[(p, "a", "b") for p in noisy], noise=noisy, count=300)
    r.add("mismatch", real=[*((p, "a", "b") for p in noisy), ("fee", "0.03", "0.02")], noise=noisy, count=3)
    store = Store.open(str(tmp_path / "shim.db"))
    await store.start()
    try:
        await r.write(store)
        report = await build_report(
            store, since=T0, until=T0 + SPAN, relative=0.2, absolute=0.0003, min_sampled=20
        )
    finally:
        await store.close()
    (m,) = report.methods
    assert [p.path for p in m.paths if p.classification == "real"] == ["fee"]
    out = io.StringIO()
    terminal(report, Console(file=out, width=200, color_system=None))
    table = out.getvalue()[out.getvalue().index("Differing paths") :].splitlines()
    rows = [line for line in table if line.startswith("│")]
    assert "fee" in rows[0]
    assert '"0.03" → "0.02"' in rows[0]
    assert "real" in rows[0]
    assert len(rows) == TOP_PATHS + 1  # the fee and 9 noise paths, then the line of the rest
    assert all(" noise " in row for row in rows[1:TOP_PATHS])
    assert "… 2 more noise paths (--json lists them all)" in rows[-1]


async def test_the_also_lost_line_escapes_the_stored_names(tmp_path: Path) -> None:
    """A method name stored with terminal escapes in it is written escaped on the "Also lost:" line too: no
    raw ESC reaches the terminal."""
    db = tmp_path / "shim.db"
    store = Store.open(str(db))
    await store.start()
    try:
        store.counts.put(
            time.time() - 5, "r:1:aaaaaa", [("/x.Svc/M\x1b[2J\x1b[31mFAKE", "recording_lost", 3)]
        )
        await store.flush()
    finally:
        await store.close()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "shim", "report", "--store", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    assert "\x1b" not in done.stdout
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("Also lost:")]
    assert line == "Also lost: Svc/M\\x1b[2J\\x1b[31mFAKE: recording_lost 3"
