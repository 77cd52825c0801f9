"""`broker/topic_match.py`: the filter comparisons an ACL asks of a handful of filters.

Example-based checks of `topic_matches`, `filter_covers` and `filters_overlap` (the `$` rule included
[MQTT-4.7.2-1]), then hypothesis compares the last two with brute force over every topic of a small alphabet,
using an independent reference matcher written here from the spec's wording [MQTT-4.7.1-2][MQTT-4.7.1-3].
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.topic_match import filter_covers, filters_overlap, topic_matches


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
        # '+' matches exactly one level, an empty one too [MQTT-4.7.1-3].
        ("a/+", "a/b", True),
        ("a/+", "a/", True),
        ("a/+", "a", False),
        ("a/+", "a/b/c", False),
        ("+/+", "/a", True),
        ("+", "a", True),
        # '#' matches the parent level and any number of child levels [MQTT-4.7.1-2].
        ("a/#", "a", True),
        ("a/#", "a/b/c/d", True),
        ("a/#", "ab", False),
        ("#", "a/b", True),
        ("#", "/", True),
        ("a/+/#", "a/b", True),
        ("a/+/#", "a", False),
        # Topic levels are case sensitive and compared whole (section 4.7.3).
        ("A/b", "a/b", False),
        ("a b", "a b", True),
        # The $ rule: a leading wildcard does not match a topic starting with '$' [MQTT-4.7.2-1].
        ("#", "$SYS/broker/version", False),
        ("+/broker/version", "$SYS/broker/version", False),
        ("+/#", "$SYS", False),
        ("$SYS/#", "$SYS/broker/version", True),
        ("$SYS/+/version", "$SYS/broker/version", True),
        ("$SYS/#", "$SYS", True),
        # '$' below the first level is an ordinary character.
        ("a/+", "a/$b", True),
        ("a/#", "a/$b/c", True),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    """[MQTT-4.7.1-2][MQTT-4.7.1-3][MQTT-4.7.2-1]"""
    assert topic_matches(topic_filter, topic) is expected


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/+", "a/b", True),
        ("a/+", "a/+", True),
        ("a/b", "a/+", False),
        ("a/+", "a/#", False),  # a/# also matches a/b/c and a
        ("a/#", "a/#", True),
        ("a/#", "a", True),
        ("a/#", "a/+/c", True),
        ("a/#", "b/#", False),
        ("#", "a/#", True),
        ("#", "+/+", True),
        ("+/#", "#", True),  # both match every topic not starting with $
        ("+/+", "a/b", True),
        ("+/+", "a/b/c", False),
        ("a", "a/#", False),
        # The $ rule: a leading wildcard covers no '$' topic [MQTT-4.7.2-1].
        ("#", "$SYS/#", False),
        ("+/#", "$SYS/broker", False),
        ("#", "$SYS", False),
        ("$SYS/#", "$SYS/broker/+", True),
        ("$SYS/#", "$SYS", True),
    ],
)
def test_filter_covers(outer: str, inner: str, expected: bool) -> None:
    assert filter_covers(outer, inner) is expected


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/+", "+/b", True),
        ("a/#", "a", True),
        ("a", "a/#", True),
        ("a/#", "b/#", False),
        ("+", "a/b", False),
        ("+/+", "a/#", True),
        ("#", "a/b/c", True),
        ("a/+/c", "a/b/#", True),
        ("a/+/c", "a/b/d", False),
        # The $ rule on either side [MQTT-4.7.2-1].
        ("#", "$SYS/#", False),
        ("$SYS/#", "#", False),
        ("+/broker", "$SYS/broker", False),
        ("$SYS/#", "$SYS/+", True),
        ("a/+", "a/$b", True),
    ],
)
def test_filters_overlap(first: str, second: str, expected: bool) -> None:
    assert filters_overlap(first, second) is expected
    assert filters_overlap(second, first) is expected  # symmetric


# -- brute force over a small alphabet ------------------------------------------------------------------------

# Literal levels that filters may use; topics may also use "c", which stands for "any other level".
_FILTER_LITERALS = ("a", "b", "$s")
_TOPIC_LEVELS = ("a", "b", "$s", "c")
_MAX_FILTER_DEPTH = 3
# One level deeper than the deepest filter: enough to tell '#' from a fixed number of levels.
_TOPICS = [
    "/".join(levels)
    for depth in range(1, _MAX_FILTER_DEPTH + 2)
    for levels in itertools.product(_TOPIC_LEVELS, repeat=depth)
]


def _reference_matches(topic_filter: str, topic: str) -> bool:
    """Independent of the code under test: a recursive reading of section 4.7."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    if t_levels[0].startswith("$") and f_levels[0] in ("+", "#"):
        return False

    def match(fi: int, ti: int) -> bool:
        if fi == len(f_levels):
            return ti == len(t_levels)
        level = f_levels[fi]
        if level == "#":
            return True  # the parent level and any number of children
        if ti == len(t_levels):
            return False
        return (level == "+" or level == t_levels[ti]) and match(fi + 1, ti + 1)

    return match(0, 0)


def _filters() -> st.SearchStrategy[str]:
    level = st.sampled_from(_FILTER_LITERALS + ("+",))

    def build(parts: tuple[list[str], bool]) -> str:
        levels, hash_tail = parts
        return "/".join(levels + (["#"] if hash_tail else []))

    return (
        st.tuples(st.lists(level, min_size=0, max_size=_MAX_FILTER_DEPTH), st.booleans())
        .filter(lambda p: len(p[0]) + p[1] >= 1 and len(p[0]) + p[1] <= _MAX_FILTER_DEPTH)
        .map(build)
    )


def test_reference_matcher_agrees_with_topic_matches() -> None:
    """Sanity check of the oracle itself: every filter of the alphabet against every topic."""
    for topic_filter in _all_filters():
        for topic in _TOPICS:
            assert topic_matches(topic_filter, topic) == _reference_matches(topic_filter, topic), (topic_filter, topic)


@settings(max_examples=300, deadline=None)
@given(_filters(), _filters())
def test_filters_overlap_equals_brute_force(first: str, second: str) -> None:
    """Two filters overlap exactly when some topic is matched by both."""
    expected = any(_reference_matches(first, t) and _reference_matches(second, t) for t in _TOPICS)
    assert filters_overlap(first, second) is expected


def _all_filters() -> list[str]:
    literals = _FILTER_LITERALS + ("+",)
    filters = ["/".join(p) for d in range(1, 4) for p in itertools.product(literals, repeat=d)]
    return filters + [f + "/#" for f in filters if f.count("/") < 2] + ["#"]


def test_filter_covers_never_claims_too_much() -> None:
    """Soundness, which is what an ACL relies on: whenever `filter_covers(outer, inner)` says yes, every topic
    `inner` matches is matched by `outer` (checked for every pair of filters of the alphabet)."""
    filters = _all_filters()
    matched = {f: frozenset(t for t in _TOPICS if _reference_matches(f, t)) for f in filters}
    wrong = [(o, i) for o in filters for i in filters if filter_covers(o, i) and not matched[i] <= matched[o]]
    assert wrong == []


def test_filter_covers_is_complete() -> None:
    """Completeness: `filter_covers` says yes for every pair where `outer` really covers `inner`."""
    filters = _all_filters()
    matched = {f: frozenset(t for t in _TOPICS if _reference_matches(f, t)) for f in filters}
    missed = [(o, i) for o in filters for i in filters if matched[i] <= matched[o] and not filter_covers(o, i)]
    assert missed == []
