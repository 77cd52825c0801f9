"""Routing an application message: the trie walk, the merge per client, and the hand-over to receivers.

`Routing` is the half of `Broker` that moves messages; `broker/core.py` holds the other half (sessions,
timers, restore). There is one route for every message: `publish` (a `Message`) and `publish_plain` (a
plain QoS 0 PUBLISH as its bytes, see `PacketReader.take_plain_publishes`) both walk the trie once and
hand each receiver its message through `deliver`'s steps; `publish_plain` only skips making a `Message`
when the one matching subscription's receiver takes the publisher's bytes as they are.

Receivers are anything that satisfies `broker.receivers.DeliveryReceiver`: the router imports no connection.
QoS 1/2 state changes go through `broker.qos.QosFlows`, which reports them to the persistence observer.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from broker.codec import EMPTY_PROPERTIES
from broker.receivers import DeliveryReceiver, PlainForm
from broker.session import Delivery, Message, Session, SubscriptionRecord

if TYPE_CHECKING:
    from broker.clock import Clock
    from broker.hooks import HookChain
    from broker.persistence import Persistence
    from broker.qos import QosFlows
    from broker.retained import RetainedStore
    from broker.settings import BrokerSettings
    from broker.stats import Stats
    from broker.topic_tree import SharedGroup, SubscriptionTree

__all__ = ["Routing"]

# client_id -> [qos, retain_as_published, subscription ids]
_Targets = dict[str, list[Any]]

class Routing:
    """Message routing over the state that `Broker` owns (the attributes declared below)."""

    settings: BrokerSettings
    hooks: HookChain
    flows: QosFlows
    clock: Clock
    stats: Stats
    sessions: dict[str, Session]
    connections: dict[str, DeliveryReceiver]
    subscriptions: SubscriptionTree[SubscriptionRecord]
    retained: RetainedStore[Message]

    @property
    def persistence(self) -> Persistence:
        raise NotImplementedError

    def publish(self, message: Message) -> int:
        """Route one application message to every matching session; return how many got it."""
        return self.route(message)[0]

    def route(
        self,
        message: Message,
        matched: tuple[list[tuple[str, SubscriptionRecord]], list[SharedGroup[SubscriptionRecord]]] | None = None,
    ) -> tuple[int, bool]:
        """Route `message` (the trie's `matched` answer, when the caller walked it already); return how many
        sessions got it and whether that changed recorded state (strict durability holds the publisher's
        acknowledgement until it is on disk).

        Overlapping subscriptions of one client yield one delivery at the highest granted QoS, carrying every
        matching subscription identifier [MQTT-3.3.4-2][MQTT-3.3.4-3]. A shared subscription group delivers
        to one member, round-robin [MQTT-4.8.2-4]. No Local subscriptions skip the publisher [MQTT-3.8.3-3].
        A subscription granted in part gets only what its reader's ACL lets it read."""
        stats = self.stats
        stats.messages_received += 1
        qos = message.qos
        if qos:  # QoS 0 counts are the totals less these (see broker/stats.py)
            stats.received_by_qos[qos] += 1
            stats.received_bytes_by_qos[qos] += len(message.payload)
        recorded = self._retain(message) if message.retain else False
        plain, groups = self.subscriptions.match(message.topic) if matched is None else matched
        if not plain and not groups:
            stats.messages_unrouted += 1
            return 0, recorded
        sender = message.sender
        topic = message.topic
        targets: _Targets = {}
        for client_id, record in plain:
            if record.no_local and client_id == sender:
                continue
            if record.partial and not self._readable(client_id, topic):
                continue
            _merge(targets, client_id, record)
        for group in groups:
            self._pick_shared(group, targets, topic)
        sessions = self.sessions
        deliver = self.deliver
        for client_id, (sub_qos, rap, sub_ids) in targets.items():
            session = sessions.get(client_id)
            if session is not None and deliver(
                session, message, qos if qos < sub_qos else sub_qos, message.retain and rap, tuple(sub_ids)
            ):
                recorded = True
        return len(targets), recorded

    def publish_plain(
        self, topic: str, payload: bytes, wire: bytes, form: PlainForm, sender: str, origin: str | None
    ) -> None:
        """`route` for a plain QoS 0 message (no RETAIN flag, no properties) that arrived as the bytes `wire`,
        in `form`. When one subscription matches and its receiver takes that form (`plain_form`: same
        version and tenant, no outgoing topic aliases) and, in v5, it carries no subscription identifier
        to add, the receiver gets those bytes as they are and no Message is made: the case of fan-in, and of
        most device traffic. Anything else is routed as a Message that keeps the publisher's bytes for
        the subscribers of its form."""
        matched = self.subscriptions.match(topic)
        plain, groups = matched
        if len(plain) == 1 and not groups:
            client_id, record = plain[0]
            receiver = self.connections.get(client_id)
            if (
                receiver is not None
                and receiver.plain_form == form
                and (record.subscription_id is None or form[0] != 5)  # v5 subscription ids need an encoding
            ):
                self.stats.messages_received += 1
                if record.no_local and client_id == sender:  # [MQTT-3.8.3-3]
                    return
                if record.partial and not self._readable(client_id, topic):
                    return
                if receiver.congested:  # `_may_send_now` for a receiver known to be online
                    self.stats.dropped_slow += 1
                else:
                    receiver.send_plain(wire)
                return
        self.route(Message(topic, payload, 0, False, EMPTY_PROPERTIES, None, sender, origin, (form, wire)), matched)

    def deliver(self, session: Session, message: Message, qos: int, retain: bool, sub_ids: tuple[int, ...]) -> bool:
        """Hand one message to one session: send it now, queue it, or drop it (counted). Returns whether
        recorded state changed."""
        receiver = self.connections.get(session.key)
        if qos == 0:
            if self._may_send_now(receiver):
                receiver.send_message(message, 0, retain, sub_ids, None)  # type: ignore[union-attr]
            return False
        delivery = Delivery(message, qos, retain, sub_ids)
        if (
            receiver is not None
            and not session.queue
            and len(session.inflight) < receiver.inflight_limit
            and not receiver.congested
        ):
            return self._send_inflight(receiver, session, delivery)
        if len(session.queue) < self.settings.max_queued_messages:
            return self.flows.queued(session, delivery)
        # Full: the oldest queued QoS 0 delivery makes room, else this one is dropped (counted).
        self.stats.dropped_queue_full += 1
        return self.flows.queue_full(session, delivery)

    def _may_send_now(self, receiver: DeliveryReceiver | None) -> bool:
        """QoS 0 goes now or never: to nobody offline, and not to a congested receiver (both counted)."""
        if receiver is None:
            self.stats.dropped_offline += 1
            return False
        if receiver.congested:
            self.stats.dropped_slow += 1
            return False
        return True

    def _readable(self, client_id: str, topic: str) -> bool:
        """The reader's ACL at delivery, for a subscription granted in part (cached by the hook chain)."""
        session = self.sessions.get(client_id)
        client = session.client if session is not None else None
        if client is None:
            return False
        return self.hooks.authorize_read(client, client.own_topic(topic))

    def _send_inflight(self, receiver: DeliveryReceiver, session: Session, delivery: Delivery) -> bool:
        packet_id = self.flows.sent(session, delivery)
        if session.durable:
            persistence = self.persistence
            # Strict durability, QoS 2: the PUBLISH leaves once its packet identifier is on disk, so that
            # after a crash it is resent as the client saw it, DUP set and under that identifier
            # [MQTT-4.4.0-1], and the identifier is not given to another message while the client still
            # holds it [MQTT-2.2.1-4]; a receiver that delivers on PUBLISH would otherwise deliver it twice.
            # A QoS 1 receiver holds no state: a QoS 1 message that comes back under a new identifier is a
            # duplicate, which at-least-once allows, so QoS 1 waits only behind a QoS 2 PUBLISH that waits,
            # to keep the order of the queue (else every delivery would cost a commit and four row writes;
            # see docs/benchmarks.md, "Durable state").
            if (
                persistence.strict
                and (delivery.qos == 2 or receiver.held_sends)
                and persistence.when_durable(partial(self._send_recorded, receiver, session, delivery, packet_id))
            ):
                receiver.held_sends += 1
                return True
        self.transmit(receiver, session, delivery, packet_id)
        return session.durable

    def _send_recorded(self, receiver: DeliveryReceiver, session: Session, delivery: Delivery, packet_id: int) -> None:
        receiver.held_sends -= 1
        if session.inflight.get(packet_id) is delivery and self.connections.get(session.key) is receiver:
            self.transmit(receiver, session, delivery, packet_id)
        # (Else it was acknowledged meanwhile, or the client left: a reconnect resends what is in flight.)

    def transmit(
        self, receiver: DeliveryReceiver, session: Session, delivery: Delivery, packet_id: int, dup: bool = False
    ) -> None:
        """Send a delivery in flight; one too large for the client's maximum packet size is discarded as if
        delivered, and counted [MQTT-3.1.2-25], so the next one flows."""
        if not receiver.send_message(
            delivery.message, delivery.qos, delivery.retain, delivery.subscription_ids, packet_id, dup
        ):
            self.flows.discarded(session, delivery)

    def drain(self, receiver: DeliveryReceiver, session: Session) -> None:
        """Move queued deliveries into free in-flight slots, in order [MQTT-4.6.0-6]."""
        queue = session.queue
        inflight = session.inflight
        limit = receiver.inflight_limit
        now = self.clock.time()
        while queue and len(inflight) < limit and not receiver.congested:
            delivery = queue.popleft()
            if delivery.message.expired(now):
                self.stats.messages_expired += 1
                self.flows.discarded(session, delivery)
                continue  # [MQTT-3.3.2-5]
            if delivery.qos == 0:
                receiver.send_message(delivery.message, 0, delivery.retain, delivery.subscription_ids, None)
            else:
                self._send_inflight(receiver, session, delivery)

    def _pick_shared(self, group: SharedGroup[SubscriptionRecord], targets: _Targets, topic: str) -> None:
        connections = self.connections

        def readable(client_id: str, record: SubscriptionRecord) -> bool:
            return not record.partial or self._readable(client_id, topic)

        picked = group.pick(lambda client_id, record: client_id in connections and readable(client_id, record))
        if picked is None:
            # Nobody online: queue for a persistent member, as if online (sessions keep their queue).
            picked = group.pick(readable)
        if picked is None:
            return
        _merge(targets, *picked)

    def _retain(self, message: Message) -> bool:
        """Store or clear the retained message for a topic: an empty payload clears it [MQTT-3.3.1-6].
        Returns whether recorded state changed ($SYS topics are rewritten every interval: not stored)."""
        if message.payload:
            self.retained.set(message.topic, message)
        else:
            self.retained.delete(message.topic)
        self.stats.retained = len(self.retained)
        persistence = self.persistence
        if persistence.enabled and not message.topic.startswith("$SYS"):
            if message.payload:
                persistence.retained_set(message)
            else:
                persistence.retained_removed(message.topic)
            return True
        return False

def _merge(targets: _Targets, client_id: str, record: SubscriptionRecord) -> None:
    """Fold one matching subscription into its client's delivery: the highest QoS, Retain As Published if
    any subscription asks for it, and every subscription identifier [MQTT-3.3.4-2][MQTT-3.3.4-3]."""
    target = targets.get(client_id)
    if target is None:
        target = targets[client_id] = [record.qos, record.retain_as_published, []]
    else:
        if record.qos > target[0]:
            target[0] = record.qos
        target[1] = target[1] or record.retain_as_published
    if record.subscription_id is not None:
        target[2].append(record.subscription_id)
