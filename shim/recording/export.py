"""A recording kept in the store, written out as a recording file (`shim record export`).

The parts of the recording (one per shim process that recorded into it) are merged in arrival order:
each part's calls in their own order (`seq`, exact), the parts' interleaved by the time each call
arrived (`at`; ties: the part that began first). The calls are numbered again from 0 and written with
the file's own writer: `OUT.partial`, renamed `OUT` once whole (an existing OUT, or OUT.partial, is
never written over). A recording not ended (a shim still records into it, or was killed first) is
refused; with `truncated` its calls so far are written to `OUT.partial`, with no end line, as a shim
killed while recording leaves a file (`shim replay --truncated` reads it).
"""

from __future__ import annotations

import contextlib
import heapq
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

from shim.recording.format import PARTIAL, Header, RecordedCall, RecordingError, RecordingWriter
from shim.store import RecordingPart, Store, StoredRecording

PAGE = 1000  # calls read from the store at a time, per part: memory does not grow with the recording


@dataclass(frozen=True, slots=True)
class Exported:
    """What `export` wrote."""

    recording: StoredRecording
    path: Path  # OUT, or OUT.partial for a recording not ended
    calls: int
    whole: bool


async def chosen(store: Store, recording_id: str | None) -> StoredRecording:
    """The recording of that id, or without one the newest; a RecordingError when there is none."""
    recordings = await store.recordings.all()
    if not recordings:
        raise RecordingError(f"store {store.url} holds no recording")
    if recording_id is None:
        return recordings[-1]
    for recording in recordings:
        if recording.id == recording_id:
            return recording
    raise RecordingError(
        f"store {store.url} holds no recording {recording_id!r} (`shim record list` shows those it holds)"
    )


async def _part_calls(store: Store, part: RecordingPart) -> AsyncIterator[tuple[int, float, str]]:
    after = -1
    while True:
        page = await store.recordings.calls(part.id, after, PAGE)
        for row in page:
            yield row
        if len(page) < PAGE:
            return
        after = page[-1][0]


async def merged(store: Store, recording: StoredRecording) -> AsyncIterator[RecordedCall]:
    """The recording's calls in arrival order (see the module's docstring), numbered from 0, each with the
    calls every part had lost by then (`lost`)."""
    streams = [_part_calls(store, part) for part in recording.parts]  # parts: the first begun first
    heap: list[tuple[float, int, int, str]] = []
    for index, stream in enumerate(streams):
        if (row := await anext(stream, None)) is not None:
            heapq.heappush(heap, (row[1], index, row[0], row[2]))
    count = 0
    lost = [0] * len(streams)  # each part's calls lost so far (its calls' `lost`): summed in the file's
    while heap:
        _, index, seq, line = heapq.heappop(heap)
        try:
            call = RecordedCall.from_json(json.loads(line))
        except (KeyError, TypeError, ValueError) as exc:
            part = recording.parts[index].id
            raise RecordingError(
                f"recording {recording.id}: call {seq} of part {part} is malformed ({exc!r})"
            ) from None
        lost[index] = call.lost
        yield replace(call, seq=count, lost=sum(lost))
        count += 1
        if (row := await anext(streams[index], None)) is not None:
            heapq.heappush(heap, (row[1], index, row[0], row[2]))


def header_of(recording: StoredRecording) -> Header:
    """The recording's header, naming every process that recorded into it and the recording's id."""
    try:
        header = Header.from_json(json.loads(recording.header))
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordingError(f"recording {recording.id}: its header is malformed ({exc!r})") from None
    replicas = ", ".join(dict.fromkeys(p.replica for p in recording.parts)) or header.replica
    return replace(header, replica=replicas, extra={**header.extra, "recording": recording.id})


async def export(store: Store, recording_id: str | None, out: Path, truncated: bool = False) -> Exported:
    """Write the recording (the newest without an id) to `out` (see the module's docstring)."""
    recording = await chosen(store, recording_id)
    whole = recording.ended is not None
    if not whole and not truncated:
        running = sum(1 for p in recording.parts if p.ended is None)
        raise RecordingError(
            f"recording {recording.id} has not ended: {running} of its {len(recording.parts)} parts are"
            " still being written (or their shim stopped before it could end them); export its calls so"
            " far with --truncated"
        )
    writer = RecordingWriter(out, header_of(recording), exclusive=True)
    partial = out.with_name(out.name + PARTIAL)
    try:
        async for call in merged(store, recording):
            writer.add(call)
        if whole and writer.calls != recording.calls:
            raise RecordingError(
                f"recording {recording.id}: its parts say {recording.calls} calls, the store holds"
                f" {writer.calls}: calls are missing"
            )
        if whole:
            path = writer.end(recording.reason, lost=recording.lost)
        else:
            writer.flush()
            writer.abandon()
            path = partial
    except BaseException:
        writer.abandon()
        with contextlib.suppress(OSError):
            partial.unlink()  # nothing half-written is left
        raise
    return Exported(recording, path, writer.calls, whole)
