"""`shim report --json`: the report as JSON values, with a stable schema (docs/report-json.md)."""

from __future__ import annotations

from typing import Any

from shim.evidence import (
    CallRecord,
    MethodReport,
    PathStat,
    ReplicaSeen,
    ReplicaShare,
    Report,
    TaintedPath,
    rfc3339,
)
from shim.store.records import BkBuild

SCHEMA_VERSION = (
    3  # 2: `compared` counts clean comparisons only; 3: a path is listed once per kind of difference
)


def to_json(report: Report) -> dict[str, Any]:
    """The report as JSON values; the schema is in docs/report-json.md."""
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": rfc3339(report.generated_at),
        "window": {"since": rfc3339(report.since), "until": rfc3339(report.until)},
        "store": report.store,
        "noise": {
            "relative": report.relative,
            "absolute": report.absolute,
            "min_sampled": report.min_sampled,
        },
        "methods": [_method_json(m) for m in report.methods],
        "calls": None if report.calls is None else [_call_json(c) for c in report.calls],
        "calls_limit": report.limit,
        "replicas": [_replica_json(r) for r in report.replicas],
        "bk_build": None if report.bk_build is None else _build_json(report.bk_build),
    }


def _build_json(build: BkBuild) -> dict[str, Any]:
    return {"build": build.build, "declared": rfc3339(build.at), "who": build.who, "reason": build.reason}


def _replica_json(r: ReplicaSeen) -> dict[str, Any]:
    return {
        "name": r.name,
        "calls": r.calls,
        "compared": r.compared,
        "first_seen": rfc3339(r.first_seen),
        "last_seen": rfc3339(r.last_seen),
    }


def _share_json(s: ReplicaShare) -> dict[str, Any]:
    return {
        "replica": s.replica,
        "calls": s.calls,
        "compared": s.compared,
        "unproven": s.unproven,
        "tainted": s.tainted,
        "skipped": s.skipped,
        "shadow_errors": s.shadow_errors,
        "errors": s.errors,
        "dropped": s.dropped,
        "dropped_by_name": dict(s.dropped_by_name),
        "lost": s.lost,
        "lost_by_name": dict(s.lost_by_name),
    }


def _method_json(m: MethodReport) -> dict[str, Any]:
    return {
        "method": m.method,
        "calls": m.calls,
        "compared": m.compared,
        "answered": m.answered,
        "unanswered_status_codes": [{"bank": c.bank, "bk": c.bk, "calls": c.count} for c in m.unanswered],
        "matched": m.matched,
        "matched_rate": m.matched_rate,
        "mismatches": m.mismatches,
        "real_mismatches": m.real_mismatches,
        "real_mismatch_rate": m.real_mismatch_rate,
        "noise_mismatches": m.noise_mismatches,
        "tainted": m.tainted,
        "shadow_errors": m.shadow_errors,
        "skipped": m.skipped,
        "errors": m.errors,
        "unproven": m.unproven,
        "unproven_rate": m.unproven_rate,
        "tolerated": m.tolerated,
        "tolerated_by_rule": [{"rule": rule, "calls": n} for rule, n in m.tolerated_by_rule],
        "noise_sampled": m.noise_sampled,
        "dropped": m.dropped,
        "dropped_by_name": dict(m.dropped_by_name),
        "latency_ms": {
            side: {"count": latency.count, "p50": latency.p50, "p99": latency.p99}
            for side, latency in (("bank", m.bank_latency), ("bk", m.bk_latency))
        },
        "status_codes": [{"bank": c.bank, "bk": c.bk, "calls": c.count} for c in m.codes],
        "paths": [_path_json(p) for p in m.paths],
        "tainted_paths": [_tainted_path_json(t) for t in m.tainted_paths],
        "series": [
            {
                "start": rfc3339(b.start),
                "end": rfc3339(b.end),
                "compared": b.compared,
                "real_mismatches": b.real_mismatches,
            }
            for b in m.series
        ],
        "lost": m.lost,
        "lost_by_name": dict(m.lost_by_name),
        "by_replica": [_share_json(s) for s in m.by_replica],
    }


def _path_json(p: PathStat) -> dict[str, Any]:
    return {
        "path": p.path,
        "kind": p.kind,
        "calls": p.calls,
        "bk_rate": p.bk_rate,
        "noise_calls": p.noise_calls,
        "noise_sampled": p.noise_sampled,
        "noise_rate": p.noise_rate,
        "noise_of": p.noise_of,
        "class": p.classification,
        "example": {
            "bank": p.example_bank,
            "bk": p.example_bk,
            "key": p.example_key,
            "request": p.example_request,
        },
    }


def _tainted_path_json(t: TaintedPath) -> dict[str, Any]:
    return {
        "path": t.path,
        "kind": t.kind,
        "calls": t.calls,
        "example": {"bank": t.example_bank, "bk": t.example_bk},
    }


def _call_json(c: CallRecord) -> dict[str, Any]:
    return {
        "id": c.id,
        "at": c.at,
        "method": c.method,
        "verdict": c.verdict,
        "mismatch": c.mismatch,
        "reason": c.reason,
        "routing_key": c.routing_key,
        "correlation_id": c.correlation_id,
        "status": {"bank": c.bank_code, "bk": c.bk_code},
        "latency_ms": {"bank": c.bank_ms, "bk": c.bk_ms},
        "differences": [d.as_json() for d in c.differences],
        **({"differences_omitted": c.omitted} if c.omitted else {}),
    }
