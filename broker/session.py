"""Session state as plain records: what the broker remembers about a client between its connections.

A session outlives its network connection when the client asks for that (clean session 0 in 3.1.1, a session
expiry interval above 0 in v5) [MQTT-3.1.2-4][MQTT-3.1.2-5]. Everything here is plain data with no sockets
and no event loop, so the persistence store (broker/persistence.py, storage/broker_state.py) writes it
record by record: subscriptions, QoS 1/2 messages in flight in both directions, and the queue of messages
waiting for a free slot or for the client to return.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from broker.codec import EMPTY_PROPERTIES, Properties, Will
from broker.hooks import ClientInfo

if TYPE_CHECKING:
    from broker.clock import Timer

__all__ = ["Delivery", "Message", "Session", "SubscriptionRecord", "NEVER_EXPIRES"]

NEVER_EXPIRES = 0xFFFFFFFF
# `Session.awaiting_release` while no QoS 2 identifier awaits its PUBREL, shared by every session.
NO_PACKET_IDS: frozenset[int] = frozenset()


@dataclass(slots=True, eq=False)
class Message:
    """An application message as routed inside the broker.

    `properties` are the PUBLISH properties that travel with the message to subscribers (topic alias and
    subscription identifiers belong to one hop and are never stored here). `expires_at` is a wall-clock
    deadline taken from the Message Expiry Interval, so it stays meaningful across a restart. `sender` is
    the publisher's session key (for No Local).
    `wire` keeps the last QoS 0 encoding with its form (see `MQTTConnection.send_message`).
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties = EMPTY_PROPERTIES
    expires_at: float | None = None
    sender: str | None = None
    # The user name the publisher authenticated with: the control plane removes what a revoked
    # credential left behind (its retained messages) by it.
    origin: str | None = None
    wire: tuple[tuple[int, str, bool], bytes] | None = None
    # The message's row in the persistence store, once a durable session holds it (0: not stored).
    store_id: int = 0

    def remaining_expiry(self, now: float | None = None) -> int | None:
        """Seconds left before expiry (forwarded to subscribers [MQTT-3.3.2-6]); None when it never expires."""
        if self.expires_at is None:
            return None
        left = self.expires_at - (time.time() if now is None else now)
        return max(0, int(left + 0.999))

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (time.time() if now is None else now) >= self.expires_at


@dataclass(slots=True)
class SubscriptionRecord:
    """One subscription of one session, with its options [MQTT-3.8.3-1]."""

    topic_filter: str  # as the client sent it, `$share/{group}/...` included
    qos: int
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    subscription_id: int | None = None
    # Granted in part (an allowed ACL filter overlaps it, none covers it): every message is checked against
    # the reader's ACL at delivery (`HookChain.authorize_read`). Not stored: recomputed from the hooks.
    partial: bool = False


@dataclass(slots=True, eq=False)
class Delivery:
    """A message on its way to one session: queued (packet_id None) or in flight (packet_id set).

    `released` marks a QoS 2 delivery whose PUBREC arrived and whose PUBREL was sent: on reconnect it is
    resumed with PUBREL, not with the PUBLISH again [MQTT-4.4.0-1].
    """

    message: Message
    qos: int
    retain: bool
    subscription_ids: tuple[int, ...] = ()
    packet_id: int | None = None
    released: bool = False
    # The delivery's row in the persistence store (0: not stored; see broker/persistence.py).
    store_id: int = 0


@dataclass(slots=True, eq=False)
class Session:
    # The session's key: the client id, scoped by the tenant's mount point (`ClientInfo.session_key`), so
    # that two tenants using the same client id never share or take over each other's session.
    key: str
    # Seconds the session outlives its connection: 0 = ends with it; NEVER_EXPIRES = kept forever.
    expiry_interval: int = 0
    subscriptions: dict[str, SubscriptionRecord] = field(default_factory=dict)
    # Outgoing QoS 1/2 deliveries awaiting PUBACK / PUBREC / PUBCOMP, in the order they were sent.
    inflight: dict[int, Delivery] = field(default_factory=dict)
    # Deliveries waiting for a free in-flight slot, or for the client to come back: one shared empty tuple
    # until `enqueue` makes the deque (an empty deque is 760 bytes, and most sessions never queue).
    queue: deque[Delivery] | tuple[()] = ()
    # Incoming QoS 2 packet identifiers whose PUBREL has not arrived yet: a PUBLISH repeating one of them is
    # not routed again (exactly once) [MQTT-4.3.3-9]. A shared empty frozenset until the first one (216
    # bytes saved per session; `QosFlows.received` makes the set).
    awaiting_release: set[int] | frozenset[int] = NO_PACKET_IDS
    # The will of the last connection, while its delay runs [MQTT-3.1.3-9].
    pending_will: Will | None = None
    # The will of the current connection: persisted with a durable session, so that a crash does not lose
    # it (on restart it is treated as if the connection had dropped then; see Broker.restore).
    armed_will: Will | None = None
    # Whether the session is written to the persistence store: it outlives its connection and the broker
    # has a store (Broker.attach decides).
    durable: bool = False
    # Who the session belongs to, as the auth hook described its last connection: revokes and ACL
    # changes find sessions by it, connected or not.
    client: ClientInfo | None = None
    disconnected_at: float | None = None
    next_packet_id: int = 1
    expiry_timer: Timer | None = None
    will_timer: Timer | None = None
    # Whether the queue may hold a QoS 0 delivery (set by `enqueue`, cleared by `make_room` when it finds
    # none): a full queue of QoS 1/2 refuses the next one at once, not after a scan of the whole queue.
    queued_qos0: bool = False

    def enqueue(self, delivery: Delivery) -> None:
        """Append to the queue, made here on first use (the empty one is immutable: a write elsewhere fails)."""
        queue = self.queue
        if not isinstance(queue, deque):
            queue = self.queue = deque()
        queue.append(delivery)
        if delivery.qos == 0:
            self.queued_qos0 = True

    def await_release(self, packet_id: int) -> None:
        """Add to `awaiting_release`, made here on first use (as the queue is by `enqueue`)."""
        awaiting = self.awaiting_release
        if isinstance(awaiting, frozenset):
            awaiting = self.awaiting_release = set()
        awaiting.add(packet_id)

    def allocate_packet_id(self) -> int:
        """A packet identifier not used by any delivery in flight [MQTT-2.2.1-3]."""
        inflight = self.inflight
        if len(inflight) >= 65_535:
            raise RuntimeError("no free packet identifier")
        packet_id = self.next_packet_id
        while packet_id in inflight:
            packet_id = packet_id + 1 if packet_id < 65_535 else 1
        self.next_packet_id = packet_id + 1 if packet_id < 65_535 else 1
        return packet_id

    def make_room(self, delivery: Delivery) -> bool:
        """The queue is full: the oldest queued QoS 0 delivery makes room for `delivery` (True), or, with
        none to drop, `delivery` is refused (False). One message is lost either way. Without `queued_qos0`
        every refusal scanned the whole queue: a subscriber that fell behind a QoS 1 flood (1,000 queued)
        cost 10-150 us per message more, which slowed the broker further behind (docs/benchmarks.md,
        "Overload PINGREQ and fan-out silences, second round")."""
        if not self.queued_qos0:
            return False
        queue = self.queue
        for index, queued in enumerate(queue):
            if queued.qos == 0:
                del queue[index]
                queue.append(delivery)
                return True
        self.queued_qos0 = False  # removals never add one: false until `enqueue` queues a QoS 0 again
        return False
