"""The persistence hook: how the broker tells a store what must outlive the process.

The broker keeps its state in memory and routes without awaiting anything; a store (storage/broker_state.py)
listens to the changes below and writes them behind the broker's back, in group commits. The broker never
imports the storage layer: the composition root hands it a `Persistence`, and this module's base class,
which records nothing, is what a broker without a store runs with.

What is recorded (MQTT 5.0 section 4.1, Session State): for every session that outlives its connection
(`Session.durable`), the session itself (who it belongs to, its expiry, its will), its subscriptions, its
QoS 1 and 2 deliveries, queued or in flight, and the packet identifiers of incoming QoS 2 messages whose
PUBREL has not come yet; and, for everyone, the retained messages.

Calls name the changed object, not a serialised copy: a store reads the object's state when it writes, so
a delivery that is queued, sent and acknowledged within one commit window costs one dictionary entry
and no disk write at all.

Acknowledgements: with `durability = "strict"` a QoS 1/2 acknowledgement that depends on recorded state
must wait until that state is on disk. `when_durable(callback)` says whether there is anything to wait
for, and calls the callback once it is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker.session import Delivery, Message, Session, SubscriptionRecord

__all__ = ["Persistence"]


class Persistence:
    """Records nothing: the broker's state lives as long as the process. Stores override every method.

    `enabled` tells the broker whether to mark sessions durable and report changes at all (so a broker
    without a store pays one attribute check per change). Every change is reported once, by its owner
    (`broker/qos.py` for QoS state), which also tells its caller whether it reported one.
    """

    enabled = False
    strict = False
    # What a store reports for metrics: commits made, rows written, seconds spent committing, failed
    # commits, changes not on disk yet.
    commits = 0
    rows_written = 0
    commit_seconds = 0.0
    failures = 0
    pending_changes = 0

    def session_changed(self, session: Session) -> None:
        """The session's own record changed: created, connected, disconnected, its expiry or its will."""

    def session_removed(self, session: Session) -> None:
        """The session ended: forget it with its subscriptions, deliveries and awaited releases."""

    def subscription_added(self, session: Session, record: SubscriptionRecord) -> None:
        """A subscription was made or replaced."""

    def subscription_removed(self, session: Session, topic_filter: str) -> None:
        """A subscription was removed."""

    def delivery_changed(self, session: Session, delivery: Delivery) -> None:
        """A QoS 1/2 delivery was queued, sent (it has a packet identifier now) or released (PUBREC came)."""

    def delivery_removed(self, session: Session, delivery: Delivery) -> None:
        """A QoS 1/2 delivery ended: acknowledged, refused, expired, or dropped with its subscription."""

    def release_awaited(self, session: Session, packet_id: int) -> None:
        """An incoming QoS 2 PUBLISH was accepted; its PUBREL has not come yet [MQTT-4.3.3-9]."""

    def release_done(self, session: Session, packet_id: int) -> None:
        """The PUBREL for an incoming QoS 2 message came."""

    def retained_set(self, message: Message) -> None:
        """A retained message was stored (replacing any other on its topic)."""

    def retained_removed(self, topic: str) -> None:
        """The retained message of a topic was cleared or expired."""

    def when_durable(self, callback: Callable[[], None]) -> bool:
        """If changes reported so far are not on disk yet and acknowledgements must wait for them, arrange
        for `callback` to run once they are, and return True. Otherwise return False: go ahead now."""
        return False
