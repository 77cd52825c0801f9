"""load_auth_snapshot: one consistent read of what the broker's auth needs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.auth_snapshot import DeviceCredential, InstanceCredential, load_auth_snapshot
from storage.records import Project, User
from storage.secrets import verify_secret
from storage.store import Store


async def test_snapshot_holds_users_credentials_and_topics(
    store: Store, user: User, other_user: User, project: Project
) -> None:
    await store.users.set_admin(other_user.id, True)
    instance = await store.instances.create(user.id)
    device = await store.devices.create(project.id, "d", "sensor_001", is_active=False)
    topic = await store.topics.create(project.id, "home/#", can_publish=False)

    snapshot = await load_auth_snapshot(store.db)

    assert set(snapshot.users) == {user.id, other_user.id}
    assert snapshot.users[other_user.id].is_admin and snapshot.users[user.id].plan == "free"
    assert snapshot.users[user.id].public_id == user.public_id
    by_instance = snapshot.credential(instance.instance.username)
    assert isinstance(by_instance, InstanceCredential)
    assert (by_instance.user_id, by_instance.instance_id) == (user.id, instance.instance.id)
    assert verify_secret(instance.password, by_instance.secret_hash)
    by_device = snapshot.credential("sensor_001")
    assert isinstance(by_device, DeviceCredential)
    assert (by_device.user_id, by_device.project_id, by_device.device_row_id, by_device.is_active,
            by_device.cert_serial) == (user.id, project.id, device.device.id, False, None)
    assert verify_secret(device.secret, by_device.secret_hash)
    assert by_device.secret_hash not in repr(by_device)
    (only,) = snapshot.project_topics(project.id)
    assert (only.id, only.name, only.can_publish, only.can_subscribe) == (topic.id, "home/#", False, True)
    assert snapshot.project_topics(999) == ()
    assert snapshot.credential("nobody") is None


async def test_snapshot_is_read_only(store: Store, user: User) -> None:
    snapshot = await store.auth_snapshot()
    with pytest.raises(TypeError):
        snapshot.users[999] = snapshot.users[user.id]  # type: ignore[index]


async def test_token_tells_when_to_rebuild(store: Store, user: User, tmp_path: Path) -> None:
    snapshot = await store.auth_snapshot()
    assert await store.db.change_token() == snapshot.token
    await store.instances.create(user.id)  # a write in this process
    assert await store.db.change_token() != snapshot.token
    rebuilt = await store.auth_snapshot()
    assert len(rebuilt.credentials) == 1
    with sqlite3.connect(tmp_path / "data" / "roost.db") as other:  # a write by another process
        other.execute("UPDATE users SET plan = 'enterprise'")
    assert await store.db.change_token() != rebuilt.token
    assert (await store.auth_snapshot()).users[user.id].plan == "enterprise"
