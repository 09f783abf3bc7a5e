"""No process of the shim outlives it: after `kill -9` its comparison worker and multiprocessing's resource
tracker end, and so do the workers of `shim serve --workers N` (with theirs) after `kill -9` of the
supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from sample_ledger.server import RunningLedger
from tests.processes import ShimProcess, _state, shim_process
from tests.shim.test_evidence_store import BANK_BINPB, _shadow_args, _until
from tests.shim.test_store_faults import _events, _open_accounts


def _descendants(pid: int) -> dict[int, str]:
    """The processes below `pid` (children, theirs, ...), with their command lines."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])  # pid (comm) state ppid ...
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            with contextlib.suppress(OSError):
                found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                todo.append(child)
    return found


def _living(pids: dict[int, str]) -> list[int]:
    return [pid for pid in pids if _state(pid) not in ("", "Z", "X")]


def _reap(pids: dict[int, str]) -> None:
    """SIGKILL whichever of `pids` still runs the command line it had (left behind by a failing test)."""
    for pid, cmdline in pids.items():
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode() == cmdline:
                os.kill(pid, signal.SIGKILL)


async def _kill_9_and_wait_for(shim: ShimProcess, below: dict[int, str]) -> None:
    """SIGKILL the shim, then wait until none of the processes `below` it runs."""
    shim.proc.send_signal(signal.SIGKILL)

    async def living() -> list[int]:
        return _living({shim.proc.pid: "", **below})

    try:
        await _until(living, lambda pids: not pids, "every process of the shim ended after its kill -9")
    finally:
        _reap(below)
        assert await asyncio.wait_for(shim.proc.wait(), 20) == -signal.SIGKILL  # its stderr closed too


async def test_the_comparison_worker_and_the_resource_tracker_end_with_a_killed_shim(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """`kill -9` of a shim in shadow mode: its comparison worker process and multiprocessing's resource
    tracker end within seconds, never left behind."""
    bank, bk = ledgers
    args = _shadow_args(bank, bk, tmp_path / "shim.db", "--descriptor-set", BANK_BINPB)
    async with shim_process(*args) as shim:
        await _open_accounts(shim.ready["listen"], "A", 1)

        async def below() -> dict[int, str]:
            return _descendants(shim.proc.pid)

        found = await _until(
            below,
            lambda pids: (
                any("spawn_main" in c for c in pids.values())
                and any("resource_tracker" in c for c in pids.values())
            ),
            "the comparison worker and the resource tracker started",
        )
        await _kill_9_and_wait_for(shim, found)


async def test_the_workers_of_a_killed_supervisor_drain_and_end_with_theirs(
    ledgers: tuple[RunningLedger, RunningLedger], tmp_path: Path
) -> None:
    """`kill -9` of `shim serve --workers 2`: each worker drains as on SIGTERM and ends, and so do their
    comparison workers and the resource tracker: no process of the shim is left."""
    bank, bk = ledgers
    config = tmp_path / "shim.toml"
    config.write_text('grace_period = "1s"\n')
    args = _shadow_args(bank, bk, tmp_path / "shim.db", "--descriptor-set", BANK_BINPB, "--config", config)
    async with shim_process(*args, "--workers", "2") as shim:

        async def below() -> dict[int, str]:
            return _descendants(shim.proc.pid)

        def started(pids: dict[int, str]) -> bool:
            ready = [line for line in shim.stderr if '"workers"' in line and '"ready"' in line]
            spawned = sum("spawn_main" in c for c in pids.values())
            return bool(ready) and spawned >= 4  # 2 workers, and the comparison worker of each

        found = await _until(below, started, "both workers and their comparison workers started")
        await _kill_9_and_wait_for(shim, found)
    stopped = _events(shim.stderr, "stopped")
    assert sorted(int(str(e["worker"])) for e in stopped) == [0, 1], shim.stderr[-6:]
