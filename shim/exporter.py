"""Prometheus metrics (`metrics_listen`, `--metrics HOST:PORT`), read when scraped.

The hot path only counts: `Counters` (every event, per method) and one
histogram bucket per call for the primary's latency (`Latencies`, the event
loop thread alone writes it). Comparisons are counted by `VerdictCounts`, a sink
(the comparison pipeline's thread). Everything else (what is in flight, queued,
the breaker, the mode) is read from the running shim at scrape time.

Clients choose the method names they call: every `method` label goes through the
shim's `MethodLabels` (shim.metrics). With descriptors, a method they do not
describe counts as method="(not described)"; without, the first 1,000 methods
are labelled by name and later ones as method="(other)". So the series stay
bounded whatever names clients make up.

    shim_calls_total{method}                       calls served
    shim_events_total{event,method}                everything else the shim counts: shadow_dropped,
                                                   shadow_shed, shadow_breaker_skipped, adapter_errors,
                                                   comparisons_dropped, comparison_errors, store_dropped,
                                                   noise_calls, ...
    shim_comparisons_total{method,verdict}         match, mismatch, tainted, shadow-error, skipped, error
    shim_differences_total{method,kind}            real differences, by kind (changed, status, ...)
    shim_primary_latency_seconds{method}           histogram: the primary's answer, as the shim saw it
    shim_shadow_latency_seconds{method}            histogram: the shadow's answer to mirrored calls
    shim_shadow_in_flight                          mirrored calls in flight
    shim_comparisons_pending                       exchanges waiting for a comparison worker
    shim_store_backlog                             comparisons waiting for the store
    shim_shadow_breaker_open                       1 while the shadow breaker is not closed (open, or
                                                   half-open: at most its one probe is mirrored)
    shim_event_loop_lag_seconds                    how late the event loop runs (see shed_lag)
    shim_shedding_armed                            1 once the start-up is over: reads are shed when behind
    shim_mode{mode}                                1 for the mode the shim runs in
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from comparators import Comparison
from shim.front import Front
from shim.metrics import Counters, MethodLabels

_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Latencies:
    """Per-method latency histograms with fixed buckets: a bisect and two additions per call. A method
    is counted under its label (`labels`), so there are as many histograms as labels at most."""

    def __init__(self, labels: MethodLabels | None = None) -> None:
        self._labels = labels if labels is not None else MethodLabels()
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe(self, method: str, seconds: float) -> None:
        method = self._labels(method)
        counts = self._counts.get(method)
        if counts is None:
            counts = self._counts[method] = [0] * (len(_BOUNDS) + 1)
        counts[bisect.bisect_left(_BOUNDS, seconds)] += 1
        self._sums[method] = self._sums.get(method, 0.0) + seconds

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=["method"])
        for method, counts in list(self._counts.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*_BOUNDS, float("inf")), list(counts), strict=True):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            family.add_metric([method], buckets, self._sums[method])
        return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class VerdictCounts:
    """A sink: comparisons by verdict, real differences by kind, and the shadow's latency, by method
    label (`labels`)."""

    def __init__(self, labels: MethodLabels | None = None) -> None:
        self._labels = labels if labels is not None else MethodLabels()
        self._lock = threading.Lock()
        self.verdicts: Counter[tuple[str, str]] = Counter()
        self.differences: Counter[tuple[str, str]] = Counter()
        self.shadow = Latencies(self._labels)

    def __call__(self, comparison: Comparison) -> None:
        method = self._labels(comparison.method)
        shadow = comparison.exchange.shadow
        with self._lock:
            self.verdicts[method, comparison.verdict.value] += 1
            for difference in comparison.real_differences:
                self.differences[method, difference.kind.value] += 1
            if shadow is not None and not shadow.local:
                self.shadow.observe(method, shadow.latency)

    def snapshot(
        self,
    ) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int], HistogramMetricFamily]:
        with self._lock:
            family = self.shadow.family(
                "shim_shadow_latency_seconds", "The shadow's answer to mirrored calls, by method"
            )
            return dict(self.verdicts), dict(self.differences), family


class _Breaker(Protocol):
    @property
    def state(self) -> str: ...


class _Mirroring(Protocol):
    @property
    def in_flight(self) -> int: ...
    @property
    def breaker(self) -> _Breaker: ...


class _Pending(Protocol):
    @property
    def pending(self) -> int: ...


class _Backlog(Protocol):
    @property
    def backlog(self) -> int: ...


class _Lag(Protocol):
    @property
    def measured(self) -> float: ...
    @property
    def settled(self) -> bool: ...


class _Modes(Protocol):
    def table(self) -> dict[str, str]: ...
    @property
    def pauses(self) -> Sequence[float]: ...
    @property
    def switches(self) -> Mapping[str, int]: ...


class _Counted(Protocol):
    """What the parts made at start count (`shim.parts.Parts`)."""

    @property
    def counters(self) -> Counters: ...
    @property
    def method_labels(self) -> MethodLabels: ...
    @property
    def verdict_counts(self) -> VerdictCounts: ...
    @property
    def primary_latencies(self) -> Latencies: ...


class Observed(Protocol):
    """What the metrics read of a running shim (`shim.app.Shim`)."""

    @property
    def parts(self) -> _Counted: ...
    @property
    def dispatchers(self) -> Mapping[str, _Mirroring]: ...
    @property
    def pipeline(self) -> _Pending | None: ...
    @property
    def store(self) -> _Backlog | None: ...
    @property
    def loop_lag(self) -> _Lag: ...
    @property
    def modes(self) -> _Modes: ...
    @property
    def front(self) -> Front | None: ...


class _ShimCollector(Collector):
    def __init__(self, shim: Observed) -> None:
        self._shim = shim

    def collect(self) -> Iterator[Any]:
        shim = self._shim
        calls = CounterMetricFamily("shim_calls", "Calls served, by method", labels=["method"])
        events = CounterMetricFamily(
            "shim_events", "Everything else the shim counts, by event and method", labels=["event", "method"]
        )
        labelled: Counter[tuple[str, str]] = Counter()
        for (name, method), value in shim.parts.counters.snapshot().items():
            labelled[name, shim.parts.method_labels(method)] += value
        for (name, method), value in labelled.items():
            if name == "calls":
                calls.add_metric([method], value)
            else:
                events.add_metric([name, method], value)
        yield calls
        yield events
        verdicts, differences, shadow = shim.parts.verdict_counts.snapshot()
        comparisons = CounterMetricFamily(
            "shim_comparisons", "Comparisons, by method and verdict", labels=["method", "verdict"]
        )
        for (method, verdict), value in verdicts.items():
            comparisons.add_metric([method, verdict], value)
        yield comparisons
        kinds = CounterMetricFamily(
            "shim_differences", "Real differences, by method and kind", labels=["method", "kind"]
        )
        for (method, kind), value in differences.items():
            kinds.add_metric([method, kind], value)
        yield kinds
        yield shim.parts.primary_latencies.family(
            "shim_primary_latency_seconds", "The primary's answer as the shim saw it, by method"
        )
        yield shadow
        dispatchers, pipeline, store = list(shim.dispatchers.values()), shim.pipeline, shim.store
        in_flight = sum(d.in_flight for d in dispatchers)
        yield _gauge("shim_shadow_in_flight", "Mirrored calls in flight", in_flight)
        yield _gauge(
            "shim_comparisons_pending",
            "Exchanges waiting for a comparison worker",
            pipeline.pending if pipeline else 0,
        )
        yield _gauge("shim_store_backlog", "Comparisons waiting for the store", store.backlog if store else 0)
        breaker_open = any(d.breaker.state != "closed" for d in dispatchers)  # half-open mirrors a probe only
        yield _gauge(
            "shim_shadow_breaker_open",
            "1 while the shadow breaker is not closed (open, or half-open: at most its probe is mirrored)",
            int(breaker_open),
        )
        yield _gauge("shim_event_loop_lag_seconds", "How late the event loop runs", shim.loop_lag.measured)
        yield _gauge(
            "shim_shedding_armed",
            "1 once the start-up is over and the shim sheds reads when behind (see shed_lag)",
            int(shim.loop_lag.settled),
        )
        mode = GaugeMetricFamily(
            "shim_mode", 'The mode of each scope ("*": the default, else a method)', labels=["scope", "mode"]
        )
        for scope, current in shim.modes.table().items():
            mode.add_metric([scope, current], 1)
        yield mode
        pauses = list(shim.modes.pauses)
        yield _gauge(
            "shim_switch_pause_max_seconds",
            "The longest time new calls waited for a switch of modes, over the last 100 (applied or refused)",
            max(pauses, default=0.0),
        )
        switches = CounterMetricFamily(
            "shim_switches",
            "Mode switches that held new calls here: applied, or refused (nothing changed)",
            labels=["outcome"],
        )
        for outcome in ("applied", "refused"):
            switches.add_metric([outcome], shim.modes.switches.get(outcome, 0))
        yield switches
        if shim.front is not None:
            yield from shim.front.metrics()


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class Exporter:
    """The metrics endpoint of one shim (its own registry: several shims in a process stay apart)."""

    def __init__(self, shim: Observed, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ShimCollector(shim))
        self._server, self._thread = start_http_server(
            int(port), addr=host.strip("[]"), registry=self.registry
        )
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
