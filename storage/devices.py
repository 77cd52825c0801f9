"""Devices (/api/v1/devices): a project's MQTT clients, each logging in as its own `device_id`.

A device's MQTT password is a generated secret, returned once at creation (and by `rotate_secret`) and
stored only as a hash. Its `device_id` shares one username space with MQTT instances: the schema's
triggers refuse a collision, which arrives here as `Conflict`.
"""

from __future__ import annotations

import sqlite3

from storage.clock import format_timestamp, utc_now
from storage.database import Database
from storage.errors import Conflict
from storage.paging import check_window
from storage.records import CreatedDevice, Device, Page
from storage.secrets import generate_password, hash_secret

__all__ = ["DeviceRepository"]

_COLUMNS = "id, project_id, name, device_id, is_active, cert_serial, created_at, updated_at"


def _record(row: sqlite3.Row) -> Device:
    return Device(
        id=row[0], project_id=row[1], name=row[2], device_id=row[3], is_active=bool(row[4]),
        cert_serial=row[5], created_at=row[6], updated_at=row[7],
    )


def _check_name(name: str) -> None:
    if not 1 <= len(name) <= 255:
        raise ValueError("a device name must be 1 to 255 characters long")


def _check_device_id(device_id: str) -> None:
    """A device_id is an MQTT client id and username: printable, no spaces, at most 255 characters."""
    if not 1 <= len(device_id) <= 255:
        raise ValueError("a device_id must be 1 to 255 characters long")
    if not device_id.isprintable() or any(character.isspace() for character in device_id):
        raise ValueError("a device_id must not contain spaces or control characters")


def _owned(user_id: int | None) -> tuple[str, tuple[object, ...]]:
    if user_id is None:
        return "", ()
    return " AND project_id IN (SELECT id FROM projects WHERE user_id = ?)", (user_id,)


class DeviceRepository:
    """Lookups by row id take `user_id` as a required keyword (the owner, or None on purpose)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self, project_id: int, name: str, device_id: str, *, is_active: bool = True, cert_serial: str | None = None
    ) -> CreatedDevice:
        """A new device with a generated MQTT secret, returned here once. Conflict if `device_id` is taken
        by another device or by an MQTT instance's username."""
        _check_name(name)
        _check_device_id(device_id)
        secret = generate_password()
        now = format_timestamp(utc_now())
        try:
            async with self._db.transaction() as connection:
                async with connection.execute(
                    "INSERT INTO devices (project_id, name, device_id, is_active, secret_hash, cert_serial,"
                    f" created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
                    (project_id, name, device_id, bool(is_active), hash_secret(secret), cert_serial, now, now),
                ) as cursor:
                    row = await cursor.fetchone()
        except Conflict as exc:
            raise Conflict(f"the device_id {device_id!r} is already in use as an MQTT username") from exc
        assert row is not None
        return CreatedDevice(_record(row), secret)

    async def get(self, device_row_id: int, *, user_id: int | None) -> Device | None:
        clause, parameters = _owned(user_id)
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM devices WHERE id = ?{clause}", (device_row_id, *parameters)
        )
        return _record(row) if row else None

    async def get_by_device_id(self, device_id: str) -> Device | None:
        row = await self._db.fetch_one(f"SELECT {_COLUMNS} FROM devices WHERE device_id = ?", (device_id,))
        return _record(row) if row else None

    async def list_by_project(self, project_id: int, *, offset: int = 0, limit: int = 15) -> Page[Device]:
        """The project's devices, oldest first."""
        check_window(offset, limit)
        async with self._db.read() as connection:
            async with connection.execute("SELECT count(*) FROM devices WHERE project_id = ?", (project_id,)) as cursor:
                total = (await cursor.fetchone())[0]  # type: ignore[index]
            async with connection.execute(
                f"SELECT {_COLUMNS} FROM devices WHERE project_id = ? ORDER BY id LIMIT ? OFFSET ?",
                (project_id, limit, offset),
            ) as cursor:
                rows = await cursor.fetchall()
        return Page(tuple(_record(row) for row in rows), total, total)

    async def count_by_project(self, project_id: int) -> int:
        return int(await self._db.fetch_value("SELECT count(*) FROM devices WHERE project_id = ?", (project_id,)))

    async def count_by_user(self, user_id: int) -> int:
        return int(await self._db.fetch_value(
            "SELECT count(*) FROM devices AS d JOIN projects AS p ON p.id = d.project_id WHERE p.user_id = ?",
            (user_id,),
        ))

    async def update(
        self, device_row_id: int, *, user_id: int | None, name: str | None = None, is_active: bool | None = None
    ) -> Device | None:
        """Rename and/or (de)activate; None leaves a field alone. None if there is no such device."""
        if name is not None:
            _check_name(name)
        clause, parameters = _owned(user_id)
        async with self._db.transaction() as connection:
            async with connection.execute(
                "UPDATE devices SET name = coalesce(?, name), is_active = coalesce(?, is_active),"
                f" updated_at = ? WHERE id = ?{clause} RETURNING {_COLUMNS}",
                (name, None if is_active is None else bool(is_active), format_timestamp(utc_now()),
                 device_row_id, *parameters),
            ) as cursor:
                row = await cursor.fetchone()
        return _record(row) if row else None

    async def rotate_secret(self, device_row_id: int, *, user_id: int | None) -> CreatedDevice | None:
        """Replace the device's MQTT secret; the new one is returned once. None if there is no such device."""
        secret = generate_password()
        clause, parameters = _owned(user_id)
        async with self._db.transaction() as connection:
            async with connection.execute(
                f"UPDATE devices SET secret_hash = ?, updated_at = ? WHERE id = ?{clause} RETURNING {_COLUMNS}",
                (hash_secret(secret), format_timestamp(utc_now()), device_row_id, *parameters),
            ) as cursor:
                row = await cursor.fetchone()
        return CreatedDevice(_record(row), secret) if row else None

    async def set_cert_serial(self, device_row_id: int, cert_serial: str | None, *, user_id: int | None) -> Device | None:
        """Record the serial of the device's one valid client certificate (None: it has none, so any
        certificate it was issued is revoked). None if there is no such device."""
        clause, parameters = _owned(user_id)
        async with self._db.transaction() as connection:
            async with connection.execute(
                f"UPDATE devices SET cert_serial = ?, updated_at = ? WHERE id = ?{clause} RETURNING {_COLUMNS}",
                (cert_serial, format_timestamp(utc_now()), device_row_id, *parameters),
            ) as cursor:
                row = await cursor.fetchone()
        return _record(row) if row else None

    async def delete(self, device_row_id: int, *, user_id: int | None) -> bool:
        clause, parameters = _owned(user_id)
        async with self._db.transaction() as connection:
            cursor = await connection.execute(f"DELETE FROM devices WHERE id = ?{clause}", (device_row_id, *parameters))
            return cursor.rowcount > 0
