"""The id pairs and unpaired ids kept in the store (`shim.ids`), read and forgotten by `shim ids`.

Forgetting is for ids that no longer name anything: two test services that restarted empty and mint
the same ids again, say. A pair forgotten is learned again from the next answers that mint it. A
running shim keeps the pairs it holds in memory until it restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shim.store import IdPair, Store

_CHUNK = 500  # values per IN (...) list
SIDES = ("bank", "bk")


@dataclass(frozen=True, slots=True)
class Unpaired:
    """An id one side minted whose minting call ended without the other side's."""

    kind: str
    side: str  # "bank" or "bk"
    value: str
    owner: str
    at: float


def _kind(kind: str | None) -> tuple[str, tuple[str, ...]]:
    return (" WHERE kind = ?", (kind,)) if kind else ("", ())


async def counts(store: Store) -> dict[str, tuple[int, int]]:
    """Per kind: (pairs, unpaired ids)."""
    pairs = await store.select("SELECT kind, COUNT(*) FROM id_pairs GROUP BY kind")
    unpaired = await store.select("SELECT kind, COUNT(*) FROM unpaired_ids GROUP BY kind")
    found: dict[str, tuple[int, int]] = {}
    for kind, count in pairs:
        found[str(kind)] = (int(count), 0)
    for kind, count in unpaired:
        found[str(kind)] = (found.get(str(kind), (0, 0))[0], int(count))
    return dict(sorted(found.items()))


async def recent_pairs(store: Store, kind: str | None, limit: int) -> list[IdPair]:
    """Up to `limit` pairs (of `kind`), the most recently learned first."""
    where, params = _kind(kind)
    sql = (
        f"SELECT kind, bank_id, bk_id, owner, learned_at FROM id_pairs{where}"
        " ORDER BY learned_at DESC, kind, bank_id LIMIT ?"
    )
    return [IdPair(*row) for row in await store.select(sql, (*params, limit))]


async def recent_unpaired(store: Store, kind: str | None, limit: int) -> list[Unpaired]:
    where, params = _kind(kind)
    sql = (
        f"SELECT kind, side, value, owner, at FROM unpaired_ids{where} ORDER BY at DESC, kind, value LIMIT ?"
    )
    return [Unpaired(*row) for row in await store.select(sql, (*params, limit))]


async def forget(
    store: Store, kind: str | None, values: Sequence[str] = (), side: str | None = None
) -> tuple[int, int]:
    """Forget the pairs and unpaired ids of `kind` (every kind: None) naming one of `values` on `side`
    (either side: None), or all of them without `values`; (pairs, unpaired ids) forgotten, committed."""
    if side is not None and side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, not {side!r}")
    where, params = _kind(kind)
    if not values:
        pairs = await store.execute(f"DELETE FROM id_pairs{where} RETURNING kind", params)
        unpaired = await store.execute(f"DELETE FROM unpaired_ids{where} RETURNING kind", params)
        return len(pairs), len(unpaired)
    gone_pairs = gone_unpaired = 0
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        columns = [f"{s}_id IN ({marks})" for s in SIDES if side in (None, s)]
        scope = f"{where} AND" if where else " WHERE"
        matched = " OR ".join(columns)
        sql = f"DELETE FROM id_pairs{scope} ({matched}) RETURNING kind"
        gone_pairs += len(await store.execute(sql, (*params, *chunk * len(columns))))
        by_side = " AND side = ?" if side else ""
        sql = f"DELETE FROM unpaired_ids{scope} value IN ({marks}){by_side} RETURNING kind"
        gone_unpaired += len(await store.execute(sql, (*params, *chunk, *((side,) if side else ()))))
    return gone_pairs, gone_unpaired
