"""The one owner of QoS 1/2 state: every transition of a session's deliveries and awaited releases.

As h11 keeps everything that changes its state machine in one file, every change to `Session.queue`,
`Session.inflight` and `Session.awaiting_release` is a method here, and each reports itself to the
persistence observer exactly once, when the session is durable. Each returns whether it changed recorded
state (strict durability holds an acknowledgement until such a change is on disk), so no caller needs to
guess from a counter.

Outgoing (broker -> subscriber), a delivery is:

    queued ──sent──> in flight (QoS 1) ──acknowledged (PUBACK)──> gone
                     in flight (QoS 2) ──released (PUBREC)──> released ──acknowledged (PUBCOMP)──> gone
                     in flight ──discarded (too large, refused by PUBREC >= 0x80)──> gone
    queued ──expired / pruned──> gone

Incoming (publisher -> broker), a QoS 2 packet identifier is `received` (PUBREC sent, awaiting PUBREL) until
`release_received` (PUBREL came, PUBCOMP sent) [MQTT-4.3.3-9].

An acknowledgement of the wrong kind for an identifier in flight (PUBCOMP or PUBREC for a QoS 1 delivery,
PUBACK for a QoS 2 one) is a protocol error [MQTT-4.3.2-5 / MQTT-4.3.3-7 context]: the client is answering
a PUBLISH it was never sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from broker.errors import ProtocolError

if TYPE_CHECKING:
    from broker.persistence import Persistence
    from broker.session import Delivery, Session

__all__ = ["QosFlows"]


class QosFlows:
    """QoS state transitions of every session; `persistence` hears about each once."""

    __slots__ = ("_persistence",)

    def __init__(self, persistence: Callable[[], Persistence]) -> None:
        # A callable, not the store itself: the composition root swaps the broker's store in at start.
        self._persistence = persistence

    # -- outgoing ---------------------------------------------------------------------------------------------

    def queued(self, session: Session, delivery: Delivery) -> bool:
        """A delivery waits in the session's queue (no free in-flight slot, or the client is away)."""
        session.enqueue(delivery)
        return self._changed(session, delivery)

    def queue_full(self, session: Session, delivery: Delivery) -> bool:
        """The queue is full: the oldest queued QoS 0 delivery makes room, else `delivery` is dropped."""
        return session.make_room(delivery) and self._changed(session, delivery)

    def sent(self, session: Session, delivery: Delivery) -> int:
        """A delivery goes out under a fresh packet identifier [MQTT-2.2.1-3]; returns the identifier."""
        packet_id = session.allocate_packet_id()
        delivery.packet_id = packet_id
        session.inflight[packet_id] = delivery
        self._changed(session, delivery)
        return packet_id

    def discarded(self, session: Session, delivery: Delivery) -> bool:
        """A delivery ends without acknowledgement: too large for the client [MQTT-3.1.2-25], refused by its
        PUBREC, expired in the queue [MQTT-3.3.2-5], or left without a subscription. It is taken out of
        the in-flight window if it is there (a queued one has been taken out of the queue by its caller)."""
        if delivery.packet_id is not None and session.inflight.get(delivery.packet_id) is delivery:
            del session.inflight[delivery.packet_id]
        return self._removed(session, delivery)

    def acknowledged(self, session: Session, packet_id: int, qos: int) -> Delivery | None:
        """PUBACK (`qos` 1) or PUBCOMP (`qos` 2) came: the delivery in flight under `packet_id` is done.
        None for an identifier not in flight (a duplicate acknowledgement: ignored)."""
        delivery = session.inflight.get(packet_id)
        if delivery is None:
            return None
        if delivery.qos != qos:
            kind = "PUBACK" if qos == 1 else "PUBCOMP"
            raise ProtocolError(f"{kind} for packet identifier {packet_id}, a QoS {delivery.qos} delivery")
        del session.inflight[packet_id]
        self._removed(session, delivery)
        return delivery

    def released(self, session: Session, packet_id: int, reason_code: int) -> Delivery | None:
        """PUBREC came for a QoS 2 delivery. A refusal (reason >= 0x80) ends the exchange [MQTT-4.3.3-4
        context]; otherwise the delivery is marked released (a restart resumes it with PUBREL, never with the
        PUBLISH again [MQTT-4.3.3-5]). None for an identifier not in flight."""
        delivery = session.inflight.get(packet_id)
        if delivery is None:
            return None
        if delivery.qos != 2:
            raise ProtocolError(f"PUBREC for packet identifier {packet_id}, a QoS 1 delivery")
        if reason_code >= 0x80:
            del session.inflight[packet_id]
            self._removed(session, delivery)
        else:
            delivery.released = True
            self._changed(session, delivery)
        return delivery

    # -- incoming ---------------------------------------------------------------------------------------------

    def received(self, session: Session, packet_id: int) -> bool:
        """A QoS 2 PUBLISH was accepted: its identifier awaits PUBREL [MQTT-4.3.3-9]."""
        session.await_release(packet_id)
        if session.durable:
            self._persistence().release_awaited(session, packet_id)
            return True
        return False

    def release_received(self, session: Session, packet_id: int) -> bool | None:
        """PUBREL came. None when the identifier was not awaited; else whether recorded state changed."""
        if packet_id not in session.awaiting_release:
            return None
        session.awaiting_release.discard(packet_id)  # type: ignore[union-attr]  # it was in: a set
        if session.durable:
            self._persistence().release_done(session, packet_id)
            return True
        return False

    # -- reports ----------------------------------------------------------------------------------------------

    def _changed(self, session: Session, delivery: Delivery) -> bool:
        if session.durable:
            self._persistence().delivery_changed(session, delivery)
            return True
        return False

    def _removed(self, session: Session, delivery: Delivery) -> bool:
        if session.durable and delivery.store_id:
            self._persistence().delivery_removed(session, delivery)
            return True
        return False
