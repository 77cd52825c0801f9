"""QuotaRepository and the hour key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from storage.clock import hour_key
from storage.records import User
from storage.store import Store
from storage.usage import UsageMeter


def test_hour_key_is_utc() -> None:
    assert hour_key(datetime(2026, 11, 22, 21, 59, 59, tzinfo=UTC)) == "2026-11-22T21"
    assert hour_key(datetime(2026, 11, 22, 23, 30, tzinfo=timezone(timedelta(hours=2)))) == "2026-11-22T21"


async def test_increment_and_read(store: Store, user: User, other_user: User) -> None:
    assert await store.quota.get(user.id, "2026-11-22T21") == 0
    assert await store.quota.increment(user.id, "2026-11-22T21") == 1
    assert await store.quota.increment(user.id, "2026-11-22T21", 41) == 42
    assert await store.quota.increment(user.id, "2026-11-22T22", 5) == 5
    await store.quota.increment_many("2026-11-22T21", {user.id: 8, other_user.id: 3})
    assert await store.quota.get(user.id, "2026-11-22T21") == 50
    assert await store.quota.get(other_user.id, "2026-11-22T21") == 3
    assert await store.quota.get(user.id, "2026-11-22T22") == 5


async def test_purge_before(store: Store, user: User) -> None:
    for hour in ("2026-11-22T20", "2026-11-22T21", "2026-11-22T22"):
        await store.quota.increment(user.id, hour)
    assert await store.quota.purge_before("2026-11-22T22") == 2
    assert await store.quota.get(user.id, "2026-11-22T21") == 0
    assert await store.quota.get(user.id, "2026-11-22T22") == 1


async def test_usage_meter_counts_refuses_and_writes_each_hour(store: Store, user: User, other_user: User) -> None:
    """The meter behind the hourly quota: counts in memory, refuses past the limit (and counts the
    refusals), starts from zero in a new hour, and writes every hour's counts to quota_usage."""
    now = [3600.0 * 500_000 + 10]  # an hour boundary plus 10 s
    meter = UsageMeter(store.quota, clock=lambda: now[0])
    await meter.load()
    first_hour = hour_key(datetime.fromtimestamp(now[0], timezone.utc))
    assert all(meter.try_consume(user.id, 3) for _ in range(3))
    assert not meter.try_consume(user.id, 3)
    assert meter.try_consume(other_user.id, 0)  # 0 = unlimited
    assert (meter.used(user.id), meter.rejections) == (3, 1)
    now[0] += 3600  # the next hour: everyone starts again
    second_hour = hour_key(datetime.fromtimestamp(now[0], timezone.utc))
    assert meter.used(user.id) == 0 and meter.try_consume(user.id, 3)
    await meter.flush()
    assert await store.quota.get(user.id, first_hour) == 3
    assert await store.quota.get(other_user.id, first_hour) == 1
    assert await store.quota.get(user.id, second_hour) == 1
    restarted = UsageMeter(store.quota, clock=lambda: now[0])
    await restarted.load()
    assert restarted.used(user.id) == 1
