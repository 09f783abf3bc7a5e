"""Small helpers shared by tests."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.descriptor import FileDescriptor
from prometheus_client.parser import text_string_to_metric_families

from comparators import DescriptorRegistry
from comparators.descriptors import descriptor_set_of as descriptor_set
from shim.app import Shim
from shim.dataplane.envoy import binary as envoy_binary
from shim.evidence.record import CountsFlusher, StoreSink
from shim.store import Store
from shim.testing import CapturingSink, postgres_schema, running_shim

__all__ = ["descriptor_set", "registry_of", "shim_command"]

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_DSN = os.environ.get("SHIM_TEST_POSTGRES_DSN", "")  # a PostgreSQL database the tests may use
NEEDS_POSTGRES = "PostgreSQL tests need SHIM_TEST_POSTGRES_DSN (set by .ci/run)"
NEEDS_ENVOY = pytest.mark.skipif(envoy_binary() is None, reason="no Envoy binary on this platform")
PLANES = ["python", pytest.param("envoy", marks=NEEDS_ENVOY)]  # each data plane (Envoy where it runs)


def registry_of(*files: FileDescriptor) -> DescriptorRegistry:
    registry = DescriptorRegistry()
    registry.add_set(descriptor_set(*files))
    return registry


async def shim_command(*args: str | Path) -> tuple[int | None, str, str]:
    """`python -m shim ARGS` as its own process, while the test's event loop keeps serving its servers:
    (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shim",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    return process.returncode, out.decode(), err.decode()


def run_shim(
    *argv: str | Path, cwd: Path = ROOT, timeout: float = 60.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m shim ARGV` to its end, with no input (in `env`, else this process's environment): its
    exit status and output as text."""
    return subprocess.run(
        [sys.executable, "-m", "shim", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        env=env,
        check=False,
    )


async def until(condition: Callable[[], object], what: str, within: float = 20.0) -> None:
    """Wait for `condition()` to hold (checked every few milliseconds), or fail saying `what`."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.01)


DOCS = Path(__file__).resolve().parent.parent / "docs"


def toml_blocks(page: str, heading: str) -> list[str]:
    """The TOML code blocks of a docs page's section: from `heading` (a whole line, "## Title") to the
    next heading of its level or above."""
    text = (DOCS / page).read_text(encoding="utf-8")
    start = text.index(heading + "\n")
    level = len(heading) - len(heading.lstrip("#"))
    section = text[start + len(heading) :]
    fenced = False
    lines = []
    for line in section.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#") and len(line) - len(line.lstrip("#")) <= level:
            break
        lines.append(line)
    return re.findall(r"```toml\n(.*?)```", "\n".join(lines) + "\n", re.S)


@contextlib.asynccontextmanager
async def replica_of_a_fleet(
    store: Store, name: str, bank: str, bk: str, *, max_buffer: int = 100_000, **settings: Any
) -> AsyncIterator[tuple[Shim, CapturingSink]]:
    """A shim (`running_shim`) whose comparisons go to a shared `store` under the replica `name`, as one
    replica of a fleet stores them: a StoreSink keeping at most `max_buffer` waiting (0: every comparison
    dropped and counted). On leaving, once every call is compared, its counts are written (CountsFlusher)
    and the store is flushed."""
    sink = StoreSink(store, replica=name, max_buffer=max_buffer)
    async with running_shim(bank, bk, sinks=[sink], **settings) as (shim, capturing):
        yield shim, capturing
        await asyncio.wait_for(shim.drain(), timeout=30)
        CountsFlusher(store, shim.counters, sink).flush()
    await store.flush()


@contextlib.contextmanager
def postgres_schema_url() -> Iterator[str]:
    """A url of the database POSTGRES_DSN names whose search_path is a new schema, dropped on exit (the
    test is skipped without SHIM_TEST_POSTGRES_DSN)."""
    if not POSTGRES_DSN:
        pytest.skip(NEEDS_POSTGRES)
    with postgres_schema(POSTGRES_DSN) as url:
        yield url


def scrape_metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The shim's metrics on `port`: (name, sorted labels) -> value, for every sample."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class _UnixHttp(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket: Envoy's admin interface."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("envoy", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def envoy_admin_get(admin: str, path: str, timeout: float = 5.0) -> str:
    """The body of a GET on Envoy's admin interface, whose unix socket is at `admin` (status 200 or an
    AssertionError)."""
    connection = _UnixHttp(admin, timeout)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        body = answer.read().decode()
    finally:
        connection.close()
    assert answer.status == 200, f"Envoy's admin answered {answer.status} to {path}: {body[:200]}"
    return body


@contextlib.contextmanager
def refusing_address() -> Iterator[str]:
    """A loopback address that refuses every connection while the context lasts: a port bound and never
    listened on. A port found free and let go can be taken by another test's server meanwhile, and is then
    reachable."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{held.getsockname()[1]}"
