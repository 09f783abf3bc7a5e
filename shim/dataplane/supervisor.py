"""`shim serve` on the Envoy data plane: Envoy outlives the comparison plane.

The process `shim serve` starts is a small supervisor. It runs the comparison plane (everything else of
the shim: the processor of copies, mirroring, comparison, the store, the admin API) as a child process,
`python -m shim serve` with the same arguments, and runs Envoy beside it, once the plane has written
Envoy's files. Envoy reaches the plane through unix sockets in a private folder (`shim.dataplane`), so
when the plane dies (killed, out of memory, a crash) Envoy goes on serving the clients: their calls reach
the primary as before, Envoy counts the copies it cannot hand over, and the supervisor starts the plane
again, after a pause that doubles from 0.1 s up to 5 s (and resets once it has run for a minute). The
plane started again finds the folder, takes up the sockets and the routes' version where they were, runs
on the config in force (`shim.dataplane.in_force`: the one Envoy was built from, not the file as edited
since), and records the calls whose copies were lost while it was down (as `(calls the shim did not see)`); a
mirrored write whose outcome the old plane never recorded puts its keys out of step (its intent).

What the clients lose while the plane is down: only the methods that need Python on their primary path
(adapters, id translation of client requests: `docs/dataplane.md` lists them) fail, with
UNAVAILABLE, until it is back.

SIGTERM and SIGINT stop the plane (which drains Envoy's listener and finishes the calls in flight), then
Envoy. A stop that finds no plane serving (one that died, is started again, or waits for its store) has
the supervisor drain Envoy itself, the same way (`shim.dataplane.stopping`), before it stops Envoy.
SIGHUP goes to the plane, which reloads; one that comes while the plane starts (or starts again) is
passed on once it serves. Envoy itself is restarted by the supervisor when it
exits, as before (`shim.dataplane.envoy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from shim import _hangups
from shim._timeouts import bounded
from shim.config import Config
from shim.dataplane import BOOTSTRAP, PLANE_READY, check_listen, in_force
from shim.dataplane import envoy as envoy_process
from shim.dataplane._lines import SHOWN, lines
from shim.dataplane.scratch import remove_scratch, scratch
from shim.dataplane.stopping import ROUTES_FILE, stop_taking_calls
from shim.dataplane.targets import check_targets
from shim.errors import StartupError, how_it_ended

PLANE_ENV = "SHIM_COMPARISON_PLANE"  # set for the child: the folder it shares with Envoy
RESTART_MIN, RESTART_MAX = 0.1, 5.0
_log = structlog.get_logger("shim.supervisor")


def supervise(config: Config, argv: Sequence[str]) -> int:
    """Run the comparison plane (`shim serve ARGV` in a child process) and Envoy until a signal."""
    from shim.logs import configure

    configure()
    executable = envoy_process.binary()
    assert executable is not None  # the data plane chosen is Envoy's
    check_targets(config)  # an upstream target Envoy cannot use, and a taken port: clear errors before
    check_listen(config.serving.listen)  # anything starts
    folder = scratch()
    try:
        in_force.keep(folder, config)  # what every plane runs on, the first one included (`in_force`)
        return asyncio.run(Supervisor(config, list(argv), executable, folder).run())
    finally:
        remove_scratch(folder)


class Supervisor:
    def __init__(self, config: Config, argv: list[str], executable: str, folder: Path) -> None:
        self._config = config
        self._argv = argv
        self._executable = executable
        self._folder = folder
        self._stop = asyncio.Event()
        self._stop_at = 0.0  # when the stop came (time.monotonic()): the grace period runs from then
        self._plane: asyncio.subprocess.Process | None = None
        self._plane_serves = False  # the plane has said "ready": it takes a SIGHUP (it reloads)
        self._hangup_due = False  # a SIGHUP came while the plane started: passed on once it serves
        self.restarts = 0
        self._relays: set[asyncio.Task[None]] = set()  # its log lines, until each plane's stderr ends

    async def _spawn(self) -> asyncio.subprocess.Process:
        # the plane dies with the supervisor (setpriv --pdeathsig), and a Ctrl-C in the terminal is the
        # supervisor's to pass on (its own process group): the plane gets each signal once. Not its own
        # session: where Linux groups the scheduling by session (autogroup), a plane in a session of its own
        # would get a whole session's share of the CPU, and its nice value (`[envoy] comparison_nice`)
        # would only rank it against itself, not against the clients' path
        setpriv = shutil.which("setpriv")
        guard = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
        # the plane starts below Envoy's CPU priority, as it then runs (shim.dataplane.priority)
        nice, by = shutil.which("nice"), self._config.envoy.comparison_nice
        guard += [nice, "-n", str(by)] if nice and by else []
        self._plane_serves = False
        with _hangups.held():  # a SIGHUP the plane gets before its code runs is recorded, not its end
            plane = await self._exec(guard)
        relay = asyncio.get_running_loop().create_task(self._relay(plane), name="plane log")
        self._relays.add(relay)
        relay.add_done_callback(self._relays.discard)
        return plane

    async def _exec(self, guard: list[str]) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *guard,
            sys.executable,
            "-m",
            "shim",
            *self._argv,
            env={**os.environ, PLANE_ENV: str(self._folder)},
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            process_group=0,
        )

    async def _relay(self, plane: asyncio.subprocess.Process) -> None:
        """The plane's log lines, passed on as they are; a line that is not one of its JSON events (what
        Python's resource tracker says of a killed plane, say) becomes one, so that stderr stays one JSON
        event per line, with the line's start only (`SHOWN` characters) when it is longer."""
        assert plane.stderr is not None
        async for raw, length in lines(plane.stderr):  # a line of any length: cut, and the reading goes on
            line = raw.decode(errors="replace")
            if length > len(raw) or not _ours(line):
                if line.strip():
                    said = {"cut_from": length} if length > SHOWN else {}  # its length, when cut
                    _log.warning("the comparison plane said", text=line[:SHOWN], pid=plane.pid, **said)
                continue
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
            if plane is self._plane and not self._plane_serves and _says_ready(line):
                self._serves(plane)

    def _serves(self, plane: asyncio.subprocess.Process) -> None:
        """The plane serves: it takes SIGHUP from now on, and gets the one that came while it started."""
        self._plane_serves = True
        if self._hangup_due:
            self._hangup_due = False
            self._signal(signal.SIGHUP)

    def _signal(self, signum: int) -> None:
        plane = self._plane
        if signum == signal.SIGHUP and not self._plane_serves:  # its default action would end the plane
            self._hangup_due = True
            return
        if plane is not None and plane.returncode is None:
            # a stop is SIGTERM to the plane, SIGINT too: the plane takes both alike, and one that has no
            # handler yet (still starting) ends quietly on SIGTERM, where SIGINT would print a traceback
            with contextlib.suppress(ProcessLookupError):
                plane.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)
        if signum == signal.SIGHUP:
            return
        if self._stop.is_set():  # a second signal: leave at once, as the plane does (Envoy dies with us)
            remove_scratch(self._folder)
            os._exit(128 + signum)
        self._stop_at = time.monotonic()
        self._stop.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._signal, signum)
        if _hangups.take():  # recorded while `shim serve` started: passed on once the plane serves
            self._hangup_due = True
        self._plane = plane = await self._spawn()
        ready = self._folder / PLANE_READY
        while not ready.exists():  # the plane writes Envoy's files, then waits for Envoy
            if self._stop.is_set():
                status = await plane.wait()
                await self._relayed()
                return 0 if status < 0 else status  # < 0: ended by the stop passed on, before its handlers
            if plane.returncode is not None:
                await self._relayed()
                if plane.returncode < 0:  # killed, with no word of its own
                    raise StartupError(
                        f"the comparison plane {how_it_ended(plane.returncode)} before it was ready"
                    )
                return plane.returncode  # it said why on its stderr
            await asyncio.sleep(0.02)
        envoy = envoy_process.Envoy(
            self._executable, self._folder / BOOTSTRAP, concurrency=self._config.envoy.concurrency
        )
        try:
            await envoy.validate()
            await envoy.start()
        except StartupError:
            self._signal(signal.SIGTERM)
            await plane.wait()
            raise
        try:
            await self._keep_plane_running(envoy)
        finally:
            await envoy.stop()
            await self._relayed()
        return 0

    async def _relayed(self) -> None:
        """The plane's last log lines, passed on (its stderr ends with it and its helper processes)."""
        if self._relays:
            await asyncio.wait(set(self._relays), timeout=10.0)

    async def _keep_plane_running(self, envoy: envoy_process.Envoy) -> None:
        pause = RESTART_MIN
        stopping = asyncio.create_task(self._stop.wait(), name="supervisor stop")
        try:
            while True:
                plane = self._plane
                assert plane is not None
                started = time.monotonic()
                exited = asyncio.create_task(plane.wait(), name="comparison plane")
                await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if self._stop.is_set():
                    await self._stop_plane(envoy, exited)
                    return
                if time.monotonic() - started > 60:
                    pause = RESTART_MIN
                _log.error(
                    "the comparison plane exited; Envoy serves the clients on; the plane is started again",
                    status=plane.returncode,
                    after=round(pause, 2),
                )
                with contextlib.suppress(TimeoutError):
                    await bounded(asyncio.shield(stopping), pause)
                if self._stop.is_set():  # no plane runs: Envoy is drained here
                    await self._drain(envoy)
                    return
                pause = min(pause * 2, RESTART_MAX)
                self._plane = await self._spawn()
                self.restarts += 1
        finally:
            stopping.cancel()

    async def _stop_plane(self, envoy: envoy_process.Envoy, exited: asyncio.Task[int]) -> None:
        """The plane got the stop too: one that serves drains Envoy and stops; with none serving (it died,
        or is started again and not yet serving), or one that dies as it drains, the supervisor drains
        Envoy (in what is left of the grace period)."""
        if self._plane_serves and not exited.done() and await exited == 0:
            return
        await self._drain(envoy)
        await exited

    async def _drain(self, envoy: envoy_process.Envoy) -> None:
        """Envoy takes no new call, and the calls in flight get what is left of the grace period (from the
        stop's signal), as a plane serving would have it (`shim.dataplane.stopping`)."""
        _log.warning(
            "stopping while no comparison plane serves: Envoy is drained by the supervisor; the calls it"
            " carried since the plane last served are not compared",
            grace_period=self._config.serving.grace_period,
        )
        version = 0
        with contextlib.suppress(OSError, ValueError):
            version = int(await envoy.route_version() or 0)
        left = self._stop_at + self._config.serving.grace_period - time.monotonic()
        await stop_taking_calls(envoy, self._folder / ROUTES_FILE, version + 1, max(left, 0.0))


def _says_ready(line: str) -> bool:
    """The plane's "ready" event: it serves, and has its SIGHUP handler."""
    if '"ready"' not in line:
        return False
    try:
        event = json.loads(line)
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("event") == "ready"


def _ours(line: str) -> bool:
    """A line the plane writes itself: one of its JSON events, or a start error's one line."""
    if line.startswith("shim: error: "):
        return True
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
