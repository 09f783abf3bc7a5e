"""Id pairs and unpaired ids: the id map's memory (`shim.ids`), listed and forgotten by `shim ids`.

A pair says which Bank id and which BK id name the same thing, per kind of id ("trade", ...). Each
side is unique within a kind, and the first pair learned wins: a later pair that conflicts on either
side is ignored, except for ids of one query (page tokens), where the latest wins (`replace`). An
unpaired id is one a side minted whose minting call ended without the other side's: not unknown,
unpaired.

Forgetting is for ids that no longer name anything: two test services that restarted empty and mint
the same ids again, say. A pair forgotten is learned again from the next answers that mint it. A
running shim keeps the pairs it holds in memory until it restarts.

The ids of a kind whose fields are redacted are stored sealed (`seal_with`, `shim.store._sealing`): every
method here takes and gives them as they are, and the store holds them sealed. A row sealed under another
key is left out of what is read (`unopened` counts those).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from shim.store._sealing import SealedRows, Unopened
from shim.store.backends import Db
from shim.store.engine import Engine, chunks, placeholders
from shim.store.records import IdPair, Unpaired

_log = structlog.get_logger("shim.store")

SIDES = ("bank", "bk")
_COLUMN = {"bank": "bank_id", "bk": "bk_id"}
_PAIR_COLUMNS = "kind, bank_id, bk_id, owner, learned_at"
_INSERT_PAIR = f"INSERT INTO id_pairs ({_PAIR_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
_EITHER = f"SELECT {_PAIR_COLUMNS} FROM id_pairs WHERE kind = ? AND (bank_id = ? OR bk_id = ?)"
_DELETE_EITHER = "DELETE FROM id_pairs WHERE kind = ? AND (bank_id = ? OR bk_id = ?)"
_DELETE_PAIR = "DELETE FROM id_pairs WHERE kind = ? AND bank_id = ? AND bk_id = ?"
_UNSEALED = "NOT LIKE 'sealed:%'"  # shim.store._sealing.PREFIX
_UNSEALED_PAIRS = (
    f"SELECT {_PAIR_COLUMNS} FROM id_pairs WHERE kind = ? AND (bank_id {_UNSEALED} OR bk_id {_UNSEALED})"
)
_UNSEALED_UNPAIRED = (
    f"SELECT kind, side, value, owner, at FROM unpaired_ids WHERE kind = ? AND value {_UNSEALED}"
)
_INSERT_UNPAIRED = (
    "INSERT INTO unpaired_ids (kind, side, value, owner, at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


def _kind(kind: str | None) -> tuple[str, tuple[str, ...]]:
    return (" WHERE kind = ?", (kind,)) if kind else ("", ())


class StoredPairs(SealedRows):
    """The id pairs and unpaired ids of a store (`store.pairs`)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self._replacing: set[asyncio.Future[None]] = set()  # `replace`s under way (kept from collection)

    def _pair(self, row: Sequence[Any]) -> IdPair | None:
        """A stored row as the pair it holds (None, counted, when it does not open)."""
        kind, bank_id, bk_id, owner, at = row
        if self.sealer is not None and kind in self.sealer.kinds:
            try:
                bank_id, bk_id, owner = (self.sealer.open(kind, v) for v in (bank_id, bk_id, owner))
            except Unopened:
                self.unopened += 1
                return None
        return IdPair(kind, bank_id, bk_id, owner, at)

    def _pairs(self, rows: Sequence[Sequence[Any]]) -> list[IdPair]:
        return [pair for row in rows if (pair := self._pair(row)) is not None]

    def _rows(self, pairs: Sequence[IdPair]) -> list[tuple[str, str, str, str, float]]:
        now, seal = time.time(), self._seal
        return [
            (
                p.kind,
                seal(p.kind, p.bank_id),
                seal(p.kind, p.bk_id),
                seal(p.kind, p.owner),
                p.learned_at or now,
            )
            for p in pairs
        ]

    def _seal_rows(self, db: Db, kind: str, seal: Callable[[str, str], str]) -> int:
        pairs = db.run(_UNSEALED_PAIRS, (kind,))
        for _, bank_id, bk_id, owner, at in pairs:
            db.run(_DELETE_PAIR, (kind, bank_id, bk_id))
            db.run(_INSERT_PAIR, (kind, seal(kind, bank_id), seal(kind, bk_id), seal(kind, owner), at))
        unpaired = db.run(_UNSEALED_UNPAIRED, (kind,))
        for _, side, value, owner, at in unpaired:
            db.run("DELETE FROM unpaired_ids WHERE kind = ? AND side = ? AND value = ?", (kind, side, value))
            db.run(_INSERT_UNPAIRED, (kind, side, seal(kind, value), seal(kind, owner), at))
        return len(pairs) + len(unpaired)

    def put(self, pairs: Sequence[IdPair]) -> None:
        """Learn pairs (enqueued); a pair conflicting with one already known is ignored."""
        self._engine.enqueue(_INSERT_PAIR, self._rows(pairs))

    def replace(self, pairs: Sequence[IdPair]) -> None:
        """Learn pairs of ids of one query (page tokens minted again once the book changed), each replacing
        any pair either of its ids was in, in their order: the latest pair of an id wins. One transaction of
        its own, begun now and never waited for (the writes' batches run each statement for all their rows
        at once, which would undo that order); a failure is logged, and the memory holds the pairs."""
        rows = self._rows(pairs)

        def work(db: Db) -> None:
            for kind, bank_id, bk_id, owner, at in rows:
                db.run(_DELETE_EITHER, (kind, bank_id, bk_id))
                db.run(_INSERT_PAIR, (kind, bank_id, bk_id, owner, at))

        task = asyncio.ensure_future(self._engine.transaction(work, write=True))
        self._replacing.add(task)
        task.add_done_callback(self._replaced)

    def _replaced(self, task: asyncio.Future[None]) -> None:
        self._replacing.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            _log.warning("id pairs of a query not stored", error=str(error))

    async def load(self, pairs: Sequence[IdPair]) -> tuple[int, list[IdPair]]:
        """Pairs given by hand (`shim ids import`: the ids of data copied into both sides before the run),
        in one transaction: each pair not stored yet is stored, and its ids leave the unpaired ones; a pair
        either of whose ids is stored in another pair conflicts, and then none is stored. The pairs stored,
        and the stored pairs the given ones conflict with."""
        rows = self._rows(pairs)

        def work(db: Db) -> tuple[int, list[tuple[Any, ...]]]:
            conflicts: list[tuple[Any, ...]] = []
            new = []
            for row in rows:
                found = db.run(_EITHER, row[:3])
                conflicts += [f for f in found if (f[1], f[2]) != (row[1], row[2])]
                if not found:
                    new.append(row)
            if conflicts:
                return 0, conflicts
            for kind, bank_id, bk_id, owner, at in new:
                db.run(_INSERT_PAIR, (kind, bank_id, bk_id, owner, at))
                for side, value in (("bank", bank_id), ("bk", bk_id)):
                    db.run(
                        "DELETE FROM unpaired_ids WHERE kind = ? AND side = ? AND value = ?",
                        (kind, side, value),
                    )
            return len(new), []

        stored, conflicts = await self._engine.transaction(work, write=True)
        return stored, self._pairs(conflicts)

    async def find(self, kind: str, side: str, values: Sequence[str]) -> list[IdPair]:
        """The pairs of `kind` whose `side` ("bank" or "bk") id is one of `values`, in their order."""
        column = _COLUMN.get(side)
        if column is None:
            raise ValueError(f"side must be 'bank' or 'bk', not {side!r}")
        if not values:
            return []
        stored = [self._seal(kind, value) for value in values]

        def read(db: Db) -> list[tuple[Any, ...]]:
            rows = []
            for chunk in chunks(stored):
                where = f"kind = ? AND {column} IN ({placeholders(len(chunk))})"
                rows += db.run(f"SELECT {_PAIR_COLUMNS} FROM id_pairs WHERE {where}", [kind, *chunk])
            return rows

        found = {
            getattr(pair, column): pair for pair in self._pairs(await self._engine.transaction(read, False))
        }
        return [found[value] for value in dict.fromkeys(values) if value in found]

    async def either(self, pairs: Sequence[tuple[str, str, str]]) -> list[IdPair]:
        """The stored pairs holding the Bank id or the BK id of each (kind, Bank id, BK id) given."""
        if not pairs:
            return []

        stored = [
            (kind, self._seal(kind, bank_id), self._seal(kind, bk_id)) for kind, bank_id, bk_id in pairs
        ]

        def read(db: Db) -> list[tuple[Any, ...]]:
            return [row for asked in stored for row in db.run(_EITHER, asked)]

        found = {
            (p.kind, p.bank_id): p for p in self._pairs(await self._engine.transaction(read, write=False))
        }
        return list(found.values())

    async def recent(self, limit: int, kind: str | None = None) -> list[IdPair]:
        """Up to `limit` pairs (of `kind`; of every kind without it), the most recently learned first."""
        if limit <= 0:
            return []
        where, params = _kind(kind)
        sql = f"SELECT {_PAIR_COLUMNS} FROM id_pairs{where} ORDER BY learned_at DESC, kind, bank_id LIMIT ?"
        return self._pairs(await self._engine.select(sql, (*params, limit)))

    def put_unpaired(self, unpaired: Sequence[Unpaired]) -> None:
        """Record ids minted without a counterpart (enqueued); one recorded already stays as it is."""
        seal = self._seal
        rows = [(u.kind, u.side, seal(u.kind, u.value), seal(u.kind, u.owner), u.at) for u in unpaired]
        self._engine.enqueue(_INSERT_UNPAIRED, rows)

    async def unpaired_owner(self, kind: str, side: str, value: str) -> str | None:
        """The owner key of an id `side` minted without a counterpart; None when it is not such an id."""
        rows = await self._engine.select(
            "SELECT owner FROM unpaired_ids WHERE kind = ? AND side = ? AND value = ?",
            (kind, side, self._seal(kind, value)),
        )
        if not rows:
            return None
        return self.sealer.open(kind, str(rows[0][0])) if self.sealer is not None else str(rows[0][0])

    async def recent_unpaired(self, limit: int, kind: str | None = None) -> list[Unpaired]:
        """Up to `limit` unpaired ids (of `kind`), the most recent first."""
        if limit <= 0:
            return []
        where, params = _kind(kind)
        sql = (
            f"SELECT kind, side, value, owner, at FROM unpaired_ids{where}"
            " ORDER BY at DESC, kind, value LIMIT ?"
        )
        found = []
        for kind_of, side, value, owner, at in await self._engine.select(sql, (*params, limit)):
            try:
                opened = (
                    [self.sealer.open(kind_of, v) for v in (value, owner)] if self.sealer else [value, owner]
                )
            except Unopened:
                self.unopened += 1
                continue
            found.append(Unpaired(kind_of, side, opened[0], opened[1], at))
        return found

    async def counts(self) -> dict[str, tuple[int, int]]:
        """Per kind: (pairs, unpaired ids)."""
        pairs = await self._engine.select("SELECT kind, COUNT(*) FROM id_pairs GROUP BY kind")
        unpaired = await self._engine.select("SELECT kind, COUNT(*) FROM unpaired_ids GROUP BY kind")
        found: dict[str, tuple[int, int]] = {}
        for kind, count in pairs:
            found[str(kind)] = (int(count), 0)
        for kind, count in unpaired:
            found[str(kind)] = (found.get(str(kind), (0, 0))[0], int(count))
        return dict(sorted(found.items()))

    async def forget(
        self, kind: str | None, values: Sequence[str] = (), side: str | None = None
    ) -> tuple[int, int]:
        """Forget the pairs and unpaired ids of `kind` (every kind: None) naming one of `values` on `side`
        (either side: None), or all of them without `values`; (pairs, unpaired ids) forgotten, committed."""
        if side is not None and side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, not {side!r}")
        where, params = _kind(kind)
        execute = self._engine.execute
        if not values:
            pairs = await execute(f"DELETE FROM id_pairs{where} RETURNING kind", params)
            unpaired = await execute(f"DELETE FROM unpaired_ids{where} RETURNING kind", params)
            return len(pairs), len(unpaired)
        gone_pairs = gone_unpaired = 0
        if kind is not None:  # each id as it may be stored: sealed, or as it was (stored before sealing)
            values = list(dict.fromkeys([*values, *(self._seal(kind, value) for value in values)]))
        for chunk in chunks(values):
            marks = placeholders(len(chunk))
            columns = [f"{s}_id IN ({marks})" for s in SIDES if side in (None, s)]
            scope = f"{where} AND" if where else " WHERE"
            matched = " OR ".join(columns)
            sql = f"DELETE FROM id_pairs{scope} ({matched}) RETURNING kind"
            gone_pairs += len(await execute(sql, (*params, *chunk * len(columns))))
            by_side = " AND side = ?" if side else ""
            sql = f"DELETE FROM unpaired_ids{scope} value IN ({marks}){by_side} RETURNING kind"
            gone_unpaired += len(await execute(sql, (*params, *chunk, *((side,) if side else ()))))
        return gone_pairs, gone_unpaired
