"""What a SQLite file holds, read without changing it: before a new store takes its place (`shim replay
--store`), which must never replace one that holds anything, nor another application's database.

The file is opened read-only and immutable: no migration, no lock, no -wal or -shm file made beside it.
SQLite then reads the file alone, so a file whose -wal or -journal holds anything (it is open, or its
last writer was killed with it open) is not read, and never taken to be empty.
"""

from __future__ import annotations

import contextlib
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote

from shim.store._errors import StoreError, one_line

SCHEMA = "shim_schema"  # the table every shim store has (`migrations.migrate`)
# the tables of each thing a store holds, by the name an error gives it
_HOLDS = {
    "comparisons": "comparisons",
    "comparison_paths": "comparisons",
    "counts": "counts",
    "recordings": "recordings",
    "recording_parts": "recordings",
    "recorded_calls": "recordings",
    "id_pairs": "id pairs",
    "unpaired_ids": "id pairs",
    "key_aliases": "key aliases",
    "out_of_step": "keys out of step",
    "verifications": "keys out of step",
    "intents": "intents",
    "modes": "modes",
    "mode_changes": "modes",
}
_SHOWN = 5  # tables named at most, of another application's database


def held_in(path: Path) -> list[str]:
    """What the SQLite file at `path` holds ("comparisons", "recordings", "id pairs", ...): [] when it is
    an empty file, or a shim store with no row in any table. StoreError when it is not a shim store (not a
    SQLite database, or another application's) or cannot be read whole without writing."""
    try:
        found = path.stat()
    except OSError as exc:
        raise StoreError(f"cannot read it: {exc.strerror or exc}") from None
    if not stat.S_ISREG(found.st_mode):
        raise StoreError("not a file")
    for side in ("-wal", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            if Path(f"{path}{side}").stat().st_size > 0:
                raise StoreError(
                    f"{path.name}{side} is beside it: the database is open, or its last writer was killed"
                    " with it open"
                )
    if found.st_size == 0:
        return []
    uri = f"file:{quote(str(path.absolute()))}?mode=ro&immutable=1"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            tables = _tables(db)
            if SCHEMA not in tables:
                raise StoreError(f"not a shim store ({_others(tables)})")
            held = [
                table
                for table in tables
                if table != SCHEMA
                and not table.startswith("sqlite_")
                and db.execute(f'SELECT 1 FROM "{table.replace(chr(34), chr(34) * 2)}" LIMIT 1').fetchone()
            ]
    except sqlite3.Error as exc:
        raise _unread(exc) from None
    return list(dict.fromkeys(_HOLDS.get(table, table) for table in held))


def is_store(path: Path) -> None:
    """Nothing when the SQLite file at `path` is a shim store (made by `shim serve`, whatever it holds);
    else StoreError: there is no file, or it is empty, or not a SQLite database, or another application's.
    Read without writing: opened read-only, so that a command that only reads never migrates another
    application's database, nor turns an empty file into a store."""
    try:
        found = path.stat()
    except FileNotFoundError:
        raise StoreError("no file there: nothing was recorded there") from None
    except OSError as exc:
        raise StoreError(f"cannot read it: {exc.strerror or exc}") from None
    if not stat.S_ISREG(found.st_mode):
        raise StoreError("not a shim store (not a file)")
    if found.st_size == 0:
        raise StoreError("not a shim store (an empty file)")
    uri = f"file:{quote(str(path.absolute()))}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            tables = _tables(db)
    except sqlite3.Error as exc:
        raise _unread(exc) from None
    if SCHEMA not in tables:
        raise StoreError(f"not a shim store ({_others(tables)})")


def _unread(exc: sqlite3.Error) -> StoreError:
    """Why a SQLite file could not be read: locked by another process now, or no database it can read."""
    if getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED"):
        return StoreError(f"cannot read it now: {one_line(exc)} (another process holds it locked)")
    return StoreError(f"not a shim store (not a SQLite database it can read: {one_line(exc)})")


def not_another_applications(path: Path) -> None:
    """Nothing unless the file at `path` is a SQLite database of another application's (tables, and no
    shim_schema among them): StoreError then, before a shim makes its store there. Read without writing;
    a file that cannot be read so (no file, an empty one, one locked now, not a database) is left to the
    store's own opening, which makes it a store or says why not."""
    try:
        if path.stat().st_size == 0:
            return
        with contextlib.closing(
            sqlite3.connect(f"file:{quote(str(path.absolute()))}?mode=ro", uri=True)
        ) as db:
            tables = [table for table in _tables(db) if not table.startswith("sqlite_")]
    except (OSError, sqlite3.Error):
        return
    if tables and SCHEMA not in tables:
        raise StoreError(
            f"not a shim store ({_others(tables)}): the shim makes its store in a file of its own"
        )


def _tables(db: sqlite3.Connection) -> list[str]:
    return [str(row[0]) for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


def _others(tables: list[str]) -> str:
    if not tables:
        return "a SQLite database with no tables"
    names = sorted(tables)
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"a SQLite database of other tables: {', '.join(names[:_SHOWN])}{more}"
