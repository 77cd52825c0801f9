"""TopicRepository."""

from __future__ import annotations

import pytest

from storage.errors import Conflict
from storage.records import Project, User
from storage.store import Store


async def test_create_get_and_scoping(store: Store, user: User, other_user: User, project: Project) -> None:
    topic = await store.topics.create(project.id, "home/+/temperature", description="all rooms", can_subscribe=False)
    assert (topic.name, topic.description, topic.can_publish, topic.can_subscribe) == (
        "home/+/temperature", "all rooms", True, False)
    assert await store.topics.get(topic.id, user_id=user.id) == topic
    assert await store.topics.get(topic.id, user_id=other_user.id) is None
    assert await store.topics.get(topic.id, user_id=None) == topic


async def test_names_are_unique_per_project(store: Store, user: User, project: Project) -> None:
    await store.topics.create(project.id, "a/b")
    with pytest.raises(Conflict, match="a/b"):
        await store.topics.create(project.id, "a/b")
    other = await store.projects.create(user.id, "other")
    await store.topics.create(other.id, "a/b")


@pytest.mark.parametrize("name", ["", "a/#/b", "a+/b", "$share/g", "nul\x00"])
async def test_invalid_filters_are_refused(store: Store, project: Project, name: str) -> None:
    with pytest.raises(ValueError):
        await store.topics.create(project.id, name)


async def test_list_and_counts(store: Store, user: User, project: Project) -> None:
    made = [await store.topics.create(project.id, f"t/{n}") for n in range(3)]
    assert [t.id for t in (await store.topics.list_by_project(project.id)).items] == [t.id for t in made]
    page = await store.topics.list_by_project(project.id, offset=2, limit=5)
    assert [t.id for t in page.items] == [made[2].id] and page.total == 3
    other = await store.projects.create(user.id, "other")
    await store.topics.create(other.id, "x")
    assert await store.topics.count_by_project(project.id) == 3
    assert await store.topics.count_by_user(user.id) == 4


async def test_update(store: Store, user: User, other_user: User, project: Project) -> None:
    topic = await store.topics.create(project.id, "a")
    await store.topics.create(project.id, "b")
    updated = await store.topics.update(topic.id, user_id=user.id, can_publish=False, description="read only")
    assert updated is not None
    assert (updated.name, updated.can_publish, updated.can_subscribe, updated.description) == (
        "a", False, True, "read only")
    renamed = await store.topics.update(topic.id, user_id=user.id, name="a/#")
    assert renamed is not None and renamed.name == "a/#"
    with pytest.raises(Conflict):
        await store.topics.update(topic.id, user_id=user.id, name="b")
    with pytest.raises(ValueError):
        await store.topics.update(topic.id, user_id=user.id, name="#/x")
    assert await store.topics.update(topic.id, user_id=other_user.id, name="c") is None


async def test_delete(store: Store, user: User, other_user: User, project: Project) -> None:
    topic = await store.topics.create(project.id, "a")
    assert not await store.topics.delete(topic.id, user_id=other_user.id)
    assert await store.topics.delete(topic.id, user_id=user.id)
    assert await store.topics.get(topic.id, user_id=None) is None
