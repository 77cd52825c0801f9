"""Tests for broker/retained.py: storing retained messages and finding them by topic filter (section 4.7)."""

from __future__ import annotations

import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from broker import retained
from broker.retained import RetainedStore
from tests.memory_helpers import allocated_by


def matches(topic_filter: str, topic: str) -> bool:
    """Reference matcher, written straight from section 4.7 and deliberately naive."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False  # [MQTT-4.7.2-1]
    f = topic_filter.split("/")
    t = topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(f) == len(t)


def store_with(*topics: str) -> RetainedStore[str]:
    """Each topic retains its own name as value, so match results read as topic lists."""
    store: RetainedStore[str] = RetainedStore()
    for t in topics:
        store.set(t, t)
    return store


def found(store: RetainedStore[str], topic_filter: str) -> list[str]:
    result = list(store.match(topic_filter))
    assert all(topic == value for topic, value in result)
    return sorted(topic for topic, _ in result)


ALL = (
    "sport",
    "sport/tennis",
    "sport/tennis/player1",
    "sport/tennis/player1/ranking",
    "sport/tennis/player1/score/wimbledon",
    "sport/tennis/player2",
    "sport/golf",
    "sports",
    "/finance",
    "finance",
    "a//b",
    "/",
    "$SYS/broker/uptime",
    "$SYS",
    "$other/x",
)


def test_set_get_replace_delete() -> None:
    """[MQTT-3.3.1-5]: a new retained message for a topic replaces the previous one."""
    store: RetainedStore[str] = RetainedStore()
    assert store.get("a/b") is None
    store.set("a/b", "one")
    store.set("a/b", "two")
    assert store.get("a/b") == "two"
    assert store.get("a") is None  # a prefix of a retained topic is not retained
    assert store.get("a/b/c") is None
    assert len(store) == 1
    assert store.delete("a") is False
    assert store.delete("a/b/c") is False
    assert store.delete("a/b") is True
    assert store.delete("a/b") is False
    assert store.get("a/b") is None
    assert len(store) == 0
    assert list(store.items()) == []


def test_empty_payload_is_just_a_value() -> None:
    """Deleting on an empty payload [MQTT-3.3.1-6] is the broker's call; the store stores what it is given."""
    store: RetainedStore[bytes] = RetainedStore()
    store.set("a", b"")
    assert store.get("a") == b""
    assert list(store.match("a")) == [("a", b"")]


def test_parent_and_child_topics_are_independent() -> None:
    store = store_with("a", "a/b", "a/b/c")
    assert store.delete("a/b")
    assert store.get("a") == "a"
    assert store.get("a/b/c") == "a/b/c"
    assert found(store, "a/#") == ["a", "a/b/c"]
    assert store.delete("a/b/c")
    assert found(store, "#") == ["a"]
    assert len(store) == 1


def test_items_lists_everything_including_dollar_topics() -> None:
    store = store_with(*ALL)
    assert sorted(store.items()) == sorted((t, t) for t in ALL)
    assert len(store) == len(ALL)


def test_multi_level_wildcard_spec_example() -> None:
    """4.7.1.2: `sport/tennis/player1/#` matches the parent and every descendant."""
    store = store_with(*ALL)
    assert found(store, "sport/tennis/player1/#") == [
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
    ]
    assert found(store, "sport/#") == [t for t in sorted(ALL) if t == "sport" or t.startswith("sport/")]


def test_single_level_wildcard_spec_examples() -> None:
    """4.7.1.3: `sport/tennis/+`, `sport/+` (not `sport`), `+/+` and `/+` (both `/finance`), `+` (not it)."""
    store = store_with(*ALL)
    assert found(store, "sport/tennis/+") == ["sport/tennis/player1", "sport/tennis/player2"]
    assert found(store, "sport/+") == ["sport/golf", "sport/tennis"]
    assert found(store, "+/+") == ["/", "/finance", "sport/golf", "sport/tennis"]
    assert found(store, "/+") == ["/", "/finance"]
    assert found(store, "+") == ["finance", "sport", "sports"]
    assert found(store, "+/tennis/#") == [t for t in sorted(ALL) if t.startswith("sport/tennis")]


def test_dollar_topics() -> None:
    """[MQTT-4.7.2-1]: filters starting with a wildcard do not match `$` topics; `$SYS/#` does."""
    store = store_with(*ALL)
    everything_else = sorted(t for t in ALL if not t.startswith("$"))
    assert found(store, "#") == everything_else
    assert found(store, "+/broker/uptime") == []
    assert found(store, "+/#") == everything_else
    assert found(store, "$SYS/#") == ["$SYS", "$SYS/broker/uptime"]
    assert found(store, "$SYS/+/uptime") == ["$SYS/broker/uptime"]
    assert found(store, "$SYS") == ["$SYS"]


def test_empty_levels() -> None:
    """4.7.1.1: zero-length levels are levels; no normalisation [MQTT-4.7.3-4]."""
    store = store_with("a//b", "a/b", "/", "//", "a/")
    assert found(store, "a//b") == ["a//b"]
    assert found(store, "a/+/b") == ["a//b"]
    assert found(store, "a/+") == ["a/", "a/b"]
    assert found(store, "/#") == ["/", "//"]
    assert found(store, "+") == []
    assert found(store, "+/+/+") == ["//", "a//b"]


def test_delete_trims_empty_branches() -> None:
    """Memory returns to where it was once every topic is deleted: no dead branches are left."""
    store: RetainedStore[int] = RetainedStore()
    store.set("keep", 0)
    topics = [f"t/{i}/x/y/z" for i in range(2000)]
    tracemalloc.start()
    try:
        before = allocated_by(retained)
        for t in topics:
            store.set(t, 1)
        grown = allocated_by(retained) - before
        for t in topics:
            assert store.delete(t)
        left = allocated_by(retained) - before
    finally:
        tracemalloc.stop()
    assert grown > 1_000_000
    assert left < 2_000
    assert len(store) == 1
    assert list(store.match("#")) == [("keep", 0)]


def test_match_walks_only_what_the_filter_allows() -> None:
    """A literal filter is a few dict lookups, not a scan: 100k other topics barely change its cost."""
    small: RetainedStore[int] = RetainedStore()
    small.set("bench/5", 5)
    big: RetainedStore[int] = RetainedStore()
    for i in range(100_000):
        big.set(f"bench/{i}", i)
    assert list(big.match("bench/5")) == [("bench/5", 5)]
    assert list(big.match("bench/5/#")) == [("bench/5", 5)]
    assert len(list(big.match("bench/+"))) == 100_000
    assert list(small.match("bench/5")) == [("bench/5", 5)]


_TOPIC_LEVEL = st.sampled_from(["", "a", "b", "$", "$a", "a$"])
_FILTER_LEVEL = st.sampled_from(["", "a", "b", "$", "$a", "a$", "+"])
_TOPICS = st.lists(_TOPIC_LEVEL, min_size=1, max_size=4).map("/".join).filter(bool)
_FILTERS = st.builds(
    lambda levels, hash_: "/".join(levels + ["#"] if hash_ else levels),
    st.lists(_FILTER_LEVEL, min_size=0, max_size=4),
    st.booleans(),
).filter(bool)


@settings(max_examples=300, deadline=None)
@given(
    topics=st.lists(_TOPICS, max_size=15),
    deleted=st.lists(_TOPICS, max_size=5),
    filters=st.lists(_FILTERS, min_size=1, max_size=6),
)
def test_match_agrees_with_reference(topics: list[str], deleted: list[str], filters: list[str]) -> None:
    store: RetainedStore[str] = RetainedStore()
    live: set[str] = set()
    for t in topics:
        store.set(t, t)
        live.add(t)
    for t in deleted:
        assert store.delete(t) == (t in live)
        live.discard(t)
    assert len(store) == len(live)
    assert sorted(t for t, _ in store.items()) == sorted(live)
    for t in live:
        assert store.get(t) == t
    for f in filters:
        result = [t for t, _ in store.match(f)]
        assert len(result) == len(set(result)), f  # each topic at most once
        assert sorted(result) == sorted(t for t in live if matches(f, t)), f
