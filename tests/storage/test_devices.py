"""DeviceRepository, including the MQTT username space shared with instances."""

from __future__ import annotations

import pytest

from storage.errors import Conflict
from storage.records import Project, User
from storage.secrets import verify_secret
from storage.store import Store


async def _secret_hash(store: Store, device_row_id: int) -> str:
    return str(await store.db.fetch_value("SELECT secret_hash FROM devices WHERE id = ?", (device_row_id,)))


async def test_create_returns_the_secret_once(store: Store, project: Project) -> None:
    created = await store.devices.create(project.id, "Living Room Sensor", "sensor_001")
    device = created.device
    assert (device.project_id, device.name, device.device_id, device.is_active, device.cert_serial) == (
        project.id, "Living Room Sensor", "sensor_001", True, None)
    assert created.secret not in repr(created)
    assert verify_secret(created.secret, await _secret_hash(store, device.id))


async def test_get_every_way_and_scoping(store: Store, user: User, other_user: User, project: Project) -> None:
    device = (await store.devices.create(project.id, "d", "sensor_001", is_active=False)).device
    assert not device.is_active
    assert await store.devices.get(device.id, user_id=user.id) == device
    assert await store.devices.get(device.id, user_id=other_user.id) is None
    assert await store.devices.get(device.id, user_id=None) == device
    assert await store.devices.get_by_device_id("sensor_001") == device
    assert await store.devices.get_by_device_id("nope") is None


async def test_device_id_is_unique_across_projects(store: Store, user: User, project: Project) -> None:
    await store.devices.create(project.id, "d", "sensor_001")
    elsewhere = await store.projects.create(user.id, "other")
    with pytest.raises(Conflict, match="sensor_001"):
        await store.devices.create(elsewhere.id, "d", "sensor_001")


async def test_device_id_taken_by_an_instance_is_refused(store: Store, user: User, project: Project) -> None:
    instance = (await store.instances.create(user.id)).instance
    with pytest.raises(Conflict):
        await store.devices.create(project.id, "d", instance.username)
    assert await store.devices.count_by_project(project.id) == 0


async def test_username_space_is_guarded_in_sql_too(store: Store, user: User, project: Project) -> None:
    """The triggers hold for any writer of the file, not just these repositories."""
    instance = (await store.instances.create(user.id)).instance
    device = (await store.devices.create(project.id, "d", "sensor_001")).device
    with pytest.raises(Conflict):
        async with store.db.transaction() as connection:
            await connection.execute("UPDATE devices SET device_id = ? WHERE id = ?", (instance.username, device.id))
    with pytest.raises(Conflict):
        async with store.db.transaction() as connection:
            await connection.execute("UPDATE mqtt_instances SET username = 'sensor_001' WHERE id = ?", (instance.id,))


@pytest.mark.parametrize(("name", "device_id"), [("", "ok"), ("n" * 256, "ok"), ("ok", ""), ("ok", "has space"),
                                                 ("ok", "x" * 256), ("ok", "nul\x00")])
async def test_bad_values_are_refused(store: Store, project: Project, name: str, device_id: str) -> None:
    with pytest.raises(ValueError):
        await store.devices.create(project.id, name, device_id)


async def test_name_of_255_characters_is_fine(store: Store, project: Project) -> None:
    assert (await store.devices.create(project.id, "n" * 255, "d" * 255)).device.name == "n" * 255


async def test_list_paginates(store: Store, project: Project, user: User) -> None:
    made = [(await store.devices.create(project.id, f"d{n}", f"dev{n}")).device for n in range(4)]
    other = await store.projects.create(user.id, "other")
    await store.devices.create(other.id, "x", "elsewhere")
    page = await store.devices.list_by_project(project.id, offset=1, limit=2)
    assert [d.id for d in page.items] == [made[1].id, made[2].id]
    assert page.total == 4
    assert await store.devices.count_by_project(project.id) == 4
    assert await store.devices.count_by_user(user.id) == 5


async def test_update(store: Store, user: User, other_user: User, project: Project) -> None:
    device = (await store.devices.create(project.id, "d", "sensor_001")).device
    inactive = await store.devices.update(device.id, user_id=user.id, is_active=False)
    assert inactive is not None and not inactive.is_active and inactive.name == "d"
    renamed = await store.devices.update(device.id, user_id=user.id, name="Kitchen")
    assert renamed is not None and renamed.name == "Kitchen" and not renamed.is_active
    assert await store.devices.update(device.id, user_id=other_user.id, name="x") is None
    assert await store.devices.update(999, user_id=None, name="x") is None


async def test_rotate_secret(store: Store, user: User, other_user: User, project: Project) -> None:
    created = await store.devices.create(project.id, "d", "sensor_001")
    assert await store.devices.rotate_secret(created.device.id, user_id=other_user.id) is None
    rotated = await store.devices.rotate_secret(created.device.id, user_id=user.id)
    assert rotated is not None and rotated.secret != created.secret
    stored = await _secret_hash(store, created.device.id)
    assert verify_secret(rotated.secret, stored) and not verify_secret(created.secret, stored)


async def test_delete(store: Store, user: User, other_user: User, project: Project) -> None:
    device = (await store.devices.create(project.id, "d", "sensor_001")).device
    assert not await store.devices.delete(device.id, user_id=other_user.id)
    assert await store.devices.delete(device.id, user_id=user.id)
    assert await store.devices.get_by_device_id("sensor_001") is None
    (await store.devices.create(project.id, "d", "sensor_001"))  # the id is free again
