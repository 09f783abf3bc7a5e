"""The private folder of a shim's Envoy: its bootstrap, routes, admin address, the unix sockets to the
comparison plane, and the TLS files Envoy reads. A shim removes its own when it stops. One killed (SIGKILL,
a machine's OOM killer) cannot: the next shim started on the machine removes the folders whose owner is no
longer running, so that neither they nor the private keys in them pile up in the temporary folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "shim-envoy-"
OWNER = "owner"  # the pid of the shim whose folder it is


def scratch(base: str | None = None) -> Path:
    """A new private folder (in `base`, else the temporary folder), after removing those of shims gone."""
    folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
    folder.chmod(0o700)
    (folder / OWNER).write_text(str(os.getpid()), encoding="ascii")
    for old in folder.parent.glob(PREFIX + "*"):
        if old != folder and _gone(old):
            shutil.rmtree(old, ignore_errors=True)  # quietly: the first line a shim writes says it is ready
    return folder


def remove_scratch(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _gone(folder: Path) -> bool:
    """Whether the folder's owner is no longer running (a folder naming none, or something that is no
    process's id, is not judged: kept)."""
    try:
        pid = int((folder / OWNER).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return False
    if not 0 < pid < 2**22:  # Linux's pid_max at most: beyond, no process (0 and below: process groups)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's, running
        return False
    return False
