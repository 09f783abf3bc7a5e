"""Comparison off the event loop: exchanges in, comparisons out to the sinks.

`submit` is called on the event loop and never blocks: the exchange is handed
to a worker thread that runs `comparators.compare` and then every sink. When
more than `max_pending` exchanges wait, further ones are dropped and counted.
A failing sink is logged and counted, never raised into the shim.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence

import structlog

from comparators import Comparison, DescriptorRegistry, Exchange, compare
from comparators.rules import RuleSet
from shim.metrics import Counters

Sink = Callable[[Comparison], None]

_log = structlog.get_logger("shim.pipeline")


class ComparisonPipeline:
    def __init__(
        self,
        registry: DescriptorRegistry | None,
        sinks: Sequence[Sink],
        counters: Counters,
        max_pending: int = 10_000,
        workers: int = 1,
        rules: RuleSet | None = None,
    ) -> None:
        self._rules = rules
        self._registry = registry
        self._sinks = list(sinks)
        self._counters = counters
        self._max_pending = max_pending
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="compare")
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, exchange: Exchange) -> None:
        if self._pending >= self._max_pending:
            self._counters.inc("comparisons_dropped", exchange.method)
            return
        self._pending += 1
        self._idle.clear()
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._process, exchange)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[Comparison | None]) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()
        if future.cancelled():
            return
        comparison = future.result()
        if comparison is None:
            self._counters.inc("comparison_errors")
        else:
            self._counters.inc(f"verdict_{comparison.verdict.value}", comparison.method)

    def _process(self, exchange: Exchange) -> Comparison | None:
        try:
            comparison = compare(exchange, self._registry, self._rules)
        except Exception:
            _log.exception("comparison failed", method=exchange.method)
            return None
        for sink in self._sinks:
            try:
                sink(comparison)
            except Exception:
                _log.exception("sink failed", sink=repr(sink), method=exchange.method)
        return comparison

    async def drain(self) -> None:
        """Wait until every submitted exchange has been compared and sunk."""
        await self._idle.wait()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
