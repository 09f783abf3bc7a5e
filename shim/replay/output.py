"""Where a replay's evidence goes: a fresh SQLite store, written under a temporary name and renamed once the
replay is over, or removed when it fails: a store under the name asked for is a whole replay. It takes the
place of no file that holds anything (`Output.refuse_held`).

A PostgreSQL store cannot be renamed into place, nor emptied of one run's rows without touching what
other shims write there: replay refuses it (replay to a file; `shim report` and `shim gate` read it)."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from shim.replay.source import ReplayError
from shim.store import Store, StoreError, held_in, shown_url

PARTIAL = ".partial"
_SIDE_FILES = ("-journal", "-wal", "-shm")  # what SQLite may leave beside a database file


def output_path(url: str) -> Path:
    """The file a --store URL names; ReplayError for a store replay cannot write whole."""
    if re.match(r"postgres(ql)?://", url, flags=re.IGNORECASE):
        raise ReplayError(
            "--store: replay writes a new SQLite file, renamed into place once whole; a PostgreSQL store"
            " cannot be (give a file, e.g. --store replay.db)"
        )
    rest = url[len("sqlite:") :] if url.lower().startswith("sqlite:") else url
    rest = rest[2:] if rest.startswith("//") else rest
    if not rest or rest == ":memory:":
        raise ReplayError("--store: replay needs a file to write (e.g. --store replay.db)")
    if re.match(r"[a-z][a-z0-9+.-]*:", url, flags=re.IGNORECASE) and not url.lower().startswith("sqlite:"):
        raise ReplayError(f"--store: unknown store url {shown_url(url)!r}: give a SQLite file")
    return Path(rest).absolute()


class Output:
    """The replay's store: `open()` at the temporary name, then `keep()` or `discard()`."""

    def __init__(self, url: str) -> None:
        self.path = output_path(url)
        self.partial = self.path.with_name(self.path.name + PARTIAL)

    def refuse_held(self) -> None:
        """A file at the store's path is replaced only when it holds nothing: not a shim store that holds
        anything (comparisons, a recording, id pairs, marks), nor another application's file. It is read
        without writing anything into it, or beside it."""
        if not os.path.lexists(self.path):
            return
        try:
            held = held_in(self.path)
        except StoreError as exc:
            raise ReplayError(f"--store {self.path}: {exc}; give a new file") from None
        if held:
            raise ReplayError(f"--store {self.path}: it already holds {', '.join(held)}; give a new file")

    def open(self) -> Store:
        self._remove(self.partial)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return Store.open(str(self.partial))

    def keep(self) -> Path:
        """The replay is over and its store closed: give it its name. A file that came to hold something
        there meanwhile is not replaced either (a ReplayError)."""
        self.refuse_held()
        self._remove(self.path, itself=False)  # SQLite would take an old -wal for the new file's
        os.replace(self.partial, self.path)
        return self.path

    def discard(self) -> None:
        self._remove(self.partial)

    @staticmethod
    def _remove(path: Path, itself: bool = True) -> None:
        for name in ([path] if itself else []) + [Path(str(path) + side) for side in _SIDE_FILES]:
            with contextlib.suppress(FileNotFoundError):
                name.unlink()
