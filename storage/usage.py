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
        # Messages refused because their sender's quota was used up, over MQTT and REST alike; and this
        # hour's refusals by user id (bounded by the number of users; emptied every hour), which the
        # dashboard shows each user beside the time the window resets.
        self.rejections = 0
        self._refused: dict[int, int] = {}
        # This hour's counts not yet written, by user id; earlier hours' wait in _pending_before.
        self._pending: dict[int, int] = {}
        self._pending_before: dict[str, dict[int, int]] = {}
        # Told (seconds, rows) after each write: the metrics' SQLite write latency and batch size.
        self.on_flush: Callable[[float, int], None] | None = None

    async def load(self) -> None:
        """Read this hour's counts (so a restart does not reset anyone's quota)."""
        now = self._clock()
        self._hour, self._hour_ends = _hour_of(now), _next_hour(now)
        self._counts = await self._repository.counts_for_hour(self._hour)

    def _roll(self) -> str:
        """The current hour's key; a new hour starts everyone from zero."""
        if self._clock() >= self._hour_ends:
            self._new_hour()
        return self._hour

    def _new_hour(self) -> None:
        if self._pending:
            before = self._pending_before.setdefault(self._hour, {})
            for user_id, count in self._pending.items():
                before[user_id] = before.get(user_id, 0) + count
        now = self._clock()
        self._hour, self._hour_ends = _hour_of(now), _next_hour(now)
        self._counts = {}
        self._refused = {}
        self._pending = {}

    def try_consume(self, user_id: int, limit: int, n: int = 1) -> bool:
        """Count `n` messages for the user unless that would pass `limit` (0 = unlimited). Runs for every
        message: two dict updates, and the hour's name is only formatted when the hour changes."""
        if self._clock() >= self._hour_ends:
            self._new_hour()
        counts = self._counts
        used = counts.get(user_id, 0) + n
        if limit and used > limit:
            self.rejections += n
            refused = self._refused
            refused[user_id] = refused.get(user_id, 0) + n
            return False
        counts[user_id] = used
        pending = self._pending
        pending[user_id] = pending.get(user_id, 0) + n
        return True

    def forget(self, user_id: int) -> None:
        """A deleted user: drop their counts (nothing of theirs is written any more)."""
        self._counts.pop(user_id, None)
        self._refused.pop(user_id, None)
        self._pending.pop(user_id, None)
        for counts in self._pending_before.values():
            counts.pop(user_id, None)

    def used(self, user_id: int) -> int:
        self._roll()
        return self._counts.get(user_id, 0)

    def refused(self, user_id: int) -> int:
        """Messages of the user refused this hour because the quota was used up."""
        self._roll()
        return self._refused.get(user_id, 0)

    def resets_at(self) -> float:
        """When the current window ends (a Unix time): every count starts again from zero then."""
        self._roll()
        return self._hour_ends

    def counts_this_hour(self) -> dict[int, int]:
        """Messages counted this hour, by user id (a copy)."""
        self._roll()
        return dict(self._counts)

    def seconds_until_reset(self) -> int:
        now = self._clock()
        return max(1, int(3600 - now % 3600))

    @property
    def _unwritten(self) -> bool:
        return bool(self._pending or self._pending_before)

    async def flush(self) -> None:
        by_hour = self._pending_before
        if self._pending:
            current = by_hour.setdefault(self._hour, {})
            for user_id, count in self._pending.items():
                current[user_id] = current.get(user_id, 0) + count
        self._pending, self._pending_before = {}, {}
        rows = sum(len(counts) for counts in by_hour.values())
        started = time.perf_counter()
        try:
            while by_hour:
                hour, counts = next(iter(by_hour.items()))
                await self._repository.increment_many(hour, counts)
                del by_hour[hour]
        except Exception:
            # Keep what was not written for the next try rather than lose it.
            for hour, counts in by_hour.items():
                kept = self._pending_before.setdefault(hour, {})
                for user_id, count in counts.items():
                    kept[user_id] = kept.get(user_id, 0) + count
            raise
        if self.on_flush is not None and rows:
            self.on_flush(time.perf_counter() - started, rows)

    async def run(self, interval: float = 1.0) -> None:
        """Flush every `interval` seconds until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(interval)
                if self._unwritten:
                    try:
                        await self.flush()
                    except Exception:
                        log.exception("could not write quota usage; will retry")
        finally:
            if self._unwritten:
                await self.flush()
