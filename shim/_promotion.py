"""The gate a promotion runs in the live shim (`shim.admin`): on the store's evidence, read on a connection
of its own."""

from __future__ import annotations

import time

import structlog

from shim.config import Config
from shim.evidence import build_report
from shim.gate import evaluate, evidence_since
from shim.store import Store, StoreError

_log = structlog.get_logger("shim.admin")


async def gate_failures(store: Store, config: Config, methods: list[str]) -> list[str]:
    """The gate's failed criteria for `methods` (none given: every method, and the config's gate.methods)."""
    reader = await _reader(store, config.store.url)
    try:
        until = time.time()
        report = await build_report(
            reader,
            since=await evidence_since(reader, config.gate.window, until),
            until=until,
            relative=config.noise.relative,
            absolute=config.noise.absolute,
            min_sampled=config.noise.min_sampled,
            latencies=False,  # the gate judges counts
        )
    finally:
        if reader is not store:
            await reader.close()
    result = evaluate(
        report,
        min_compared=config.gate.min_compared,
        max_mismatch_rate=config.gate.max_mismatch_rate,
        max_unproven_rate=config.gate.max_unproven_rate,
        required_methods=config.gate.methods,
        scope=methods,
    )
    return [f"{c.method or 'evidence'} {c.name}: {c.measured} (needs {c.threshold})" for c in result.failed]


async def _reader(store: Store, url: str) -> Store:
    """A connection of its own to the shim's store, for the gate's report: its one read snapshot (every
    query of the report sees the same rows) then never holds back the live shim's own writes (intents a
    mirrored write waits for, marks, comparisons) on the store's worker. The shim's own store where there
    is no other way in (a store in memory), or when another connection cannot be opened."""
    if url.strip().lower() in (":memory:", "sqlite::memory:"):
        return store
    reader = Store.open(url)
    try:
        await reader.start()
    except StoreError as exc:
        _log.warning("the gate reads the store on the shim's own connection", error=str(exc))
        return store
    return reader
