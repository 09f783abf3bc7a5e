"""One asynchronous PostgreSQL connection, on the event loop, for what cannot queue behind the store's
worker thread (`key_order.py`): made again after it broke, every failure a StoreError. And one that
listens to a channel (`Listener`), made again after it broke."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg.conninfo
import structlog

from shim.store._errors import StoreError, one_line
from shim.store._text import adapt

_log = structlog.get_logger("shim.store")


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
                adapt(self._conn.adapters)  # keys with a NUL in them
                if self._settings:
                    await self._conn.execute(self._settings.encode())
            async with self._conn.cursor() as cursor:
                await cursor.execute(sql.encode(), params)
                return await cursor.fetchall() if cursor.description is not None else []
        except psycopg.Error as error:
            raise StoreError(f"key order: {one_line(error)}") from None

    async def close(self) -> None:
        """Close the connection outright, without waiting for anything: a statement under way on it ends at
        once, and, cancelled, asks the server nothing (psycopg cancels only on a connection still open)."""
        if self._conn is not None:
            await self._conn.close()


class Listener:
    """Calls `heard()` at each notification on `channel`, on a connection of its own (`run`, until
    cancelled); `listening` while connected. A connection lost is made again, after a pause doubling
    from 1 ms to 5 s."""

    def __init__(self, url: str, name: str, channel: str, heard: Callable[[], None]) -> None:
        self._conninfo = Connection(url, name)._conninfo
        self._channel = channel
        self._heard = heard
        self.listening = False

    async def run(self) -> None:
        pause = 0.001
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {self._channel}".encode())
                    self.listening, pause = True, 0.001
                    async for _ in conn.notifies():
                        self._heard()
            except psycopg.Error as error:
                _log.warning(
                    "notifications lost; polling meanwhile", channel=self._channel, error=one_line(error)
                )
            self.listening = False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
