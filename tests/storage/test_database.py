"""The shared connection: transactions, their nesting, error translation, and change detection."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.database import Database, open_database
from storage.errors import Conflict, StorageError


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(tmp_path / "roost.db")
    yield database
    await database.close()


async def _insert_user(db: Database, name: str, public_id: str) -> None:
    async with db.transaction() as connection:
        await connection.execute(
            "INSERT INTO users (public_id, name, created_at, updated_at) VALUES (?, ?, 'x', 'x')", (public_id, name)
        )


async def _user_names(db: Database) -> list[str]:
    return [row[0] for row in await db.fetch_all("SELECT name FROM users ORDER BY id")]


async def test_transaction_commits(db: Database) -> None:
    await _insert_user(db, "alice", "a" * 24)
    assert await _user_names(db) == ["alice"]


async def test_transaction_rolls_back_when_the_block_raises(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.transaction() as connection:
            await connection.execute(
                "INSERT INTO users (public_id, name, created_at, updated_at) VALUES (?, 'alice', 'x', 'x')", ("a" * 24,)
            )
            raise RuntimeError("boom")
    assert await _user_names(db) == []


async def test_nested_transaction_joins_the_outer_one(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await _insert_user(db, "alice", "a" * 24)  # nested: not committed on its own
            raise RuntimeError("boom")
    assert await _user_names(db) == []


async def test_unique_violation_is_a_conflict_and_other_errors_storage_errors(db: Database) -> None:
    await _insert_user(db, "alice", "a" * 24)
    with pytest.raises(Conflict):
        await _insert_user(db, "alice", "b" * 24)
    with pytest.raises(StorageError) as raised:
        await db.fetch_all("SELECT * FROM no_such_table")
    assert not isinstance(raised.value, Conflict)


async def test_foreign_keys_are_enforced(db: Database) -> None:
    with pytest.raises(StorageError, match="FOREIGN KEY"):
        async with db.transaction() as connection:
            await connection.execute(
                "INSERT INTO projects (user_id, name, created_at, updated_at) VALUES (42, 'p', 'x', 'x')"
            )


async def test_concurrent_transactions_are_serialised(db: Database) -> None:
    await asyncio.gather(*(_insert_user(db, f"user{n}", f"{n:024x}") for n in range(20)))
    assert len(await _user_names(db)) == 20


async def test_write_inside_read_is_refused(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.read():
            async with db.transaction():
                pass


async def test_data_version_moves_when_another_connection_writes(db: Database, tmp_path: Path) -> None:
    before = await db.data_version()
    await _insert_user(db, "alice", "a" * 24)
    assert await db.data_version() == before  # our own commit does not count...
    with sqlite3.connect(tmp_path / "roost.db") as other:
        other.execute("INSERT INTO users (public_id, name, created_at, updated_at) VALUES (?, 'bob', 'x', 'x')",
                      ("b" * 24,))
    assert await db.data_version() != before  # ...another process's does
    assert await _user_names(db) == ["alice", "bob"]


async def test_change_token_moves_on_own_commits_too(db: Database) -> None:
    before = await db.change_token()
    assert await db.change_token() == before
    await _insert_user(db, "alice", "a" * 24)
    assert await db.change_token() != before


async def test_closed_database_refuses_work(tmp_path: Path) -> None:
    database = await open_database(tmp_path / "roost.db")
    await database.close()
    await database.close()  # twice is fine
    with pytest.raises(StorageError, match="closed"):
        await database.fetch_all("SELECT 1")


async def test_a_read_cancelled_at_its_begin_does_not_wedge_later_transactions(db: Database) -> None:
    """A task cancelled while its BEGIN waits in aiosqlite's queue leaves that BEGIN to run after the task's
    clean-up; the next transaction must still start (Roost cancels its background tasks at shutdown, and
    the last API key times are written after that)."""
    for n in range(5):
        task = asyncio.create_task(_user_names(db))
        await asyncio.sleep(0)  # let it queue its BEGIN, then cancel it mid-flight
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await _insert_user(db, f"user-{n}", f"{n:024x}")
    assert len(await _user_names(db)) == 5
