"""The shared store, on each engine: SQLite in a file, SQLite in memory, and PostgreSQL.

PostgreSQL runs when SHIM_TEST_POSTGRES_DSN names a database (.ci/run sets it);
each test gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from structlog.testing import capture_logs

from shim import store as store_module
from shim.store import IdPair, OutOfStep, Store, StoreError
from tests.helpers import until

POSTGRES_DSN = os.environ.get("SHIM_TEST_POSTGRES_DSN", "")
NEEDS_POSTGRES = "PostgreSQL tests need SHIM_TEST_POSTGRES_DSN (set by .ci/run)"
TIMEOUT = 20.0  # seconds a test waits for a condition at most

Raw = Callable[[str], list[tuple[Any, ...]]]


@dataclass
class Target:
    """Where a test's store lives, and a second connection to it (None for SQLite in memory)."""

    name: str
    url: str
    raw: Raw | None

    def sql(self, text: str) -> list[tuple[Any, ...]]:
        assert self.raw is not None
        return self.raw(text)


def _sqlite_raw(path: Path) -> Raw:
    def raw(text: str) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            return conn.execute(text).fetchall()

    return raw


def _postgres_raw(url: str) -> Raw:
    def raw(text: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cursor:
            cursor.execute(text.encode())
            return cursor.fetchall() if cursor.description is not None else []

    return raw


def _make_target(name: str, tmp_path: Path) -> Iterator[Target]:
    if name == "sqlite-file":
        path = tmp_path / "shim.db"
        yield Target(name, str(path), _sqlite_raw(path))
    elif name == "sqlite-memory":
        yield Target(name, ":memory:", None)
    else:
        if not POSTGRES_DSN:
            pytest.skip(NEEDS_POSTGRES)
        schema = f"t_{secrets.token_hex(6)}"
        admin = _postgres_raw(POSTGRES_DSN)
        admin(f"CREATE SCHEMA {schema}")
        separator = "&" if "?" in POSTGRES_DSN else "?"
        url = f"{POSTGRES_DSN}{separator}options={quote(f'-c search_path={schema}', safe='')}"
        try:
            yield Target(name, url, _postgres_raw(url))
        finally:
            admin(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """Every engine."""
    yield from _make_target(request.param, tmp_path)


@pytest.fixture(params=["sqlite-file", "postgres"])
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """The engines that keep data across connections."""
    yield from _make_target(request.param, tmp_path)


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Target]:
    """PostgreSQL alone, for what only it does."""
    yield from _make_target("postgres", tmp_path)


Opener = Callable[..., Awaitable[Store]]


@pytest.fixture
async def open_store() -> AsyncIterator[Opener]:
    """Open and start stores; every one is closed at the end of the test."""
    opened: list[Store] = []

    async def open_(url: str, base: Path | None = None) -> Store:
        store = Store.open(url, base)
        opened.append(store)
        await store.start()
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture
async def store(target: Target, open_store: Opener) -> Store:
    return await open_store(target.url)


def _pair(n: int, kind: str = "trade", at: float = 1000.0) -> IdPair:
    return IdPair(kind, f"B{n}", f"K{n}", owner=f"acct-{n}", learned_at=at + n)


# -- id pairs ----------------------------------------------------------------------------------------------


async def test_pairs_round_trip(store: Store) -> None:
    """Pairs put come back whole, looked up by their Bank id."""
    pairs = [_pair(1), _pair(2), IdPair("trade", "B3", "K3")]
    before = time.time()
    store.pairs.put(pairs)
    found = await store.pairs.find("trade", "bank", ["B1", "B2", "B3"])
    assert found[:2] == pairs[:2]
    assert found[2].bk_id == "K3"
    assert found[2].owner == ""
    assert before <= found[2].learned_at <= time.time(), "a pair without a time is stamped when enqueued"
    assert store.write_errors == 0


async def test_lookup_by_either_side(store: Store) -> None:
    """Either id finds the pair, within its kind; unknown ids are left out; the order is the one asked."""
    store.pairs.put([_pair(1), _pair(2), IdPair("order", "B1", "K9")])
    assert await store.pairs.find("trade", "bk", ["K2", "nope", "K1", "K2"]) == [_pair(2), _pair(1)]
    assert await store.pairs.find("trade", "bank", ["K1"]) == []
    assert [p.bk_id for p in await store.pairs.find("order", "bank", ["B1"])] == ["K9"]
    assert await store.pairs.find("trade", "bank", []) == []
    with pytest.raises(ValueError, match="side must be 'bank' or 'bk'"):
        await store.pairs.find("trade", "left", ["B1"])


async def test_many_values_are_looked_up_in_chunks(store: Store) -> None:
    """More values than one IN list holds are all found."""
    pairs = [_pair(n) for n in range(1234)]
    store.pairs.put(pairs)
    found = await store.pairs.find("trade", "bank", [p.bank_id for p in reversed(pairs)])
    assert found == pairs[::-1]


async def test_the_first_pair_learned_wins_on_both_sides(store: Store) -> None:
    """A later pair that conflicts on the Bank id or on the BK id is ignored, in one batch or a later one."""
    store.pairs.put([_pair(1), IdPair("trade", "B1", "K-other"), IdPair("trade", "B-other", "K1")])
    await store.flush()
    store.pairs.put([IdPair("trade", "B1", "K-later"), IdPair("trade", "B-later", "K1"), _pair(2)])
    assert await store.pairs.find("trade", "bank", ["B1", "B-other", "B-later", "B2"]) == [_pair(1), _pair(2)]
    assert await store.pairs.find("trade", "bk", ["K1", "K-other", "K-later"]) == [_pair(1)]
    assert store.write_errors == 0


async def test_recent_pairs_come_newest_first(store: Store) -> None:
    """recent_pairs orders by learned_at, newest first, and stops at the limit."""
    store.pairs.put([_pair(1, at=10), _pair(3, at=10), _pair(2, at=10)])
    assert [p.bank_id for p in await store.pairs.recent(2)] == ["B3", "B2"]
    assert [p.bank_id for p in await store.pairs.recent(10)] == ["B3", "B2", "B1"]
    assert await store.pairs.recent(0) == []


async def test_a_read_after_a_write_sees_it_without_flush(store: Store) -> None:
    """The queue is FIFO: a read enqueued after a write runs after its commit."""
    store.pairs.put([_pair(1)])
    assert await store.pairs.find("trade", "bank", ["B1"]) == [_pair(1)]
    store.marks.put([OutOfStep("acct-1", 5.0, "/ledger.Ledger/Book", "bk failed")])
    assert [m.key for m in await store.marks.out_of_step()] == ["acct-1"]


# -- keys out of step --------------------------------------------------------------------------------------


async def test_a_key_keeps_its_earliest_mark(store: Store) -> None:
    """Of several marks on a key, in one batch or across batches, the earliest stays; keys come in order."""
    store.marks.put(
        [
            OutOfStep("b", 50.0, "/s.S/Late", "late"),
            OutOfStep("b", 30.0, "/s.S/Early", "early"),
            OutOfStep("a", 40.0, "/s.S/A", "a"),
        ]
    )
    await store.flush()
    store.marks.put([OutOfStep("b", 35.0, "/s.S/Later", "later"), OutOfStep("*", 1.0, "/s.S/All", "x")])
    assert await store.marks.out_of_step() == [
        OutOfStep("*", 1.0, "/s.S/All", "x"),
        OutOfStep("a", 40.0, "/s.S/A", "a"),
        OutOfStep("b", 30.0, "/s.S/Early", "early"),
    ]
    store.marks.put([OutOfStep("a", 20.0, "/s.S/Earlier", "earlier")])
    assert (await store.marks.out_of_step())[1] == OutOfStep("a", 20.0, "/s.S/Earlier", "earlier")


async def test_every_mark_put_raises_the_generation_and_a_clear_of_an_older_one_clears_nothing(
    store: Store,
) -> None:
    """Each mark put on a key raises its generation, even a later one that leaves the key its earliest mark;
    a clear of the mark as read before (its `since` and generation) clears nothing once another mark was
    put meanwhile, and clears it when none was."""
    store.marks.put([OutOfStep("k", 10.0, "/s.S/M", "first", "a")])
    read = await store.marks.marked(["k", "x"])
    assert list(read) == ["k"]
    mark, generation = read["k"]
    assert mark == OutOfStep("k", 10.0, "/s.S/M", "first", "a")
    store.marks.put([OutOfStep("k", 20.0, "/s.S/M", "later", "b")])  # another replica's, later: not kept
    kept, raised = (await store.marks.marked(["k"]))["k"]
    assert (kept, raised > generation) == (mark, True)
    assert not await store.marks.clear("k", mark.since, generation)
    assert [m.key for m in await store.marks.out_of_step()] == ["k"]
    assert await store.marks.clear("k", mark.since, raised)
    assert await store.marks.marked(["k"]) == {}


async def test_a_mark_keeps_whose_id_its_key_is_and_marks_of_both_sides_on_one_text_keep_neither(
    store: Store,
) -> None:
    """A mark records whose id its key is (`side`: Bank's or BK's, the primary's when the write was made);
    more marks of that side keep it. A mark of the other side's id of the same text (Bank's A2 and BK's A2,
    where the id spaces overlap) shares the key's one row, whose side becomes "": either account may be
    the one out of step. A clear of the mark as one side's clears nothing once the other's joined it."""
    store.marks.put(
        [OutOfStep("A2", 10.0, "/s.S/M", "first", "a", "bk"), OutOfStep("B", 10.0, "/s.S/M", "r")]
    )
    store.marks.put([OutOfStep("A2", 15.0, "/s.S/M", "again", "a", "bk")])
    read = await store.marks.marked(["A2", "B"])
    assert read["A2"][0] == OutOfStep("A2", 10.0, "/s.S/M", "first", "a", "bk")
    assert read["B"][0].side == ""
    store.marks.put([OutOfStep("A2", 20.0, "/s.S/M", "Bank's", "b", "bank")])
    mark, generation = (await store.marks.marked(["A2"]))["A2"]
    assert mark == OutOfStep("A2", 10.0, "/s.S/M", "first", "a", "")
    assert await store.marks.out_of_step() == [mark, read["B"][0]]
    assert not await store.marks.clear("A2", 10.0, generation, side="bk")
    assert await store.marks.clear("A2", 10.0, generation, side="")


async def test_resync_returns_and_removes_the_marks(store: Store) -> None:
    """resync clears the given keys and answers those of them that were out of step."""
    store.marks.put([OutOfStep(key, 1.0, "/s.S/M", "r") for key in "abc"])
    assert await store.marks.resync(["c", "x", "a", "c"]) == ["c", "a"]
    assert [m.key for m in await store.marks.out_of_step()] == ["b"]
    assert await store.marks.resync(["a", "c"]) == []
    assert await store.marks.resync([]) == []


# -- life, durability, the fleet ---------------------------------------------------------------------------


async def test_data_persists_across_close_and_reopen(durable: Target, open_store: Opener) -> None:
    first = await open_store(durable.url)
    first.pairs.put([_pair(1)])
    first.marks.put([OutOfStep("a", 1.0, "/s.S/M", "r")])
    await first.close()
    second = await open_store(durable.url)
    assert await second.pairs.find("trade", "bank", ["B1"]) == [_pair(1)]
    assert await second.marks.out_of_step() == [OutOfStep("a", 1.0, "/s.S/M", "r")]


async def test_close_commits_what_is_queued_and_later_writes_are_ignored(target: Target) -> None:
    store = Store.open(target.url)
    await store.start()
    store.pairs.put([_pair(1)])
    await store.close()
    await store.close()  # idempotent
    store.pairs.put([_pair(2)])  # ignored, silently
    store.marks.put([OutOfStep("a", 1.0, "/s.S/M", "r")])
    assert store.write_errors == 0
    with pytest.raises(StoreError, match="is closed"):
        await store.pairs.find("trade", "bank", ["B1"])
    if target.raw is not None:
        assert target.sql("SELECT bank_id FROM id_pairs") == [("B1",)]


async def test_a_store_must_be_started_first(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "shim.db"))
    with pytest.raises(StoreError, match="is not started: call start"):
        await store.flush()
    await store.close()  # never started: nothing to do
    assert not (tmp_path / "shim.db").exists()


async def test_migrations_make_the_version_table_and_a_restart_changes_nothing(
    durable: Target, open_store: Opener
) -> None:
    first = await open_store(durable.url)
    first.pairs.put([_pair(1)])
    await first.close()
    assert durable.sql("SELECT version FROM shim_schema") == [(len(store_module.MIGRATIONS),)]
    second = await open_store(durable.url)
    assert durable.sql("SELECT version FROM shim_schema") == [(len(store_module.MIGRATIONS),)]
    assert await second.pairs.find("trade", "bank", ["B1"]) == [_pair(1)]


async def test_the_lateness_a_store_kept_before_its_bands_is_taken_as_over_at_the_upgrade(
    durable: Target, open_store: Opener
) -> None:
    """A store from before the bands of lateness kept each key's most lateness with no end: the upgrade
    takes it to be over then, so that the times it allowed for still are, and the times stamped after are
    not."""
    await (await open_store(durable.url)).close()
    added = ("late_until", "late_1", "late_bank_1", "late_until_1", "late_2", "late_bank_2", "late_until_2")
    for column in added:
        durable.sql(f"ALTER TABLE shim_key_order DROP COLUMN {column}")
    for column in ("gen", "side"):
        durable.sql(f"ALTER TABLE out_of_step DROP COLUMN {column}")
    _back_to(durable, _migration_adding("shim_key_order", "late_until"))
    durable.sql(
        "INSERT INTO shim_key_order (key, issued, done, last_replica, prev_replica, late, late_bank)"
        " VALUES ('k', 1, 1, '', '', 2.0, 0.0), ('b', 1, 1, '', '', 0.0, 0.5), ('j', 1, 1, '', '', 0.0, 0.0)"
    )
    before = time.time()
    await (await open_store(durable.url)).close()
    after = time.time()
    until = dict(durable.sql("SELECT key, late_until FROM shim_key_order"))
    assert before - 1.0 <= until["k"] <= after + 1.0, until  # (the database's clock, to the millisecond)
    assert before - 1.0 <= until["b"] <= after + 1.0, until
    assert until["j"] == 0.0
    assert durable.sql("SELECT version FROM shim_schema") == [(len(store_module.MIGRATIONS),)]


async def test_the_marks_of_a_store_from_before_generations_are_kept_and_cleared(
    durable: Target, open_store: Opener
) -> None:
    """A store from before the marks' generations keeps its marks through the upgrade, at generation 0,
    and a check clears them as any."""
    await (await open_store(durable.url)).close()
    for column in ("side", "gen"):
        durable.sql(f"ALTER TABLE out_of_step DROP COLUMN {column}")
    _back_to(durable, _migration_adding("out_of_step", "gen"))
    durable.sql(
        "INSERT INTO out_of_step (key, since, method, reason, replica) VALUES ('k', 5.0, 'm', 'r', 'a')"
    )
    store = await open_store(durable.url)
    assert await store.marks.marked(["k"]) == {"k": (OutOfStep("k", 5.0, "m", "r", "a"), 0)}
    assert await store.marks.clear("k", 5.0, 0)
    assert durable.sql("SELECT version FROM shim_schema") == [(len(store_module.MIGRATIONS),)]


async def test_the_marks_of_a_store_from_before_sides_say_neither_side(
    durable: Target, open_store: Opener
) -> None:
    """A store from before the marks' sides keeps its marks through the upgrade, with side "": whose id
    each key is was not recorded (a check reads every account the text names)."""
    await (await open_store(durable.url)).close()
    durable.sql("ALTER TABLE out_of_step DROP COLUMN side")
    _back_to(durable, _migration_adding("out_of_step", "side"))
    durable.sql(
        "INSERT INTO out_of_step (key, since, method, reason, replica, gen)"
        " VALUES ('A2', 5.0, 'm', 'r', 'a', 3)"
    )
    store = await open_store(durable.url)
    assert await store.marks.marked(["A2"]) == {"A2": (OutOfStep("A2", 5.0, "m", "r", "a", ""), 3)}
    assert await store.marks.clear("A2", 5.0, 3, side="")
    assert durable.sql("SELECT version FROM shim_schema") == [(len(store_module.MIGRATIONS),)]


def _back_to(durable: Target, version: int) -> None:
    """The store's schema said to be `version`, and the tables later migrations make dropped (the columns
    they add are the test's to drop): as a store of that version was."""
    for migration in store_module.MIGRATIONS[version:]:
        for statement in migration:
            if statement.startswith("CREATE TABLE "):
                durable.sql(f"DROP TABLE {statement.split()[2]}")
    durable.sql(f"UPDATE shim_schema SET version = {version}")


def _migration_adding(table: str, column: str) -> int:
    """The schema version before the migration that added `column` to `table`."""
    added = f"ALTER TABLE {table} ADD COLUMN {column} "
    return next(i for i, m in enumerate(store_module.MIGRATIONS) if any(s.startswith(added) for s in m))


async def test_a_newer_schema_is_refused(durable: Target, open_store: Opener) -> None:
    await (await open_store(durable.url)).close()
    durable.sql("UPDATE shim_schema SET version = 99")
    store = Store.open(durable.url)
    known = len(store_module.MIGRATIONS)
    message = f"has schema version 99; this shim knows up to {known}: upgrade the shim"
    with pytest.raises(StoreError, match=message):
        await store.start()
    with pytest.raises(StoreError, match="is closed"):
        await store.flush()
    await store.close()


def _content(path: Path) -> bytes | None:
    """The file's bytes (None when there is none)."""
    return path.read_bytes() if path.exists() else None


def _names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def _tables(target: Target) -> set[str]:
    if target.name == "sqlite-file":
        return {row[0] for row in target.sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {
        row[0] for row in target.sql("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    }


async def test_a_store_opened_to_read_refuses_another_applications_database_and_writes_nothing_there(
    durable: Target, tmp_path: Path
) -> None:
    """`Store.open(url, create=False)` (the commands that read a store) refuses a database that holds no
    shim store, and makes no table in it; on SQLite the file is not even written to (no WAL switch).
    Before, `shim report --store app.db` made the shim's tables in another application's database."""
    durable.sql("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    durable.sql("INSERT INTO users VALUES (1, 'alice')")
    before = _content(tmp_path / "shim.db")
    store = Store.open(durable.url, create=False)
    with pytest.raises(StoreError, match=r"not a shim store"):
        await store.start()
    await store.close()
    assert _tables(durable) == {"users"}
    if durable.name == "sqlite-file":
        assert _content(tmp_path / "shim.db") == before
        assert _names(tmp_path) == ["shim.db"]  # no -wal, no -shm


async def test_a_shim_starting_refuses_another_applications_sqlite_file_and_writes_nothing_there(
    tmp_path: Path,
) -> None:
    """`shim serve --store app.db` typed for `--store shim.db`: refused, one line naming its tables, and the
    file left as it was. Before, the shim made its twenty tables in it and served. An empty file, or a
    SQLite file with no table, is still made a store."""
    other = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(other)) as db, db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users VALUES (1, 'alice')")
    before = _content(other)
    store = Store.open(str(other))
    with pytest.raises(StoreError) as refused:
        await store.start()
    await store.close()
    assert str(refused.value) == (
        f"cannot open store {other}: not a shim store (a SQLite database of other tables: users): the shim"
        " makes its store in a file of its own"
    )
    assert _content(other) == before
    assert _names(tmp_path) == ["app.db"]
    blank = tmp_path / "blank.db"
    blank.write_bytes(b"")
    with contextlib.closing(sqlite3.connect(tmp_path / "no-tables.db")) as db:
        db.execute("PRAGMA user_version = 1")
    for path in (blank, tmp_path / "no-tables.db"):
        made = Store.open(str(path))
        await made.start()
        await made.close()
        assert _content(path)


async def test_a_store_another_process_holds_locked_is_said_to_be_locked_not_foreign(tmp_path: Path) -> None:
    """A command reading a store that another process holds locked past the busy wait (an exclusive lock in
    rollback-journal mode) says so. Before, it said the file was "not a shim store"."""
    path = tmp_path / "shim.db"
    made = Store.open(str(path))
    await made.start()
    await made.close()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("PRAGMA journal_mode = DELETE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("INSERT INTO shim_schema (version) SELECT version FROM shim_schema")
        reader = Store.open(str(path), create=False)
        with pytest.raises(StoreError) as locked:
            await reader.start()
        await reader.close()
        holder.execute("ROLLBACK")
    assert str(locked.value) == (
        f"cannot open store {path}: cannot read it now: database is locked (another process holds it locked)"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no file there"),
        (b"", r"not a shim store \(an empty file\)"),
        (b"this is not a database" * 100, r"not a shim store \(not a SQLite database"),
    ],
)
async def test_a_store_opened_to_read_refuses_a_missing_empty_or_other_file_and_makes_none(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "shim.db"
    if content is not None:
        path.write_bytes(content)
    store = Store.open(str(path), create=False)
    with pytest.raises(StoreError, match=rf"^cannot open store {re.escape(str(path))}: {message}"):
        await store.start()
    await store.close()
    assert _content(path) == content
    assert _names(tmp_path) == ([] if content is None else ["shim.db"])


async def test_a_store_opened_to_read_takes_a_shim_store_in_use_and_refuses_an_older_one(
    durable: Target, open_store: Opener
) -> None:
    """A shim store is read whatever it holds, while a shim has it open. One of an older schema, which the
    replicas of its release still use, is refused and left as it is: migrated, it would make them refuse
    it when they start again. Before, it was brought up to date as a shim starting does."""
    writer = await open_store(durable.url)
    writer.pairs.put([_pair(1)])
    await writer.flush()
    reader = Store.open(durable.url, create=False)
    await reader.start()
    try:
        assert await reader.pairs.find("trade", "bank", ["B1"]) == [_pair(1)]
    finally:
        await reader.close()
    await writer.close()
    durable.sql("ALTER TABLE out_of_step DROP COLUMN side")
    version = _migration_adding("out_of_step", "side")
    _back_to(durable, version)
    older = Store.open(durable.url, create=False)
    with pytest.raises(StoreError, match=rf"has schema version {version}; this shim reads .*`shim serve`"):
        await older.start()
    assert durable.sql("SELECT version FROM shim_schema") == [(version,)]
    again = await open_store(durable.url)  # a shim of this release, starting, migrates it
    await again.close()
    assert durable.sql("SELECT version FROM shim_schema") == [(len(store_module.MIGRATIONS),)]


async def test_two_stores_on_one_database_see_each_others_writes(durable: Target, open_store: Opener) -> None:
    """The fleet: replicas starting together migrate once, then share pairs and marks."""
    one, two = await asyncio.gather(open_store(durable.url), open_store(durable.url))
    assert durable.sql("SELECT version FROM shim_schema") == [(len(store_module.MIGRATIONS),)]
    one.pairs.put([_pair(1)])
    await one.flush()
    two.pairs.put([IdPair("trade", "B-two", "K1")])  # loses to one's pair
    assert await two.pairs.find("trade", "bk", ["K1"]) == [_pair(1)]
    two.marks.put([OutOfStep("a", 1.0, "/s.S/M", "r")])
    await two.flush()
    assert [m.key for m in await one.marks.out_of_step()] == ["a"]
    assert await one.marks.resync(["a"]) == ["a"]
    assert await two.marks.resync(["a"]) == []


# -- failures ----------------------------------------------------------------------------------------------


async def test_a_failing_write_batch_is_counted_and_the_worker_goes_on(store: Store) -> None:
    """A batch the database rejects is logged once and counted; later writes still land."""
    with capture_logs() as logs:
        store.pairs.put([IdPair("trade", "B\ud800", "K1")])  # cannot be encoded
        await store.flush()
    assert store.write_errors == 1
    [entry] = [e for e in logs if e["event"].startswith("store write failed")]
    assert entry["log_level"] == "warning"
    assert entry["store"] == store.url
    assert "surrogates not allowed" in entry["error"]
    store.pairs.put([_pair(1)])
    assert await store.pairs.find("trade", "bk", ["K1"]) == [_pair(1)]
    assert store.write_errors == 1


@pytest.mark.parametrize("fault", ["full", "read-only"])
async def test_a_full_or_read_only_sqlite_keeps_the_writes_in_order_until_it_takes_them_again(
    fault: str, tmp_path: Path, open_store: Opener
) -> None:
    """ "database or disk is full" and "attempt to write a readonly database" pass: the writes are kept and
    tried again, all of them in their order, however many reads come between them (each try fails while
    the fault lasts), and land once the database takes writes again: none lost, none counted as failed."""
    store = await open_store(str(tmp_path / "shim.db"))
    held, go = threading.Event(), threading.Event()

    def break_it(db: Any) -> None:  # the worker waits here, so that the jobs after it come in one round
        held.set()
        go.wait(TIMEOUT)
        if (
            fault == "full"
        ):  # it may not grow: a full disk (the pairs' ids below each need pages of their own)
            db.run(f"PRAGMA max_page_count = {db.run('PRAGMA page_count')[0][0]}")
        else:
            db.run("PRAGMA query_only = ON")

    def mend(db: Any) -> None:
        db.run("PRAGMA max_page_count = 1073741823" if fault == "full" else "PRAGMA query_only = OFF")

    big = "x" * 65536
    pairs = [IdPair("trade", f"B{n}{big}", f"K{n}", learned_at=1.0) for n in range(3)]
    breaking = asyncio.ensure_future(store.transaction(break_it, write=False))
    await until(held.is_set, "the worker held")
    reads = []
    for pair in pairs:
        store.pairs.put([pair])
        reads.append(asyncio.ensure_future(store.pairs.find("trade", "bk", ["K0", "K1", "K2"])))
        await asyncio.sleep(0)  # one turn of the loop: the read's call is in the queue, after the write
    go.set()
    await breaking
    assert [await read for read in reads] == [[], [], []]  # nothing could be written
    await store.transaction(mend, write=False)
    await store.flush()
    assert await store.pairs.find("trade", "bk", ["K0", "K1", "K2"]) == pairs
    assert (store.write_errors, store.backlog) == (0, 0)


async def test_a_lost_table_fails_writes_and_reads_but_not_the_worker(
    durable: Target, open_store: Opener
) -> None:
    """Writes to a dropped table are counted, reads of it raise StoreError, the other table still works."""
    store = await open_store(durable.url)
    durable.sql("DROP TABLE id_pairs")
    with capture_logs():
        store.pairs.put([_pair(1)])
        await store.flush()
    assert store.write_errors == 1
    with pytest.raises(StoreError, match=r"^cannot read store .*id_pairs"):
        await store.pairs.find("trade", "bank", ["B1"])
    store.marks.put([OutOfStep("a", 1.0, "/s.S/M", "r")])
    assert [m.key for m in await store.marks.out_of_step()] == ["a"]
    assert store.write_errors == 1


async def test_postgres_reconnects_after_losing_its_connection(postgres: Target, open_store: Opener) -> None:
    """The batch that meets the lost connection is kept and tried again on a new connection: nothing is
    lost, and the worker says once that the store was unavailable."""
    name = f"shim_test_{secrets.token_hex(6)}"
    store = await open_store(f"{postgres.url}&application_name={name}")
    store.pairs.put([_pair(1)])
    await store.flush()
    # with a timeout, pg_terminate_backend waits until the backend is gone
    killed = postgres.sql(
        f"SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE application_name = '{name}'"
    )
    assert killed == [(True,)]
    with capture_logs() as logs:
        store.pairs.put([_pair(2)])
        await store.flush()
        store.pairs.put([_pair(3)])
        found = await store.pairs.find("trade", "bank", ["B1", "B2", "B3"])
    assert found == [_pair(1), _pair(2), _pair(3)]
    assert store.write_errors == 0
    assert [e["event"] for e in logs] == [
        "store unavailable: writes are kept and tried again",
        "store available again",
    ]


async def test_an_unreachable_postgres_fails_start_quickly() -> None:
    store = Store.open("postgresql://postgres:secret@127.0.0.1:1/test")
    with pytest.raises(StoreError) as caught:
        await asyncio.wait_for(store.start(), timeout=10)
    message = str(caught.value)
    assert message.startswith("cannot open store postgresql://postgres:***@127.0.0.1:1/test: ")
    assert "refused" in message.lower()
    assert "secret" not in message
    assert "\n" not in message
    await store.close()


async def test_a_sqlite_file_in_a_new_directory_is_created(tmp_path: Path, open_store: Opener) -> None:
    path = tmp_path / "state" / "deep" / "shim.db"
    store = await open_store(str(path))
    store.pairs.put([_pair(1)])
    await store.flush()
    assert path.is_file()


async def test_a_sqlite_file_that_cannot_be_created_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    store = Store.open(str(tmp_path / "a-file" / "shim.db"))
    with pytest.raises(
        StoreError, match=r"^cannot open store .*a-file/shim\.db: cannot create the directory"
    ):
        await store.start()
    await store.close()


# -- urls --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://shim:s3cr%40t@db:5432/shim", "postgresql://shim:***@db:5432/shim"),
        (
            "postgres://shim@db/shim?password=hush&sslmode=require",
            "postgres://shim:***@db/shim?sslmode=require",  # rebuilt from what libpq reads (test_store_url)
        ),
        ("postgresql://db/shim", "postgresql://db/shim"),
        ("sqlite:///var/lib/shim.db", "sqlite:///var/lib/shim.db"),
        ("state/shim.db", "state/shim.db"),
        (":memory:", ":memory:"),
    ],
)
def test_the_url_is_kept_with_its_password_masked(url: str, shown: str) -> None:
    assert Store.open(url).url == shown


@pytest.mark.parametrize("url", ["mysql://x", "mysql://u:pw@x/db", "sqlite://host/shim.db", "", "sqlite:"])
def test_an_unknown_url_is_refused_naming_the_forms(url: str) -> None:
    with pytest.raises(StoreError, match=r"use one of postgresql://\.\.\., postgres://") as caught:
        Store.open(url)
    assert "pw" not in str(caught.value)


async def test_postgres_urls_of_both_schemes_reach_postgres() -> None:
    for url in ["postgresql://postgres@127.0.0.1:1/test", "postgres://postgres@127.0.0.1:1/test"]:
        store = Store.open(url)
        with pytest.raises(StoreError, match=rf"^cannot open store {re.escape(url)}: connection failed"):
            await store.start()


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("sqlite:///ABS/a.db", "a.db"),
        ("sqlite:rel/b.db", "base/rel/b.db"),
        ("plain/c.db", "base/plain/c.db"),
        ("d.db", "base/d.db"),
    ],
)
async def test_sqlite_urls_name_their_file(tmp_path: Path, open_store: Opener, url: str, where: str) -> None:
    """sqlite:///abs is absolute; sqlite:rel and a plain path are relative to `base`."""
    await open_store(url.replace("/ABS", str(tmp_path)), tmp_path / "base")
    assert (tmp_path / where).is_file()


async def test_relative_paths_without_a_base_are_relative_to_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, open_store: Opener
) -> None:
    monkeypatch.chdir(tmp_path)
    await open_store("sqlite:cwd.db")
    await open_store("plain.db")
    await open_store(":memory:")
    assert (tmp_path / "cwd.db").is_file()
    assert (tmp_path / "plain.db").is_file()
    assert not (tmp_path / ":memory:").exists()


async def test_a_memory_store_keeps_nothing(open_store: Opener) -> None:
    first = await open_store(":memory:")
    first.pairs.put([_pair(1)])
    await first.close()
    second = await open_store(":memory:")
    assert await second.pairs.find("trade", "bank", ["B1"]) == []


async def test_a_start_mode_already_last_recorded_is_recorded_once(store: Store) -> None:
    """The processes of one start (`--workers`) each record the mode they started in: the store keeps one
    change, the first; a later start in another mode is recorded, and does not set a run-time mode."""
    from shim.store import ModeChange

    first = ModeChange(time.time(), "shim serve", "*", "", "bank", "started", False)
    await asyncio.gather(*(store.modes.started(first) for _ in range(3)))
    await store.modes.started(
        ModeChange(time.time() + 1, "shim serve", "*", "bank", "shadow", "started", False)
    )
    history = await store.modes.history()
    assert [(c.from_mode, c.to_mode) for c in history] == [("bank", "shadow"), ("", "bank")]
    assert await store.modes.current() == {}


async def test_what_judges_the_comparisons_is_recorded_when_it_changes(
    durable: Target, open_store: Opener
) -> None:
    """The first fingerprint a store is told of counts from the start; the same one again records
    nothing; another one is a change at its time. Two replicas judging by different rules (a rolling
    restart half done) each record theirs again as they say it: the latest change keeps moving until
    they agree."""
    one, two = await open_store(durable.url), await open_store(durable.url)
    assert await one.judging.judged_by("rules-a", "r1", 10.0) is False  # the first: no change
    assert await one.judging.changed() is None
    assert await two.judging.judged_by("rules-a", "r2", 11.0) is False
    assert await two.judging.judged_by("rules-b", "r2", 12.0) is True
    assert await one.judging.changed() == (12.0, "r2")
    assert await one.judging.judged_by("rules-a", "r1", 13.0) is True  # r1 still judges by the old
    assert await two.judging.judged_by("rules-b", "r2", 14.0) is True
    assert await one.judging.changed() == (14.0, "r2")
    assert await two.judging.judged_by("rules-b", "r1", 15.0) is False  # r1 restarted with the new
    assert await one.judging.changed() == (14.0, "r2")
