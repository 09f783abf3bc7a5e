"""The commands that work on a store the shim made (`shim report`, `gate`, `ids`, `record`, `resync`,
`bk-build`, `reconcile`) open a shim store only: a file or database that is not one is an error (exit
2) and nothing is written into it. `shim serve` alone makes a new store."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

import sample_ledger
from shim.cli import main
from shim.store import Store
from shim.testing import postgres_schema

POSTGRES_DSN = os.environ.get("SHIM_TEST_POSTGRES_DSN", "")
SAMPLE_CONFIG = Path(sample_ledger.__file__).parent / "shim.toml"
COMMANDS = {
    "report": ["report"],
    "gate": ["gate"],
    "ids": ["ids", "list"],
    "record": ["record", "list"],
    "resync": ["resync", "--list"],
    "bk-build": ["bk-build"],
    "reconcile": [
        "reconcile",
        "--config",
        str(SAMPLE_CONFIG),
        "--bank",
        "127.0.0.1:1",
        "--bk",
        "127.0.0.1:2",
    ],
}


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_another_applications_database_is_refused_and_left_as_it_was(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--store app.db` typed for `--store shim.db`. Before, `shim report` and `shim gate` made the shim's
    twenty tables in it, exited 0 and said "No comparison is stored"."""
    other = tmp_path / "app.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users VALUES (1, 'alice')")
    before = other.read_bytes()
    assert main([*COMMANDS[command], "--store", str(other)]) == 2
    assert capsys.readouterr().err == (
        f"shim: error: cannot open store {other}: not a shim store (a SQLite database of other tables:"
        " users)\n"
    )
    assert other.read_bytes() == before
    assert _tables(other) == {"users"}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["app.db"]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_empty_file_is_refused_not_made_a_store(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Named with `--store`, or by the config's `[store] url`."""
    empty = tmp_path / "notes.txt"
    empty.write_bytes(b"")
    config = tmp_path / "shim.toml"
    config.write_text('[store]\nurl = "notes.txt"\n')
    argv = COMMANDS[command] if command == "reconcile" else [*COMMANDS[command], "--config", str(config)]
    named = ["--store", str(empty)] if command == "reconcile" else []
    assert main([*argv, *named]) == 2
    assert f"cannot open store {empty}: not a shim store (an empty file)" in capsys.readouterr().err
    assert empty.read_bytes() == b""
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt", "shim.toml"]


def test_a_store_the_shim_made_is_read_as_before(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "shim.db"

    async def make() -> None:
        store = Store.open(str(path))
        await store.start()
        await store.close()

    asyncio.run(make())
    assert main(["bk-build", "--store", str(path)]) == 0
    assert "no build of BK declared" in capsys.readouterr().out
    assert main(["report", "--store", str(path)]) == 0
    assert "No comparison is stored" in capsys.readouterr().out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_store_of_an_older_release_in_service_is_refused_not_migrated(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newer release's `shim report` (or gate, ids, ...) run against the fleet's store. Before, it moved the
    schema forward, and each replica of the release in service that started again refused the store."""
    from shim.store import migrations

    path = tmp_path / "shim.db"
    every = list(migrations.MIGRATIONS)

    async def make() -> None:  # by the release in service: one migration less
        store = Store.open(str(path))
        await store.start()
        await store.close()

    monkeypatch.setattr(migrations, "MIGRATIONS", every[:-1])
    asyncio.run(make())
    monkeypatch.setattr(migrations, "MIGRATIONS", every)
    assert main([*COMMANDS[command], "--store", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"shim: error: store {path} has schema version {len(every) - 1}; this shim"
        f" reads {len(every)}: upgrade it by starting the new release's `shim serve` (see docs/fleet.md,"
        " Upgrading the shim)\n"
    )
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM shim_schema").fetchall() == [(len(every) - 1,)]


@pytest.mark.parametrize("command", ["report", "gate"])
def test_a_postgresql_database_that_holds_no_shim_store_is_refused_and_nothing_made_there(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A url whose search_path finds no shim_schema table (another application's schema, or an empty one):
    no table is made in it."""
    if not POSTGRES_DSN:
        pytest.skip("PostgreSQL tests need SHIM_TEST_POSTGRES_DSN (set by .ci/run)")
    import psycopg

    with postgres_schema(POSTGRES_DSN) as url:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
        assert main([*COMMANDS[command], "--store", url]) == 2
        assert "not a shim store (no table shim_schema in the database" in capsys.readouterr().err
        with psycopg.connect(url, autocommit=True) as db:
            tables = db.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            assert [row[0] for row in tables.fetchall()] == ["users"]


def test_resync_lists_a_mark_whose_time_is_no_time_as_it_is_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mark another tool wrote with a time that is no time is listed with that value as stored, beside
    the others. Before, `shim resync --list` died with a traceback (TypeError)."""
    path = tmp_path / "shim.db"

    async def made() -> None:
        store = Store.open(str(path))
        await store.start()
        await store.close()

    asyncio.run(made())
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO out_of_step (key, since, method, reason) VALUES ('K1', 'notanumber', 'x.Y/Z', 'y')"
        )
        db.execute("INSERT INTO out_of_step (key, since, method, reason) VALUES ('K2', 0, 'x.Y/Z', 'y')")
    main(["resync", "--list", "--store", str(path)])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:2] for line in lines[:2]] == [
        ["K1", "since 'notanumber'"],
        ["K2", "since 1970-01-01T00:00:00Z"],
    ]
