"""Topics: the topic names and filters a project's devices may publish and/or subscribe to.

A topic's `name` is an MQTT topic filter (it may hold `+` and `#`); the broker's ACL matches publishes
and subscriptions against it. Names are unique within a project.
"""

from __future__ import annotations

import sqlite3

from broker.codec.topics import validate_topic_filter
from broker.errors import ProtocolError
from storage.clock import format_timestamp, utc_now
from storage.database import Database
from storage.errors import Conflict
from storage.paging import check_window
from storage.records import Page, Topic

__all__ = ["TopicRepository"]

_COLUMNS = "id, project_id, name, description, can_publish, can_subscribe, created_at, updated_at"
_MAX_TOPIC_BYTES = 65535  # an MQTT UTF-8 string's length prefix is two bytes


def _record(row: sqlite3.Row) -> Topic:
    return Topic(
        id=row[0], project_id=row[1], name=row[2], description=row[3], can_publish=bool(row[4]),
        can_subscribe=bool(row[5]), created_at=row[6], updated_at=row[7],
    )


def _check_name(name: str) -> None:
    if len(name.encode()) > _MAX_TOPIC_BYTES or "\x00" in name:
        raise ValueError("a topic must be at most 65535 bytes of UTF-8 without NUL characters")
    try:
        validate_topic_filter(name)
    except ProtocolError as exc:
        raise ValueError(f"{name!r} is not a valid topic filter: {exc}") from exc


def _owned(user_id: int | None) -> tuple[str, tuple[object, ...]]:
    if user_id is None:
        return "", ()
    return " AND project_id IN (SELECT id FROM projects WHERE user_id = ?)", (user_id,)


class TopicRepository:
    """Lookups by row id take `user_id` as a required keyword (the owner, or None on purpose)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, project_id: int, name: str, *, description: str = "", can_publish: bool = True,
        can_subscribe: bool = True,
    ) -> Topic:
        """A new topic; Conflict if the project already has one with this name."""
        _check_name(name)
        now = format_timestamp(utc_now())
        try:
            async with self._db.transaction() as connection:
                async with connection.execute(
                    "INSERT INTO topics (project_id, name, description, can_publish, can_subscribe, created_at,"
                    f" updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
                    (project_id, name, description, bool(can_publish), bool(can_subscribe), now, now),
                ) as cursor:
                    row = await cursor.fetchone()
        except Conflict as exc:
            raise Conflict(f"the project already has a topic {name!r}") from exc
        assert row is not None
        return _record(row)

    async def get(self, topic_id: int, *, user_id: int | None) -> Topic | None:
        clause, parameters = _owned(user_id)
        row = await self._db.fetch_one(f"SELECT {_COLUMNS} FROM topics WHERE id = ?{clause}", (topic_id, *parameters))
        return _record(row) if row else None

    async def list_by_project(self, project_id: int, *, offset: int = 0, limit: int = 1000) -> Page[Topic]:
        """The project's topics, oldest first."""
        check_window(offset, limit)
        async with self._db.read() as connection:
            async with connection.execute("SELECT count(*) FROM topics WHERE project_id = ?", (project_id,)) as cursor:
                total = (await cursor.fetchone())[0]  # type: ignore[index]
            async with connection.execute(
                f"SELECT {_COLUMNS} FROM topics WHERE project_id = ? ORDER BY id LIMIT ? OFFSET ?",
                (project_id, limit, offset),
            ) as cursor:
                rows = await cursor.fetchall()
        return Page(tuple(_record(row) for row in rows), total, total)

    async def count_by_project(self, project_id: int) -> int:
        return int(await self._db.fetch_value("SELECT count(*) FROM topics WHERE project_id = ?", (project_id,)))

    async def count_by_user(self, user_id: int) -> int:
        return int(await self._db.fetch_value(
            "SELECT count(*) FROM topics AS t JOIN projects AS p ON p.id = t.project_id WHERE p.user_id = ?",
            (user_id,),
        ))

    async def update(
        self, topic_id: int, *, user_id: int | None, name: str | None = None, description: str | None = None,
        can_publish: bool | None = None, can_subscribe: bool | None = None,
    ) -> Topic | None:
        """Change what is given (None leaves a field alone); None if there is no such topic."""
        if name is not None:
            _check_name(name)
        clause, parameters = _owned(user_id)
        try:
            async with self._db.transaction() as connection:
                async with connection.execute(
                    "UPDATE topics SET name = coalesce(?, name), description = coalesce(?, description),"
                    " can_publish = coalesce(?, can_publish), can_subscribe = coalesce(?, can_subscribe),"
                    f" updated_at = ? WHERE id = ?{clause} RETURNING {_COLUMNS}",
                    (name, description, None if can_publish is None else bool(can_publish),
                     None if can_subscribe is None else bool(can_subscribe), format_timestamp(utc_now()),
                     topic_id, *parameters),
                ) as cursor:
                    row = await cursor.fetchone()
        except Conflict as exc:
            raise Conflict(f"the project already has a topic {name!r}") from exc
        return _record(row) if row else None

    async def delete(self, topic_id: int, *, user_id: int | None) -> bool:
        """Delete the topic; its stored messages stay, with `topic_id` set to NULL."""
        clause, parameters = _owned(user_id)
        async with self._db.transaction() as connection:
            cursor = await connection.execute(f"DELETE FROM topics WHERE id = ?{clause}", (topic_id, *parameters))
            return cursor.rowcount > 0
