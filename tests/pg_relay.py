"""A TCP relay to PostgreSQL that breaks the connections it carries as a network (or a restart of the
server) would: `cut()` closes every connection carried so far; `lose_answer(marker)` lets the next
statement whose message holds `marker` run, and its transaction commit, then closes its connection before
the client hears that the transaction ended. New connections go through as ever, unless `blackhole()`:
from then on nothing more is passed either way, and new connections are accepted and never answered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

_IDLE = b"Z\x00\x00\x00\x05I"  # ReadyForQuery, out of any transaction: the last one ended (committed)


class PgRelay:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self._marker = b""
        self._holed = asyncio.Event()
        self.lost = 0  # answers lost so far (their statements committed)
        self.port = 0

    async def __aenter__(self) -> PgRelay:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Close every connection carried so far, both ways."""
        for writer in self._writers:
            writer.close()
        self._writers = []

    def blackhole(self) -> None:
        """Nothing more is passed either way, and new connections are held open, never answered."""
        self._holed.set()

    def lose_answer(self, marker: bytes) -> None:
        """The next statement holding `marker` runs, and its transaction commits; the answer that says so is
        never passed on (a statement in a transaction of its own: its answer)."""
        self._marker = marker

    def _keep(self, work: asyncio.Task[None]) -> None:
        self._tasks.add(work)
        work.add_done_callback(self._tasks.discard)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._holed.is_set():
            self._writers.append(writer)
            return  # held open, never answered
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers += [writer, up_writer]
        losing = asyncio.Event()  # this connection carries the statement whose answer is to be lost
        loop = asyncio.get_running_loop()
        self._keep(loop.create_task(self._up(reader, up_writer, losing)))
        self._keep(loop.create_task(self._down(up_reader, writer, up_writer, losing)))

    async def _up(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, losing: asyncio.Event
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if self._holed.is_set():
                    await asyncio.Event().wait()  # swallow this and everything after: the socket stays open
                if self._marker and self._marker in data:
                    self._marker = b""
                    losing.set()
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _down(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: asyncio.StreamWriter,
        losing: asyncio.Event,
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if self._holed.is_set():
                    await asyncio.Event().wait()  # swallow this and everything after: the socket stays open
                if losing.is_set() and _IDLE in data:  # its transaction committed: this answer goes nowhere
                    self.lost += 1
                    break
                writer.write(data)
                await writer.drain()
        writer.close()
        upstream.close()


@contextlib.asynccontextmanager
async def relayed(url: str) -> AsyncIterator[tuple[str, PgRelay]]:
    """`url` through a relay of its own, and the relay."""
    parts = urlsplit(url)
    async with PgRelay((parts.hostname or "127.0.0.1", parts.port or 5432)) as relay:
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{relay.port}" if user else f"127.0.0.1:{relay.port}"
        yield parts._replace(netloc=netloc).geturl(), relay
