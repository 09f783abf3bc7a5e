"""The BK a replay calls: an address given (--bk), or a command the shim starts and stops (--bk-command);
and the seeding command (--seed) run against it before anything is replayed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import socket
import time
from types import TracebackType

from grpc import aio

from shim._timeouts import bounded
from shim.errors import how_it_ended
from shim.replay.source import ReplayError

STARTED_WITHIN = 30.0  # how long a BK the shim started (--bk-command) has to accept calls
SERVING_WITHIN = 5.0  # how long a BK said to be serving already (--bk) has to accept a connection


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_serving(
    address: str, within: float, process: asyncio.subprocess.Process | None = None
) -> None:
    """Return once `address` accepts a gRPC connection; ReplayError when it does not within `within` seconds
    (or the process meant to serve there exits first)."""
    deadline = time.monotonic() + within
    async with aio.insecure_channel(address) as channel:
        while True:
            if process is not None and process.returncode is not None:
                raise ReplayError(f"--bk-command {how_it_ended(process.returncode)} before serving")
            try:
                await bounded(channel.channel_ready(), 0.2)
                return
            except TimeoutError:
                pass
            if time.monotonic() >= deadline:
                raise ReplayError(f"BK at {address} is not reachable (no connection within {within:g}s)")


class Bk:
    """Where BK serves, for the time of a replay: `async with Bk(...) as address`."""

    def __init__(self, address: str = "", command: str = "", within: float = 0.0) -> None:
        if bool(address) == bool(command):
            raise ReplayError("give BK as one of --bk HOST:PORT or --bk-command CMD")
        self.address = address
        self.command = command
        self.within = within or (STARTED_WITHIN if command else SERVING_WITHIN)
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> str:
        if self.command:
            port = free_port()
            argv = shlex.split(self.command.replace("{port}", str(port)))
            if not argv:
                raise ReplayError("--bk-command is empty")
            try:
                self.process = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
                )
            except OSError as exc:
                raise ReplayError(f"--bk-command: cannot start {argv[0]}: {exc.strerror or exc}") from None
            self.address = f"127.0.0.1:{port}"
        try:
            await wait_serving(self.address, self.within, self.process)
        except BaseException:
            await self.stop()
            raise
        return self.address

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop the BK the shim started (SIGTERM, then SIGKILL after 10 s), with its children."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await bounded(process.wait(), 10.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def seed(command: str, bk: str) -> None:
    """Run the seeding command (a shell command; `{bk}` in it, and $SHIM_BK, are BK's address); it must
    exit 0, or the replay does not start."""
    process = await asyncio.create_subprocess_shell(
        command.replace("{bk}", bk),
        stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, "SHIM_BK": bk},
    )
    code = await process.wait()
    if code != 0:
        raise ReplayError(f"--seed {how_it_ended(code)}: BK's starting state is not known, nothing replayed")
