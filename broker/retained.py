"""Retained messages, indexed by topic level so that a SUBSCRIBE finds its retained messages without a scan.

A new subscription must be sent the retained messages matching its filter (MQTT 5.0 section 3.3.1.3,
[MQTT-3.3.1-9]). Brokers hold many retained topics, and a SUBSCRIBE to `sensors/42/+` should not scan
them all: this store is a trie over topic-name levels, and `match()` walks only the branches the filter
allows – one child for a literal level, every child of one level for `+`, the whole subtree for `#`.
Branches left empty by `delete()` are trimmed.

Matching follows the same rules as the subscription tree (section 4.7): empty levels are real levels,
`#` also matches its parent level, and topic names starting with `$` are not matched by a filter whose
first level is a wildcard [MQTT-4.7.2-1].

The store only stores: whether an empty retained payload deletes (it does, [MQTT-3.3.1-6]) is the
broker's decision, as is validating topics and filters. This module imports nothing from Roost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, cast

__all__ = ["RetainedStore"]

V = TypeVar("V")

_SEP = "/"
_ONE = "+"
_MULTI = "#"


class _Unset:
    """Marks a node that is on the way to retained topics but holds no message itself.

    A sentinel rather than None so that None is a valid stored value.
    """

    __slots__ = ()


_UNSET = _Unset()


class _Node(Generic[V]):
    """One topic level. Slotted: a broker may hold a great many retained topics."""

    __slots__ = ("children", "since", "topic", "value")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        # The full topic name, kept on the node so match() yields it without re-joining levels.
        self.topic: str = ""
        self.value: V | _Unset = _UNSET
        # When this broker stored the value (wall clock): the dashboard shows a retained message's age.
        self.since: float = 0.0


class RetainedStore(Generic[V]):
    """The retained message per topic name, generic over what the broker stores (typically the PUBLISH)."""

    __slots__ = ("_root", "_count", "_wall")

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._root: _Node[V] = _Node()
        self._count: int = 0
        self._wall = wall  # when a value was set (the broker passes its injected clock's wall time)

    def __len__(self) -> int:
        """Number of topics holding a retained value."""
        return self._count

    def set(self, topic: str, value: V) -> None:
        """Store or replace the retained value for a topic name.

        Replacing is what the spec asks: the server keeps only the latest retained message per topic
        [MQTT-3.3.1-5].
        """
        node = self._root
        for level in topic.split(_SEP):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if node.value is _UNSET:
            self._count += 1
            node.topic = topic
        node.value = value
        node.since = self._wall()

    def delete(self, topic: str) -> bool:
        """Remove the retained value of a topic name; True if there was one. Trims empty branches,
        so memory follows the live retained set and match() never walks dead branches."""
        path: list[tuple[_Node[V], str]] = []
        node = self._root
        for level in topic.split(_SEP):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if node.value is _UNSET:
            return False
        node.value = _UNSET
        self._count -= 1
        for parent, level in reversed(path):
            if node.children or node.value is not _UNSET:
                break
            del parent.children[level]
            node = parent
        return True

    def get(self, topic: str) -> V | None:
        """The retained value for a topic name, or None."""
        node = self._node(topic)
        value = node.value if node is not None else _UNSET
        return None if value is _UNSET else cast(V, value)

    def since(self, topic: str) -> float | None:
        """When the retained value of a topic name was stored (wall clock), or None if there is none."""
        node = self._node(topic)
        return None if node is None or node.value is _UNSET else node.since

    def _node(self, topic: str) -> _Node[V] | None:
        node = self._root
        for level in topic.split(_SEP):
            child = node.children.get(level)
            if child is None:
                return None
            node = child
        return node

    def items(self) -> Iterator[tuple[str, V]]:
        """Every retained (topic, value), e.g. for persistence; no order is promised."""
        return _subtree(self._root, skip_dollar=False)

    def match(self, topic_filter: str) -> Iterator[tuple[str, V]]:
        """Every retained (topic, value) matching a plain filter, same rules as routing ($ rule included).

        Walks only what the filter allows; a literal level is one dict lookup, so `a/b/c` costs three
        lookups however many topics are retained. Consume the iterator before changing the store.
        """
        levels = topic_filter.split(_SEP)
        n = len(levels)
        # Depth-first over (node, index of the filter level to apply at its children).
        stack: list[tuple[_Node[V], int]] = [(self._root, 0)]
        while stack:
            node, i = stack.pop()
            if i == n:
                value = node.value
                if value is not _UNSET:
                    yield node.topic, cast(V, value)
                continue
            level = levels[i]
            children = node.children
            # Wildcards in the first filter level never match `$` topics [MQTT-4.7.2-1].
            at_root = i == 0
            if level == _MULTI:
                # `#` matches the parent level and every level below it (4.7.1.2). The root is no
                # topic, so for a bare `#` this yields only its subtrees, minus `$` ones.
                yield from _subtree(node, skip_dollar=at_root)
            elif level == _ONE:
                for name, child in children.items():
                    if at_root and name[:1] == "$":
                        continue
                    stack.append((child, i + 1))
            else:
                child = children.get(level)
                if child is not None:
                    stack.append((child, i + 1))


def _subtree(start: _Node[V], skip_dollar: bool) -> Iterator[tuple[str, V]]:
    """Every (topic, value) at or below `start`; `skip_dollar` drops `$` branches of `start`'s children."""
    stack: list[_Node[V]] = []
    for name, child in start.children.items():
        if skip_dollar and name[:1] == "$":
            continue
        stack.append(child)
    value = start.value
    if value is not _UNSET:
        yield start.topic, cast(V, value)
    while stack:
        node = stack.pop()
        value = node.value
        if value is not _UNSET:
            yield node.topic, cast(V, value)
        stack.extend(node.children.values())
