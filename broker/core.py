"""The broker: sessions, routing, retained messages and wills, independent of any transport.

`Broker` owns the state that connections share: the sessions by client id, the subscription trie, the
retained store and the counters. A connection (`broker/connection.py`) turns packets into calls here:
`attach` after a successful CONNECT, `publish` for every application message (`publish_plain` for a plain
QoS 0 one, which may forward the publisher's bytes without a Message), `subscribe`/`unsubscribe`,
and `detach` when the network connection ends. Routing is synchronous and never awaits: a publish walks the
trie, merges overlapping subscriptions per client and hands each session its delivery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from broker.ack_holds import AckHolds
from broker.codec import EMPTY_PROPERTIES, Will
from broker.codec.topics import parse_shared
from broker.hooks import ClientInfo, HookChain
from broker.persistence import Persistence
from broker.retained import RetainedStore
from broker.session import NEVER_EXPIRES, Delivery, Message, Session, SubscriptionRecord
from broker.settings import BrokerSettings
from broker.stats import Stats
from broker.topic_match import topic_matches
from broker.topic_tree import SharedGroup, SubscriptionTree

if TYPE_CHECKING:
    from broker.connection import MQTTConnection

__all__ = ["Broker", "SubscribeOutcome"]

log = logging.getLogger("roost.broker")


@dataclass(frozen=True, slots=True)
class SubscribeOutcome:
    """What adding one subscription did: whether it replaced one, for retain handling 1 [MQTT-3.3.1-10]."""

    existed: bool


class Broker:
    """Shared broker state and the routing of application messages."""

    def __init__(self, settings: BrokerSettings, hooks: HookChain, persistence: Persistence | None = None) -> None:
        self.settings = settings
        self.hooks = hooks
        # Where durable sessions and retained messages are written (storage/broker_state.py); the base
        # class records nothing.
        self.persistence = persistence if persistence is not None else Persistence()
        self.sessions: dict[str, Session] = {}
        # Connected clients by client id; `open_connections` also holds those still in CONNECT.
        self.connections: dict[str, MQTTConnection] = {}
        self.open_connections: set[MQTTConnection] = set()
        self.closing = False
        # PUBLISH packets sent to clients that have since disconnected, by tenant namespace.
        self.sent_by_closed_mount: dict[str, int] = {}
        self.subscriptions: SubscriptionTree[SubscriptionRecord] = SubscriptionTree()
        self.retained: RetainedStore[Message] = RetainedStore()
        self.stats = Stats()
        # Receivers that hold a publisher's acknowledgement until they have the message on disk (bridges).
        self.ack_holds = AckHolds()
        self.started_at = time.time()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # -- sessions -------------------------------------------------------------------------------------------

    def attach(self, connection: MQTTConnection, client: ClientInfo, clean_start: bool, expiry: int) -> tuple[Session, bool]:
        """Bind a newly accepted connection to its session; return the session and whether it was present.

        An existing connection with the same client id is taken over: it is closed (v5: DISCONNECT 0x8E)
        [MQTT-3.1.4-3]. Clean start discards the old session [MQTT-3.1.2-4]; otherwise it is resumed with
        its subscriptions and queued messages [MQTT-3.1.2-5].
        """
        key = client.session_key
        old_connection = self.connections.pop(key, None)
        session = self.sessions.get(key)
        if old_connection is not None:
            self.stats.clients_connected -= 1
            will = old_connection.taken_over()
            # The old connection ended without DISCONNECT: its will goes now, unless it has a delay and the
            # session continues, in which case the new connection cancels it [MQTT-3.1.3-9].
            if will is not None and (clean_start or _will_delay(will) == 0):
                self.publish_will(will, old_connection.client)
        if session is not None:
            self._cancel_timers(session, publish_pending_will=clean_start)
            # A session without expiry ends with its connection, a taken-over one included [MQTT-3.1.2-6]
            # (3.1.1) / section 3.1.2.11.2 (v5): the new connection does not resume it.
            if clean_start or (old_connection is not None and session.expiry_interval == 0):
                self._discard_session(session)
                session = None
        present = session is not None
        if session is None:
            session = Session(key)
            self.sessions[key] = session
        session.expiry_interval = expiry
        session.client = client
        session.disconnected_at = None
        self.connections[key] = connection
        self._persist_attached(session, connection.will)
        # Counted here and in detach, not as len(connections): the control plane's internal watchers
        # (BrokerService.watch) sit in that dict too and are not clients.
        self.stats.clients_connected += 1
        return session, present

    def _persist_attached(self, session: Session, will: Will | None) -> None:
        """Write the session as it is now connected, if it outlives its connection: with its will, so
        that a crash does not lose the will (see `restore`)."""
        persistence = self.persistence
        if not persistence.enabled:
            return
        durable = session.expiry_interval > 0
        session.armed_will = will if durable else None
        if durable and not session.durable:
            # New, or resumed by a client that now asks for it to last: everything it holds is written.
            session.durable = True
            persistence.session_changed(session)
            for record in session.subscriptions.values():
                persistence.subscription_added(session, record)
            for delivery in (*session.inflight.values(), *session.queue):
                if delivery.qos:
                    persistence.delivery_changed(session, delivery)
            for packet_id in session.awaiting_release:
                persistence.release_awaited(session, packet_id)
        elif durable:
            persistence.session_changed(session)
        elif session.durable:
            # Resumed with a session expiry of 0: it ends with this connection, so nothing of it is kept.
            session.durable = False
            persistence.session_removed(session)

    def detach(self, connection: MQTTConnection, session: Session, will: Will | None) -> None:
        """The connection ended. Publish or schedule its will, and end or keep the session."""
        if self.connections.get(session.key) is connection:
            del self.connections[session.key]
            self.stats.clients_connected -= 1
        if self.sessions.get(session.key) is not session:
            return  # Already replaced (clean-start takeover) or removed (kicked).
        session.disconnected_at = time.time()
        session.armed_will = None
        expiry = session.expiry_interval
        if will is not None:
            delay = _will_delay(will)
            if delay == 0 or expiry == 0:
                self.publish_will(will, connection.client)
            else:
                session.pending_will = will
                session.will_timer = self.loop.call_later(
                    min(delay, expiry), self._will_delay_elapsed, session, connection.client
                )
        if expiry == 0:
            self._discard_session(session)
            return
        if expiry != NEVER_EXPIRES:
            session.expiry_timer = self.loop.call_later(expiry, self._session_expired, session, connection.client)
        if session.durable:
            self.persistence.session_changed(session)

    def _will_delay_elapsed(self, session: Session, client: ClientInfo | None) -> None:
        session.will_timer = None
        will, session.pending_will = session.pending_will, None
        if will is not None:
            if session.durable and self.sessions.get(session.key) is session:
                self.persistence.session_changed(session)
            self.publish_will(will, client)

    def _session_expired(self, session: Session, client: ClientInfo | None) -> None:
        """The session outlived its expiry: its pending will goes now [MQTT-3.1.3-9], then it is removed."""
        session.expiry_timer = None
        if self.sessions.get(session.key) is session and session.key not in self.connections:
            self._cancel_timers(session, publish_pending_will=True, client=client)
            self._discard_session(session)

    def _cancel_timers(self, session: Session, publish_pending_will: bool, client: ClientInfo | None = None) -> None:
        for timer in (session.expiry_timer, session.will_timer):
            if timer is not None:
                timer.cancel()
        session.expiry_timer = session.will_timer = None
        will, session.pending_will = session.pending_will, None
        if will is not None and publish_pending_will:
            self.publish_will(will, client)

    def _discard_session(self, session: Session) -> None:
        for record in session.subscriptions.values():
            group, plain = parse_shared(record.topic_filter)
            self.subscriptions.unsubscribe(plain, session.key, group)
        if session.durable:
            session.durable = False
            self.persistence.session_removed(session)
        session.subscriptions.clear()
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]

    def remove_session(self, key: str) -> bool:
        """End a session now, whether or not its client is connected (used by kicks and revokes)."""
        connection = self.connections.get(key)
        if connection is not None:
            connection.close_for_admin()
        session = self.sessions.get(key)
        if session is None:
            return connection is not None
        self._cancel_timers(session, publish_pending_will=False)
        self._discard_session(session)
        return True

    def restore(self, sessions: Iterable[Session], retained: Iterable[Message]) -> None:
        """Take back what a store kept from the last run, before any client connects; then the caller may
        remove what is no longer allowed (revoked credentials) and calls `resume_timers()`.

        Every restored session is disconnected; `disconnected_at` is when its connection ended (a store
        sets the restart time for a session whose client was connected when the process died, and turns
        the will of that connection into a pending will: the connection ended without DISCONNECT
        [MQTT-3.1.2-8]).
        """
        now = time.time()
        for message in retained:
            if message.expired(now):
                self.persistence.retained_removed(message.topic)
            else:
                self.retained.set(message.topic, message)
        restored = 0
        for session in sessions:
            restored += 1
            self.sessions[session.key] = session
            for record in session.subscriptions.values():
                group, plain = parse_shared(record.topic_filter)
                self.subscriptions.subscribe(plain, session.key, record, group)
        self.stats.subscriptions = len(self.subscriptions)
        self.stats.retained = len(self.retained)
        if restored or len(self.retained):
            log.info("restored %d sessions and %d retained messages", restored, len(self.retained))

    def resume_timers(self) -> None:
        """Start the clocks of the restored sessions: session expiry and will delays count from the moment
        their connection ended, time spent down included [MQTT-3.1.2-23]. What ran out meanwhile happens
        now, after every session is in place, so that a will published now reaches restored subscribers."""
        now = time.time()
        for session in list(self.sessions.values()):
            if session.key in self.connections or session.disconnected_at is None:
                continue
            if session.will_timer is not None or session.expiry_timer is not None:
                continue
            elapsed = max(0.0, now - session.disconnected_at)
            expiry = session.expiry_interval
            will = session.pending_will
            if will is not None:
                due = min(_will_delay(will), expiry) - elapsed
                if due > 0:
                    session.will_timer = self.loop.call_later(due, self._will_delay_elapsed, session, session.client)
                else:
                    self._will_delay_elapsed(session, session.client)
            if expiry == NEVER_EXPIRES:
                continue
            if elapsed >= expiry:
                self._session_expired(session, session.client)
            else:
                session.expiry_timer = self.loop.call_later(
                    expiry - elapsed, self._session_expired, session, session.client
                )

    # -- subscriptions --------------------------------------------------------------------------------------

    def subscribe(self, session: Session, record: SubscriptionRecord) -> SubscribeOutcome:
        group, plain = parse_shared(record.topic_filter)
        existed = record.topic_filter in session.subscriptions
        session.subscriptions[record.topic_filter] = record
        self.subscriptions.subscribe(plain, session.key, record, group)
        self.stats.subscriptions = len(self.subscriptions)
        if session.durable:
            self.persistence.subscription_added(session, record)
        return SubscribeOutcome(existed=existed)

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        if session.subscriptions.pop(topic_filter, None) is None:
            return False
        group, plain = parse_shared(topic_filter)
        self.subscriptions.unsubscribe(plain, session.key, group)
        self.stats.subscriptions = len(self.subscriptions)
        if session.durable:
            self.persistence.subscription_removed(session, topic_filter)
        return True

    def retained_for(self, topic_filter: str) -> Iterator[Message]:
        """Unexpired retained messages matching a plain filter; expired ones are removed on the way."""
        now = time.time()
        expired: list[str] = []
        for topic, message in self.retained.match(topic_filter):
            if message.expires_at is not None and now >= message.expires_at:
                expired.append(topic)
            else:
                yield message
        for topic in expired:
            self.retained.delete(topic)
            if self.persistence.enabled:
                self.persistence.retained_removed(topic)
        self.stats.retained = len(self.retained)

    # -- publishing -----------------------------------------------------------------------------------------

    def publish(self, message: Message) -> int:
        """Route one application message to every matching session; return how many got it.

        Overlapping subscriptions of one client yield one delivery at the highest granted QoS, carrying every
        matching subscription identifier [MQTT-3.3.4-2][MQTT-3.3.4-3]. A shared subscription group delivers to
        one member, round-robin [MQTT-4.8.2-4]. No Local subscriptions skip the publisher [MQTT-3.8.3-3].
        """
        stats = self.stats
        stats.messages_received += 1
        if message.qos:  # QoS 0 counts are the totals less these (see broker/stats.py)
            stats.received_by_qos[message.qos] += 1
            stats.received_bytes_by_qos[message.qos] += len(message.payload)
        if message.retain:
            self._retain(message)
        plain, groups = self.subscriptions.match(message.topic)
        if not groups:
            if not plain:
                stats.messages_unrouted += 1
                return 0
            if len(plain) == 1:
                # The common case, one matching subscription: no merging needed.
                client_id, record = plain[0]
                if record.no_local and client_id == message.sender:
                    return 0
                sub_qos = record.qos
                qos = message.qos if message.qos < sub_qos else sub_qos
                retain = message.retain and record.retain_as_published
                sub_ids = () if record.subscription_id is None else (record.subscription_id,)
                if qos == 0:
                    # deliver()'s QoS 0 branch, inlined.
                    connection = self.connections.get(client_id)
                    if connection is not None and not connection.congested:
                        connection.send_message(message, 0, retain, sub_ids, None)
                    elif connection is None:
                        stats.dropped_offline += 1
                    else:
                        stats.dropped_slow += 1
                    return 1
                session = self.sessions.get(client_id)
                if session is None:
                    return 0
                self.deliver(session, message, qos, retain, sub_ids)
                return 1
        sender = message.sender
        # client_id -> [qos, retain_as_published, subscription ids]
        targets: dict[str, list] = {}
        for client_id, record in plain:
            if not (record.no_local and client_id == sender):
                _merge(targets, client_id, record)
        for group in groups:
            self._pick_shared(group, targets)
        sessions = self.sessions
        qos = message.qos
        for client_id, (sub_qos, rap, sub_ids) in targets.items():
            session = sessions.get(client_id)
            if session is not None:
                self.deliver(
                    session,
                    message,
                    qos if qos < sub_qos else sub_qos,
                    message.retain and rap,
                    tuple(sub_ids),
                )
        return len(targets)

    def publish_plain(
        self, topic: str, payload: bytes, wire: bytes, form: tuple[int, str, bool], sender: str, origin: str | None
    ) -> None:
        """`publish` for a plain QoS 0 message (no RETAIN flag, no properties) that arrived as the bytes
        `wire`, in `form` (see MQTTConnection.send_message). When one subscription matches, its client takes
        that form (`plain_form`: same version and tenant, no outgoing topic aliases) and, in v5, it carries
        no subscription identifier to add, that client gets those bytes as they are and no Message is made:
        the case of fan-in, and of most device traffic. Anything else goes through `publish`, which encodes
        per distinct form and keeps the publisher's bytes for the subscribers of its own."""
        plain, groups = self.subscriptions.match(topic)
        if len(plain) == 1 and not groups:
            client_id, record = plain[0]
            connection = self.connections.get(client_id)
            if (
                connection is not None
                and connection.plain_form == form
                and (record.subscription_id is None or form[0] != 5)  # v5 subscription ids need an encoding
            ):
                stats = self.stats
                stats.messages_received += 1
                if record.no_local and client_id == sender:  # [MQTT-3.8.3-3]
                    return
                if connection.congested:
                    stats.dropped_slow += 1
                else:
                    connection.send_plain(wire)
                return
        self.publish(Message(topic, payload, 0, False, EMPTY_PROPERTIES, None, sender, origin, (form, wire)))

    def _pick_shared(self, group: SharedGroup[SubscriptionRecord], targets: dict[str, list]) -> None:
        connections = self.connections
        picked = group.pick(lambda client_id, _record: client_id in connections)
        if picked is None:
            # Nobody online: queue for a persistent member, as if online (sessions keep their queue).
            picked = group.pick()
        if picked is None:
            return
        _merge(targets, *picked)

    def _retain(self, message: Message) -> None:
        """Store or clear the retained message for a topic: an empty payload clears it [MQTT-3.3.1-6]."""
        if message.payload:
            self.retained.set(message.topic, message)
        else:
            self.retained.delete(message.topic)
        self.stats.retained = len(self.retained)
        # $SYS topics are the broker's own, rewritten every interval: not worth a disk write.
        if self.persistence.enabled and not message.topic.startswith("$SYS"):
            if message.payload:
                self.persistence.retained_set(message)
            else:
                self.persistence.retained_removed(message.topic)

    def deliver(self, session: Session, message: Message, qos: int, retain: bool, sub_ids: tuple[int, ...]) -> None:
        """Hand one message to one session: send it now, queue it, or drop it (counted)."""
        connection = self.connections.get(session.key)
        if qos == 0:
            if connection is not None and not connection.congested:
                connection.send_message(message, 0, retain, sub_ids, None)
            elif connection is None:
                self.stats.dropped_offline += 1
            else:
                self.stats.dropped_slow += 1
            return
        delivery = Delivery(message, qos, retain, sub_ids)
        if (
            connection is not None
            and not session.queue
            and len(session.inflight) < connection.inflight_limit
            and not connection.congested
        ):
            self._send_inflight(connection, session, delivery)
        elif len(session.queue) < self.settings.max_queued_messages:
            session.queue.append(delivery)
            if session.durable:
                self.persistence.delivery_changed(session, delivery)
        else:
            # Full: the oldest queued QoS 0 delivery makes room, else this one is dropped (counted).
            self.stats.dropped_queue_full += 1
            if session.make_room(delivery) and session.durable:
                self.persistence.delivery_changed(session, delivery)

    def _send_inflight(self, connection: MQTTConnection, session: Session, delivery: Delivery) -> None:
        packet_id = session.allocate_packet_id()
        delivery.packet_id = packet_id
        session.inflight[packet_id] = delivery
        if session.durable:
            persistence = self.persistence
            persistence.delivery_changed(session, delivery)
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
                and (delivery.qos == 2 or connection.held_sends)
                and persistence.when_durable(partial(self._send_recorded, connection, session, delivery, packet_id))
            ):
                connection.held_sends += 1
                return
        self._transmit(connection, session, delivery, packet_id)

    def _send_recorded(self, connection: MQTTConnection, session: Session, delivery: Delivery, packet_id: int) -> None:
        connection.held_sends -= 1
        if session.inflight.get(packet_id) is delivery and self.connections.get(session.key) is connection:
            self._transmit(connection, session, delivery, packet_id)
        # (Else it was acknowledged meanwhile, or the client left: a reconnect resends what is in flight.)

    def _transmit(self, connection: MQTTConnection, session: Session, delivery: Delivery, packet_id: int) -> None:
        if not connection.send_message(delivery.message, delivery.qos, delivery.retain, delivery.subscription_ids, packet_id):
            # Too large for the client's maximum packet size: discarded as if delivered [MQTT-3.1.2-25].
            del session.inflight[packet_id]
            if session.durable and delivery.store_id:
                self.persistence.delivery_removed(session, delivery)

    def drain(self, connection: MQTTConnection, session: Session) -> None:
        """Move queued deliveries into free in-flight slots, in order [MQTT-4.6.0-6]."""
        queue = session.queue
        inflight = session.inflight
        limit = connection.inflight_limit
        now = time.time()
        while queue and len(inflight) < limit and not connection.congested:
            delivery = queue.popleft()
            if delivery.message.expired(now):
                self.stats.messages_expired += 1
                if session.durable and delivery.store_id:
                    self.persistence.delivery_removed(session, delivery)
                continue  # [MQTT-3.3.2-5]
            if delivery.qos == 0:
                connection.send_message(delivery.message, 0, delivery.retain, delivery.subscription_ids, None)
            else:
                self._send_inflight(connection, session, delivery)

    def publish_will(self, will: Will, client: ClientInfo | None) -> None:
        """Publish a will message, if its client may still publish to its topic (in its tenant's space)."""
        if client is not None and not self.hooks.authorize_publish(client, will.topic):
            log.info("will of %s to %r not authorized; dropped", client.client_id, will.topic)
            return
        properties = will.properties
        expires_at = None
        if properties is not EMPTY_PROPERTIES:
            if properties.message_expiry_interval is not None:
                expires_at = time.time() + properties.message_expiry_interval
            properties = replace(properties, will_delay_interval=None)
        message = Message(
            client.mount + will.topic if client is not None else will.topic,
            will.payload,
            will.qos,
            will.retain,
            properties,
            expires_at,
            client.session_key if client is not None else None,
            client.username if client is not None else None,
        )
        self.publish(message)

    def drop_retained(self, where: Callable[[str, Message], bool]) -> int:
        """Remove the retained messages for which `where(topic, message)` is true."""
        doomed = [topic for topic, message in self.retained.items() if where(topic, message)]
        for topic in doomed:
            self.retained.delete(topic)
            if self.persistence.enabled:
                self.persistence.retained_removed(topic)
        self.stats.retained = len(self.retained)
        return len(doomed)

    def publish_system(self, topic: str, payload: bytes, retain: bool = True) -> None:
        """Publish a broker-originated message ($SYS, the control plane)."""
        self.publish(Message(topic, payload, 0, retain))

    async def shutdown(self) -> None:
        """Close every connection: v5 clients hear DISCONNECT 0x8B; queued bytes get `shutdown_grace`
        seconds to leave, then what is left is aborted."""
        self.closing = True  # Connections accepted from now on are closed as soon as they are made.
        connections = list(self.open_connections)
        # The server closing a connection is not the client's DISCONNECT: wills go out [MQTT-3.1.2-8], and
        # they go first, while every subscriber is still connected to receive them. A will delay cannot
        # outlive the process, so delayed wills are published now too.
        for connection in connections:
            session = connection.session
            if (
                session is not None
                and session.durable
                and connection.will is not None
                and _will_delay(connection.will) > 0
            ):
                continue  # Kept as a pending will in the durable session: its delay goes on after a restart.
            will = connection.take_will()
            if will is not None:
                self.publish_will(will, connection.client)
        for connection in connections:
            connection.close_for_shutdown()
        if connections:
            await asyncio.wait([c.closed for c in connections], timeout=self.settings.shutdown_grace)
            for connection in connections:
                if not connection.closed.done():
                    connection.abort()
        log.info("closed %d connections", len(connections))

    # -- administration -------------------------------------------------------------------------------------

    def revalidate_subscriptions(self, where: Callable[[ClientInfo], bool]) -> int:
        """Ask the hooks again about every subscription of the matching sessions (connected or not) and
        remove those no longer allowed, with the queued deliveries that only they had asked for. Returns
        how many subscriptions were removed. This is how a narrowed ACL stops deliveries at once."""
        removed = 0
        for session in list(self.sessions.values()):
            client = session.client
            if client is None or not where(client):
                continue
            dropped = False
            for internal in list(session.subscriptions):
                if not self.hooks.authorize_subscribe(client, unmount_filter(internal, client.mount)):
                    self.unsubscribe(session, internal)
                    removed += 1
                    dropped = True
            if dropped and session.queue:
                self._prune_queue(session)
        return removed

    def _prune_queue(self, session: Session) -> None:
        filters = [parse_shared(f)[1] for f in session.subscriptions]
        kept: list[Delivery] = []
        for delivery in session.queue:
            if any(topic_matches(f, delivery.message.topic) for f in filters):
                kept.append(delivery)
            elif session.durable and delivery.store_id:
                self.persistence.delivery_removed(session, delivery)
        session.queue.clear()
        session.queue.extend(kept)

    def connected(self) -> Iterable[MQTTConnection]:
        return list(self.connections.values())

    def find_clients(self, predicate: Callable[[ClientInfo], bool]) -> list[ClientInfo]:
        """Clients with a session (connected or not) or a connection, for which `predicate` is true."""
        found = {s.key: s.client for s in self.sessions.values() if s.client is not None and predicate(s.client)}
        for key, connection in self.connections.items():
            if key not in found and connection.client is not None and predicate(connection.client):
                found[key] = connection.client
        return list(found.values())


def _merge(targets: dict[str, list], client_id: str, record: SubscriptionRecord) -> None:
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


def unmount_filter(internal: str, mount: str) -> str:
    """A stored (internal) filter as its client named it: the mount point taken out again."""
    if not mount:
        return internal
    group, plain = parse_shared(internal)
    if plain.startswith(mount):
        plain = plain[len(mount):]
    return plain if group is None else f"$share/{group}/{plain}"


def _will_delay(will: Will) -> int:
    delay = will.properties.will_delay_interval
    return delay or 0
