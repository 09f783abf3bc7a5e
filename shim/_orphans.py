"""No process of the shim outlives its parent.

A process that multiprocessing spawned (the comparison worker, a worker of
`shim serve --workers N`) would otherwise live on after `kill -9` of the shim:
it waits on a queue whose pipe its own copy keeps open. `die_with_parent`,
called first thing in such a process, has the kernel send it a signal when its
parent dies: on Linux through prctl(PR_SET_PDEATHSIG), which signals when the
*thread* that started the process ends, so start them from a thread that lives
as long as they should (the event loop's, the main thread); elsewhere a thread
waits on the pipe from the parent that multiprocessing keeps open for the
child's life. A parent already gone when it is called: the signal at once.

multiprocessing's resource tracker, which the shim's first spawn starts, ends
by itself once every process holding its pipe has ended: the shim and these.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """Have `signum` sent to this process when its parent dies (a process multiprocessing started;
    elsewhere nothing)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    if not _parent_death_signal(signum):
        threading.Thread(
            target=_watch, args=(parent.sentinel, signum), name="parent watch", daemon=True
        ).start()
    if os.getppid() != parent.pid:  # it died before the kernel was asked
        os.kill(os.getpid(), signum)


def _parent_death_signal(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _watch(sentinel: int, signum: int) -> None:
    multiprocessing.connection.wait([sentinel])  # readable (at its end) once the parent has died
    os.kill(os.getpid(), signum)
