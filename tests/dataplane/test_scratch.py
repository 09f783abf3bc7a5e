"""The private folder of a shim's Envoy (`shim.dataplane.scratch`): the folders of shims killed before they
could remove theirs are removed by the next shim started; those of running shims, and folders naming no
owner, are kept."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from shim.dataplane.scratch import OWNER, PREFIX, remove_scratch, scratch


def _folder(base: Path, name: str, owner: int | None) -> Path:
    folder = base / (PREFIX + name)
    folder.mkdir()
    (folder / "key.pem").write_text("a private key", encoding="ascii")
    if owner is not None:
        (folder / OWNER).write_text(str(owner), encoding="ascii")
    return folder


def test_the_folders_of_shims_gone_are_removed_and_the_others_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])  # a process that has exited: its pid runs nothing now
    dead.wait()
    gone = _folder(tmp_path, "gone", dead.pid)
    running = _folder(tmp_path, "running", os.getpid())
    unnamed = _folder(tmp_path, "unnamed", None)
    garbled = _folder(tmp_path, "garbled", None)
    (garbled / OWNER).write_text("not a pid", encoding="ascii")
    # not pids of a process either (a number too large for one, a process group): judged by no one
    huge, group = _folder(tmp_path, "huge", 10**30), _folder(tmp_path, "group", -dead.pid)
    other = tmp_path / "not-a-shim"
    other.mkdir()
    new = scratch(str(tmp_path))
    assert not gone.exists()
    assert {p.name for p in tmp_path.iterdir()} == {
        new.name, running.name, unnamed.name, garbled.name, huge.name, group.name, other.name,
    }  # fmt: skip
    assert (new / OWNER).read_text(encoding="ascii") == str(os.getpid())
    assert new.stat().st_mode & 0o777 == 0o700
    remove_scratch(new)
    assert not new.exists()
