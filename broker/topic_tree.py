"""The subscription index: a trie of topic-filter levels that routes a PUBLISH in time set by topic depth.

Each node stands for one filter level (`sport`, `+`, `#`, or an empty level). A publish to
`sport/tennis/player1` walks at most the exact, `+` and `#` branches at each level, so its cost grows
with the depth of the topic and the number of *matching* subscriptions, never with the number of
subscriptions on unrelated topics (the amqtt anti-pattern of scanning every filter). This mirrors
mochi-mqtt's `topics.go`. Nodes that hold nothing are trimmed on unsubscribe, so a broker that sees
churning client-specific filters does not leak memory.

Rules implemented (MQTT 5.0, section 4.7):

- Levels are separated by `/`; empty levels are real levels (`a//b`, `/finance`) (section 4.7.1.1), and
  no normalisation is applied to names or filters [MQTT-4.7.3-4].
- `+` matches exactly one level, including an empty one (section 4.7.1.3; syntax rule [MQTT-4.7.1-2]).
- `#` matches the parent level and any number of child levels, so `sport/#` matches `sport`
  (section 4.7.1.2; syntax rule [MQTT-4.7.1-1] in v5, numbered [MQTT-4.7.1-2] in v3.1.1).
- A topic name starting with `$` is not matched by a filter whose first level is `+` or `#`
  [MQTT-4.7.2-1]; `$SYS/#` still matches `$SYS/x` because its first level is literal.

Filters and topic names are validated by the caller (the codec/router); this module assumes a topic
name holds no wildcard and that `#` only appears as a filter's last level. It imports nothing from
Roost so it can be tested and reused on its own.

Shared subscriptions (`$share/{group}/{filter}`, section 4.8.2) are stored on the node of the plain
filter, keyed by group name: the same group name on two different filters gives two independent groups,
as the spec identifies a shared subscription by share name *and* filter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["SharedGroup", "SubscriptionTree"]

V = TypeVar("V")

_SEP = "/"
_ONE = "+"
_MULTI = "#"
# Most distinct topics whose routes are remembered at once (see SubscriptionTree._cache).
_CACHE_LIMIT = 4096


class SharedGroup(Generic[V]):
    """Members of one shared subscription `$share/{name}/{filter}`; round-robin among them.

    The tree owns membership: `members` is read by the broker (e.g. to list subscribers) but must be
    changed only through `SubscriptionTree.subscribe/unsubscribe`, because the round-robin ring is kept
    alongside it. The group object is stable for as long as it has members, so the broker may compare
    groups by identity.
    """

    __slots__ = ("name", "topic_filter", "members", "_ring", "_cursor")

    def __init__(self, name: str, topic_filter: str) -> None:
        self.name: str = name
        self.topic_filter: str = topic_filter
        self.members: dict[str, V] = {}
        # client ids in the same order as `members`, so pick() can index without copying the dict.
        self._ring: list[str] = []
        # index in `_ring` of the next member to try.
        self._cursor: int = 0

    def __repr__(self) -> str:
        return f"SharedGroup(name={self.name!r}, topic_filter={self.topic_filter!r}, members={list(self.members)!r})"

    def __len__(self) -> int:
        return len(self._ring)

    def pick(self, accept: Callable[[str, V], bool] | None = None) -> tuple[str, V] | None:
        """Next member in round-robin order (the cursor advances past the chosen one); members for which
        accept(client_id, value) is False are skipped (e.g. offline clients); None if none accepted.

        MQTT 5 section 4.8.2 leaves the choice of member to the server; round-robin spreads load evenly,
        and skipping via `accept` lets the broker avoid members that cannot take the message now without
        this module knowing what a session is. A skipped member keeps its place: the cursor only moves
        past the member that was chosen.
        """
        ring = self._ring
        n = len(ring)
        if n == 0:
            return None
        start = self._cursor
        if start >= n:
            start = 0
        members = self.members
        for k in range(n):
            idx = start + k
            if idx >= n:
                idx -= n
            client_id = ring[idx]
            value = members[client_id]
            if accept is None or accept(client_id, value):
                self._cursor = idx + 1
                return client_id, value
        return None

    def _add(self, client_id: str, value: V) -> bool:
        """Add or replace a member; a replaced member keeps its place in the rotation."""
        new = client_id not in self.members
        self.members[client_id] = value
        if new:
            self._ring.append(client_id)
        return new

    def _remove(self, client_id: str) -> bool:
        """Remove a member, keeping the cursor on the member that would have been picked next."""
        if self.members.pop(client_id, _MISSING) is _MISSING:
            return False
        idx = self._ring.index(client_id)
        del self._ring[idx]
        if idx < self._cursor:
            self._cursor -= 1
        return True


_MISSING: object = object()


class _Node(Generic[V]):
    """One filter level. Slotted: a broker may hold hundreds of thousands of these."""

    __slots__ = ("children", "subs", "groups")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        # plain subscriptions whose filter ends at this node: client_id -> value
        self.subs: dict[str, V] = {}
        # shared subscriptions whose filter ends at this node: group name -> group
        self.groups: dict[str, SharedGroup[V]] = {}

    def is_empty(self) -> bool:
        return not (self.subs or self.groups or self.children)


def _collect(
    node: _Node[V],
    levels: list[str],
    i: int,
    n: int,
    plain: list[tuple[str, V]],
    shared: list[SharedGroup[V]],
) -> None:
    """Add everything under `node` that matches `levels[i:]` to `plain` and `shared`.

    Hot path, and iterative: a client chooses how deep filters and topics go, so the walk must not use the
    Python stack (a `+/+/.../#` filter 1,200 levels deep once raised RecursionError here, in routing and at
    start-up). Exact-level descent is the loop itself; where a `+` branch exists as well, the exact branch
    is put on an explicit stack and the `+` branch is walked first, which visits nodes in the order the
    recursive walk did (depth first, `+` before the exact level). A `#` branch is a leaf collected in
    place. Each node is reached at most once per topic, because a filter consumes topic levels in exactly
    one way, so no de-duplication is needed and the stack never holds more than the topic's depth.
    """
    pending: list[tuple[_Node[V], int]] | None = None
    while True:
        children = node.children
        if i == n:
            # The topic ends here: subscriptions on this exact filter match ...
            if node.subs:
                plain.extend(node.subs.items())
            if node.groups:
                shared.extend(node.groups.values())
            # ... and so does `<this>/#`, since `#` also matches its parent level (4.7.1.2).
            if children:
                multi = children.get(_MULTI)
                if multi is not None:
                    if multi.subs:
                        plain.extend(multi.subs.items())
                    if multi.groups:
                        shared.extend(multi.groups.values())
        elif children:
            multi = children.get(_MULTI)
            if multi is not None:
                # `#` matches all remaining levels (4.7.1.2).
                if multi.subs:
                    plain.extend(multi.subs.items())
                if multi.groups:
                    shared.extend(multi.groups.values())
            one = children.get(_ONE)
            exact = children.get(levels[i])
            i += 1
            if one is not None:
                # `+` matches exactly this one level, empty or not (4.7.1.3): walk it now, the exact
                # branch after it.
                if exact is not None:
                    if pending is None:
                        pending = []
                    pending.append((exact, i))
                node = one
                continue
            if exact is not None:
                node = exact
                continue
        if not pending:
            return
        node, i = pending.pop()


class SubscriptionTree(Generic[V]):
    """All subscriptions of the broker, indexed for routing.

    Generic over the value stored per subscription (the broker keeps a small record: QoS, options,
    subscription identifier); the tree only stores and returns it.
    """

    __slots__ = ("_root", "_count", "_cache")

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._count: int = 0
        # topic -> match() result, valid until the next subscribe or unsubscribe. Publishers mostly repeat
        # a few topics, so routing is usually one dict lookup; any change of subscriptions clears it.
        self._cache: dict[str, tuple[list[tuple[str, V]], list[SharedGroup[V]]]] = {}

    def __len__(self) -> int:
        """Number of subscriptions: plain ones plus shared-group memberships."""
        return self._count

    def subscribe(self, topic_filter: str, client_id: str, value: V, group: str | None = None) -> bool:
        """Add or replace client_id's subscription on topic_filter (a plain filter; shared subscriptions pass
        the group name separately). Returns True if it is new, False if it replaced an existing one.

        Replacing rather than adding a second entry is required: a SUBSCRIBE whose filter is identical to
        an existing one of the same session replaces it [MQTT-3.8.4-3]. The return value lets the broker
        decide whether to send retained messages for Retain Handling 1 (only if new).
        """
        if self._cache:
            self._cache.clear()
        node = self._root
        for level in topic_filter.split(_SEP):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        if group is None:
            new = client_id not in node.subs
            node.subs[client_id] = value
        else:
            shared = node.groups.get(group)
            if shared is None:
                shared = node.groups[group] = SharedGroup(group, topic_filter)
            new = shared._add(client_id, value)
        if new:
            self._count += 1
        return new

    def unsubscribe(self, topic_filter: str, client_id: str, group: str | None = None) -> bool:
        """Remove it; True if it existed. Trims nodes left empty.

        Trimming keeps memory proportional to live subscriptions and keeps dead branches out of the
        routing walk.
        """
        path: list[tuple[_Node[V], str]] = []
        node = self._root
        for level in topic_filter.split(_SEP):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if group is None:
            if node.subs.pop(client_id, _MISSING) is _MISSING:
                return False
        else:
            shared = node.groups.get(group)
            if shared is None or not shared._remove(client_id):
                return False
            if not shared.members:
                del node.groups[group]
        self._count -= 1
        if self._cache:
            self._cache.clear()
        # Walk back up, removing nodes that no longer hold anything.
        for parent, level in reversed(path):
            if not node.is_empty():
                break
            del parent.children[level]
            node = parent
        return True

    def match(self, topic: str) -> tuple[list[tuple[str, V]], list[SharedGroup[V]]]:
        """All plain subscriptions matching the topic name as (client_id, value) pairs – a client with several
        overlapping subscriptions appears once per matching subscription (the broker merges them) – and the
        shared groups whose filter matches. The lists are shared with a cache: callers must not change them.

        The broker needs every overlapping subscription because, in MQTT 5, each may carry its own
        subscription identifier and options [MQTT-3.3.4-3, 3.3.4-4]; merging is its decision.
        """
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        levels = topic.split(_SEP)
        plain: list[tuple[str, V]] = []
        shared: list[SharedGroup[V]] = []
        root = self._root
        if topic[:1] == "$":
            # A topic starting with `$` is not matched by a filter starting with `+` or `#`
            # [MQTT-4.7.2-1]: skip the root's wildcard branches and only follow the literal first level.
            first = root.children.get(levels[0])
            if first is not None:
                _collect(first, levels, 1, len(levels), plain, shared)
        else:
            _collect(root, levels, 0, len(levels), plain, shared)
        result = (plain, shared)
        cache = self._cache
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[topic] = result
        return result
