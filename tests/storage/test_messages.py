"""MessageRepository: batched inserts, newest-first listing, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from storage.clock import format_timestamp
from storage.records import NewMessage, Project, User
from storage.store import Store

NOW = datetime(2026, 2, 9, 10, 0, tzinfo=UTC)


async def test_insert_and_get(store: Store, user: User, other_user: User, project: Project) -> None:
    topic = await store.topics.create(project.id, "home/temp")
    stored = await store.messages.insert(
        NewMessage(project.id, "home/temp", b"temperature: 22.5", qos=1, retained=True, topic_id=topic.id)
    )
    assert (stored.project_id, stored.topic_id, stored.topic, stored.payload, stored.qos, stored.retained) == (
        project.id, topic.id, "home/temp", b"temperature: 22.5", 1, True)
    assert await store.messages.get(stored.id, user_id=user.id) == stored
    assert await store.messages.get(stored.id, user_id=other_user.id) is None
    assert await store.messages.get(999, user_id=None) is None


def test_qos_is_checked_when_the_message_is_built() -> None:
    with pytest.raises(ValueError):
        NewMessage(1, "t", b"", qos=3)


async def test_insert_many_skips_messages_whose_project_or_topic_is_gone(store: Store, project: Project) -> None:
    """The broker records a moment before the batch is written: a project deleted since drops its
    messages, a topic deleted since leaves topic_id NULL, and the rest of the batch is stored."""
    batch = [NewMessage(project.id, f"t/{n}", bytes([n])) for n in range(100)]
    assert await store.messages.insert_many(batch) == 100
    assert await store.messages.insert_many([]) == 0
    await store.messages.insert_many(
        [NewMessage(project.id, "ok", b""), NewMessage(9999, "no project", b""),
         NewMessage(project.id, "gone", b"", topic_id=9999)]
    )
    assert await store.messages.count_by_project(project.id) == 102
    assert await store.messages.count_by_project(9999) == 0
    gone = [m for m in await store.messages.list(project.id, limit=5) if m.topic == "gone"]
    assert gone and gone[0].topic_id is None


async def test_list_newest_first_by_topic_with_limit_and_cursor(store: Store, user: User, project: Project) -> None:
    a = await store.topics.create(project.id, "a")
    b = await store.topics.create(project.id, "b")
    other = await store.projects.create(user.id, "other")
    await store.messages.insert_many(
        [NewMessage(project.id, "a", b"%d" % n, topic_id=(a.id if n % 2 else b.id)) for n in range(10)]
        + [NewMessage(other.id, "a", b"elsewhere")]
    )
    everything = await store.messages.list(project.id, limit=1000)
    assert [m.payload for m in everything] == [b"%d" % n for n in reversed(range(10))]
    only_a = await store.messages.list(project.id, topic_id=a.id, limit=3)
    assert [m.payload for m in only_a] == [b"9", b"7", b"5"]
    more = await store.messages.list(project.id, topic_id=a.id, limit=3, before_id=only_a[-1].id)
    assert [m.payload for m in more] == [b"3", b"1"]
    assert await store.messages.list(project.id, limit=0) == ()
    for bad in (-1, 1001):
        with pytest.raises(ValueError):
            await store.messages.list(project.id, limit=bad)


async def test_expired_messages_are_hidden_then_purged(store: Store, project: Project) -> None:
    past, future = format_timestamp(NOW - timedelta(seconds=1)), format_timestamp(NOW + timedelta(days=30))
    await store.messages.insert_many([
        NewMessage(project.id, "t", b"old", expires_at=past),
        NewMessage(project.id, "t", b"new", expires_at=future),
        NewMessage(project.id, "t", b"forever"),
    ])
    visible = await store.messages.list(project.id, now=NOW)
    assert [m.payload for m in visible] == [b"forever", b"new"]
    old_id = (await store.messages.list(project.id, now=NOW - timedelta(days=1)))[-1].id
    assert await store.messages.get(old_id, user_id=None, now=NOW) is None
    assert await store.messages.purge_expired(NOW) == 1
    assert await store.messages.count_by_project(project.id) == 2
    assert await store.messages.purge_expired(NOW) == 0


async def test_purge_works_in_batches(store: Store, project: Project) -> None:
    past = format_timestamp(NOW - timedelta(hours=1))
    await store.messages.insert_many([NewMessage(project.id, "t", b"", expires_at=past)] * 25)
    assert await store.messages.purge_expired(NOW, batch_size=10) == 25
    assert await store.messages.count_by_project(project.id) == 0


async def test_deleting_a_topic_keeps_its_messages(store: Store, user: User, project: Project) -> None:
    topic = await store.topics.create(project.id, "a")
    stored = await store.messages.insert(NewMessage(project.id, "a", b"x", topic_id=topic.id))
    await store.topics.delete(topic.id, user_id=user.id)
    kept = await store.messages.get(stored.id, user_id=user.id)
    assert kept is not None and kept.topic_id is None and kept.topic == "a"


async def test_delete(store: Store, user: User, other_user: User, project: Project) -> None:
    stored = await store.messages.insert(NewMessage(project.id, "a", b"x"))
    assert not await store.messages.delete(stored.id, user_id=other_user.id)
    assert await store.messages.delete(stored.id, user_id=user.id)
    assert not await store.messages.delete(stored.id, user_id=None)
