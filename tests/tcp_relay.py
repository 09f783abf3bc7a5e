"""A TCP relay in front of a server that loses an answer as a dying server, or a network, would: once
`lose_answer(marker)` is set, the first bytes the server sends back holding `marker` are not passed on, and
both of that connection's sockets are reset instead. The server did what the call asked; its client never
hears so. New connections go through as ever."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct


class TcpRelay:
    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._marker = b""
        self.lost = asyncio.Event()  # an answer was lost
        self.address = ""

    async def __aenter__(self) -> TcpRelay:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def lose_answer(self, marker: bytes) -> None:
        self._marker = marker

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        ends = (writer, up_writer)
        to_server = asyncio.ensure_future(self._pipe(reader, up_writer, ends, back=False))
        to_client = asyncio.ensure_future(self._pipe(up_reader, writer, ends, back=True))
        for task in (to_server, to_client):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ends: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
        back: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if back and self._marker and self._marker in data:
                    self._marker = b""
                    for end in ends:  # reset, as a process that died: no orderly close, no GOAWAY
                        sock = end.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        end.transport.abort()
                    self.lost.set()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
