"""A child's log, line by line, however long a line is: each one cut to a bound, and the reading goes on.

`async for raw in stream` stops with a ValueError at a line longer than the stream's limit (64 KiB by
default); the child then blocks for good on its full stderr pipe. These lines are read in chunks instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

LINE_MOST = 1 << 20  # bytes of a line kept: no event of the shim's own is near it
SHOWN = 4096  # characters of a line cut that are passed on, to say what it was


async def lines(stream: asyncio.StreamReader, most: int = LINE_MOST) -> AsyncIterator[tuple[bytes, int]]:
    """Each line of `stream`, without its newline, cut to its first `most` bytes, and its whole length (more
    than the bytes given: it was cut); the last line may have no newline."""
    head, length = bytearray(), 0
    while chunk := await stream.read(1 << 16):
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end == -1 else chunk[start:end]
            if len(head) < most:
                head += piece[: most - len(head)]
            length += len(piece)
            if end == -1:
                break
            yield bytes(head), length
            head.clear()
            length, start = 0, end + 1
    if length:
        yield bytes(head), length
