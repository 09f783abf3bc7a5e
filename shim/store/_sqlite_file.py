"""A SQLite file that may be deleted, or replaced, under its open connection.

An open connection keeps its file after the file is deleted: it goes on
reading and committing into an inode that no path names, and whatever it
writes there is gone when it closes. So the store compares, before each
transaction, the file at its path with the one it opened (`identity`); when
they differ it makes a new file at the path (`creating`) and copies into it,
from the old file that the old connection still reads (`carry`).

A database's -wal and -shm files are found by its name. Those of a deleted
database must not be taken up by a new one of the same name: `creating`
removes them while no database is at the path, under a lock on the directory,
so that processes sharing the file (`shim serve --workers N`) do not remove
each other's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

Identity = tuple[int, int] | None  # (device, inode) of a file; None when there is none


def identity(path: Path) -> Identity:
    """The file at `path` (None when there is none, or it cannot be looked at)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@contextlib.contextmanager
def creating(path: Path) -> Iterator[None]:
    """While inside (under a lock on the directory), open a connection to `path`: when there is no
    database there, the -wal and -shm files of the one that was are removed first."""
    try:
        directory = os.open(path.parent, os.O_RDONLY)
    except OSError:
        directory = -1  # not even readable: SQLite will say what is wrong
    try:
        if directory >= 0:
            fcntl.flock(directory, fcntl.LOCK_EX)
        if identity(path) is None:
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{path}{suffix}")
        yield
    finally:
        if directory >= 0:
            os.close(directory)  # and the lock with it


def carry(
    old: sqlite3.Connection, path: Path, tables: Sequence[str], replicas: Sequence[str], lost: str
) -> int:
    """Copy from `old` into the database at `path` (same schema) the rows of `tables` that it lacks and
    the counts of `replicas`; their comparisons, which are not copied, are counted there under the name
    `lost`, by method and minute. Returns how many comparisons that is; one transaction."""
    marks = ", ".join("?" * len(replicas))
    old.execute("ATTACH DATABASE ? AS fresh", (str(path),))
    try:
        old.execute("BEGIN IMMEDIATE")
        try:
            for table in tables:
                old.execute(f"INSERT OR IGNORE INTO fresh.{table} SELECT * FROM main.{table}")
            old.execute(
                "INSERT INTO fresh.counts (at, replica, method, name, value)"
                f" SELECT at, replica, method, name, value FROM main.counts WHERE replica IN ({marks})",
                replicas,
            )
            rows = old.execute(
                "INSERT INTO fresh.counts (at, replica, method, name, value)"
                " SELECT MAX(at), replica, method, ?, COUNT(*) FROM main.comparisons"
                f" WHERE replica IN ({marks}) GROUP BY replica, method, CAST(at / 60 AS INTEGER)"
                " RETURNING value",
                (lost, *replicas),
            ).fetchall()
            old.execute("COMMIT")
        except BaseException:
            if old.in_transaction:
                old.execute("ROLLBACK")
            raise
    finally:
        old.execute("DETACH DATABASE fresh")
    return sum(int(row[0]) for row in rows)
