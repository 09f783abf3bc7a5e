"""The committed generated code is exactly what tools/genproto.py makes from proto/ today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ["sample_ledger/_proto", "sample_ledger/bank.binpb", "tests/_proto"]


def _files(base: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for entry in GENERATED:
        path = base / entry
        for file in [path] if path.is_file() else sorted(path.rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                found[str(file.relative_to(base))] = file.read_bytes()
    return found


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    """Regenerating from the .proto sources reproduces the committed files byte for byte."""
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "genproto.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    fresh, committed = _files(tmp_path), _files(ROOT)
    assert sorted(fresh) == sorted(committed), (
        "generated files added or removed: run python tools/genproto.py"
    )
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert stale == [], f"stale generated code in {stale}: run python tools/genproto.py"
