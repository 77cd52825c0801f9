"""Tests for broker/topic_tree.py: MQTT 5.0 section 4.7 matching, shared groups, trimming, scaling."""

from __future__ import annotations

import tracemalloc
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import topic_tree
from broker.topic_tree import SharedGroup, SubscriptionTree
from tests.memory_helpers import allocated_by


def matches(topic_filter: str, topic: str) -> bool:
    """Reference matcher, written straight from section 4.7 and deliberately naive."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False  # [MQTT-4.7.2-1]
    f = topic_filter.split("/")
    t = topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True  # parent level and any number of children (4.7.1.2)
        if i >= len(t):
            return False
        if level != "+" and level != t[i]:
            return False
    return len(f) == len(t)


def clients(tree: SubscriptionTree[int], topic: str) -> list[str]:
    plain, _ = tree.match(topic)
    return sorted(client_id for client_id, _ in plain)


def tree_with(*filters: str) -> SubscriptionTree[int]:
    """One client per filter, named after the filter, so match results read as filter lists."""
    tree: SubscriptionTree[int] = SubscriptionTree()
    for f in filters:
        tree.subscribe(f, f, 0)
    return tree


# --- Spec examples, MQTT 5.0 section 4.7 ---------------------------------------------------------------


def test_multi_level_wildcard_spec_example() -> None:
    """4.7.1.2: `sport/tennis/player1/#` matches the parent level and any descendants."""
    tree = tree_with("sport/tennis/player1/#")
    for topic in ("sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon"):
        assert clients(tree, topic) == ["sport/tennis/player1/#"], topic
    for topic in ("sport/tennis/player2", "sport/tennis", "sport/tennis/player10"):
        assert clients(tree, topic) == [], topic


def test_sport_hash_matches_sport() -> None:
    """4.7.1.2: `sport/#` also matches the singular `sport`, since `#` includes the parent level."""
    tree = tree_with("sport/#")
    assert clients(tree, "sport") == ["sport/#"]
    assert clients(tree, "sport/") == ["sport/#"]
    assert clients(tree, "sports") == []


def test_hash_alone_matches_everything_not_dollar() -> None:
    """4.7.1.2: `#` on its own matches every topic ... except `$` ones [MQTT-4.7.2-1]."""
    tree = tree_with("#")
    for topic in ("a", "a/b/c", "/", "/finance", "a//b"):
        assert clients(tree, topic) == ["#"], topic
    assert clients(tree, "$SYS/broker") == []


def test_single_level_wildcard_spec_examples() -> None:
    """4.7.1.3: `sport/tennis/+` matches one level only; `sport/+` does not match `sport` but does `sport/`."""
    tree = tree_with("sport/tennis/+")
    assert clients(tree, "sport/tennis/player1") == ["sport/tennis/+"]
    assert clients(tree, "sport/tennis/player2") == ["sport/tennis/+"]
    assert clients(tree, "sport/tennis/player1/ranking") == []

    tree = tree_with("sport/+")
    assert clients(tree, "sport") == []
    assert clients(tree, "sport/") == ["sport/+"]  # `+` matches an empty level


def test_plus_plus_and_slash_plus_and_plus() -> None:
    """4.7.1.3: `+/+` and `/+` match `/finance`; `+` does not."""
    tree = tree_with("+/+", "/+", "+")
    assert clients(tree, "/finance") == ["+/+", "/+"]
    assert clients(tree, "finance") == ["+"]


def test_plus_combined_with_hash() -> None:
    """4.7.1.3: `+/tennis/#` is valid and combines both wildcards."""
    tree = tree_with("+/tennis/#")
    assert clients(tree, "sport/tennis") == ["+/tennis/#"]
    assert clients(tree, "sport/tennis/player1/ranking") == ["+/tennis/#"]
    assert clients(tree, "sport/golf") == []


def test_dollar_topics_not_matched_by_leading_wildcards() -> None:
    """[MQTT-4.7.2-1] and its non-normative examples in 4.7.2."""
    tree = tree_with("#", "+/monitor/Clients", "+", "+/#", "$SYS/#", "$SYS/monitor/+", "$SYS/monitor/Clients")
    # "A subscription to `#` will not receive any messages published to a topic beginning with a $"
    # "A subscription to `+/monitor/Clients` will not receive any messages published to `$SYS/monitor/Clients`"
    assert clients(tree, "$SYS/monitor/Clients") == sorted(
        ["$SYS/#", "$SYS/monitor/+", "$SYS/monitor/Clients"]
    )
    # "A subscription to `$SYS/#` will receive messages published to topics beginning with `$SYS/`"
    assert clients(tree, "$SYS/x") == ["$SYS/#"]
    assert clients(tree, "$SYS") == ["$SYS/#"]
    assert clients(tree, "$") == []
    assert clients(tree, "$other/x") == []
    # A `$` that is not the first character is an ordinary character.
    assert clients(tree, "a/$b") == ["#", "+/#"]


def test_dollar_rule_applies_to_shared_groups_too() -> None:
    tree: SubscriptionTree[int] = SubscriptionTree()
    tree.subscribe("#", "c1", 0, group="g")
    tree.subscribe("$SYS/#", "c2", 0, group="g")
    assert [g.topic_filter for g in tree.match("$SYS/x")[1]] == ["$SYS/#"]
    assert [g.topic_filter for g in tree.match("x")[1]] == ["#"]


def test_empty_levels_are_real_levels() -> None:
    """4.7.1.1: adjacent separators make a zero-length level; no normalisation [MQTT-4.7.3-4]."""
    tree = tree_with("a//b", "a/+/b", "a/b", "/", "+/+", "/#", "a/")
    assert clients(tree, "a//b") == ["a/+/b", "a//b"]
    assert clients(tree, "a/b") == ["+/+", "a/b"]
    assert clients(tree, "/") == sorted(["/", "/#", "+/+"])
    assert clients(tree, "a/") == ["+/+", "a/"]
    assert clients(tree, "//") == ["/#"]


def test_case_sensitive_and_no_normalisation() -> None:
    """4.7.3: topics are case sensitive; [MQTT-4.7.3-4] no normalisation (spaces are significant)."""
    tree = tree_with("Sport", "sport ", "sport")
    assert clients(tree, "sport") == ["sport"]
    assert clients(tree, "SPORT") == []


# --- Subscriptions: add, replace, overlap, remove --------------------------------------------------------


def test_subscribe_returns_new_then_replaced() -> None:
    """[MQTT-3.8.4-3]: an identical filter from the same session replaces the subscription."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    assert tree.subscribe("a/b", "c1", "qos0") is True
    assert tree.subscribe("a/b", "c1", "qos1") is False
    assert len(tree) == 1
    assert tree.match("a/b") == ([("c1", "qos1")], [])
    assert tree.subscribe("a/b", "c2", "qos2") is True
    assert len(tree) == 2


def test_overlapping_subscriptions_appear_once_each() -> None:
    """The broker merges overlaps itself (subscription identifiers, [MQTT-3.3.4-3]); the tree lists each."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    for f in ("a/b", "a/+", "a/#", "#", "+/b"):
        tree.subscribe(f, "c1", f)
    plain, shared = tree.match("a/b")
    assert sorted(plain) == sorted(("c1", f) for f in ("a/b", "a/+", "a/#", "#", "+/b"))
    assert shared == []
    assert len(tree) == 5


def test_unsubscribe_reports_existence() -> None:
    tree = tree_with("a/b")
    assert tree.unsubscribe("a/b", "other") is False
    assert tree.unsubscribe("a/c", "a/b") is False
    assert tree.unsubscribe("a", "a/b") is False  # a prefix node is not a subscription
    assert tree.unsubscribe("a/b/c", "a/b") is False
    assert tree.unsubscribe("a/b", "a/b", group="g") is False  # plain and shared are distinct
    assert tree.unsubscribe("a/b", "a/b") is True
    assert tree.unsubscribe("a/b", "a/b") is False
    assert len(tree) == 0


def test_unsubscribe_keeps_siblings_and_ancestors_in_use() -> None:
    tree = tree_with("a", "a/b", "a/b/c", "a/b/d", "a/#")
    assert tree.unsubscribe("a/b/c", "a/b/c")
    assert clients(tree, "a/b/c") == ["a/#"]
    assert clients(tree, "a/b/d") == ["a/#", "a/b/d"]
    assert clients(tree, "a/b") == ["a/#", "a/b"]
    assert clients(tree, "a") == ["a", "a/#"]
    assert tree.unsubscribe("a/#", "a/#")
    assert clients(tree, "a/b/d") == ["a/b/d"]
    assert clients(tree, "a") == ["a"]
    assert len(tree) == 3


def test_unsubscribe_trims_empty_branches() -> None:
    """Memory returns to where it was once every subscription is gone: no dead nodes are left behind."""
    tree: SubscriptionTree[int] = SubscriptionTree()
    tree.subscribe("keep", "c", 0)
    filters = [f"t/{i}/x/y/+/#" for i in range(2000)]
    tracemalloc.start()
    try:
        before = allocated_by(topic_tree)
        for f in filters:
            tree.subscribe(f, "c", 1)
            tree.subscribe(f, "d", 1, group="g")
        grown = allocated_by(topic_tree) - before
        for f in filters:
            assert tree.unsubscribe(f, "c")
            assert tree.unsubscribe(f, "d", group="g")
        left = allocated_by(topic_tree) - before
    finally:
        tracemalloc.stop()
    assert len(tree) == 1
    assert grown > 1_000_000  # ~6 nodes per filter were really built ...
    assert left < 2_000  # ... and all of them were released
    assert tree.match("t/1/x/y/z/w") == ([], [])
    assert clients(tree, "keep") == ["c"]


# --- Shared subscriptions (MQTT 5.0 section 4.8.2) --------------------------------------------------------


def test_shared_group_is_matched_not_listed_as_plain() -> None:
    tree: SubscriptionTree[str] = SubscriptionTree()
    assert tree.subscribe("sensors/+", "w1", "v1", group="workers") is True
    assert tree.subscribe("sensors/+", "w2", "v2", group="workers") is True
    assert tree.subscribe("sensors/+", "w1", "v1b", group="workers") is False  # replace
    assert len(tree) == 2
    plain, shared = tree.match("sensors/t1")
    assert plain == []
    assert len(shared) == 1
    group = shared[0]
    assert isinstance(group, SharedGroup)
    assert (group.name, group.topic_filter) == ("workers", "sensors/+")
    assert group.members == {"w1": "v1b", "w2": "v2"}
    assert tree.match("other") == ([], [])


def test_shared_group_round_robin() -> None:
    tree: SubscriptionTree[int] = SubscriptionTree()
    for i, cid in enumerate(("a", "b", "c")):
        tree.subscribe("jobs", cid, i, group="g")
    (group,) = tree.match("jobs")[1]
    picks = [group.pick() for _ in range(7)]
    assert picks == [("a", 0), ("b", 1), ("c", 2), ("a", 0), ("b", 1), ("c", 2), ("a", 0)]


def test_shared_group_pick_skips_unaccepted_members() -> None:
    tree: SubscriptionTree[int] = SubscriptionTree()
    for i, cid in enumerate(("a", "b", "c", "d")):
        tree.subscribe("jobs", cid, i, group="g")
    (group,) = tree.match("jobs")[1]
    offline = {"b", "c"}
    seen: list[str] = []

    def online(client_id: str, value: int) -> bool:
        seen.append(client_id)
        return client_id not in offline

    assert group.pick(online) == ("a", 0)
    assert group.pick(online) == ("d", 3)  # b and c skipped
    assert seen == ["a", "b", "c", "d"]
    assert group.pick(online) == ("a", 0)
    offline.clear()
    assert group.pick(online) == ("b", 1)  # skipped members kept their turn
    offline.update("abcd")
    assert group.pick(online) is None
    offline.clear()
    assert group.pick(online) == ("c", 2)  # a refused pick does not move the cursor


def test_shared_group_round_robin_survives_membership_changes() -> None:
    tree: SubscriptionTree[int] = SubscriptionTree()
    for i, cid in enumerate(("a", "b", "c")):
        tree.subscribe("jobs", cid, i, group="g")
    (group,) = tree.match("jobs")[1]
    assert group.pick() == ("a", 0)
    assert tree.unsubscribe("jobs", "a", group="g")  # removed before the cursor
    assert group.pick() == ("b", 1)
    assert tree.subscribe("jobs", "d", 3, group="g")
    assert group.pick() == ("c", 2)
    assert tree.unsubscribe("jobs", "d", group="g")  # removed at the cursor
    assert group.pick() == ("b", 1)
    assert tree.unsubscribe("jobs", "c", group="g")
    assert group.pick() == ("b", 1)
    assert group.pick(lambda cid, v: False) is None


def test_empty_shared_group_disappears() -> None:
    tree: SubscriptionTree[int] = SubscriptionTree()
    tree.subscribe("jobs", "a", 0, group="g")
    assert tree.unsubscribe("jobs", "a", group="other") is False
    assert tree.unsubscribe("jobs", "a", group="g") is True
    assert tree.match("jobs") == ([], [])
    assert len(tree) == 0
    assert SharedGroup[int]("g", "x").pick() is None


def test_same_group_name_on_different_filters_is_independent() -> None:
    """4.8.2: a shared subscription is identified by share name *and* filter."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    tree.subscribe("a/+", "c1", "x", group="g")
    tree.subscribe("a/+", "c2", "x", group="g")
    tree.subscribe("a/#", "c1", "y", group="g")
    tree.subscribe("a/#", "c3", "y", group="g")
    tree.subscribe("a/+", "c9", "z", group="h")
    assert len(tree) == 5
    shared = tree.match("a/b")[1]
    by_key = {(g.name, g.topic_filter): g for g in shared}
    assert set(by_key) == {("g", "a/+"), ("g", "a/#"), ("h", "a/+")}
    plus, hash_ = by_key["g", "a/+"], by_key["g", "a/#"]
    assert list(plus.members) == ["c1", "c2"]
    assert list(hash_.members) == ["c1", "c3"]
    assert plus.pick() == ("c1", "x")
    assert hash_.pick() == ("c1", "y")  # its cursor did not move with the other group's
    assert plus.pick() == ("c2", "x")
    assert tree.unsubscribe("a/+", "c1", group="g")
    assert list(hash_.members) == ["c1", "c3"]
    assert [g.topic_filter for g in tree.match("a")[1]] == ["a/#"]


def test_plain_and_shared_on_same_filter() -> None:
    tree: SubscriptionTree[int] = SubscriptionTree()
    tree.subscribe("a", "c1", 1)
    tree.subscribe("a", "c1", 2, group="g")
    assert len(tree) == 2
    plain, shared = tree.match("a")
    assert plain == [("c1", 1)]
    assert [g.members for g in shared] == [{"c1": 2}]
    assert tree.unsubscribe("a", "c1")
    assert tree.match("a")[0] == []
    assert len(tree.match("a")[1]) == 1


# --- Against a reference matcher ------------------------------------------------------------------------

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
    subs=st.lists(st.tuples(_FILTERS, st.sampled_from(["c1", "c2", "c3"])), max_size=12),
    removed=st.lists(st.integers(min_value=0, max_value=11), max_size=6),
    topics=st.lists(_TOPICS, min_size=1, max_size=8),
)
def test_match_agrees_with_reference(
    subs: list[tuple[str, str]], removed: list[int], topics: list[str]
) -> None:
    tree: SubscriptionTree[str] = SubscriptionTree()
    live: dict[tuple[str, str], str] = {}
    for f, cid in subs:
        assert tree.subscribe(f, cid, f) == ((f, cid) not in live)
        live[f, cid] = f
        tree.subscribe(f, cid, f, group="g")
    for idx in removed:
        if idx < len(subs):
            f, cid = subs[idx]
            assert tree.unsubscribe(f, cid) == ((f, cid) in live)
            live.pop((f, cid), None)
    for topic in topics:
        plain, shared = tree.match(topic)
        expected = Counter((cid, f) for (f, cid) in live if matches(f, topic))
        assert Counter(plain) == expected, topic
        expected_filters = sorted({f for f, _ in subs if matches(f, topic)})
        assert sorted(g.topic_filter for g in shared) == expected_filters, topic
    assert len(tree) == len(live) + len({(f, cid) for f, cid in subs})


# --- Scaling --------------------------------------------------------------------------------------------


def test_match_among_many_unrelated_subscriptions() -> None:
    """Routing walks only the exact, `+` and `#` branches: 100k unrelated filters cost (almost) nothing."""
    small: SubscriptionTree[int] = SubscriptionTree()
    small.subscribe("bench/5", "c", 0)
    big: SubscriptionTree[int] = SubscriptionTree()
    for i in range(100_000):
        big.subscribe(f"bench/{i}", "c", i)
    assert big.match("bench/5") == ([("c", 5)], [])
    assert small.match("bench/5") == ([("c", 0)], [])
    # The cost itself is measured by the routing scenario in bench/, not by a timed test.


@pytest.mark.parametrize("topic", ["a/b/c/d/e/f/g/h", "a"])
def test_match_on_deep_and_shallow_topics_with_wildcards(topic: str) -> None:
    levels = topic.split("/")
    filters = ["#"] + ["/".join(levels[:k] + ["#"]) for k in range(1, len(levels))]
    filters += ["/".join(["+"] * len(levels)), topic]
    tree = tree_with(*filters)
    assert clients(tree, topic) == sorted(filters)
