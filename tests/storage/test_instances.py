"""InstanceRepository: the /v1/mqtt data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from storage.errors import Conflict, StorageError
from storage.instances import InstanceRepository
from storage.records import User
from storage.secrets import SecretBox, verify_secret
from storage.store import Store


async def test_create_returns_the_password_once_and_keeps_it_recoverable(store: Store, user: User) -> None:
    created = await store.instances.create(user.id)
    instance = created.instance
    assert re.fullmatch(r"[0-9a-f]{24}", instance.public_id)
    assert re.fullmatch(r"[A-Za-z0-9]{8}", instance.username)
    assert (instance.owner, instance.user_id, instance.version) == (user.public_id, user.id, 0)
    assert created.password not in repr(created)
    assert store.instances.reveal_password(instance) == created.password
    stored_hash = await store.db.fetch_value("SELECT secret_hash FROM mqtt_instances WHERE id = ?", (instance.id,))
    assert verify_secret(created.password, stored_hash)


async def test_reveal_with_another_key_fails(store: Store, user: User, tmp_path: Path) -> None:
    instance = (await store.instances.create(user.id)).instance
    stranger = InstanceRepository(store.db, SecretBox.from_data_dir(tmp_path / "elsewhere"))
    with pytest.raises(StorageError):
        stranger.reveal_password(instance)


async def test_get_is_scoped_to_the_owner(store: Store, user: User, other_user: User) -> None:
    instance = (await store.instances.create(user.id)).instance
    assert await store.instances.get(instance.public_id, user_id=user.id) == instance
    assert await store.instances.get(instance.public_id, user_id=other_user.id) is None
    assert await store.instances.get(instance.public_id, user_id=None) == instance
    assert await store.instances.get("f" * 24, user_id=user.id) is None
    assert await store.instances.get_by_username(instance.username) == instance


async def test_list_search_order_and_counts(store: Store, user: User, other_user: User) -> None:
    created = [(await store.instances.create(user.id)).instance for _ in range(5)]
    await store.instances.create(other_user.id)
    page = await store.instances.list_by_user(user.id)
    assert [i.id for i in page.items] == [i.id for i in created]
    assert (page.total, page.filtered) == (5, 5)
    newest_first = await store.instances.list_by_user(user.id, order="desc", offset=1, limit=2)
    assert [i.id for i in newest_first.items] == [created[3].id, created[2].id]
    wanted = created[2].username
    found = await store.instances.list_by_user(user.id, search=wanted.swapcase())
    assert [i.id for i in found.items] == [created[2].id]
    assert (found.total, found.filtered) == (5, 1)
    nothing = await store.instances.list_by_user(user.id, search="%_")  # not LIKE wildcards
    assert (nothing.items, nothing.filtered) == ((), 0)
    assert await store.instances.count_by_user(user.id) == 5


async def test_pagination_edges(store: Store, user: User) -> None:
    for _ in range(3):
        await store.instances.create(user.id)
    assert len((await store.instances.list_by_user(user.id, offset=2, limit=10)).items) == 1
    past_the_end = await store.instances.list_by_user(user.id, offset=3, limit=10)
    assert past_the_end.items == () and past_the_end.total == 3
    assert (await store.instances.list_by_user(user.id, limit=0)).items == ()
    for bad in ({"offset": -1}, {"limit": -1}, {"limit": 1001}, {"order": "sideways"}):
        with pytest.raises(ValueError):
            await store.instances.list_by_user(user.id, **bad)  # type: ignore[arg-type]


async def test_delete_is_scoped(store: Store, user: User, other_user: User) -> None:
    instance = (await store.instances.create(user.id)).instance
    assert not await store.instances.delete(instance.public_id, user_id=other_user.id)
    assert await store.instances.delete(instance.public_id, user_id=user.id)
    assert not await store.instances.delete(instance.public_id, user_id=user.id)
    assert await store.instances.count_by_user(user.id) == 0


async def test_username_collisions_are_retried(store: Store, user: User, monkeypatch: pytest.MonkeyPatch) -> None:
    first = (await store.instances.create(user.id)).instance
    names = iter([first.username, first.username, "Fresh123"])
    monkeypatch.setattr("storage.instances.generate_username", lambda: next(names))
    assert (await store.instances.create(user.id)).instance.username == "Fresh123"


async def test_username_taken_by_a_device_is_refused(store: Store, user: User, monkeypatch: pytest.MonkeyPatch) -> None:
    project = await store.projects.create(user.id, "p")
    await store.devices.create(project.id, "d", "Taken123")
    monkeypatch.setattr("storage.instances.generate_username", lambda: "Taken123")
    with pytest.raises(Conflict):
        await store.instances.create(user.id)
    assert await store.instances.count_by_user(user.id) == 0
