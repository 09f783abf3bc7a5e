"""One asynchronous PostgreSQL connection, on the event loop, for what cannot queue behind the store's
worker thread (`key_order.py`): made again after it broke, every failure a StoreError."""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg.conninfo

from shim.store._errors import StoreError, one_line


class Connection:
    """One connection, made again after it broke; every failure a StoreError."""

    def __init__(self, url: str, name: str, settings: str = "") -> None:
        params: dict[str, Any] = {"connect_timeout": 10, "application_name": name}
        params.update(psycopg.conninfo.conninfo_to_dict(url))
        self._conninfo = psycopg.conninfo.make_conninfo(**params)
        self._settings = settings  # SET statements run on each new connection
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None

    async def run(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                if self._settings:
                    await self._conn.execute(self._settings.encode())
            async with self._conn.cursor() as cursor:
                await cursor.execute(sql.encode(), params)
                return await cursor.fetchall() if cursor.description is not None else []
        except psycopg.Error as error:
            raise StoreError(f"key order: {one_line(error)}") from None

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
