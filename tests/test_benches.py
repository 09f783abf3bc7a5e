"""Every benchmark, run in a quick mode: a few seconds each, with figures printed and not judged, so that a
change that breaks a benchmark fails its CI run (python bench/compare.py once failed on main for months)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import until

ROOT = Path(__file__).resolve().parent.parent
QUICK = {  # bench: (its quick arguments, a line it prints once it has measured)
    "compare.py": (["--quick", "--seconds", "0.3"], "recommendation:"),
    "fleet.py": (
        [
            "--rate",
            "50",
            "--duration",
            "1",
            "--death-rate",
            "50",
            "--before",
            "1",
            "--down",
            "0.5",
            "--after",
            "1",
        ],
        "two/one",
    ),
    "fleet_switch.py": (["--replicas", "2", "--switches", "1", "--rate", "20"], "calls held"),
    "handover.py": (["--exchanges", "30"], "handed over together"),  # the baseline goes at ~10/s
    "latency.py": (["--calls", "50"], "added"),
    "overload.py": (["--rate", "100", "--duration", "1"], "clients' p99"),
    "plane_cpu.py": (["--rate", "100", "--duration", "1"], "comparison plane / Bank"),
    "plane_floor.py": (["--rate", "100", "--duration", "1"], "the shim's plane"),
    "openloop.py": (
        [
            *("--duration", "0.5", "--rounds", "1", "--rate", "200", "--fractions", "0.5", "--warmup", "0.2"),
            *("--search", "", "--compare", ""),
        ],
        "shadow",
    ),
    "replay.py": (["--calls", "500"], "shim replay:"),
    "report.py": (["--rows", "2000"], "calls,"),
    "soak.py": (
        ["--minutes", "0.05", "--warmup", "1", "--every", "1", "--slice", "2"],
        "RSS (shim + comparison worker)",
    ),
    "store.py": (["--records", "2000"], "records/s"),
    "switch.py": (["--rate", "50", "--switches", "1"], "switching"),
}


def test_every_bench_has_a_quick_mode() -> None:
    assert sorted(QUICK) == sorted(p.name for p in (ROOT / "bench").glob("*.py") if p.name != "__main__.py")


# a quick mode starts several shims and waits for each to settle: `openloop.py`'s took 114 s alone on a
# slow day (the same on the code before and after a change), so the run's 120 s limit cut it off
@pytest.mark.timeout(300)  # the bench's own limit, below
@pytest.mark.parametrize("bench", sorted(QUICK))
def test_the_bench_runs_in_its_quick_mode(bench: str) -> None:
    arguments, printed = QUICK[bench]
    if bench in ("fleet.py", "fleet_switch.py") and not os.environ.get("SHIM_TEST_POSTGRES_DSN"):
        pytest.skip("needs PostgreSQL: set SHIM_TEST_POSTGRES_DSN (set by .ci/run)")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / bench), *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert printed in done.stdout, done.stdout[-3000:]


def _children(pid: int) -> set[int]:
    """The processes `pid` started, from /proc."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out.update(int(c) for c in (task / "children").read_text().split())
    return out


def _running(pid: int) -> set[int]:
    """The processes `pid` started that run what they were started for (not yet `setpriv`)."""
    out = set()
    for child in _children(pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/comm").read_text().strip() != "setpriv":
                out.add(child)
    return out


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="no setpriv on this machine")
@pytest.mark.timeout(120)
async def test_a_bench_killed_leaves_nothing_running() -> None:
    """A bench cut off (pytest's timeout kills it) takes its Bank, BK and shim with it: such leftovers
    once loaded the runs after them into timeouts of their own."""
    bench = await asyncio.create_subprocess_exec(
        *(sys.executable, str(ROOT / "bench" / "overload.py"), "--rate", "50", "--duration", "60"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # each started as itself, past `setpriv --pdeathsig`: a process killed between its fork and the
        # prctl there leaves a child that never learns of its death (no bench gets killed that fast)
        await until(lambda: len(_running(bench.pid)) >= 3, "Bank, BK and the shim started", 60)
        started = _running(bench.pid)
        bench.kill()
        await bench.wait()
        await until(lambda: not any(Path(f"/proc/{p}").exists() for p in started), "none left", 30)
    finally:
        if bench.returncode is None:
            bench.kill()
            await bench.wait()
