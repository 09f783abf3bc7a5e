"""Envoy's admin interface, a unix socket in the shim's private folder (`envoy_config.bootstrap`): one
request on a connection of its own (`admin_request`), or many on connections kept alive
(`AdminConnections`). The interface takes no token, so it is never on a port: on loopback, any process
of the machine (or any container of a pod) could stop the shim serving through it."""

from __future__ import annotations

import asyncio
import contextlib

from shim._timeouts import bounded


async def admin_request(address: str, path: str, method: str = "GET") -> tuple[int, bytes]:
    """One request to the admin interface at `address` (its socket's path): (status, body)."""
    reader, writer = await _connect(address)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: envoy\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await bounded(reader.read(), 10.0)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    return status, body


async def _connect(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await bounded(asyncio.open_unix_connection(address), 5.0)


async def stop_listening(address: str) -> None:
    """The Envoy at `address` takes no new connection, at once (a client's connect is refused), and drains
    those open: with `--drain-strategy immediate`, each one's next answer carries a GOAWAY. A call that
    still comes on one is the routes' to refuse (`envoy_config.refusing_table`)."""
    with contextlib.suppress(OSError, ValueError):
        # without `graceful` the listener closes at once; with it alone, it would go on taking connections,
        # and sending their calls on, for the drain time
        await admin_request(address, "/drain_listeners", method="POST")
        await admin_request(address, "/drain_listeners?graceful", method="POST")  # the drain of those open


_EXCHANGE_WITHIN = 10.0  # seconds a request on a kept connection may take, its answer read whole


class AdminConnections:
    """Kept-alive connections to Envoy's admin interface: the comparison plane reads Envoy's figures many
    times a second (the copies sent, for each read asked again), and a connection of its own for each
    read cost more than the read."""

    _IDLE = 32  # connections kept open between requests (one for each read at once, up to that)

    def __init__(self) -> None:
        self._idle: list[tuple[str, asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self, address: str, path: str) -> tuple[int, bytes]:
        while self._idle:  # a kept connection, if Envoy has not closed it meanwhile
            kept = self._idle.pop()
            if kept[0] != address or kept[2].is_closing():
                kept[2].close()
                continue
            try:
                return await self._exchange(kept, path)
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                continue
        reader, writer = await _connect(address)
        return await self._exchange((address, reader, writer), path)

    async def _exchange(
        self, connection: tuple[str, asyncio.StreamReader, asyncio.StreamWriter], path: str
    ) -> tuple[int, bytes]:
        writer = connection[2]
        try:
            async with asyncio.timeout(_EXCHANGE_WITHIN):  # a read that never ends cannot hold its caller
                return await self._exchange_whole(connection, path)
        except BaseException:
            writer.close()
            raise

    async def _exchange_whole(
        self, connection: tuple[str, asyncio.StreamReader, asyncio.StreamWriter], path: str
    ) -> tuple[int, bytes]:
        _, reader, writer = connection
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: envoy\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            if fields.get("transfer-encoding", "").lower() == "chunked":
                body = bytearray()
                while size := int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16):
                    body += await reader.readexactly(size + 2)
                    del body[-2:]
                await reader.readuntil(b"\r\n")  # the empty trailer
            else:
                body = bytearray(await reader.readexactly(int(fields.get("content-length", "0"))))
        except BaseException:
            writer.close()
            raise
        if fields.get("connection", "").lower() == "close" or len(self._idle) >= self._IDLE:
            writer.close()
        else:
            self._idle.append(connection)
        return status, bytes(body)

    def close(self) -> None:
        while self._idle:
            self._idle.pop()[2].close()


def _unchunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)
