"""Envoy's admin interface, read many times a second by the comparison plane, on kept-alive connections."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
from pathlib import Path

import pytest

from sample_ledger.server import RunningLedger
from shim.dataplane import EnvoyPlane
from shim.dataplane import envoy as envoy_process
from shim.dataplane.envoy_admin import admin_request
from shim.testing import running_shim

pytestmark = pytest.mark.skipif(envoy_process.binary() is None, reason="no Envoy binary on this platform")
CONNECTIONS = "http.admin.downstream_cx_total"


async def test_reads_of_envoys_figures_reuse_their_connections(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """A hundred reads of Envoy's figures, ten at a time, open at most a few connections to its admin
    interface (one each, before: more than the reads themselves cost); each read answers in full."""
    bank, bk = ledgers
    async with running_shim(bank.address, bk.address, dataplane="envoy") as (shim, _):
        plane = shim.front
        assert isinstance(plane, EnvoyPlane)
        envoy = plane.envoy
        assert envoy is not None

        async def opened() -> int:  # counted on a connection of its own, which it adds to the count
            status, body = await admin_request(envoy.admin, f"/stats?filter=^{CONNECTIONS}$")
            assert status == 200
            return int(body.decode().rpartition(": ")[2])

        before = await opened()
        for _ in range(10):
            reads = await asyncio.gather(*(envoy.stats() for _ in range(10)))
            assert all(len(r) > 100 and r[CONNECTIONS] >= before for r in reads)
        assert await opened() - before <= 1 + 10  # the last count's own, and at most one per read at once
        await envoy.stop()  # the kept connections close with it


# run as another user: whether it reaches Envoy's admin interface (a unix socket path, or HOST:PORT)
_REACH = """
import socket, sys
address = sys.argv[1]
try:
    if address.startswith("/"):
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(address)
    else:
        host, _, port = address.rpartition(":")
        conn = socket.create_connection((host, int(port)), timeout=5)
    conn.sendall(b"GET /ready HTTP/1.1\\r\\nHost: envoy\\r\\nConnection: close\\r\\n\\r\\n")
    print(conn.recv(100).split(b"\\r\\n")[0].decode())
except OSError as error:
    print(type(error).__name__)
"""
_SYSTEM_PYTHON = "/usr/bin/python3"  # one another user can run (the tests' own may be out of its reach)


def _listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def _modes(socket_path: str) -> tuple[int, int]:
    """The permissions of a unix socket, and of its folder."""
    path = Path(socket_path)
    assert path.is_socket(), socket_path
    return stat.S_IMODE(path.stat().st_mode), stat.S_IMODE(path.parent.stat().st_mode)


async def test_envoys_admin_interface_is_a_socket_only_the_shims_user_reaches(
    ledgers: tuple[RunningLedger, RunningLedger],
) -> None:
    """Envoy's admin interface takes no token. On loopback at a port, as it was, any process of the host,
    of any user, or of any container of the pod could POST /drain_listeners or /quitquitquit there and stop
    the shim serving. It is a unix socket in the shim's private folder (0700), itself 0600: Envoy listens
    on no TCP port but the clients', and another user's process cannot reach it; the shim's own requests
    (readiness, figures, read shedding, the drain) still do."""
    bank, bk = ledgers
    async with running_shim(bank.address, bk.address, dataplane="envoy") as (shim, _):
        plane = shim.front
        assert isinstance(plane, EnvoyPlane)
        envoy = plane.envoy
        assert envoy is not None
        assert envoy.pid is not None
        assert _listening_tcp_ports(envoy.pid) == {envoy.port}
        assert _modes(envoy.admin) == (0o600, 0o700)  # the socket's, its folder's
        assert (await envoy.stats())["http.shim.downstream_rq_active"] >= 0  # the shim's own reads
        if os.geteuid() == 0 and os.access(_SYSTEM_PYTHON, os.X_OK) and shutil.which("setpriv"):
            another_user = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            reached = await asyncio.create_subprocess_exec(
                *another_user, _SYSTEM_PYTHON, "-c", _REACH, envoy.admin, stdout=asyncio.subprocess.PIPE
            )
            out, _ = await reached.communicate()
            assert out.decode().strip() == "PermissionError"
