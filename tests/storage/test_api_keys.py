"""ApiKeyRepository: creation, lookup for auth (active, expiry, secret), and batched last-used writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.api_keys import ApiKeyRepository
from storage.records import User
from storage.secrets import api_key_digest
from storage.store import Store, open_store


async def test_create_returns_key_and_secret_once(store: Store, user: User) -> None:
    created = await store.api_keys.create(user.id, "Production Key")
    record = created.api_key
    assert created.key.startswith("sk_") and created.secret.startswith("secret_")
    assert record.prefix == created.key[:9]
    assert (record.name, record.is_active, record.last_used_at, record.expires_at) == (
        "Production Key", True, None, None)
    assert created.key not in repr(created) and created.secret not in repr(created)
    row = await store.db.fetch_one("SELECT key_hash, secret_hash FROM api_keys WHERE id = ?", (record.id,))
    assert row is not None and row[0] == api_key_digest(created.key) and created.secret not in row[1]


async def test_find_by_key(store: Store, user: User) -> None:
    created = await store.api_keys.create(user.id, "k")
    assert await store.api_keys.find_by_key(created.key) == created.api_key
    assert await store.api_keys.find_by_key(created.key, secret=created.secret) == created.api_key
    assert await store.api_keys.find_by_key(created.key, secret="secret_wrong") is None
    assert await store.api_keys.find_by_key("sk_unknown") is None


async def test_expired_keys_do_not_authenticate(store: Store, user: User) -> None:
    expires = datetime(2027, 2, 9, tzinfo=UTC)
    created = await store.api_keys.create(user.id, "k", expires_at=expires)
    assert created.api_key.expires_at == "2027-02-09T00:00:00.000Z"
    just_before = expires - timedelta(milliseconds=1)
    assert await store.api_keys.find_by_key(created.key, now=just_before) is not None
    assert await store.api_keys.find_by_key(created.key, now=expires) is None
    assert await store.api_keys.find_by_key(created.key, now=expires + timedelta(days=1)) is None


async def test_deactivated_keys_and_inactive_users_do_not_authenticate(store: Store, user: User) -> None:
    first = await store.api_keys.create(user.id, "one")
    second = await store.api_keys.create(user.id, "two")
    deactivated = await store.api_keys.deactivate(first.api_key.id, user_id=user.id)
    assert deactivated is not None and not deactivated.is_active
    assert await store.api_keys.find_by_key(first.key) is None
    assert await store.api_keys.find_by_key(second.key) is not None
    await store.users.set_active(user.id, False)
    assert await store.api_keys.find_by_key(second.key) is None


async def test_list_get_deactivate_delete_are_scoped(store: Store, user: User, other_user: User) -> None:
    made = [(await store.api_keys.create(user.id, f"k{n}")).api_key for n in range(3)]
    theirs = (await store.api_keys.create(other_user.id, "theirs")).api_key
    page = await store.api_keys.list_by_user(user.id)
    assert [k.id for k in page.items] == [k.id for k in reversed(made)]  # newest first
    assert page.total == 3
    assert [k.id for k in (await store.api_keys.list_by_user(user.id, offset=2, limit=10)).items] == [made[0].id]
    assert await store.api_keys.get(theirs.id, user_id=user.id) is None
    assert await store.api_keys.get(theirs.id, user_id=other_user.id) == theirs
    assert await store.api_keys.deactivate(theirs.id, user_id=user.id) is None
    assert not await store.api_keys.delete(theirs.id, user_id=user.id)
    assert await store.api_keys.delete(theirs.id, user_id=other_user.id)
    assert await store.api_keys.get(theirs.id, user_id=None) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_last_used_is_batched(store: Store, user: User) -> None:
    clock = FakeClock()
    keys = ApiKeyRepository(store.db, flush_interval=30.0, monotonic=clock)
    one = (await keys.create(user.id, "one")).api_key
    two = (await keys.create(user.id, "two")).api_key
    first_use = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    async def stored(key_id: int) -> str | None:
        return await store.db.fetch_value("SELECT last_used_at FROM api_keys WHERE id = ?", (key_id,))

    await keys.touch_last_used(one.id, first_use)
    await keys.touch_last_used(two.id, first_use)
    await keys.touch_last_used(one.id, first_use + timedelta(seconds=5))
    assert await stored(one.id) is None  # nothing written yet...
    listed = await keys.get(one.id, user_id=user.id)
    assert listed is not None and listed.last_used_at == "2026-01-01T12:00:05.000Z"  # ...but reads see it

    clock.now += 31
    await keys.touch_last_used(two.id, first_use + timedelta(seconds=40))  # this touch triggers the flush
    assert await stored(one.id) == "2026-01-01T12:00:05.000Z"
    assert await stored(two.id) == "2026-01-01T12:00:40.000Z"

    await keys.touch_last_used(one.id, first_use + timedelta(seconds=50))
    assert await keys.flush_last_used() == 1
    assert await stored(one.id) == "2026-01-01T12:00:50.000Z"
    assert await keys.flush_last_used() == 0


async def test_flush_never_moves_last_used_backwards(store: Store, user: User) -> None:
    keys = ApiKeyRepository(store.db)
    key = (await keys.create(user.id, "k")).api_key
    await keys.touch_last_used(key.id, datetime(2026, 1, 2, tzinfo=UTC))
    await keys.flush_last_used()
    await keys.touch_last_used(key.id, datetime(2026, 1, 1, tzinfo=UTC))
    await keys.flush_last_used()
    reloaded = await keys.get(key.id, user_id=None)
    assert reloaded is not None and reloaded.last_used_at == "2026-01-02T00:00:00.000Z"


async def test_store_close_flushes_pending_touches(tmp_path: Path) -> None:
    data_dir = tmp_path / "flush"
    store = await open_store(data_dir)
    owner = await store.users.create("dora")
    key = (await store.api_keys.create(owner.id, "k")).api_key
    await store.api_keys.touch_last_used(key.id, datetime(2026, 3, 1, tzinfo=UTC))
    await store.close()
    async with await open_store(data_dir) as reopened:
        reloaded = await reopened.api_keys.get(key.id, user_id=None)
        assert reloaded is not None and reloaded.last_used_at == "2026-03-01T00:00:00.000Z"


@pytest.mark.parametrize("name", ["", "n" * 256])
async def test_bad_names_are_refused(store: Store, user: User, name: str) -> None:
    with pytest.raises(ValueError):
        await store.api_keys.create(user.id, name)
