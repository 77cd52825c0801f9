"""Stored messages (/api/v1/messages): what was published to a project's topics, kept until it expires.

The broker hands messages over in batches (`insert_many`, one transaction and one `executemany`), so
storing a busy stream costs one fsync per batch, not per message. Expired rows are hidden from reads at
once and removed by `purge_expired`, which deletes in bounded batches so it never holds the write lock
for long.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from storage.clock import format_timestamp, utc_now
from storage.database import Database
from storage.paging import MAX_LIMIT
from storage.records import NewMessage, StoredMessage

__all__ = ["MessageRepository"]

_COLUMNS = "id, project_id, topic_id, topic, payload, qos, retained, expires_at, created_at"
_INSERT = (
    "INSERT INTO messages (project_id, topic_id, topic, payload, qos, retained, expires_at, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_IF_PROJECT = (
    "INSERT INTO messages (project_id, topic_id, topic, payload, qos, retained, expires_at, created_at)"
    " SELECT ?, (SELECT id FROM topics WHERE id = ?), ?, ?, ?, ?, ?, ?"
    " WHERE EXISTS (SELECT 1 FROM projects WHERE id = ?)"
)
_LIVE = "(expires_at IS NULL OR expires_at > ?)"


def _record(row: sqlite3.Row) -> StoredMessage:
    return StoredMessage(
        id=row[0], project_id=row[1], topic_id=row[2], topic=row[3], payload=bytes(row[4]), qos=row[5],
        retained=bool(row[6]), expires_at=row[7], created_at=row[8],
    )


def _row(message: NewMessage, created_at: str) -> tuple[object, ...]:
    return (message.project_id, message.topic_id, message.topic, bytes(message.payload), message.qos,
            bool(message.retained), message.expires_at, created_at)


def _owned(user_id: int | None) -> tuple[str, tuple[object, ...]]:
    if user_id is None:
        return "", ()
    return " AND project_id IN (SELECT id FROM projects WHERE user_id = ?)", (user_id,)


class MessageRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert(self, message: NewMessage) -> StoredMessage:
        """Store one message (the REST publish) and return it with its id."""
        async with self._db.transaction() as connection:
            async with connection.execute(
                f"{_INSERT} RETURNING {_COLUMNS}", _row(message, format_timestamp(utc_now()))
            ) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return _record(row)

    async def insert_many(self, messages: Sequence[NewMessage]) -> int:
        """Store a batch in one transaction. The broker records messages a moment before they are written,
        so a message whose project was deleted since is skipped, and one whose topic was deleted is kept
        with `topic_id` NULL (as ON DELETE SET NULL would have left it), instead of failing the batch."""
        if not messages:
            return 0
        created_at = format_timestamp(utc_now())
        rows = [
            (m.project_id, m.topic_id, m.topic, bytes(m.payload), m.qos, bool(m.retained), m.expires_at, created_at,
             m.project_id)
            for m in messages
        ]
        await self._db.execute_many(_INSERT_IF_PROJECT, rows)
        return len(messages)

    async def list(
        self, project_id: int, *, topic_id: int | None = None, limit: int = 50, before_id: int | None = None,
        now: datetime | None = None,
    ) -> tuple[StoredMessage, ...]:
        """The project's unexpired messages, newest first; `topic_id` narrows to one topic and
        `before_id` continues a previous page (ids below it)."""
        if not 0 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 0 and {MAX_LIMIT}, not {limit}")
        conditions, parameters = ["project_id = ?", _LIVE], [project_id, format_timestamp(now or utc_now())]
        if topic_id is not None:
            conditions.append("topic_id = ?")
            parameters.append(topic_id)
        if before_id is not None:
            conditions.append("id < ?")
            parameters.append(before_id)
        rows = await self._db.fetch_all(
            f"SELECT {_COLUMNS} FROM messages WHERE {' AND '.join(conditions)} ORDER BY id DESC LIMIT ?",
            (*parameters, limit),
        )
        return tuple(_record(row) for row in rows)

    async def get(self, message_id: int, *, user_id: int | None, now: datetime | None = None) -> StoredMessage | None:
        """The message if it exists, has not expired, and (given `user_id`) belongs to the user's project."""
        clause, parameters = _owned(user_id)
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM messages WHERE id = ? AND {_LIVE}{clause}",
            (message_id, format_timestamp(now or utc_now()), *parameters),
        )
        return _record(row) if row else None

    async def delete(self, message_id: int, *, user_id: int | None) -> bool:
        clause, parameters = _owned(user_id)
        async with self._db.transaction() as connection:
            cursor = await connection.execute(f"DELETE FROM messages WHERE id = ?{clause}", (message_id, *parameters))
            return cursor.rowcount > 0

    async def count_by_project(self, project_id: int) -> int:
        return int(await self._db.fetch_value("SELECT count(*) FROM messages WHERE project_id = ?", (project_id,)))

    async def purge_expired(self, now: datetime | None = None, *, batch_size: int = 5000) -> int:
        """Delete messages whose `expires_at` has passed, `batch_size` rows per transaction so other
        writers get a turn in between. Returns how many were deleted."""
        cutoff = format_timestamp(now or utc_now())
        deleted = 0
        while True:
            async with self._db.transaction() as connection:
                cursor = await connection.execute(
                    "DELETE FROM messages WHERE id IN"
                    " (SELECT id FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)",
                    (cutoff, batch_size),
                )
                count = cursor.rowcount
            deleted += count
            if count < batch_size:
                return deleted
