"""Hourly message counts per user, for the plans' messages-per-hour limits.

One row per user and UTC hour ('2026-11-22T21', see `storage.clock.hour_key`). The broker counts in
memory and adds its counts here in batches; a restarted broker reads the current hour back.
"""

from __future__ import annotations

from collections.abc import Mapping

from storage.database import Database

__all__ = ["QuotaRepository"]


class QuotaRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def increment(self, user_id: int, hour: str, n: int = 1) -> int:
        """Add `n` to the user's count for `hour`; returns the new count."""
        async with self._db.transaction() as connection:
            async with connection.execute(
                "INSERT INTO quota_usage (user_id, hour, count) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id, hour) DO UPDATE SET count = count + excluded.count RETURNING count",
                (user_id, hour, n),
            ) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def increment_many(self, hour: str, counts: Mapping[int, int]) -> None:
        """Add a batch of per-user counts for one hour in one transaction. Counts of users deleted since
        are skipped (rather than failing the whole batch on the foreign key)."""
        if counts:
            await self._db.execute_many(
                "INSERT INTO quota_usage (user_id, hour, count) SELECT ?, ?, ?"
                " WHERE EXISTS (SELECT 1 FROM users WHERE id = ?)"
                " ON CONFLICT (user_id, hour) DO UPDATE SET count = count + excluded.count",
                [(user_id, hour, n, user_id) for user_id, n in counts.items()],
            )

    async def get(self, user_id: int, hour: str) -> int:
        value = await self._db.fetch_value(
            "SELECT count FROM quota_usage WHERE user_id = ? AND hour = ?", (user_id, hour)
        )
        return int(value or 0)

    async def purge_before(self, hour: str) -> int:
        """Forget the counts of hours before `hour`; returns how many rows went."""
        async with self._db.transaction() as connection:
            cursor = await connection.execute("DELETE FROM quota_usage WHERE hour < ?", (hour,))
            return cursor.rowcount

    async def counts_for_hour(self, hour: str) -> dict[int, int]:
        """Every user's count for one hour."""
        rows = await self._db.fetch_all("SELECT user_id, count FROM quota_usage WHERE hour = ?", (hour,))
        return {row[0]: row[1] for row in rows}
