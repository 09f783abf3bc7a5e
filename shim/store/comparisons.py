"""Comparisons, each with its differing paths (one row each, lists folded): what reports count.

Written in batches with whatever is queued beside them, never waited for; each counts in the store's
backlog until its batch commits, and by method as lost when the batch fails for good. Retention
(`delete_before`) removes old comparisons, their paths, and the counts of the same age, RETENTION_BATCH
rows at a time, each batch in a transaction of its own: what is queued meanwhile (a mirrored write's
intent, a read at start) waits for one batch at most, never for the whole retention.
"""

from __future__ import annotations

from collections.abc import Sequence

from shim.store._jobs import Write
from shim.store.backends import Db
from shim.store.engine import Engine, chunks, placeholders
from shim.store.records import ComparisonRecord

COLUMNS = (
    "id, at, replica, method, routing_key, correlation_id, verdict, reason, is_write,"
    " bank_code, bk_code, bank_ms, bk_ms, real_count, tolerated_count, noise_sampled, differences, payloads"
)
INSERT = f"INSERT INTO comparisons ({COLUMNS}) VALUES ({', '.join('?' * 18)}) ON CONFLICT DO NOTHING"
INSERT_PATH = (
    "INSERT INTO comparison_paths (comparison_id, at, method, source, path, kind, rule, bank, other)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
RETENTION_BATCH = 5000  # comparisons (or counts) deleted in one transaction


def comparison_rows(
    records: Sequence[ComparisonRecord],
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The rows of the comparisons and of their paths, in the columns of INSERT and INSERT_PATH."""
    rows: list[tuple[object, ...]] = [
        (
            r.id, r.at, r.replica, r.method, r.routing_key, r.correlation_id, r.verdict, r.reason,
            int(r.is_write), r.bank_code, r.bk_code, r.bank_ms, r.bk_ms, r.real_count,
            r.tolerated_count, int(r.noise_sampled), r.differences, r.payloads,
        )
        for r in records
    ]  # fmt: skip
    paths: list[tuple[object, ...]] = [
        (r.id, r.at, r.method, p.source, p.path, p.kind, p.rule, p.bank, p.other)
        for r in records
        for p in r.paths
    ]
    return rows, paths


def record_size(r: ComparisonRecord) -> int:
    """About how many bytes a comparison holds while it waits for the store: its texts, not Python's own
    overhead of each object (a few hundred bytes)."""
    texts = (r.method, r.routing_key, r.correlation_id, r.reason, r.differences, r.payloads or "")
    paths = sum(len(p.path) + len(p.bank) + len(p.other) for p in r.paths)
    return 256 + sum(len(t) for t in texts) + paths


class StoredComparisons:
    """The comparisons of a store (`store.comparisons`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put(self, records: Sequence[ComparisonRecord], size: int | None = None) -> None:
        """Store comparisons (enqueued, committed in one batch with what is queued beside them); `size`:
        their `record_size`s' sum, when the caller has it already."""
        if not records:
            return
        rows, paths = comparison_rows(records)
        more = ((INSERT_PATH, paths),) if paths else ()
        methods = [r.method for r in records]
        size = sum(record_size(r) for r in records) if size is None else size
        self._engine.put(Write(INSERT, rows, more, methods, frozenset(r.replica for r in records), size=size))

    async def delete_before(self, at: float, batch: int = RETENTION_BATCH) -> int:
        """Remove the comparisons (and counts) older than `at`, the oldest first, `batch` at a time, each
        batch committed on its own; returns how many comparisons went."""

        def comparisons(db: Db) -> tuple[int, int]:
            found = db.run("SELECT id FROM comparisons WHERE at < ? ORDER BY at LIMIT ?", (at, batch))
            gone = 0
            for chunk in chunks([str(row[0]) for row in found]):
                marks = placeholders(len(chunk))
                db.change(f"DELETE FROM comparison_paths WHERE comparison_id IN ({marks})", chunk)
                gone += db.change(f"DELETE FROM comparisons WHERE id IN ({marks})", chunk)
            return len(found), gone

        def counts(db: Db) -> int:
            return db.change(
                "DELETE FROM counts WHERE at < ? AND at <= (SELECT max(at) FROM"
                " (SELECT at FROM counts WHERE at < ? ORDER BY at LIMIT ?) oldest)",
                (at, at, batch),
            )

        total = 0
        while True:  # each batch a call of its own: the work queued meanwhile goes first
            found, gone = await self._engine.transaction(comparisons, write=True)
            total += gone
            if found < batch:
                break
        while await self._engine.transaction(counts, write=True) >= batch:
            pass
        return total

    async def held(self) -> bool:
        """Whether the store holds any comparison at all."""
        return bool(await self._engine.select("SELECT 1 FROM comparisons LIMIT 1"))

    async def routing_keys(self) -> list[str]:
        """The routing keys the stored comparisons name, each once (a call's keys joined by ",")."""
        rows = await self._engine.select(
            "SELECT DISTINCT routing_key FROM comparisons WHERE routing_key <> ''"
        )
        return [str(joined) for (joined,) in rows]
