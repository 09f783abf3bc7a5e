"""Portable SQL pieces of the report's queries (SQLite and PostgreSQL alike)."""

from __future__ import annotations

from collections.abc import Sequence


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _bucket_sql(column: str, bounds: Sequence[float], lo: int = 0, hi: int | None = None) -> str:
    """A CASE expression giving the bucket of `column`: the number of `bounds` at or below it.

    A binary search written in SQL: exact, and portable (no FLOOR in SQLite, and a
    CAST to an integer rounds in PostgreSQL but truncates in SQLite).
    """
    hi = len(bounds) if hi is None else hi
    if lo == hi:
        return str(lo)
    mid = (lo + hi) // 2
    below, above = _bucket_sql(column, bounds, lo, mid), _bucket_sql(column, bounds, mid + 1, hi)
    return f"CASE WHEN {column} < ? THEN {below} ELSE {above} END"


def _bucket_params(bounds: Sequence[float], lo: int = 0, hi: int | None = None) -> list[float]:
    """The parameters of `_bucket_sql`, in the order its ? appear."""
    hi = len(bounds) if hi is None else hi
    if lo == hi:
        return []
    mid = (lo + hi) // 2
    return [bounds[mid], *_bucket_params(bounds, lo, mid), *_bucket_params(bounds, mid + 1, hi)]
