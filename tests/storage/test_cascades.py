"""Deleting an owner removes what hangs off it, in the database itself (ON DELETE CASCADE)."""

from __future__ import annotations

from storage.records import NewMessage, Project, User
from storage.store import Store

CHILD_TABLES = ("mqtt_instances", "projects", "devices", "topics", "api_keys", "messages", "quota_usage")


async def _counts(store: Store) -> dict[str, int]:
    return {table: int(await store.db.fetch_value(f"SELECT count(*) FROM {table}")) for table in CHILD_TABLES}


async def _populate(store: Store, owner: User, project: Project) -> None:
    await store.instances.create(owner.id)
    await store.devices.create(project.id, "d", f"{owner.name}-device")
    topic = await store.topics.create(project.id, "t")
    await store.api_keys.create(owner.id, "k")
    await store.messages.insert(NewMessage(project.id, "t", b"x", topic_id=topic.id))
    await store.quota.increment(owner.id, "2026-11-22T21")


async def test_deleting_a_user_removes_everything_they_own(
    store: Store, user: User, other_user: User, project: Project
) -> None:
    await _populate(store, user, project)
    await _populate(store, other_user, await store.projects.create(other_user.id, "theirs"))
    assert set((await _counts(store)).values()) == {2}
    assert await store.users.delete(user.id)
    assert set((await _counts(store)).values()) == {1}  # only bob's remain
    assert await store.devices.get_by_device_id("alice-device") is None
    assert await store.devices.get_by_device_id("bob-device") is not None


async def test_deleting_a_project_removes_its_devices_topics_and_messages(
    store: Store, user: User, project: Project
) -> None:
    await _populate(store, user, project)
    kept = await store.projects.create(user.id, "kept")
    await store.topics.create(kept.id, "t")
    assert await store.projects.delete(project.id, user_id=user.id)
    counts = await _counts(store)
    assert counts == {"mqtt_instances": 1, "projects": 1, "devices": 0, "topics": 1, "api_keys": 1,
                      "messages": 0, "quota_usage": 1}
