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

A terminal's Ctrl-C reaches every process of its group, such a process too,
even before its own code runs (while the interpreter starts and unpickles its
task): KeyboardInterrupt's traceback, from a process whose stop is its
parent's to make. So they are started `deaf_to_ctrl_c()`: with SIGINT blocked
(a mask survives fork and exec), and their first call, `leave_ctrl_c_to_parent`,
ignores it for good. The parent stops them itself (SIGTERM, or its pool's end).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from collections.abc import Iterator
from multiprocessing import resource_tracker

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@contextlib.contextmanager
def deaf_to_ctrl_c(tracker: bool = True) -> Iterator[None]:
    """Processes started within are born with SIGINT blocked (this thread's Ctrl-C waits meanwhile, and
    is taken as soon as it is over). `tracker`: make sure multiprocessing's resource tracker runs first
    (False where it surely does, as once a process pool exists: asking costs a write to it)."""
    # multiprocessing starts its resource tracker with the first process, and then unblocks SIGINT, what
    # its caller blocked included: started first, it is not started again within
    if tracker:
        resource_tracker.ensure_running()
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def leave_ctrl_c_to_parent() -> None:
    """A started process's first call: SIGINT ignored (one sent while it started with it blocked is
    dropped)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


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
