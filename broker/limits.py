"""Limits a client runs into before it costs the broker much: the shape of topics, and the memory held by
connections that have not finished their CONNECT.

Small pure pieces, with no socket and no loop: the protocol engine (`broker/engine/`) calls the topic and
will checks, `ServerState` (`broker/registry.py`) holds the pre-authentication budget, and the control
plane asks through `BrokerService`:

- `topic_over_limit` says which of `max_topic_length` / `max_topic_levels` a topic name or filter breaks.
  Routing and retained lookups are iterative (no recursion on a client's depth, see `topic_tree.py`), but
  each level is a trie node and a step of every walk, so the depth a client may choose is bounded too.
- `PreAuthBudget` counts the connections that are still in CONNECT and the bytes their readers hold. A
  client that has not authenticated gets at most `max_connect_size` bytes of buffer (the engine's reader
  refuses a larger CONNECT from its fixed header, before the body arrives), and all of them together at most
  `max_pending_connections` connections and `max_pending_bytes` bytes: beyond that a new connection is
  closed as soon as it is accepted, and counted. Without it, 300 connections that each sent the start of a
  1 MB CONNECT held 300 MB until their connect timeout. The budget spans connections, so it lives where
  they are registered (`ServerState`), fed by the engine's `buffered` after each read.
- `will_refusal` says whether a will may be published now, by the same rules as its client's PUBLISH.
"""

from __future__ import annotations

from collections import Counter

from broker.codec import Will
from broker.hooks import ClientInfo, HookChain
from broker.settings import BrokerSettings
from broker.stats import Stats

__all__ = ["PreAuthBudget", "check_topic", "describe_topic_limit", "topic_over_limit", "will_refusal"]


def topic_over_limit(topic: str, settings: BrokerSettings) -> str | None:
    """The name of the limit `topic` (a topic name or a plain filter, as the client wrote it) exceeds, or
    None. Length is counted in characters; levels are the `/`-separated parts (`a//b` has three)."""
    if len(topic) > settings.max_topic_length:
        return "max_topic_length"
    if topic.count("/") >= settings.max_topic_levels:
        return "max_topic_levels"
    return None


def check_topic(topic: str, settings: BrokerSettings, stats: Stats, where: str) -> str | None:
    """`topic_over_limit`, counting a refusal in `stats.topic_limit_refused[where]` (see broker/stats.py)."""
    limit = topic_over_limit(topic, settings)
    if limit is not None:
        stats.topic_limit_refused[where] += 1
    return limit


def describe_topic_limit(limit: str, topic: str, settings: BrokerSettings) -> str:
    """A sentence for a user (REST 422, logs) naming the limit and the value that broke it."""
    if limit == "max_topic_length":
        return f"The topic has {len(topic)} characters; the broker allows at most {settings.max_topic_length} (max_topic_length)."
    return (f"The topic has {topic.count('/') + 1} levels; the broker allows at most "
            f"{settings.max_topic_levels} (max_topic_levels).")


def will_refusal(will: Will, client: ClientInfo, settings: BrokerSettings, stats: Stats, hooks: HookChain) -> str | None:
    """Why a will may not be published now ("limit", "acl", "quota"), or None: the steps of its client's
    PUBLISH (`broker.engine.admission.Admission`: the topic limits and the ACL, then the publish hook), so a will is counted against the hourly quota
    when it passes, and dropped over it."""
    topic = will.topic
    if check_topic(topic, settings, stats, "will") is not None:
        return "limit"
    if topic.startswith("$") or not hooks.authorize_publish(client, topic):
        return "acl"
    hook = hooks.publish_hook
    if hook is not None and hook(client, topic, will.payload, will.qos, will.retain):
        return "quota"
    return None


class PreAuthBudget:
    """What connections that have not finished CONNECT hold: how many there are and the bytes buffered for
    them. Two counters and no table: each admitted connection keeps what it holds itself and reports the
    change (`hold(before, after)`), so admitting, holding and releasing are O(1) and allocate nothing (a
    connect storm does each once per connection)."""

    __slots__ = ("max_connections", "max_bytes", "bytes", "pending", "refused")

    def __init__(self, max_connections: int, max_bytes: int, refused: Counter[str] | None = None) -> None:
        self.max_connections = max_connections
        self.max_bytes = max_bytes
        self.bytes = 0
        self.pending = 0
        # Connections closed by the budget, by reason: "connections" (too many pending), "bytes" (the
        # pending ones hold too much). The broker passes `Stats.pending_refused`, where the engine counts
        # "connect_size" (a CONNECT over max_connect_size), so `/metrics` reads all three from one snapshot.
        self.refused: Counter[str] = refused if refused is not None else Counter()

    def __len__(self) -> int:
        """Connections pending now."""
        return self.pending

    def why_full(self) -> str:
        """Why `admit` refuses now, in words for the log line."""
        if self.pending >= self.max_connections:
            return f"{self.pending} connections already await their CONNECT"
        return f"the connections awaiting their CONNECT ({self.pending}) already hold {self.bytes} bytes"

    def admit(self) -> bool:
        """A connection was just accepted: True if it may wait for its CONNECT (it then holds 0 bytes, and
        is released once), False if it must be closed at once (counted) because the pending ones already
        hold the budget."""
        if self.pending >= self.max_connections:
            self.refused["connections"] += 1
            return False
        if self.bytes >= self.max_bytes:
            self.refused["bytes"] += 1
            return False
        self.pending += 1
        return True

    def hold(self, before: int, buffered: int) -> bool:
        """An admitted connection's reader went from `before` to `buffered` bytes. False (counted, and the
        connection released) if the pending connections together would hold more than `max_bytes`: the
        caller closes this one, the one that grew."""
        total = self.bytes - before + buffered
        if total > self.max_bytes:
            self.refused["bytes"] += 1
            self.release(before)
            return False
        self.bytes = total
        return True

    def release(self, held: int) -> None:
        """An admitted connection that holds `held` bytes finished CONNECT (accepted or refused) or went
        away. Called once per admitted connection (the caller keeps track)."""
        self.pending -= 1
        self.bytes -= held
