"""Users: the accounts that own MQTT instances, projects and API keys."""

from __future__ import annotations

import asyncio

import sqlite3
from functools import cache

from storage.clock import format_timestamp, utc_now
from storage.database import Database
from storage.errors import Conflict
from storage.paging import check_window
from storage.records import Page, User
from storage.secrets import generate_public_id, hash_password, verify_password

__all__ = ["UserRepository"]

_COLUMNS = "id, public_id, name, plan, is_admin, is_active, password_hash IS NOT NULL, created_at, updated_at"
# A hash checked when the name is unknown, so a login for a missing user takes as long as a wrong
# password and does not reveal which names exist.
@cache
def _dummy_hash() -> str:
    return hash_password("roost-dummy-password")


def _record(row: sqlite3.Row) -> User:
    return User(
        id=row[0], public_id=row[1], name=row[2], plan=row[3], is_admin=bool(row[4]),
        is_active=bool(row[5]), has_password=bool(row[6]), created_at=row[7], updated_at=row[8],
    )


class UserRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, name: str, *, password: str | None = None, plan: str = "free",
        is_admin: bool = False, is_active: bool = True,
    ) -> User:
        """A new user; Conflict if the name is taken. Without a password the user cannot log in to the
        dashboard (API keys still work)."""
        if not 1 <= len(name) <= 255:
            raise ValueError("a user name must be 1 to 255 characters long")
        if not plan:
            raise ValueError("plan must not be empty")
        password_hash = await asyncio.to_thread(hash_password, password) if password is not None else None
        now = format_timestamp(utc_now())
        try:
            async with self._db.transaction() as connection:
                cursor = await connection.execute(
                    "INSERT INTO users (public_id, name, password_hash, plan, is_admin, is_active, created_at,"
                    f" updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
                    (generate_public_id(), name, password_hash, plan, is_admin, is_active, now, now),
                )
                row = await cursor.fetchone()
                await cursor.close()
        except Conflict as exc:
            raise Conflict(f"the user name {name!r} is taken") from exc
        assert row is not None
        return _record(row)

    async def get(self, user_id: int) -> User | None:
        row = await self._db.fetch_one(f"SELECT {_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return _record(row) if row else None

    async def get_by_public_id(self, public_id: str) -> User | None:
        row = await self._db.fetch_one(f"SELECT {_COLUMNS} FROM users WHERE public_id = ?", (public_id,))
        return _record(row) if row else None

    async def get_by_name(self, name: str) -> User | None:
        row = await self._db.fetch_one(f"SELECT {_COLUMNS} FROM users WHERE name = ?", (name,))
        return _record(row) if row else None

    async def list(self, *, offset: int = 0, limit: int = 100) -> Page[User]:
        """Users in creation order."""
        check_window(offset, limit)
        async with self._db.read() as connection:
            async with connection.execute("SELECT count(*) FROM users") as cursor:
                total = (await cursor.fetchone())[0]  # type: ignore[index]
            async with connection.execute(
                f"SELECT {_COLUMNS} FROM users ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
            ) as cursor:
                rows = await cursor.fetchall()
        return Page(tuple(_record(row) for row in rows), total, total)

    async def authenticate(self, name: str, password: str) -> User | None:
        """The active user with this name and password, or None (unknown name, wrong password, inactive
        user or no password set). Costs one scrypt either way."""
        row = await self._db.fetch_one(f"SELECT {_COLUMNS}, password_hash FROM users WHERE name = ?", (name,))
        stored = row[9] if row is not None and row[9] is not None else None
        # scrypt takes tens of milliseconds by design: in a worker thread, not on the loop that serves MQTT.
        matches = await asyncio.to_thread(
            lambda: verify_password(password, stored if stored is not None else _dummy_hash())
        )
        if row is None or stored is None or not matches or not row[5]:
            return None
        return _record(row)

    async def set_password(self, user_id: int, password: str | None) -> User | None:
        """Set (or with None, remove) the dashboard password."""
        password_hash = await asyncio.to_thread(hash_password, password) if password is not None else None
        return await self._update(user_id, "password_hash", password_hash)

    async def set_plan(self, user_id: int, plan: str) -> User | None:
        if not plan:
            raise ValueError("plan must not be empty")
        return await self._update(user_id, "plan", plan)

    async def set_admin(self, user_id: int, is_admin: bool) -> User | None:
        return await self._update(user_id, "is_admin", bool(is_admin))

    async def set_active(self, user_id: int, is_active: bool) -> User | None:
        return await self._update(user_id, "is_active", bool(is_active))

    async def delete(self, user_id: int) -> bool:
        """Delete the user and, by cascade, their instances, projects (devices, topics, messages), API keys
        and quota rows. False if there was no such user."""
        async with self._db.transaction() as connection:
            cursor = await connection.execute("DELETE FROM users WHERE id = ?", (user_id,))
            return cursor.rowcount > 0

    async def count(self) -> int:
        return int(await self._db.fetch_value("SELECT count(*) FROM users"))

    async def _update(self, user_id: int, column: str, value: object) -> User | None:
        # `column` comes from this module's own callers, never from input.
        async with self._db.transaction() as connection:
            async with connection.execute(
                f"UPDATE users SET {column} = ?, updated_at = ? WHERE id = ? RETURNING {_COLUMNS}",
                (value, format_timestamp(utc_now()), user_id),
            ) as cursor:
                row = await cursor.fetchone()
        return _record(row) if row else None
