"""Opening files: fresh, older (upgraded in place), newer (refused untouched), not a database at all."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.database import open_database
from storage.errors import StorageError
from storage.migrations import MIGRATIONS, Migration, latest_version, split_statements

EXPECTED_TABLES = {"users", "mqtt_instances", "projects", "devices", "topics", "api_keys", "messages", "quota_usage"}


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        return {row[0] for row in connection.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        return connection.execute("PRAGMA user_version").fetchone()[0]


async def test_fresh_file_gets_the_whole_schema_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "roost.db"
    db = await open_database(path)
    try:
        assert await db.fetch_value("PRAGMA journal_mode") == "wal"
        assert await db.fetch_value("PRAGMA foreign_keys") == 1
        assert await db.fetch_value("PRAGMA busy_timeout") == 5000
        assert await db.fetch_value("PRAGMA synchronous") == 1  # NORMAL
    finally:
        await db.close()
    assert EXPECTED_TABLES <= _tables(path)
    assert _user_version(path) == latest_version()


async def test_reopening_a_current_file_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "roost.db"
    await (await open_database(path)).close()
    db = await open_database(path)
    await db.close()
    assert _user_version(path) == latest_version()


async def test_version_0_file_with_data_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "roost.db"
    with sqlite3.connect(path) as connection:  # a file made by hand, before Roost had a schema
        connection.execute("CREATE TABLE notes (body TEXT)")
        connection.execute("INSERT INTO notes VALUES ('keep me')")
    assert _user_version(path) == 0
    db = await open_database(path)
    await db.close()
    assert _user_version(path) == latest_version()
    assert EXPECTED_TABLES | {"notes"} <= _tables(path)
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT body FROM notes").fetchall() == [("keep me",)]


async def test_older_schema_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "roost.db"
    db = await open_database(path)
    async with db.transaction() as connection:
        await connection.execute(
            "INSERT INTO users (public_id, name, created_at, updated_at) VALUES (?, 'alice', 'x', 'x')", ("a" * 24,)
        )
    await db.close()
    newer = (*MIGRATIONS, Migration(latest_version() + 1, "add a column", "ALTER TABLE users ADD COLUMN email TEXT;"))
    db = await open_database(path, migrations=newer)
    try:
        assert await db.fetch_value("SELECT name FROM users") == "alice"
        assert await db.fetch_value("SELECT email FROM users") is None
        assert await db.fetch_value("PRAGMA user_version") == latest_version() + 1
    finally:
        await db.close()


async def test_failed_migration_rolls_back_and_leaves_the_version(tmp_path: Path) -> None:
    path = tmp_path / "roost.db"
    await (await open_database(path)).close()
    broken = (*MIGRATIONS, Migration(latest_version() + 1, "broken", "CREATE TABLE extra (x);\nSELECT * FROM nowhere;"))
    with pytest.raises(StorageError, match="migration 2 .*rolled back"):
        await open_database(path, migrations=broken)
    assert _user_version(path) == latest_version()
    assert "extra" not in _tables(path)


async def test_newer_schema_is_refused_and_the_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "roost.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE future (x)")
        connection.execute("PRAGMA user_version = 99")
    before = path.read_bytes()
    with pytest.raises(StorageError) as raised:
        await open_database(path)
    assert str(raised.value) == (
        f"{path}: database schema version 99 is newer than this Roost ({latest_version()}); upgrade Roost"
    )
    assert path.read_bytes() == before
    assert not (tmp_path / "roost.db-wal").exists()


@pytest.mark.parametrize("content", [b"this is not a database\n" * 200, b"SQLite format 3\x00" + b"\xff" * 4000])
async def test_garbage_file_is_refused_and_left_alone(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "roost.db"
    path.write_bytes(content)
    with pytest.raises(StorageError, match="not a SQLite database or is damaged"):
        await open_database(path)
    assert path.read_bytes() == content


async def test_damaged_schema_page_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "roost.db"
    db = await open_database(path)
    await db.fetch_value("PRAGMA wal_checkpoint(TRUNCATE)")
    await db.close()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA journal_mode = DELETE")
    data = bytearray(path.read_bytes())
    data[100:400] = b"\xee" * 300  # the b-tree header and cell pointers of sqlite_schema on page 1
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError):
        await open_database(path)


async def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        await open_database(tmp_path)


def test_statements_split_around_trigger_bodies() -> None:
    script = (
        "-- a comment\nCREATE TABLE a (x);\n"
        "CREATE TRIGGER t BEFORE INSERT ON a BEGIN\n  SELECT 1;\n  SELECT 2;\nEND;\n-- trailing\n"
    )
    statements = list(split_statements(script))
    assert len(statements) == 2
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")


def test_migrations_are_numbered_one_up() -> None:
    assert [migration.version for migration in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


async def test_a_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        await open_database(tmp_path / "missing" / "roost.db")
