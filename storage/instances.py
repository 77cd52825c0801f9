"""MQTT instances (/v1/mqtt): generated MQTT logins owned by a user.

The API returns an instance's password on every read, so the password is stored twice: hashed, for the
broker to check a CONNECT against, and encrypted with the `SecretBox`, for `reveal_password`.

Limits per plan are the caller's to enforce; to make "count, then create" atomic, wrap both in one
`db.transaction()` (repository calls join an outer transaction of the same task).
"""

from __future__ import annotations

import sqlite3

from storage.clock import format_timestamp, utc_now
from storage.database import Database
from storage.errors import Conflict
from storage.paging import check_order, check_window
from storage.records import CreatedInstance, MqttInstance, Page
from storage.secrets import (
    SecretBox,
    generate_password,
    generate_public_id,
    generate_username,
    hash_secret,
)

__all__ = ["InstanceRepository"]

_COLUMNS = (
    "i.id, i.public_id, i.user_id, u.public_id, i.username, i.created_at, i.version, i.secret_encrypted"
)
_FROM = "mqtt_instances AS i JOIN users AS u ON u.id = i.user_id"
_USERNAME_ATTEMPTS = 5


def _record(row: sqlite3.Row) -> MqttInstance:
    return MqttInstance(
        id=row[0], public_id=row[1], user_id=row[2], owner=row[3], username=row[4],
        created_at=row[5], version=row[6], password_encrypted=bytes(row[7]),
    )


class InstanceRepository:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box

    async def create(self, user_id: int) -> CreatedInstance:
        """A new instance with a generated username and password (returned here, and by
        `reveal_password` later). Retries a username that happens to be taken."""
        for attempt in range(_USERNAME_ATTEMPTS):
            password = generate_password()
            now = format_timestamp(utc_now())
            try:
                async with self._db.transaction() as connection:
                    async with connection.execute(
                        "INSERT INTO mqtt_instances (public_id, user_id, username, secret_hash, secret_encrypted,"
                        " created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                        (generate_public_id(), user_id, generate_username(), hash_secret(password),
                         self._box.encrypt(password), now),
                    ) as cursor:
                        row = await cursor.fetchone()
                    assert row is not None
                    async with connection.execute(
                        f"SELECT {_COLUMNS} FROM {_FROM} WHERE i.id = ?", (row[0],)
                    ) as cursor:
                        created = await cursor.fetchone()
                assert created is not None
                return CreatedInstance(_record(created), password)
            except Conflict:
                if attempt == _USERNAME_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def get(self, public_id: str, *, user_id: int | None) -> MqttInstance | None:
        """The instance with this `_id`, if `user_id` owns it (None: any owner, for admins)."""
        sql = f"SELECT {_COLUMNS} FROM {_FROM} WHERE i.public_id = ?"
        parameters: tuple[object, ...] = (public_id,)
        if user_id is not None:
            sql += " AND i.user_id = ?"
            parameters += (user_id,)
        row = await self._db.fetch_one(sql, parameters)
        return _record(row) if row else None

    async def get_by_username(self, username: str) -> MqttInstance | None:
        row = await self._db.fetch_one(f"SELECT {_COLUMNS} FROM {_FROM} WHERE i.username = ?", (username,))
        return _record(row) if row else None

    async def list_by_user(
        self, user_id: int, *, search: str | None = None, offset: int = 0, limit: int = 100,
        order: str = "asc",
    ) -> Page[MqttInstance]:
        """The user's instances by creation time; `search` keeps those whose username contains it
        (case-insensitive). `total` counts all the user's instances, `filtered` those matching."""
        check_window(offset, limit)
        direction = check_order(order)
        condition, parameters = "i.user_id = ?", [user_id]
        async with self._db.read() as connection:
            async with connection.execute(
                "SELECT count(*) FROM mqtt_instances WHERE user_id = ?", (user_id,)
            ) as cursor:
                total = (await cursor.fetchone())[0]  # type: ignore[index]
            filtered = total
            if search:
                condition += " AND instr(lower(i.username), lower(?)) > 0"
                parameters.append(search)
                async with connection.execute(
                    f"SELECT count(*) FROM {_FROM} WHERE {condition}", parameters
                ) as cursor:
                    filtered = (await cursor.fetchone())[0]  # type: ignore[index]
            async with connection.execute(
                f"SELECT {_COLUMNS} FROM {_FROM} WHERE {condition}"
                f" ORDER BY i.created_at {direction}, i.id {direction} LIMIT ? OFFSET ?",
                [*parameters, limit, offset],
            ) as cursor:
                rows = await cursor.fetchall()
        return Page(tuple(_record(row) for row in rows), total, filtered)

    async def count_by_user(self, user_id: int) -> int:
        return int(await self._db.fetch_value("SELECT count(*) FROM mqtt_instances WHERE user_id = ?", (user_id,)))

    async def delete(self, public_id: str, *, user_id: int | None) -> bool:
        """Remove the instance (its MQTT login stops working once the broker's auth snapshot is rebuilt)."""
        sql, parameters = "DELETE FROM mqtt_instances WHERE public_id = ?", [public_id]
        if user_id is not None:
            sql += " AND user_id = ?"
            parameters.append(user_id)
        async with self._db.transaction() as connection:
            cursor = await connection.execute(sql, parameters)
            return cursor.rowcount > 0

    def reveal_password(self, instance: MqttInstance) -> str:
        """The instance's MQTT password in plain text, for the API response. StorageError if the key file
        is not the one it was encrypted with."""
        return self._box.decrypt(instance.password_encrypted)
