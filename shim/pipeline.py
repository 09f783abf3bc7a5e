"""Comparison off the event loop: exchanges in, comparisons out to the sinks.

Over 400 lines: one exchange's whole way (submitted, batched to a worker, compared, sunk, counted when
dropped) with the settings and the worker processes it runs in, read top to bottom.

`submit` is called on the event loop and never blocks. The exchange is compared by a worker, then every
sink runs in a thread of its own; nothing of this runs on the event loop. When more than `max_pending`
exchanges wait, further ones are dropped and counted. A failing sink is logged and counted, never raised
into the shim.

Workers are processes by default (`comparison.executor = "process"`): a comparison holds the GIL for as
long as it walks, and a thread worker with a backlog starves the event loop that serves clients
(bench/compare.py measures it: loop stalls of seconds with a thread, tens of milliseconds with a process,
for the same throughput). Each worker process builds its own descriptor registry and rules once, from the
shim's; exchanges go to it pickled and only the verdict and differences come back. `"thread"` keeps
everything in one process (tests, small deployments).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import structlog

from comparators import Comparison, DescriptorRegistry, Difference, Exchange, Verdict, compare, hashed_quotes
from comparators.ids import IdFields, IdKind
from comparators.redact import Redactor
from comparators.rules import RuleSet, build_rules
from shim._orphans import deaf_to_ctrl_c, die_with_parent, leave_ctrl_c_to_parent
from shim.errors import ConfigError
from shim.logs import raised
from shim.metrics import Counters
from shim.serving_settings import WORKERS
from shim.settings import FIELDS, POSITIVE, TEXT, one_of, setting

Sink = Callable[[Comparison], None]  # one with a `batch(comparisons)` method is given whole batches too
Verdicts = tuple[Verdict, tuple[Difference, ...], str, bool, tuple[Difference, ...]]

EXECUTORS = ("process", "thread")

_log = structlog.get_logger("shim.pipeline")


@dataclass(frozen=True, slots=True)
class ComparisonSettings:
    """Where comparisons run, and how many may wait for them."""

    SECTION: ClassVar[str] = "comparison"
    max_pending: int = setting(
        10_000, POSITIVE, "exchanges waiting for a comparison worker; beyond, dropped and counted"
    )
    executor: str = setting(
        "process", one_of(*EXECUTORS), "where comparisons run: worker processes, or threads of the shim's"
    )
    workers: int = setting(1, WORKERS, "comparison workers")

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"comparison.executor: {self.executor!r} is not one of {', '.join(EXECUTORS)}")


@dataclass(frozen=True, slots=True)
class RedactSettings:
    """Values never shown: in the diff log, the store, recordings and reports a redacted field is a keyed
    hash, so equal values stay equal, also when packed in a `google.protobuf.Any` (rich error details);
    an Any of a type the descriptors do not know is hashed whole (`docs/store.md`)."""

    SECTION: ClassVar[str] = "redact"
    fields: tuple[str, ...] = setting(
        (), FIELDS, 'fields ("package.Message.field") whose values are never shown'
    )
    key_env: str = setting("SHIM_REDACT_KEY", TEXT, "the environment variable holding the key of the hash")


@dataclass(frozen=True)
class WorkerSetup:
    """What a worker process needs to compare as the shim does."""

    descriptor_set: bytes | None  # a serialized FileDescriptorSet
    rules: tuple[dict[str, Any], ...]
    rule_locations: tuple[str, ...]
    ids: tuple[IdKind, ...] = ()
    redact: tuple[str, ...] = ()
    redact_key: bytes = b""


_BATCH = 64  # exchanges handed to a worker process at once, at most
# ... and how long the first waits for others: a hand-over costs about as much as comparing, and no client
# waits on a comparison (50 ms, not 5: a sixth less of the plane's CPU a call, docs/performance.md)
GATHER = 0.05

_worker: tuple[DescriptorRegistry | None, RuleSet | None, IdFields | None, Redactor | None] = (
    None,
    None,
    None,
    None,
)


def _init_worker(setup: WorkerSetup) -> None:
    leave_ctrl_c_to_parent()  # the shim ends its pool: a terminal's Ctrl-C is not this process's to take
    die_with_parent()  # a shim killed with -9 leaves no worker behind
    from google.protobuf import descriptor_pb2

    from shim.units import parse_duration

    global _worker
    registry = None
    if setup.descriptor_set is not None:
        registry = DescriptorRegistry()
        registry.add_set(descriptor_pb2.FileDescriptorSet.FromString(setup.descriptor_set), source="shim")
    rules = build_rules(setup.rules, registry, parse_duration, setup.rule_locations)
    ids = IdFields(setup.ids, registry) if setup.ids and registry is not None else None
    redactor = (
        Redactor(setup.redact, registry, setup.redact_key) if setup.redact and registry is not None else None
    )
    _worker = (registry, rules, ids, redactor)


def _compare_in_worker(exchanges: list[Exchange]) -> list[Verdicts | Exception]:
    """Each exchange's verdicts, or the error its comparison raised."""
    registry, rules, ids, redactor = _worker
    out: list[Verdicts | Exception] = []
    for exchange in exchanges:
        try:
            c = compare(exchange, registry, rules, ids, redactor)
        except Exception as error:
            out.append(error)
        else:
            out.append((c.verdict, c.differences, c.reason, c.decoded, c.noise))
    return out


def _ready() -> None:
    """Nothing: run once by each worker process to have it started and set up."""


def _failed(exchange: Exchange, error: str) -> Comparison:
    """A comparison that could not be made (`error`: what was raised, as shown): stored as an `error`, which
    counts against the gate."""
    return Comparison(exchange, Verdict.ERROR, reason=f"the comparison failed: {error}")


class ComparisonPipeline:
    def __init__(
        self,
        registry: DescriptorRegistry | None,
        sinks: Sequence[Sink],
        counters: Counters,
        max_pending: int = 10_000,
        workers: int = 1,
        rules: RuleSet | None = None,
        executor: str = "thread",
        setup: WorkerSetup | None = None,
        ids: IdFields | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        if executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, not {executor!r}")
        if executor == "process" and setup is None:
            raise ValueError("a process executor needs a WorkerSetup")
        self._rules = rules
        self._registry = registry
        self._ids = ids
        self._redactor = redactor
        self._sinks = list(sinks)
        self._counters = counters
        self._max_pending = max_pending
        self._workers = workers
        self._setup = setup
        self._sink_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sinks")
        self._compare_pool: concurrent.futures.Executor = (
            self._new_process_pool() if executor == "process" else self._sink_pool
        )
        self._executor = executor
        self._batch: list[tuple[Exchange, Callable[[], None] | None]] = []  # to hand to a worker process
        self._pending = 0
        self.submitted = self.finished = 0  # exchanges handed in; those over (sunk, or dropped): a barrier
        self._idle = asyncio.Event()
        self._idle.set()

    def _new_process_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        # spawn, never fork: a forked child would inherit grpc's threads and state
        setup = self._setup
        assert setup is not None
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=functools.partial(_init_worker, setup),
        )

    @property
    def pending(self) -> int:
        return self._pending

    async def start(self) -> None:
        """Start the worker processes now rather than at the first comparisons: a process starting
        (an interpreter, its imports, the descriptors and rules) would make those late."""
        if self._executor != "process":
            return
        loop = asyncio.get_running_loop()
        try:
            with deaf_to_ctrl_c():  # the pool's processes start now (see shim._orphans)
                started = [loop.run_in_executor(self._compare_pool, _ready) for _ in range(self._workers)]
            await asyncio.gather(*started)
        except (concurrent.futures.BrokenExecutor, OSError) as exc:
            _log.warning(
                "comparison worker did not start; another starts at the next comparison", error=repr(exc)
            )
            self._compare_pool = self._new_process_pool()

    def update_rules(self, rules: RuleSet, setup: WorkerSetup | None) -> None:
        """Compare with `rules` from now on (a config reload). Comparisons already handed to a worker
        finish with the rules they started with; a worker process pool is replaced by one set up
        with the new rules, the old one finishing what it has."""
        self._rules = rules
        if self._executor != "process":
            return
        assert setup is not None
        self._setup = setup
        old, self._compare_pool = self._compare_pool, self._new_process_pool()
        old.shutdown(wait=False)

    def submit(self, exchange: Exchange, done: Callable[[], None] | None = None) -> None:
        """Compare `exchange` and hand the comparison to the sinks; `done()` is called once it is over (or
        dropped), when its bytes are no longer held."""
        if self._pending >= self._max_pending:
            self._counters.inc("comparisons_dropped", exchange.method)
            if done is not None:
                done()
            return
        self._pending += 1
        self.submitted += 1
        self._idle.clear()
        loop = asyncio.get_running_loop()
        if self._executor == "thread":
            try:
                future = loop.run_in_executor(self._sink_pool, self._compare_and_sink, exchange)
            except RuntimeError:  # the pipeline was closed (the shim stops): nothing more is compared
                self._finish(exchange, None, done)
                return
            future.add_done_callback(lambda f: self._done(exchange, f, done))
            return
        # the exchanges submitted within `GATHER` go to a worker together: one hand-over (its pickling, the
        # pool's threads, the loop woken) for many comparisons under load
        if not self._batch:
            loop.call_later(GATHER, self._hand_over)
        self._batch.append((exchange, done))
        if len(self._batch) >= _BATCH:
            self._hand_over()

    def _hand_over(self) -> None:
        batch, self._batch = self._batch, []
        if batch:
            self._to_worker(batch)

    def _to_worker(self, batch: list[tuple[Exchange, Callable[[], None] | None]]) -> None:
        exchanges = [exchange for exchange, _ in batch]
        loop = asyncio.get_running_loop()
        try:
            # a new pool's processes start as it is handed work (its queues started the resource tracker)
            with deaf_to_ctrl_c(tracker=False):
                try:
                    compared = loop.run_in_executor(self._compare_pool, _compare_in_worker, exchanges)
                except concurrent.futures.BrokenExecutor:
                    self._compare_pool = self._new_process_pool()  # a worker died: start afresh
                    compared = loop.run_in_executor(self._compare_pool, _compare_in_worker, exchanges)
        except RuntimeError:  # the pipeline was closed meanwhile (the shim stops): nothing more is compared
            for exchange, done in batch:
                self._counters.inc("comparisons_dropped", exchange.method)
                if done is not None:
                    done()
            self._pending -= len(batch)
            self.finished += len(batch)
            if self._pending == 0:
                self._idle.set()
            return
        compared.add_done_callback(lambda f: self._compared(batch, f))

    def _compared(
        self,
        batch: list[tuple[Exchange, Callable[[], None] | None]],
        future: asyncio.Future[list[Verdicts | Exception]],
    ) -> None:
        if future.cancelled():  # the pipeline closed (the shim stops) before a worker took the batch
            for exchange, done in batch:
                self._finish(exchange, None, done)
            return
        error = future.exception()
        if isinstance(error, concurrent.futures.BrokenExecutor):
            self._compare_pool = self._new_process_pool()
        elif error is not None and len(batch) > 1:
            # the batch failed as a whole (its results could not be handed back, say): each again on its
            # own, so that one odd comparison fails alone, not every call compared beside it
            said = repr(error)
            for exchange, _ in batch:
                said = self._said(exchange, said)
            _log.warning("comparison batch failed; comparing each on its own", error=said)
            for one in batch:
                self._to_worker([one])
            return
        results: list[Verdicts | BaseException] = (
            list(future.result()) if error is None else [error] * len(batch)
        )
        comparisons = []
        for (exchange, _), result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                said = self._said(exchange, repr(result))
                _log.error("comparison failed", method=exchange.method, error=said)
                self._counters.inc("comparison_errors", exchange.method)
                comparisons.append(_failed(exchange, said))
            else:
                verdict, differences, reason, decoded, noise = result
                comparisons.append(Comparison(exchange, verdict, differences, reason, decoded, noise))
        try:
            sunk = asyncio.get_running_loop().run_in_executor(self._sink_pool, self._sink_each, comparisons)
        except RuntimeError:  # compared as the pipeline closed: the sinks take nothing more
            for exchange, done in batch:
                self._finish(exchange, None, done)
            return
        sunk.add_done_callback(lambda f: self._all_done(f, comparisons, [done for _, done in batch]))

    def _sink_each(self, comparisons: list[Comparison]) -> None:
        """A batch the worker answered, to each sink in turn: whole to a sink that takes batches (`batch`,
        the store's: one write for them all), one by one to the others."""
        for sink in self._sinks:
            batch = getattr(sink, "batch", None)
            for given in [comparisons] if batch is not None else comparisons:
                _sink(batch or sink, given)

    def _all_done(
        self,
        future: asyncio.Future[None],
        comparisons: list[Comparison],
        dones: list[Callable[[], None] | None],
    ) -> None:
        for comparison, done in zip(comparisons, dones, strict=True):
            self._finish(comparison.exchange, None if future.cancelled() else comparison, done)

    def _done(
        self,
        exchange: Exchange,
        future: asyncio.Future[Comparison] | asyncio.Future[Comparison | None],
        done: Callable[[], None] | None = None,
    ) -> None:
        self._finish(exchange, None if future.cancelled() else future.result(), done)

    def _finish(
        self, exchange: Exchange, comparison: Comparison | None, done: Callable[[], None] | None = None
    ) -> None:
        """`comparison` is None when it never reached the sinks (the pipeline closed first): it is counted
        dropped, as one beyond `max_pending` is, and so reaches the store's counts and the gate."""
        if done is not None:
            done()
        self._pending -= 1
        self.finished += 1
        if self._pending == 0:
            self._idle.set()
        if comparison is None:
            self._counters.inc("comparisons_dropped", exchange.method)
        else:
            self._counters.inc(f"verdict_{comparison.verdict.value}", comparison.method)

    def _compare_and_sink(self, exchange: Exchange) -> Comparison | None:
        try:
            comparison = compare(exchange, self._registry, self._rules, self._ids, self._redactor)
        except Exception as error:
            said = self._said(exchange, repr(error))
            redacting = self._redactor is not None
            _log.error("comparison failed", method=exchange.method, error=said, **raised(error, redacting))
            self._counters.inc("comparison_errors", exchange.method)
            comparison = _failed(exchange, said)
        self._sink_each([comparison])
        return comparison

    def _said(self, exchange: Exchange, text: str) -> str:
        """Text about `exchange` (an exception met comparing it) as logged and stored: with redaction, the
        values of redacted fields its messages hold hashed where it quotes them."""
        return hashed_quotes(exchange, self._registry, self._redactor, text)

    async def drain(self) -> None:
        """Wait until every submitted exchange has been compared and sunk."""
        await self._idle.wait()

    async def caught_up(self, within: float) -> bool:
        """Whether every exchange submitted by now is over (compared and sunk, or dropped) within `within`
        seconds, however many are submitted meanwhile."""
        target, deadline = self.submitted, time.monotonic() + within
        while self.finished < target and time.monotonic() < deadline:  # noqa: ASYNC110  (a rare wait)
            await asyncio.sleep(0.01)
        return self.finished >= target

    def close(self, wait_for_workers: bool = True) -> None:
        """Stop comparing: the batches a worker has not taken are cancelled, and each of their exchanges is
        counted `comparisons_dropped` under its method (so is one compared too late for the sinks), which the
        store's counts and the gate see. Without `wait_for_workers` (nothing pending), the worker processes
        end on their own, the process's exit waiting for them: a busy machine takes a second or more."""
        if self._compare_pool is not self._sink_pool:
            self._compare_pool.shutdown(wait=wait_for_workers, cancel_futures=True)
        self._sink_pool.shutdown(wait=True)


def _sink(sink: Callable[[Any], None], given: Comparison | list[Comparison]) -> None:
    """Run a sink on a comparison (or a batch): one that fails is logged, never raised into the shim."""
    try:
        sink(given)
    except Exception:
        methods = sorted({c.method for c in given}) if isinstance(given, list) else [given.method]
        _log.exception("sink failed", sink=repr(sink), methods=methods)
