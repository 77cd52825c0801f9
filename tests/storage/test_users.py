"""UserRepository."""

from __future__ import annotations

import re

import pytest

from storage.errors import Conflict
from storage.records import User
from storage.store import Store


async def test_create_and_get_every_way(store: Store) -> None:
    created = await store.users.create("alice", plan="starter", is_admin=True)
    assert re.fullmatch(r"[0-9a-f]{24}", created.public_id)
    assert (created.plan, created.is_admin, created.is_active, created.has_password) == ("starter", True, True, False)
    assert created.created_at.endswith("Z")
    assert await store.users.get(created.id) == created
    assert await store.users.get_by_public_id(created.public_id) == created
    assert await store.users.get_by_name("alice") == created
    assert await store.users.get(999) is None
    assert await store.users.get_by_public_id("0" * 24) is None
    assert await store.users.get_by_name("nobody") is None


async def test_names_are_unique(store: Store, user: User) -> None:
    with pytest.raises(Conflict, match="alice"):
        await store.users.create("alice")


@pytest.mark.parametrize("name", ["", "x" * 256])
async def test_bad_names_are_refused(store: Store, name: str) -> None:
    with pytest.raises(ValueError):
        await store.users.create(name)


async def test_authenticate(store: Store) -> None:
    created = await store.users.create("carol", password="pa55word")
    assert created.has_password
    assert await store.users.authenticate("carol", "pa55word") == created
    assert await store.users.authenticate("carol", "wrong") is None
    assert await store.users.authenticate("nobody", "pa55word") is None
    await store.users.set_active(created.id, False)
    assert await store.users.authenticate("carol", "pa55word") is None


async def test_user_without_password_cannot_log_in(store: Store, user: User) -> None:
    assert await store.users.authenticate("alice", "") is None
    updated = await store.users.set_password(user.id, "now-one")
    assert updated is not None and updated.has_password
    assert await store.users.authenticate("alice", "now-one") is not None
    cleared = await store.users.set_password(user.id, None)
    assert cleared is not None and not cleared.has_password


async def test_setters_return_the_updated_record(store: Store, user: User) -> None:
    assert (await store.users.set_plan(user.id, "professional")).plan == "professional"  # type: ignore[union-attr]
    assert (await store.users.set_admin(user.id, True)).is_admin  # type: ignore[union-attr]
    assert not (await store.users.set_active(user.id, False)).is_active  # type: ignore[union-attr]
    assert await store.users.set_plan(999, "free") is None
    with pytest.raises(ValueError):
        await store.users.set_plan(user.id, "")


async def test_list_and_count(store: Store) -> None:
    for name in ("a", "b", "c"):
        await store.users.create(name)
    page = await store.users.list(offset=1, limit=1)
    assert [u.name for u in page.items] == ["b"]
    assert (page.total, page.filtered) == (3, 3)
    assert await store.users.count() == 3


async def test_delete(store: Store, user: User) -> None:
    assert await store.users.delete(user.id)
    assert await store.users.get(user.id) is None
    assert not await store.users.delete(user.id)
