"""The SQLite file: opening it safely, and the one connection everything in the process shares.

SQLite allows one writer at a time per file, so a process gains nothing from several connections but
lock contention. `Database` wraps a single aiosqlite connection in autocommit mode and serialises work on
it with an asyncio lock: `transaction()` (BEGIN IMMEDIATE, for writes) and `read()` (BEGIN DEFERRED, a
consistent snapshot for multi-statement reads). Both are reentrant within one task, so a service can wrap
several repository calls in one outer `transaction()` and they commit or roll back together.

Other processes (the CLI, a second Roost pointed at the same data dir) may write the file too; WAL mode
lets readers and a writer proceed together and `busy_timeout` makes a writer wait for another instead of
failing. `change_token()` tells a cache (the broker's auth snapshot) when to rebuild.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from storage.errors import Conflict, StorageError
from storage.migrations import MIGRATIONS, Migration, apply_migrations, latest_version, read_version, refuse_newer

__all__ = ["DATABASE_FILE_NAME", "Database", "open_database", "read_only_reason"]

log = logging.getLogger(__name__)

DATABASE_FILE_NAME = "roost.db"

# (`synchronous` is a parameter of open_database: NORMAL with WAL is durable against crashes of Roost and
# safe against power loss, though the last commits before a power cut may be lost.)
_CONNECTION_PRAGMAS = (
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
)


# SQLite's words for "cannot get at the file", as opposed to "the file is not a database".
_ACCESS_WORDS = re.compile(r"readonly|read-only|unable to open|permission|disk I/O", re.IGNORECASE)


def read_only_reason(path: Path) -> str | None:
    """Why Roost cannot write the database at `path` (its folder or the file is read-only), or None.

    SQLite writes beside the file (the -wal and -shm files of WAL mode), so the folder must be writable as
    well as the file."""
    folder = path.parent
    if not os.access(folder, os.W_OK | os.X_OK) or _read_only_mount(folder):
        return (f"the data folder {folder} is read-only for this user (uid {os.getuid()}): Roost keeps "
                f"{path.name} and its -wal and -shm files there and must write them")
    if path.exists() and not os.access(path, os.W_OK):
        return (f"the database {path} is read-only for this user (uid {os.getuid()}): it is not damaged, "
                "but Roost must write it (chown or chmod it, or run Roost as its owner)")
    return None


def _read_only_mount(folder: Path) -> bool:
    """Whether `folder` is on a file system mounted read-only (`os.access` says yes to root there too)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


async def open_database(
    path: Path, *, migrations: Sequence[Migration] = MIGRATIONS, synchronous: str = "NORMAL"
) -> Database:
    """Open (or create) the database at `path`, check it, and bring its schema up to date.

    Raises StorageError, without writing to the file, if it is not a SQLite database, is damaged, or
    carries a schema version newer than `migrations` knows. `migrations` is a parameter for tests and for
    the broker's state file, which also asks for `synchronous = FULL` (each commit on disk when it returns).
    """
    # Checked here because a failed aiosqlite.connect leaves its worker thread finishing after the caller
    # has moved on; these are the usual ways it fails.
    if path.exists() and not path.is_file():
        raise StorageError(f"cannot open the database {path}: it exists and is not a file")
    if not path.parent.is_dir():
        raise StorageError(f"cannot open the database {path}: the folder {path.parent} does not exist")
    read_only = read_only_reason(path)
    if read_only is not None:
        # SQLite would fail on its first read (WAL needs the -shm file) with "unable to open database
        # file", which reads like damage; a healthy file in a read-only place is not damaged.
        raise StorageError(read_only)
    try:
        connection = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open the database {path}: {exc}") from exc
    try:
        connection.row_factory = sqlite3.Row
        try:
            version = await read_version(connection)
            async with connection.execute("SELECT count(*) FROM sqlite_schema"):
                pass  # reads page 1: an unreadable schema fails here, not halfway through a request
        except sqlite3.Error as exc:
            if isinstance(exc, sqlite3.OperationalError) and _ACCESS_WORDS.search(str(exc)):
                raise StorageError(f"cannot open the database {path}: {exc} (check that this user may read "
                                   f"and write {path} and its folder)") from exc
            raise StorageError(f"{path} is not a SQLite database or is damaged ({exc}); "
                               "restore it from a backup or move it aside") from exc
        try:
            refuse_newer(version, latest_version(migrations))
        except StorageError as exc:
            raise StorageError(f"{path}: {exc}") from exc  # roost.db or broker-state.db: say which
        for pragma in _CONNECTION_PRAGMAS:
            await connection.execute(pragma)
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        await connection.execute(f"PRAGMA synchronous = {synchronous}")
        async with connection.execute("PRAGMA journal_mode = WAL") as cursor:
            row = await cursor.fetchone()
        if row is None or str(row[0]).lower() != "wal":
            log.warning("%s: WAL journal mode unavailable (got %s); writers will block readers", path, row)
        await apply_migrations(connection, migrations)
    except BaseException:
        await connection.close()
        raise
    return Database(connection, path)


class Database:
    """The shared connection. Repositories borrow it through `transaction()` and `read()`."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._connection = connection
        self._path = path
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None
        self._owner_writes = False
        self._commits = 0
        self._closed = False

    @property
    def path(self) -> Path:
        return self._path

    async def close(self) -> None:
        """Close the connection (after any transaction in progress). Safe to call twice."""
        if self._closed:
            return
        async with self._lock:
            self._closed = True
            await self._connection.close()

    async def data_version(self) -> int:
        """`PRAGMA data_version`: changes when *another* connection commits to the file.

        It does not change for this connection's own commits; see `change_token()`.
        """
        async with self.read() as connection, connection.execute("PRAGMA data_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def change_token(self) -> tuple[int, int]:
        """A value that differs whenever anyone, this process included, has committed a write since.

        Pairs `data_version` (other processes) with a count of this connection's own write commits.
        """
        return await self.data_version(), self._commits

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK if the block raises.

        IMMEDIATE takes the write lock up front, so a read-then-write inside (check a name, then insert)
        cannot be interleaved by another process. A nested call in the same task joins the outer one.
        sqlite3 errors leave as StorageError (Conflict for a broken uniqueness rule).
        """
        if self._owner is not None and self._owner is asyncio.current_task():
            if not self._owner_writes:
                raise RuntimeError("a write transaction cannot be opened inside a read()")
            async with self._translated_errors():
                yield self._connection
            return
        async with self._lock, self._translated_errors():
            self._ensure_open()
            await self._begin("BEGIN IMMEDIATE")
            self._owner, self._owner_writes = asyncio.current_task(), True
            try:
                yield self._connection
                await self._connection.execute("COMMIT")
                self._commits += 1
            finally:
                self._owner = None
                if self._connection.in_transaction:
                    await self._connection.execute("ROLLBACK")

    async def _begin(self, statement: str) -> None:
        """BEGIN, first rolling back a transaction left open by a cancelled task: a task cancelled while its
        BEGIN waited in aiosqlite's queue never saw the BEGIN run, so its clean-up found no transaction to
        end. Nothing was written in such a transaction (writes happen only inside `transaction()`, whose
        COMMIT or ROLLBACK is awaited), so rolling it back loses nothing."""
        try:
            await self._connection.execute(statement)
        except sqlite3.OperationalError as exc:
            if "within a transaction" not in str(exc):
                raise
            await self._connection.execute("ROLLBACK")
            await self._connection.execute(statement)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """A read-only snapshot: every statement inside sees the same state of the file."""
        if self._owner is not None and self._owner is asyncio.current_task():
            async with self._translated_errors():
                yield self._connection
            return
        async with self._lock, self._translated_errors():
            self._ensure_open()
            await self._begin("BEGIN DEFERRED")
            self._owner, self._owner_writes = asyncio.current_task(), False
            try:
                yield self._connection
            finally:
                self._owner = None
                if self._connection.in_transaction:
                    await self._connection.execute("ROLLBACK")  # nothing was written: ends the snapshot

    async def fetch_one(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Row | None:
        async with self.read() as connection, connection.execute(sql, parameters) as cursor:
            return await cursor.fetchone()

    async def fetch_all(self, sql: str, parameters: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self.read() as connection, connection.execute(sql, parameters) as cursor:
            return list(await cursor.fetchall())

    async def fetch_value(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        row = await self.fetch_one(sql, parameters)
        return None if row is None else row[0]

    async def execute_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.transaction() as connection:
            await connection.executemany(sql, rows)

    def _ensure_open(self) -> None:
        if self._closed:
            raise StorageError("the database is closed")

    @asynccontextmanager
    async def _translated_errors(self) -> AsyncIterator[None]:
        try:
            yield
        except sqlite3.IntegrityError as exc:
            message = str(exc)
            if "UNIQUE" in message or "username is taken" in message:
                raise Conflict(message) from exc
            raise StorageError(message) from exc
        except sqlite3.Error as exc:
            raise StorageError(f"database error: {exc}") from exc
