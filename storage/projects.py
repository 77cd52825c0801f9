"""Projects (/api/v1/projects): a user's containers for devices, topics and stored messages."""

from __future__ import annotations

import sqlite3

from storage.clock import format_timestamp, utc_now
from storage.database import Database
from storage.paging import check_window
from storage.records import Page, Project

__all__ = ["ProjectRepository"]

_COLUMNS = "id, user_id, name, description, created_at, updated_at"


def _record(row: sqlite3.Row) -> Project:
    return Project(id=row[0], user_id=row[1], name=row[2], description=row[3], created_at=row[4], updated_at=row[5])


def _check_name(name: str) -> None:
    if not 1 <= len(name) <= 255:
        raise ValueError("a project name must be 1 to 255 characters long")


def _owned(user_id: int | None) -> tuple[str, tuple[object, ...]]:
    return ("", ()) if user_id is None else (" AND user_id = ?", (user_id,))


class ProjectRepository:
    """Every lookup by id takes `user_id` as a required keyword: the owner to scope to, or None on
    purpose (admin tools), so a route cannot forget the ownership check."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, user_id: int, name: str, description: str = "") -> Project:
        _check_name(name)
        now = format_timestamp(utc_now())
        async with self._db.transaction() as connection:
            async with connection.execute(
                f"INSERT INTO projects (user_id, name, description, created_at, updated_at)"
                f" VALUES (?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
                (user_id, name, description, now, now),
            ) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return _record(row)

    async def get(self, project_id: int, *, user_id: int | None) -> Project | None:
        clause, parameters = _owned(user_id)
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM projects WHERE id = ?{clause}", (project_id, *parameters)
        )
        return _record(row) if row else None

    async def get_by_name(self, user_id: int, name: str) -> Project | None:
        """The user's oldest project of that name (names are not unique), or None."""
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM projects WHERE user_id = ? AND name = ? ORDER BY id LIMIT 1", (user_id, name)
        )
        return _record(row) if row else None

    async def list_by_user(self, user_id: int, *, offset: int = 0, limit: int = 15) -> Page[Project]:
        """The user's projects, oldest first."""
        check_window(offset, limit)
        async with self._db.read() as connection:
            async with connection.execute("SELECT count(*) FROM projects WHERE user_id = ?", (user_id,)) as cursor:
                total = (await cursor.fetchone())[0]  # type: ignore[index]
            async with connection.execute(
                f"SELECT {_COLUMNS} FROM projects WHERE user_id = ? ORDER BY id LIMIT ? OFFSET ?",
                (user_id, limit, offset),
            ) as cursor:
                rows = await cursor.fetchall()
        return Page(tuple(_record(row) for row in rows), total, total)

    async def count_by_user(self, user_id: int) -> int:
        return int(await self._db.fetch_value("SELECT count(*) FROM projects WHERE user_id = ?", (user_id,)))

    async def update(
        self, project_id: int, *, user_id: int | None, name: str | None = None, description: str | None = None
    ) -> Project | None:
        """Change what is given (None leaves a field alone); None if there is no such project."""
        if name is not None:
            _check_name(name)
        clause, parameters = _owned(user_id)
        async with self._db.transaction() as connection:
            async with connection.execute(
                "UPDATE projects SET name = coalesce(?, name), description = coalesce(?, description),"
                f" updated_at = ? WHERE id = ?{clause} RETURNING {_COLUMNS}",
                (name, description, format_timestamp(utc_now()), project_id, *parameters),
            ) as cursor:
                row = await cursor.fetchone()
        return _record(row) if row else None

    async def delete(self, project_id: int, *, user_id: int | None) -> bool:
        """Delete the project with its devices, topics and messages (cascade)."""
        clause, parameters = _owned(user_id)
        async with self._db.transaction() as connection:
            cursor = await connection.execute(f"DELETE FROM projects WHERE id = ?{clause}", (project_id, *parameters))
            return cursor.rowcount > 0
