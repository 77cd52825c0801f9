"""API keys (/api/v1/api-keys): bearer credentials for the REST API.

A key is found by the SHA-256 of the presented key through a unique index (one indexed read per
request); its secret is checked with the salted hash. Both are shown to the user once, at creation.

`last_used_at` is informative, so it is not worth a write per request: `touch_last_used` notes the time
in memory and writes all pending times in one `executemany` at most every `flush_interval` seconds (and
on `flush_last_used`, which the store calls at close). Reads made through this repository see the
pending times already.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from storage.clock import format_timestamp, parse_timestamp, utc_now
from storage.database import Database
from storage.paging import check_window
from storage.records import ApiKey, CreatedApiKey, Page
from storage.secrets import api_key_digest, generate_api_key, hash_secret, verify_secret

__all__ = ["ApiKeyRepository"]

_COLUMNS = "k.id, k.user_id, k.name, k.prefix, k.is_active, k.last_used_at, k.expires_at, k.created_at"
_PREFIX_LENGTH = 9  # "sk_" and six characters: enough to tell keys apart, far too few to guess the rest


def _record(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=row[0], user_id=row[1], name=row[2], prefix=row[3], is_active=bool(row[4]),
        last_used_at=row[5], expires_at=row[6], created_at=row[7],
    )


def _owned(user_id: int | None) -> tuple[str, tuple[object, ...]]:
    return ("", ()) if user_id is None else (" AND k.user_id = ?", (user_id,))


class ApiKeyRepository:
    def __init__(
        self, db: Database, *, flush_interval: float = 30.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._db = db
        self._flush_interval = flush_interval
        self._monotonic = monotonic
        self._pending: dict[int, str] = {}  # key id -> last used timestamp, not yet written
        self._last_flush = monotonic()

    async def create(self, user_id: int, name: str, *, expires_at: datetime | None = None) -> CreatedApiKey:
        """A new active key; the key and its secret are in the result and nowhere else."""
        if not 1 <= len(name) <= 255:
            raise ValueError("an API key name must be 1 to 255 characters long")
        key, secret = generate_api_key()
        expiry = format_timestamp(expires_at) if expires_at is not None else None
        async with self._db.transaction() as connection:
            async with connection.execute(
                "INSERT INTO api_keys AS k (user_id, name, prefix, key_hash, secret_hash, expires_at, created_at)"
                f" VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {_COLUMNS.replace('k.', '')}",
                (user_id, name, key[:_PREFIX_LENGTH], api_key_digest(key), hash_secret(secret), expiry,
                 format_timestamp(utc_now())),
            ) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return CreatedApiKey(_record(row), key, secret)

    async def get(self, key_id: int, *, user_id: int | None) -> ApiKey | None:
        clause, parameters = _owned(user_id)
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS} FROM api_keys AS k WHERE k.id = ?{clause}", (key_id, *parameters)
        )
        return self._overlay(_record(row)) if row else None

    async def list_by_user(self, user_id: int, *, offset: int = 0, limit: int = 10) -> Page[ApiKey]:
        """The user's keys, newest first, active or not."""
        check_window(offset, limit)
        async with self._db.read() as connection:
            async with connection.execute("SELECT count(*) FROM api_keys WHERE user_id = ?", (user_id,)) as cursor:
                total = (await cursor.fetchone())[0]  # type: ignore[index]
            async with connection.execute(
                f"SELECT {_COLUMNS} FROM api_keys AS k WHERE k.user_id = ? ORDER BY k.id DESC LIMIT ? OFFSET ?",
                (user_id, limit, offset),
            ) as cursor:
                rows = await cursor.fetchall()
        return Page(tuple(self._overlay(_record(row)) for row in rows), total, total)

    async def find_by_key(self, key: str, *, secret: str | None = None, now: datetime | None = None) -> ApiKey | None:
        """The key a request presents, if it is usable: known, active, not expired, owned by an active
        user, and (when `secret` is given) with that secret. None otherwise, whatever the reason."""
        row = await self._db.fetch_one(
            f"SELECT {_COLUMNS}, k.secret_hash FROM api_keys AS k JOIN users AS u ON u.id = k.user_id"
            " WHERE k.key_hash = ? AND k.is_active AND u.is_active",
            (api_key_digest(key),),
        )
        if row is None:
            return None
        expires_at = row[6]
        if expires_at is not None and parse_timestamp(expires_at) <= (now or utc_now()):
            return None
        if secret is not None and not verify_secret(secret, row[8]):
            return None
        return self._overlay(_record(row))

    async def deactivate(self, key_id: int, *, user_id: int | None) -> ApiKey | None:
        """Stop the key from working (it stays listed). None if there is no such key."""
        clause, parameters = _owned(user_id)
        async with self._db.transaction() as connection:
            async with connection.execute(
                f"UPDATE api_keys AS k SET is_active = 0 WHERE k.id = ?{clause} RETURNING {_COLUMNS.replace('k.', '')}",
                (key_id, *parameters),
            ) as cursor:
                row = await cursor.fetchone()
        return self._overlay(_record(row)) if row else None

    async def delete(self, key_id: int, *, user_id: int | None) -> bool:
        clause, parameters = _owned(user_id)
        async with self._db.transaction() as connection:
            cursor = await connection.execute(
                f"DELETE FROM api_keys AS k WHERE k.id = ?{clause}", (key_id, *parameters)
            )
            deleted = cursor.rowcount > 0
        self._pending.pop(key_id, None)
        return deleted

    async def touch_last_used(self, key_id: int, when: datetime | None = None) -> None:
        """Note that the key was used; written with the next flush, at most every `flush_interval` s."""
        self._pending[key_id] = format_timestamp(when or utc_now())
        if self._monotonic() - self._last_flush >= self._flush_interval:
            await self.flush_last_used()

    async def flush_last_used(self) -> int:
        """Write every pending last-used time in one statement; returns how many keys were pending."""
        self._last_flush = self._monotonic()
        if not self._pending:
            return 0
        pending, self._pending = self._pending, {}
        try:
            await self._db.execute_many(
                "UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
                [(when, key_id) for key_id, when in pending.items()],
            )
        except BaseException:
            for key_id, when in pending.items():  # keep them for the next try; newer times win
                if when > self._pending.get(key_id, ""):
                    self._pending[key_id] = when
            raise
        return len(pending)

    def _overlay(self, record: ApiKey) -> ApiKey:
        pending = self._pending.get(record.id)
        if pending is not None and (record.last_used_at is None or pending > record.last_used_at):
            return replace(record, last_used_at=pending)
        return record
