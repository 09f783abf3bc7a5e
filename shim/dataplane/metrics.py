"""Envoy's stats that matter to the shim's users, as Prometheus metric families.

On the metrics endpoint beside the shim's own (`shim.exporter`):

- `shim_envoy_up`, `shim_envoy_restarts`: the data plane itself;
- `shim_envoy_upstream{cluster, stat}`: calls to Bank, BK and the shim's own server, and how they failed
  (connection failures, resets, timeouts, overflows);
- `shim_envoy_copies{stat}`: the copies sent to the processor (ext_proc): started, failed to open,
  closed by Envoy before the processor took them, messages sent;
- `shim_envoy_downstream{stat}`: the clients' calls and connections (totals and active);
- `shim_envoy_memory_bytes{kind}`: Envoy's heap (allocated, heap size);
- `shim_envoy_shedding_reads`: 1 while Envoy sheds the reads' copies (the plane is behind).
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_UPSTREAM = (
    "upstream_rq_total",
    "upstream_rq_active",
    "upstream_rq_timeout",
    "upstream_rq_rx_reset",
    "upstream_rq_tx_reset",
    "upstream_rq_pending_overflow",
    "upstream_cx_connect_fail",
    "upstream_cx_destroy_remote_with_active_rq",
    "upstream_rq_5xx",
)
_CLUSTERS = ("bank", "bk", "python", "processor")
_COPIES = "http.shim.ext_proc.mirror."
_DOWNSTREAM = ("downstream_rq_total", "downstream_rq_active", "downstream_cx_active", "downstream_rq_5xx")
_GAUGES = {"upstream_rq_active", "downstream_rq_active", "downstream_cx_active"}


# the same stats as a regular expression, for Envoy to pick them (a full read is thousands of stats)
WANTED = (
    rf"^({re.escape(_COPIES)}|server\.memory_"
    rf"|cluster\.({'|'.join(_CLUSTERS)})\.({'|'.join(_UPSTREAM)})$"
    rf"|http\.shim\.({'|'.join(_DOWNSTREAM)})$)"
)


def wanted(name: str) -> bool:
    """Whether Envoy's stat `name` is one the metrics show."""
    if name.startswith(_COPIES) or name.startswith("server.memory_"):
        return True
    if name.startswith("cluster."):
        cluster, _, stat = name[len("cluster.") :].partition(".")
        return cluster in _CLUSTERS and stat in _UPSTREAM
    return name.startswith("http.shim.") and name[len("http.shim.") :] in _DOWNSTREAM


def envoy_metrics(
    stats: dict[str, int], *, up: bool, restarts: int, shedding_reads: bool = False
) -> list[Any]:
    upstream = CounterMetricFamily(
        "shim_envoy_upstream", "Envoy's calls to each cluster, by stat", labels=["cluster", "stat"]
    )
    upstream_active = GaugeMetricFamily(
        "shim_envoy_upstream_active", "Envoy's calls in flight to each cluster", labels=["cluster"]
    )
    copies = CounterMetricFamily(
        "shim_envoy_copies", "Copies of calls sent to the processor", labels=["stat"]
    )
    downstream = CounterMetricFamily("shim_envoy_downstream", "The clients' calls, by stat", labels=["stat"])
    active = GaugeMetricFamily(
        "shim_envoy_downstream_active", "The clients' calls and connections", labels=["what"]
    )
    memory = GaugeMetricFamily("shim_envoy_memory_bytes", "Envoy's heap", labels=["kind"])
    for name, value in sorted(stats.items()):
        if name.startswith(_COPIES):
            copies.add_metric([name[len(_COPIES) :]], value)
        elif name.startswith("server.memory_"):
            memory.add_metric([name[len("server.memory_") :]], value)
        elif name.startswith("cluster."):
            cluster, _, stat = name[len("cluster.") :].partition(".")
            if stat in _GAUGES:
                upstream_active.add_metric([cluster], value)
            else:
                upstream.add_metric([cluster, stat.removeprefix("upstream_")], value)
        elif name.startswith("http.shim."):
            stat = name[len("http.shim.") :]
            if stat in _GAUGES:
                active.add_metric([stat.removeprefix("downstream_").removesuffix("_active")], value)
            else:
                downstream.add_metric([stat.removeprefix("downstream_")], value)
    return [
        GaugeMetricFamily("shim_envoy_up", "1 while Envoy runs", value=int(up)),
        CounterMetricFamily(
            "shim_envoy_restarts", "Times Envoy was started again after it exited", value=restarts
        ),
        upstream,
        upstream_active,
        copies,
        downstream,
        active,
        memory,
        GaugeMetricFamily(
            "shim_envoy_shedding_reads", "1 while Envoy sheds the reads' copies", value=int(shedding_reads)
        ),
    ]
