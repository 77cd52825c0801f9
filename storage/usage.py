"""Hourly message quotas, counted in memory and written to SQLite in batches.

Every message a tenant publishes (over MQTT or through REST) is counted against its plan's hourly quota.
The check runs on the broker's hot path, so it is a dict lookup; the counts reach the `quota_usage` table
once a second at most (one transaction for all users), which keeps an SD card's write rate low and makes
the quota survive a restart (at most the last second's counts are lost on a power cut).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

from storage.quota import QuotaRepository

__all__ = ["UsageMeter"]

log = logging.getLogger("roost.usage")


def _hour_of(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H")


def _next_hour(moment: float) -> float:
    return (moment // 3600 + 1) * 3600


class UsageMeter:
    def __init__(self, repository: QuotaRepository, clock: Callable[[], float] = time.time) -> None:
        self._repository = repository
        self._clock = clock
        self._hour = _hour_of(clock())
        self._hour_ends = _next_hour(clock())
        self._counts: dict[int, int] = {}
        # Messages refused because their sender's quota was used up, over MQTT and REST alike.
        self.rejections = 0
        # (hour, user id) -> count not yet written
        self._pending: dict[tuple[str, int], int] = {}
        # Told (seconds, rows) after each write: the metrics' SQLite write latency and batch size.
        self.on_flush: Callable[[float, int], None] | None = None

    async def load(self) -> None:
        """Read this hour's counts (so a restart does not reset anyone's quota)."""
        now = self._clock()
        self._hour, self._hour_ends = _hour_of(now), _next_hour(now)
        self._counts = await self._repository.counts_for_hour(self._hour)

    def _roll(self) -> str:
        """The current hour's key; a new hour starts everyone from zero. Runs for every message, so the
        hour's name is only formatted when the hour changes."""
        now = self._clock()
        if now >= self._hour_ends:
            self._hour, self._hour_ends = _hour_of(now), _next_hour(now)
            self._counts = {}
        return self._hour

    def try_consume(self, user_id: int, limit: int, n: int = 1) -> bool:
        """Count `n` messages for the user unless that would pass `limit` (0 = unlimited)."""
        hour = self._roll()
        used = self._counts.get(user_id, 0)
        if limit and used + n > limit:
            self.rejections += n
            return False
        self._counts[user_id] = used + n
        key = (hour, user_id)
        self._pending[key] = self._pending.get(key, 0) + n
        return True

    def forget(self, user_id: int) -> None:
        """A deleted user: drop their counts (nothing of theirs is written any more)."""
        self._counts.pop(user_id, None)
        for key in [key for key in self._pending if key[1] == user_id]:
            del self._pending[key]

    def used(self, user_id: int) -> int:
        self._roll()
        return self._counts.get(user_id, 0)

    def counts_this_hour(self) -> dict[int, int]:
        """Messages counted this hour, by user id (a copy)."""
        self._roll()
        return dict(self._counts)

    def seconds_until_reset(self) -> int:
        now = self._clock()
        return max(1, int(3600 - now % 3600))

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        by_hour: dict[str, dict[int, int]] = {}
        for (hour, user_id), count in pending.items():
            by_hour.setdefault(hour, {})[user_id] = count
        started = time.perf_counter()
        try:
            for hour, counts in by_hour.items():
                await self._repository.increment_many(hour, counts)
        except Exception:
            # Keep the counts for the next try rather than lose them.
            for key, count in pending.items():
                self._pending[key] = self._pending.get(key, 0) + count
            raise
        if self.on_flush is not None and pending:
            self.on_flush(time.perf_counter() - started, len(pending))

    async def run(self, interval: float = 1.0) -> None:
        """Flush every `interval` seconds until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(interval)
                if self._pending:
                    try:
                        await self.flush()
                    except Exception:
                        log.exception("could not write quota usage; will retry")
        finally:
            if self._pending:
                await self.flush()
