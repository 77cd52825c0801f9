"""No walk recurses on a client's depth (issue 14): the subscription trie, the retained store and the ACL's
filter comparisons answer for topics and filters far deeper than Python's recursion limit, with the same
results as a plain reference matcher (the trie's own equivalence tests are in test_topic_tree.py)."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.retained import RetainedStore
from broker.topic_match import filter_covers, filters_overlap, topic_matches
from broker.topic_tree import SubscriptionTree
from tests.broker.test_topic_match import _reference_matches

DEPTH = 5 * sys.getrecursionlimit()


def test_trie_matches_a_plus_filter_deeper_than_the_recursion_limit() -> None:
    tree: SubscriptionTree[int] = SubscriptionTree()
    tree.subscribe("+/" * DEPTH + "#", "deep", 1)
    tree.subscribe("/".join(["+"] * (DEPTH + 1)), "exact-depth", 2)
    tree.subscribe("/" * DEPTH, "literal", 3)
    plain, _ = tree.match("/" * DEPTH)
    assert sorted(client for client, _ in plain) == ["deep", "exact-depth", "literal"]
    assert tree.match("/" * (DEPTH - 2))[0] == []  # DEPTH - 1 levels: one too few for the `+` levels
    assert tree.unsubscribe("+/" * DEPTH + "#", "deep")
    assert tree.unsubscribe("/".join(["+"] * (DEPTH + 1)), "exact-depth")
    assert tree.unsubscribe("/" * DEPTH, "literal")
    assert len(tree) == 0 and tree._root.is_empty()  # trimmed all the way up


def test_trie_walk_with_plus_and_exact_branches_at_every_level() -> None:
    """At every level both a `+` and a literal branch exist: the walk visits each matching path once."""
    tree: SubscriptionTree[int] = SubscriptionTree()
    depth = 3 * sys.getrecursionlimit()
    for k in range(0, depth, 97):
        # `a/a/.../+/a/.../a`: the `+` at level k; every one matches the all-`a` topic.
        levels = ["a"] * depth
        levels[k] = "+"
        tree.subscribe("/".join(levels), f"c{k}", k)
    tree.subscribe("/".join(["a"] * depth), "literal", -1)
    plain, _ = tree.match("/".join(["a"] * depth))
    assert sorted(value for _, value in plain) == [-1, *range(0, depth, 97)]


def test_retained_store_deeper_than_the_recursion_limit() -> None:
    store: RetainedStore[str] = RetainedStore()
    store.set("/" * DEPTH, "deep")
    store.set("a/" * DEPTH + "b", "deep-a")
    assert sorted(v for _, v in store.match("+/" * DEPTH + "#")) == ["deep", "deep-a"]
    assert [v for _, v in store.match("+/" * DEPTH + "b")] == ["deep-a"]
    assert sorted(v for _, v in store.match("#")) == ["deep", "deep-a"]
    assert sorted(v for _, v in store.items()) == ["deep", "deep-a"]
    assert store.delete("/" * DEPTH) and store.delete("a/" * DEPTH + "b")
    assert len(store) == 0 and not store._root.children


def test_acl_comparisons_deeper_than_the_recursion_limit() -> None:
    deep_filter = "+/" * DEPTH + "#"
    assert topic_matches(deep_filter, "/" * DEPTH)
    assert topic_matches(deep_filter, "/" * (DEPTH - 1))  # `#` matches its parent level
    assert not topic_matches(deep_filter, "/" * (DEPTH - 2))
    assert filter_covers("#", deep_filter)
    assert filter_covers(deep_filter, "a/" * DEPTH + "b/c")
    assert filters_overlap(deep_filter, "/" * (DEPTH + 3))
    assert not filters_overlap("/".join(["+"] * DEPTH), "/".join(["+"] * (DEPTH + 1)))


_LEVEL = st.sampled_from(["", "a", "b", "+"])


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    filters=st.lists(
        st.tuples(st.lists(_LEVEL, min_size=1, max_size=30), st.booleans()), min_size=1, max_size=8
    ),
    topic=st.lists(st.sampled_from(["", "a", "b"]), min_size=1, max_size=30),
)
def test_trie_agrees_with_the_reference_on_long_wildcard_chains(
    filters: list[tuple[list[str], bool]], topic: list[str]
) -> None:
    """Many `+` levels mixed with literal ones, as deep as 30 levels: the iterative walk and a reference
    matcher written from the spec agree."""
    tree: SubscriptionTree[str] = SubscriptionTree()
    names = set()
    for levels, hash_ in filters:
        name = "/".join(levels + ["#"] if hash_ else levels)
        names.add(name)
        tree.subscribe(name, name, name)
    topic_name = "/".join(topic)
    plain, _ = tree.match(topic_name)
    assert sorted(client for client, _ in plain) == sorted(n for n in names if _reference_matches(n, topic_name))


@pytest.mark.parametrize("depth", [1, 2, 50])
def test_order_of_matches_is_depth_first_plus_before_literal(depth: int) -> None:
    """The walk keeps the recursive walk's order (`+` branch before the literal one), so the order of a
    client's subscription identifiers does not change."""
    tree: SubscriptionTree[int] = SubscriptionTree()
    topic = "/".join(["a"] * depth)
    tree.subscribe(topic, "literal", 0)
    tree.subscribe("/".join(["+"] * depth), "plus", 1)
    assert [client for client, _ in tree.match(topic)[0]] == ["plus", "literal"]
