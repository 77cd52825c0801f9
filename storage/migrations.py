"""The schema's history: an ordered list of SQL scripts, and the code that brings a file up to date.

The version a database is at lives in `PRAGMA user_version` (0 for a new file). At open, each migration
newer than that runs in its own transaction together with the bump of `user_version`, so a crash leaves
the file at a whole version, never between two. A file stamped with a version newer than this code
knows is refused untouched: an older Roost must not write into a schema it does not understand.

To change the schema, append a `Migration`; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import aiosqlite

from storage.errors import StorageError

__all__ = ["MIGRATIONS", "Migration", "apply_migrations", "latest_version", "split_statements"]


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    sql: str


_SCHEMA_1 = """
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id     TEXT    NOT NULL UNIQUE CHECK (length(public_id) = 24),
    name          TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 255),
    password_hash TEXT,
    plan          TEXT    NOT NULL DEFAULT 'free',
    is_admin      INTEGER NOT NULL DEFAULT 0,
    is_active     INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL
);

CREATE TABLE mqtt_instances (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id        TEXT    NOT NULL UNIQUE CHECK (length(public_id) = 24),
    user_id          INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    username         TEXT    NOT NULL UNIQUE,
    secret_hash      TEXT    NOT NULL,
    secret_encrypted BLOB    NOT NULL,
    created_at       TEXT    NOT NULL,
    version          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX mqtt_instances_user ON mqtt_instances (user_id, created_at);

CREATE TABLE projects (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    description TEXT    NOT NULL DEFAULT '',
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);
CREATE INDEX projects_user ON projects (user_id, id);

CREATE TABLE devices (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id  INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name        TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    device_id   TEXT    NOT NULL UNIQUE CHECK (length(device_id) BETWEEN 1 AND 255),
    is_active   INTEGER NOT NULL DEFAULT 1,
    secret_hash TEXT    NOT NULL,
    cert_serial TEXT,
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL
);
CREATE INDEX devices_project ON devices (project_id, id);

CREATE TABLE topics (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id    INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name          TEXT    NOT NULL CHECK (length(name) >= 1),
    description   TEXT    NOT NULL DEFAULT '',
    can_publish   INTEGER NOT NULL DEFAULT 1,
    can_subscribe INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE api_keys (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    prefix       TEXT    NOT NULL,
    key_hash     TEXT    NOT NULL UNIQUE,
    secret_hash  TEXT    NOT NULL,
    is_active    INTEGER NOT NULL DEFAULT 1,
    last_used_at TEXT,
    expires_at   TEXT,
    created_at   TEXT    NOT NULL
);
CREATE INDEX api_keys_user ON api_keys (user_id, id);

CREATE TABLE messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id INTEGER NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    topic_id   INTEGER REFERENCES topics (id) ON DELETE SET NULL,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL DEFAULT 0 CHECK (qos BETWEEN 0 AND 2),
    retained   INTEGER NOT NULL DEFAULT 0,
    expires_at TEXT,
    created_at TEXT    NOT NULL
);
CREATE INDEX messages_project_topic ON messages (project_id, topic_id, id);
CREATE INDEX messages_project ON messages (project_id, id);
CREATE INDEX messages_expiry ON messages (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE quota_usage (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hour    TEXT    NOT NULL,
    count   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, hour)
) WITHOUT ROWID;

-- Devices (by device_id) and instances (by username) log in through one MQTT username space. Each
-- table's UNIQUE covers itself; these triggers cover the pair, for every writer of the file.
CREATE TRIGGER devices_username_free_insert BEFORE INSERT ON devices
WHEN EXISTS (SELECT 1 FROM mqtt_instances WHERE username = NEW.device_id)
BEGIN
    SELECT RAISE(ABORT, 'MQTT username is taken by an MQTT instance');
END;
CREATE TRIGGER devices_username_free_update BEFORE UPDATE OF device_id ON devices
WHEN EXISTS (SELECT 1 FROM mqtt_instances WHERE username = NEW.device_id)
BEGIN
    SELECT RAISE(ABORT, 'MQTT username is taken by an MQTT instance');
END;
CREATE TRIGGER mqtt_instances_username_free_insert BEFORE INSERT ON mqtt_instances
WHEN EXISTS (SELECT 1 FROM devices WHERE device_id = NEW.username)
BEGIN
    SELECT RAISE(ABORT, 'MQTT username is taken by a device');
END;
CREATE TRIGGER mqtt_instances_username_free_update BEFORE UPDATE OF username ON mqtt_instances
WHEN EXISTS (SELECT 1 FROM devices WHERE device_id = NEW.username)
BEGIN
    SELECT RAISE(ABORT, 'MQTT username is taken by a device');
END;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "users, MQTT instances, projects, devices, topics, API keys, messages, quota usage", _SCHEMA_1),
)


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    return migrations[-1].version if migrations else 0


def split_statements(script: str) -> Iterator[str]:
    """The statements of `script`, one at a time.

    `executescript` cannot be used: it commits any open transaction first, which would split a
    migration from its `user_version` bump. `sqlite3.complete_statement` knows where a statement ends,
    including trigger bodies with their own semicolons.
    """
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    leftover = "\n".join(line for line in pending.splitlines() if not line.strip().startswith("--"))
    if leftover.strip():
        raise ValueError(f"incomplete SQL statement at the end of a migration: {leftover.strip()[:80]!r}")


async def read_version(connection: aiosqlite.Connection) -> int:
    async with connection.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


def refuse_newer(found: int, known: int) -> None:
    if found > known:
        raise StorageError(f"database schema version {found} is newer than this Roost ({known}); upgrade Roost")


async def apply_migrations(
    connection: aiosqlite.Connection, migrations: Sequence[Migration] = MIGRATIONS
) -> int:
    """Run every migration newer than the file's version; returns the version the file is now at.

    `connection` must be in autocommit mode (isolation_level None). Each migration re-reads the version
    inside its own BEGIN IMMEDIATE, so two processes opening the same old file do not both apply it.
    """
    known = latest_version(migrations)
    for migration in migrations:
        await connection.execute("BEGIN IMMEDIATE")
        try:
            current = await read_version(connection)
            refuse_newer(current, known)
            if current >= migration.version:
                await connection.execute("COMMIT")
                continue
            for statement in split_statements(migration.sql):
                await connection.execute(statement)
            await connection.execute(f"PRAGMA user_version = {int(migration.version)}")
            await connection.execute("COMMIT")
        except BaseException as exc:
            if connection.in_transaction:
                await connection.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StorageError(
                    f"migration {migration.version} ({migration.description}) failed and was rolled back: {exc}"
                ) from exc
            raise
    return await read_version(connection)
