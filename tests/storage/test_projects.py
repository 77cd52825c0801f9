"""ProjectRepository."""

from __future__ import annotations

import pytest

from storage.records import Project, User
from storage.store import Store


async def test_create_and_get(store: Store, user: User, other_user: User, project: Project) -> None:
    assert (project.user_id, project.name, project.description) == (user.id, "Smart Home", "IoT home automation")
    assert await store.projects.get(project.id, user_id=user.id) == project
    assert await store.projects.get(project.id, user_id=other_user.id) is None
    assert await store.projects.get(project.id, user_id=None) == project
    assert await store.projects.get(999, user_id=None) is None


@pytest.mark.parametrize("name", ["", "n" * 256])
async def test_bad_names_are_refused(store: Store, user: User, name: str) -> None:
    with pytest.raises(ValueError):
        await store.projects.create(user.id, name)


async def test_list_paginates_and_counts(store: Store, user: User, other_user: User) -> None:
    made = [await store.projects.create(user.id, f"p{n}") for n in range(17)]
    await store.projects.create(other_user.id, "theirs")
    first = await store.projects.list_by_user(user.id)
    assert [p.id for p in first.items] == [p.id for p in made[:15]]
    assert first.total == 17
    second = await store.projects.list_by_user(user.id, offset=15, limit=15)
    assert [p.id for p in second.items] == [p.id for p in made[15:]]
    assert (await store.projects.list_by_user(user.id, offset=17)).items == ()
    assert await store.projects.count_by_user(user.id) == 17


async def test_update_changes_only_what_is_given(store: Store, user: User, other_user: User, project: Project) -> None:
    renamed = await store.projects.update(project.id, user_id=user.id, name="Smart Home Updated")
    assert renamed is not None
    assert (renamed.name, renamed.description) == ("Smart Home Updated", "IoT home automation")
    assert renamed.updated_at >= project.updated_at and renamed.created_at == project.created_at
    described = await store.projects.update(project.id, user_id=user.id, description="")
    assert described is not None and described.description == ""
    assert await store.projects.update(project.id, user_id=other_user.id, name="x") is None
    with pytest.raises(ValueError):
        await store.projects.update(project.id, user_id=user.id, name="")


async def test_delete_is_scoped(store: Store, user: User, other_user: User, project: Project) -> None:
    assert not await store.projects.delete(project.id, user_id=other_user.id)
    assert await store.projects.delete(project.id, user_id=user.id)
    assert await store.projects.get(project.id, user_id=None) is None
