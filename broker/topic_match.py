"""Comparisons of one topic filter with one topic or another filter, for ACLs.

Routing uses the trie in `topic_tree.py`; these functions answer the questions an ACL asks of a handful of
filters: does this filter match this topic, does one filter cover everything another can match, and can two
filters ever match the same topic. All of them honour the `$` rule: a filter whose first level is a wildcard
does not match a topic whose first level starts with `$` [MQTT-4.7.2-1].
"""

from __future__ import annotations

__all__ = ["filter_covers", "filters_overlap", "topic_matches"]


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether `topic_filter` matches the topic name `topic` [MQTT-4.7.1-2][MQTT-4.7.1-3]."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for index, level in enumerate(f_levels):
        if level == "#":
            return True
        if index >= len(t_levels):
            return False
        if level != "+" and level != t_levels[index]:
            return False
    return len(f_levels) == len(t_levels)


def filter_covers(outer: str, inner: str) -> bool:
    """Whether every topic that `inner` matches is matched by `outer` too."""
    o_levels = outer.split("/")
    i_levels = inner.split("/")
    for index, level in enumerate(o_levels):
        if index >= len(i_levels):
            # `a/#` also matches `a`: outer may end in one extra `#` level.
            return index == len(o_levels) - 1 and level == "#"
        inner_level = i_levels[index]
        if index == 0 and level in ("+", "#") and inner_level.startswith("$"):
            return False
        if level == "#":
            return True
        if inner_level == "#":
            # Inner `#` matches any number of levels, none included; only an outer `#` covers that, or at
            # the first level `+/#` (every topic has a first level, which `+` matches).
            return index == 0 and o_levels == ["+", "#"]
        if level == "+":
            continue
        if inner_level != level:
            return False
    return len(o_levels) == len(i_levels)


def filters_overlap(first: str, second: str) -> bool:
    """Whether some topic name is matched by both filters."""
    a_levels = first.split("/")
    b_levels = second.split("/")
    for index in range(max(len(a_levels), len(b_levels))):
        if index >= len(a_levels) or index >= len(b_levels):
            rest = b_levels[index:] if index >= len(a_levels) else a_levels[index:]
            return rest == ["#"]
        a, b = a_levels[index], b_levels[index]
        if index == 0 and ((a in ("+", "#") and b.startswith("$")) or (b in ("+", "#") and a.startswith("$"))):
            return False
        if a == "#" or b == "#":
            return True
        if a != "+" and b != "+" and a != b:
            return False
    return True
