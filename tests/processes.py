"""`shim serve` as a process of its own, for the tests that need one: its log read as it comes.

`shim_process(*args)` starts `python -m shim serve ARGS`, waits for its "ready" line (warnings may come
first), and reads its stderr all along, so the shim never blocks on a full pipe. On exit it stops the
shim (SIGTERM; SIGKILL, children included, if it does not stop). With `pid_namespace`, the shim is PID 1
of a PID namespace of its own (`unshare`), as in a container: started again so, it has the same host name
and the same pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import ROOT, until

SERVE = [sys.executable, "-m", "shim", "serve"]
IN_PID_NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
TIMEOUT = 30.0  # seconds a step of a shim process may take before the test fails


@dataclass
class ShimProcess:
    """A running `shim serve`: its ready line, and its stderr lines as they come."""

    proc: asyncio.subprocess.Process
    ready: dict[str, Any]
    stderr: list[str]
    pid_namespace: bool = False  # PID 1 of a namespace of its own: `proc` is `unshare`, its parent

    @property
    def replica(self) -> str:
        """The name the shim gives itself in the store (see shim.evidence.record.replica_name): that of the
        process serving, which the ready line names (on Envoy, the comparison plane)."""
        return str(self.ready["replica"])

    def events(self) -> list[dict[str, Any]]:
        """The JSON lines of its stderr so far, parsed."""
        out = []
        for line in list(self.stderr):
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    out.append(event)
        return out

    async def until_event(self, name: str, count: int = 1, within: float = TIMEOUT) -> dict[str, Any]:
        """The `count`-th event named `name` (waiting for it as the shim logs)."""

        def named() -> list[dict[str, Any]]:
            return [e for e in self.events() if e.get("event") == name]

        await until(
            lambda: len(named()) >= count or self.proc.returncode is not None, f"{count} {name!r}", within
        )
        found = named()
        if len(found) < count:
            raise AssertionError(f"shim serve exited ({self.proc.returncode}); it said: {self.stderr}")
        return found[count - 1]

    def children(self) -> list[int]:
        """The pids of the shim's own child processes (its comparison plane or worker, Envoy, ...)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int(stat.read_text().rpartition(")")[2].split()[1])  # pid (comm) state ppid ...
                if ppid == self.proc.pid:
                    found.append(int(stat.parent.name))
        return found

    async def kill_9(self) -> None:
        """SIGKILL the shim; once it is dead, its children too, which it could not stop and which would
        live on (holding its stderr open, so that asyncio would never see it exit). In a PID namespace of
        its own, the shim is its PID 1: every process in it dies with it, and `unshare` exits."""
        if self.pid_namespace:
            [init] = self.children()  # unshare's child: the shim, pid 1 inside
            os.kill(init, signal.SIGKILL)
            await asyncio.wait_for(self.proc.wait(), TIMEOUT)
            return
        orphans = self.children()
        self.proc.send_signal(signal.SIGKILL)
        await until(lambda: _state(self.proc.pid) in ("", "Z", "X"), "the shim dead after SIGKILL", TIMEOUT)
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert await asyncio.wait_for(self.proc.wait(), TIMEOUT) == -signal.SIGKILL

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """`signum` (SIGTERM: the shim stops its children itself), and the exit status. In a PID namespace
        of its own the signal goes to the shim (its PID 1): `unshare` passes none on."""
        if self.pid_namespace:
            for init in self.children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(init, signum)
        else:
            self.proc.send_signal(signum)
        return await asyncio.wait_for(self.proc.wait(), TIMEOUT)


def _state(pid: int) -> str:
    """The state letter of process `pid` ("Z": dead, not yet reaped); "" when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[0]


@contextlib.asynccontextmanager
async def shim_process(
    *args: str | Path, cwd: Path = ROOT, new_session: bool = False, pid_namespace: bool = False
) -> AsyncIterator[ShimProcess]:
    """`shim serve ARGS`, run in `cwd` (in a session of its own, as a terminal runs it, with
    `new_session`; as PID 1 of a PID namespace of its own with `pid_namespace`), once it is ready (see
    the module's docstring)."""
    proc = await asyncio.create_subprocess_exec(
        *(IN_PID_NAMESPACE if pid_namespace else []),
        *SERVE,
        *map(str, args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        start_new_session=new_session,
    )
    assert proc.stderr is not None
    stderr = proc.stderr
    shim = ShimProcess(proc, {}, [], pid_namespace)

    async def read() -> None:
        async for raw in stderr:
            shim.stderr.append(raw.decode())

    reader = asyncio.get_running_loop().create_task(read())
    try:
        shim.ready = await shim.until_event("ready")
        yield shim
    finally:
        if proc.returncode is None:
            if shim.ready.get("pid") not in (None, proc.pid) and not pid_namespace:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(shim.ready["pid"], signal.SIGCONT)  # a plane a test stopped can stop again
            try:
                await shim.stop()
            except TimeoutError:
                await shim.kill_9()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader, TIMEOUT)


def pid_namespaces() -> str:
    """Why `shim_process(..., pid_namespace=True)` cannot run here ("": it can)."""
    import subprocess

    try:
        done = subprocess.run([*IN_PID_NAMESPACE, "true"], capture_output=True, timeout=TIMEOUT, check=False)
    except OSError as exc:
        return f"unshare cannot run: {exc}"
    if done.returncode != 0:
        return f"unshare cannot make a PID namespace here: {done.stderr.decode(errors='replace').strip()}"
    return ""
