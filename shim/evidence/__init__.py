"""The evidence in the store, counted: what `shim report` shows and `shim gate` judges.

- `model`: the report's frozen values (`Report`, `MethodReport`, `CallRecord`, ...);
- `queries`: `build_report`, the counting queries;
- `tally`: what the queries count for one method, and its `MethodReport`;
- `noise`: which differences Bank's own differences explain;
- `record`: a comparison as the store keeps it, and the sink that stores it.
"""

from shim.evidence.model import (
    BUCKETS,
    COMPARED,
    LOST,
    Bucket,
    CallRecord,
    CodePair,
    Latency,
    MethodReport,
    PathStat,
    ReplicaSeen,
    ReplicaShare,
    Report,
    TaintedPath,
    method_name,
    rfc3339,
)
from shim.evidence.noise import classify
from shim.evidence.queries import build_report
from shim.evidence.tally import percentile

__all__ = [
    "BUCKETS",
    "COMPARED",
    "LOST",
    "Bucket",
    "CallRecord",
    "CodePair",
    "Latency",
    "MethodReport",
    "PathStat",
    "ReplicaSeen",
    "ReplicaShare",
    "Report",
    "TaintedPath",
    "build_report",
    "classify",
    "method_name",
    "percentile",
    "rfc3339",
]
