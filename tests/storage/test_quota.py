"""QuotaRepository and the hour key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from storage.clock import hour_key
from storage.records import User
from storage.store import Store


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
