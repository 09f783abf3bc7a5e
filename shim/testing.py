"""Test doubles shipped with the shim: real implementations, for tests of the
shim and of code that embeds it.

    async with running_shim(bank="127.0.0.1:5001", bk="127.0.0.1:5002") as (shim, sink):
        ...  # call shim.address
        comparisons = await sink.wait_for(1)
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from comparators import Comparison, DescriptorRegistry
from shim import dataplane
from shim.app import Shim
from shim.config import Upstream, build, merged
from shim.pipeline import Sink


class CapturingSink:
    """Keeps every comparison it receives; tests wait for them without sleeping."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: list[Comparison] = []

    def __call__(self, comparison: Comparison) -> None:
        with self._cond:
            self._items.append(comparison)
            self._cond.notify_all()

    @property
    def comparisons(self) -> list[Comparison]:
        with self._cond:
            return list(self._items)

    async def wait_for(
        self, count: int, within: float = 10.0, where: Callable[[Comparison], bool] | None = None
    ) -> list[Comparison]:
        """The comparisons (matching `where`) once there are at least `count` of them.

        Raises TimeoutError when they do not arrive `within` seconds.
        """

        def enough() -> bool:
            return len([c for c in self._items if where is None or where(c)]) >= count

        def wait() -> bool:
            with self._cond:
                return self._cond.wait_for(enough, timeout=within)

        if not await asyncio.to_thread(wait):
            raise TimeoutError(f"{len(self.comparisons)} comparisons after {within}s, wanted {count}")
        return [c for c in self.comparisons if where is None or where(c)]


_TEST_DEFAULTS: dict[str, dict[str, Any]] = {
    "comparison": {"executor": "thread"},
    "store": {"url": ":memory:"},
    # a busy test machine can make any loop late: only the tests of shedding want it on
    "shadow": {"shed_lag": 0.0},
    # the test's own process is the shim's: its threads keep their priority
    "envoy": {"comparison_nice": 0},
}


@contextlib.asynccontextmanager
async def running_shim(
    bank: str | Upstream,
    bk: str | Upstream | None = None,
    *,
    mode: str | None = None,
    sinks: Sequence[Sink] = (),
    registry: DescriptorRegistry | None = None,
    shadow_timeout: float = 2.0,
    **settings: Any,
) -> AsyncIterator[tuple[Shim, CapturingSink]]:
    """A shim on a free loopback port in front of `bank` (and `bk`), stopped on exit.

    An upstream is an address, or an Upstream (for its TLS settings, say).

    `settings` are the Config's; a table may be given as a dict of the values it changes
    (`shadow={"max_in_flight": 4}`), over the test defaults below. Comparisons run in a thread
    unless `comparison={"executor": "process"}` is given: a worker process takes a second to
    start, too long for most tests. The store is in memory unless `store={"url": ...}` names one.
    Mirrors are never shed for overload unless `shadow={"shed_lag": ...}` says when. A test starts in the
    mode it names, as `shim serve --force` would (`forced_start=False`: guarded as `shim serve` is).
    """
    if isinstance(bk, str):
        bk = Upstream("bk", bk, timeout=shadow_timeout)
    sink = CapturingSink()
    given = {
        "bank": bank if isinstance(bank, Upstream) else Upstream("bank", bank),
        "bk": bk,
        "listen": "127.0.0.1:0",
        "mode": mode or ("shadow" if bk else "bank"),
        "serving": {"forced_start": settings.pop("forced_start", True)},
    }
    config = build(merged(_TEST_DEFAULTS, settings, given))
    if config.serving.dataplane == "auto":  # the Python data plane unless a test asks for Envoy
        config = replace(config, serving=replace(config.serving, dataplane="python"))
    shim = (await dataplane.start(config, [sink, *sinks], registry)).shim
    try:
        yield shim, sink
    finally:
        await shim.stop(grace=0.5)


@contextlib.contextmanager
def postgres_schema(dsn: str, prefix: str = "t") -> Iterator[str]:
    """A store url of the PostgreSQL database `dsn` names whose search_path is a new schema (its tables
    apart from everything else there), dropped on exit."""
    import psycopg  # only where PostgreSQL is used

    schema = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}".encode())
    separator = "&" if "?" in dsn else "?"
    try:
        yield f"{dsn}{separator}options={quote(f'-c search_path={schema}', safe='')}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE".encode())
