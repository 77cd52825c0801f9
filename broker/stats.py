"""Counters the broker keeps, read by $SYS, the dashboard's chart and `/metrics` alike.

Plain integer attributes on a slotted object, and nothing on the hot path knows about Prometheus
(`control/metrics.py` reads these at scrape time). Every counter bumped per message costs: a Python int
above 256 is a new object each time, ~500 instructions per `+=` (callgrind), against ~33,000 for a whole
QoS 0 message. So a QoS 0 message bumps one counter each way: the per-QoS lists (indexed by QoS) are only
bumped for QoS 1 and 2, and QoS 0 is the total less those (`messages_in_by_qos`); payload bytes are
counted for QoS 1 and 2 only (the network byte counters, bumped per read and per write rather than per
message, cover everything). Dropped messages are counted by reason; the total (`messages_dropped`) is
their sum, computed when read. Refusals are counted by CONNACK reason code (not a hot path).
"""

from __future__ import annotations

from collections import Counter

__all__ = ["DROP_REASONS", "Stats"]

# Stats attribute -> the reason label it is reported under.
DROP_REASONS = {
    "dropped_slow": "slow_subscriber",  # QoS 0 to a client whose write buffer is above its high-water mark
    "dropped_offline": "offline",  # QoS 0 to a subscriber that is not connected
    "dropped_queue_full": "queue_full",  # a session's queue at max_queued_messages: its oldest is dropped
    "dropped_quota": "quota",  # the publisher's hourly quota is used up
    "dropped_acl": "acl",  # the publisher may not publish to that topic
    "dropped_too_large": "too_large",  # larger than the subscriber's maximum packet size
    "dropped_loop": "loop",  # came back through a bridge to this Roost (user property roost-via: admission.py)
}


class Stats:
    __slots__ = (
        "auth_failures",
        "bytes_received",
        "bytes_sent",
        "clients_connected",
        "connections_opened",
        "connections_refused",
        "messages_expired",
        "messages_received",
        "messages_sent",
        "messages_unrouted",
        "protocol_errors",
        "retained",
        "subscriptions",
        *DROP_REASONS,
        # Lists by QoS, index 1 and 2 only (index 0 stays 0): application messages and payload bytes.
        "received_by_qos",
        "received_bytes_by_qos",
        "sent_by_qos",
        "sent_bytes_by_qos",
        # CONNACK reason code -> refused connections.
        "refused_by_reason",
        # Limit name (broker/tenants.py) -> SUBSCRIBEs and CONNECTs refused for going over it.
        "limit_hits",
        # Topics over max_topic_levels / max_topic_length (broker/limits.py), by where they came:
        # "subscribe", "publish", "will", "rest".
        "topic_limit_refused",
        # Wills not published, by reason: "acl" (not allowed, `$` topics included), "quota" (the hourly
        # quota is used up), "limit" (over a topic limit). Also counted in the drop reasons above.
        "wills_dropped",
        # Connections closed before their CONNECT was handled, by reason: "connections" (max_pending_connections
        # reached), "bytes" (max_pending_bytes), "connect_size" (a CONNECT over max_connect_size).
        "pending_refused",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)
        self.received_by_qos = [0, 0, 0]
        self.received_bytes_by_qos = [0, 0, 0]
        self.sent_by_qos = [0, 0, 0]
        self.sent_bytes_by_qos = [0, 0, 0]
        self.refused_by_reason: Counter[int] = Counter()
        self.limit_hits: Counter[str] = Counter()
        self.topic_limit_refused: Counter[str] = Counter()
        self.wills_dropped: Counter[str] = Counter()
        self.pending_refused: Counter[str] = Counter()

    @property
    def messages_dropped(self) -> int:
        """Every message dropped, whatever the reason."""
        return sum(getattr(self, name) for name in DROP_REASONS)

    def messages_in_by_qos(self) -> list[int]:
        """Application messages published into the broker, by QoS (0, 1, 2)."""
        _, one, two = self.received_by_qos
        return [self.messages_received - one - two, one, two]

    def messages_out_by_qos(self) -> list[int]:
        """Application messages sent to subscribers, by QoS (0, 1, 2)."""
        _, one, two = self.sent_by_qos
        return [self.messages_sent - one - two, one, two]

    def dropped_by_reason(self) -> dict[str, int]:
        return {reason: getattr(self, name) for name, reason in DROP_REASONS.items()}

    def copy(self) -> Stats:
        """The counters at this moment, detached from the live ones (`BrokerService.snapshot`)."""
        other = Stats()
        for name in self.__slots__:
            value = getattr(self, name)
            setattr(other, name, value.copy() if isinstance(value, (list, Counter)) else value)
        return other

    def as_dict(self) -> dict[str, int]:
        """The plain counters (the per-QoS and per-reason breakdowns have their own readers)."""
        values = {name: getattr(self, name) for name in self.__slots__ if isinstance(getattr(self, name), int)}
        values["messages_dropped"] = self.messages_dropped
        return values
