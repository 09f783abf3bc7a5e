"""The suite's own scheduling (tests/conftest.py): the tests that load the machine run on one worker, one
at a time. Checked on a small suite of its own, run as the real one is (two xdist workers, pyproject's
`--dist loadgroup`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TEST = """
import os
from pathlib import Path

def _where(name: str) -> None:
    with (Path(__file__).parent.parent / "ran.txt").open("a") as out:
        out.write(f"{name} {os.environ['PYTEST_XDIST_WORKER']}\\n")

""" + "".join(f"def test_{n}() -> None:\n    _where(__name__ + '.{n}')\n\n" for n in range(6))


def test_the_loaded_tests_run_on_one_worker_and_the_others_beside_them(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    tests.mkdir()
    conftest = (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")
    loaded = ("tests/test_heavy.py", "tests/test_heavier.py")
    conftest, changed = re.subn(r"(?s)\nLOADED = \(.*?\n\)\n", f"\nLOADED = {loaded!r}\n", conftest)
    assert changed == 1  # the list the suite keeps, replaced by this one's
    (tests / "conftest.py").write_text(conftest, encoding="utf-8")
    for name in ("test_heavy", "test_heavier", "test_light", "test_lighter"):
        (tests / f"{name}.py").write_text(TEST, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    ran = dict(line.split() for line in (tmp_path / "ran.txt").read_text().splitlines())
    assert len(ran) == 24, ran
    heavy = {worker for test, worker in ran.items() if test.startswith(("test_heavy.", "test_heavier."))}
    assert len(heavy) == 1, ran  # the twelve loaded tests on one worker
    assert set(ran.values()) == {"gw0", "gw1"}, ran  # the rest on the other meanwhile
