"""SIGHUP while a process of `shim serve` starts: recorded, never its default action, which ends the process.

A SIGHUP asks a serving shim to read its config and certificates again. Sent while `shim serve` starts (a
config tool signalling every replica after an edit), its default action would end the shim, or the plane
or worker it was passed to, before it served. So each process of `shim serve` records it first thing
(`record`): the process started as soon as its code runs, the comparison plane and the workers from birth
(their parent starts them with SIGHUP blocked: `held`, and they record it before they unblock it). A
process that serves takes its own handler, then applies a reload for what was recorded (`take`).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator, Sequence
from types import FrameType

_recorded = 0


def _count(signum: int, frame: FrameType | None) -> None:
    global _recorded
    _recorded += 1


def record() -> None:
    """From now on a SIGHUP is counted, until a handler of the process's own takes over (one blocked since
    this process was born is taken now)."""
    signal.signal(signal.SIGHUP, _count)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})


def record_if_serving(argv: Sequence[str]) -> None:
    """`record`, in a process that runs `shim serve` (`argv`: its command line)."""
    if list(argv[1:2]) == ["serve"]:
        record()


def take() -> int:
    """The SIGHUPs counted so far (forgotten: the caller reloads once for them all)."""
    global _recorded
    taken, _recorded = _recorded, 0
    return taken


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Processes started within are born with SIGHUP blocked until they `record` it (a SIGHUP to this
    process meanwhile goes to its other threads, or waits until this is over)."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
