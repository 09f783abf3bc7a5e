"""Recordings of the clients' calls kept in the store ([record] into = "store", `shim.recording.into_store`).

A recording has an id and a header (the recording file's first line, as JSON). Each shim process that
records into it adds a part (`recording_parts`: its replica, its start, its calls so far, and once it
ended, why, and the calls it lost); its calls are rows of `recorded_calls`, each the file's call line as
JSON, numbered per part (`seq`) in the order they arrived there, with the time they arrived (`at`).
Several processes (workers, replicas sharing PostgreSQL) given one id record into one recording; a
recording whose parts have all ended is never added to. The store holds the rows only: what a call says
is `shim.recording.format`'s business.

Retention (`delete_before`) removes whole recordings, never part of one: a recording whose history
begins after its first calls would replay into states Bank never had.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from shim.store._errors import StoreError
from shim.store.backends import Db
from shim.store.engine import Engine, chunks, placeholders
from shim.store.records import RecordingPart, StoredRecording

_PART_COLUMNS = "id, recording, replica, started, last_at, calls, ended, reason, lost"
_INSERT_CALL = "INSERT INTO recorded_calls (part, seq, recording, at, call) VALUES (?, ?, ?, ?, ?)"


def _part(row: Sequence[object]) -> RecordingPart:
    part_id, recording, replica, started, last_at, calls, ended, reason, lost = row
    return RecordingPart(
        str(part_id),
        str(recording),
        str(replica),
        float(str(started)),
        float(str(last_at)),
        int(str(calls)),
        None if ended is None else float(str(ended)),
        str(reason),
        int(str(lost)),
    )


class StoredRecordings:
    """The recordings of a store (`store.recordings`)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def begin(
        self,
        recording: str,
        header: str,
        part: str,
        replica: str,
        started: float,
        same: Callable[[str], bool],
    ) -> bool:
        """Add a part to `recording` (made with `header` when the store has none of that id), committed.
        True when the recording was made. StoreError when the recording has ended (all its parts), or
        its header is not `same` as this one (another service, or other settings)."""

        def begin(db: Db) -> bool:
            made = bool(
                db.run(
                    "INSERT INTO recordings (id, started, header) VALUES (?, ?, ?)"
                    " ON CONFLICT DO NOTHING RETURNING id",
                    (recording, started, header),
                )
            )
            if not made:
                (held,) = db.run("SELECT header FROM recordings WHERE id = ?", (recording,))[0]
                ended = db.run(
                    "SELECT COUNT(*), COUNT(ended) FROM recording_parts WHERE recording = ?", (recording,)
                )[0]
                if int(ended[0]) == int(ended[1]):
                    raise StoreError(
                        f"recording {recording} in store {self._engine.url} has ended: a recording is never"
                        " added to once ended; give record.id another id (or none: a new one)"
                    )
                if not same(str(held)):
                    raise StoreError(
                        f"recording {recording} in store {self._engine.url} was begun with other"
                        " descriptors or [record] settings: give record.id another id"
                    )
            db.run(
                f"INSERT INTO recording_parts ({_PART_COLUMNS}) VALUES (?, ?, ?, ?, ?, 0, NULL, '', 0)",
                (part, recording, replica, started, started),
            )
            return made

        return await self._engine.transaction(begin, write=True)

    async def add(self, recording: str, part: str, calls: Sequence[tuple[int, float, str]]) -> None:
        """Commit a part's calls (seq, at, the call line's JSON), in one transaction: all, or none and a
        StoreError."""

        def add(db: Db) -> None:
            if not db.run(
                "UPDATE recording_parts SET calls = calls + ?, last_at = ? WHERE id = ? RETURNING id",
                (len(calls), max(at for _, at, _ in calls), part),
            ):  # removed (by retention elsewhere, or with a SQLite file deleted under the store)
                raise StoreError(f"recording {recording}: its part {part} is no longer in the store")
            db.run_many(_INSERT_CALL, [(part, seq, recording, at, call) for seq, at, call in calls])

        if calls:
            await self._engine.transaction(add, write=True)

    async def end(self, part: str, ended: float, reason: str, lost: int) -> None:
        """The part has ended, committed (StoreError when it cannot be)."""

        def end(db: Db) -> None:
            db.run(
                "UPDATE recording_parts SET ended = ?, reason = ?, lost = ? WHERE id = ?",
                (ended, reason, lost, part),
            )

        await self._engine.transaction(end, write=True)

    async def all(self) -> list[StoredRecording]:
        """Every recording, the oldest first, with its parts (the oldest first)."""

        def read(db: Db) -> list[StoredRecording]:
            parts: dict[str, list[RecordingPart]] = {}
            for row in db.run(f"SELECT {_PART_COLUMNS} FROM recording_parts ORDER BY started, id"):
                part = _part(row)
                parts.setdefault(part.recording, []).append(part)
            rows = db.run("SELECT id, started, header FROM recordings ORDER BY started, id")
            return [
                StoredRecording(str(i), float(started), str(header), tuple(parts.get(str(i), ())))
                for i, started, header in rows
            ]

        return await self._engine.transaction(read, write=False)

    async def calls(self, part: str, after: int, limit: int) -> list[tuple[int, float, str]]:
        """A part's calls (seq, at, the call line's JSON) numbered after `after`, at most `limit`, in
        order."""
        rows = await self._engine.select(
            "SELECT seq, at, call FROM recorded_calls WHERE part = ? AND seq > ? ORDER BY seq LIMIT ?",
            (part, after, limit),
        )
        return [(int(seq), float(at), str(call)) for seq, at, call in rows]

    async def delete_before(self, at: float) -> int:
        """Remove the recordings none of whose parts did anything since `at` (began, had a call, ended):
        whole, with their parts and calls. Returns how many recordings went."""

        def delete(db: Db) -> int:
            rows = db.run(
                "SELECT id FROM recordings r WHERE started < ? AND NOT EXISTS (SELECT 1 FROM recording_parts"
                " p WHERE p.recording = r.id AND (p.last_at >= ? OR p.ended >= ?))",
                (at, at, at),
            )
            gone = [str(row[0]) for row in rows]
            for chunk in chunks(gone):
                marks = placeholders(len(chunk))
                db.run(f"DELETE FROM recorded_calls WHERE recording IN ({marks})", chunk)
                db.run(f"DELETE FROM recording_parts WHERE recording IN ({marks})", chunk)
                db.run(f"DELETE FROM recordings WHERE id IN ({marks})", chunk)
            return len(gone)

        return await self._engine.transaction(delete, write=True)
