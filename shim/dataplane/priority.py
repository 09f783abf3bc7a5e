"""The comparison plane yields the CPU to the clients' path.

With Envoy carrying the clients' calls, everything the shim's own process does
(taking copies, mirroring, comparing, storing) is off the clients' path, but on
the same cores as Envoy (and, on a small machine, as the services). When the
cores are short, the clients should not pay for the comparisons: the shim's
threads and its comparison processes run at a lower CPU priority (a higher
nice value, `[envoy] comparison_nice`), Envoy at the shim's original one. The
comparison side then gets what the clients' path leaves; when that is not
enough it falls behind, and what it sheds or loses is counted (docs/dataplane.md).

Linux sets a nice value per thread: each thread of the process, and of each
child process but Envoy, is set; threads started later inherit it. Behind
`shim serve`'s supervisor, the comparison plane is started already lowered (with
`nice`, so that its start, too, yields to the clients' path), and it ranks itself
against the supervisor, which runs at Envoy's priority.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def _tasks(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
    return []


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in _tasks(pid):
        with contextlib.suppress(OSError):
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def lower(by: int, spare: set[int], below: int | None = None) -> int:
    """Raise the nice value of this process's threads, and of its children's (but `spare`, and their
    descendants), to `by` above that of process `below` (by default this one), where they are not that
    low already; the threads now that low (0 where /proc is not there, or `by` is 0)."""
    if by <= 0 or not Path("/proc/self/task").is_dir():
        return 0
    target = min(os.getpriority(os.PRIO_PROCESS, below or os.getpid()) + by, 19)
    changed = 0
    pending = [os.getpid()]
    while pending:
        pid = pending.pop()
        for tid in _tasks(pid):
            with contextlib.suppress(OSError):
                if os.getpriority(os.PRIO_PROCESS, tid) < target:
                    os.setpriority(os.PRIO_PROCESS, tid, target)
                changed += 1
        pending += [child for child in _children(pid) if child not in spare]
    return changed
