"""The gate a promotion runs in the live shim (`shim.admin`): on the store's evidence, read on a connection
of its own."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection

import structlog

from shim.config import Config
from shim.evidence import build_report
from shim.gate import evaluate, evidence_since, is_method
from shim.store import Store, StoreError

_log = structlog.get_logger("shim.admin")


_EVER = float("inf")
EVIDENCE_WAIT = 10.0  # seconds a promotion waits for the comparisons of the calls made so far to be stored


async def gate_failures(
    store: Store,
    config: Config,
    methods: list[str],
    own: Collection[str] | None = None,
    stored: Callable[[float], Awaitable[bool]] | None = None,
    since_promotion: bool = False,
) -> list[str]:
    """The gate's failed criteria for `methods` (none given: every method, and the config's gate.methods).
    With `own` (a change of the default mode: the methods with a mode of their own), every method with
    evidence in the window that has none is judged too: the default moves it, described or not. With
    `stored`, the comparisons of the calls compared so far are waited for in the store first (a comparison
    plane behind its clients holds the latest evidence): not all there within EVIDENCE_WAIT, that fails.
    `since_promotion` (retiring Bank): only the evidence since the latest switch into or out of `bk-primary`
    is judged: what BK answered as primary, Bank mirrored."""
    if stored is not None and not await stored(EVIDENCE_WAIT):
        return [
            f"evidence: the comparisons of the calls made so far are not all stored within {EVIDENCE_WAIT:g}"
            " s (the comparison plane is behind its clients): not judged without them; try again"
        ]
    reader = await _reader(store, config.store.url)
    try:
        until = time.time()
        since = await evidence_since(reader, config.gate.window, until)
        if since_promotion and (promoted := await reader.modes.last_change_with("bk-primary", _EVER)):
            since = max(since, min(promoted, until))  # (one stamped after now: no evidence, as for the rest)
        report = await build_report(
            reader,
            since=since,
            until=until,
            relative=config.noise.relative,
            absolute=config.noise.absolute,
            min_sampled=config.noise.min_sampled,
            latencies=False,  # the gate judges counts
        )
    finally:
        if reader is not store:
            await reader.close()
    if own is not None and methods:  # (no methods: every method with evidence is judged already)
        moved = [m.method for m in report.methods if is_method(m.method) and m.method not in own]
        methods = list(dict.fromkeys([*methods, *moved]))
    result = evaluate(
        report,
        min_compared=config.gate.min_compared,
        min_answered=config.gate.min_answered,
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
