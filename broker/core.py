"""The broker: sessions, retained messages and wills, independent of any transport.

`Broker` owns the state that connections share: the sessions by client id, the receivers of deliveries by
session key, the subscription trie, the retained store and the counters. A connection's protocol engine
(`broker/engine/`) turns packets into calls here: `attach` after a successful CONNECT, `route` for every
application message (`publish_plain` for a plain QoS 0 one; both in `broker/routing.py`),
`subscribe`/`unsubscribe`, and `detach` when the network connection ends. Nothing here awaits, and
every timer and timestamp comes from the injected `Clock`.

The broker knows no connection class: what it calls on a connected client is `DeliveryReceiver`
(`broker/receivers.py`); open network connections and the shutdown sequence belong to the listeners
(`broker/listeners.py`, `ServerState`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from broker.ack_holds import AckHolds
from broker.clock import Clock, LoopClock
from broker.codec import EMPTY_PROPERTIES, Will
from broker.codec.topics import parse_shared
from broker.events import EventLog
from broker.hooks import ClientInfo, Grant, HookChain
from broker.limits import will_refusal
from broker.persistence import Persistence
from broker.qos import QosFlows
from broker.receivers import DeliveryReceiver
from broker.retained import RetainedStore
from broker.routing import Routing
from broker.session import NEVER_EXPIRES, Delivery, Message, Session, SubscriptionRecord
from broker.settings import BrokerSettings
from broker.stats import Stats
from broker.tenants import CLIENT_SUBSCRIPTIONS, TENANT_CONNECTIONS, TENANT_SUBSCRIPTIONS, TenantIndex
from broker.topic_match import topic_matches
from broker.topic_tree import SubscriptionTree

__all__ = ["Broker", "Broken", "SubscribeOutcome"]

# Told of a stored record (kind "session" or "retained", its key) that raised while being restored.
Broken = Callable[[str, str, Exception], None]

log = logging.getLogger("roost.broker")


@dataclass(frozen=True, slots=True)
class SubscribeOutcome:
    """What adding one subscription did: whether it replaced one, for retain handling 1 [MQTT-3.3.1-10]."""

    existed: bool


class Broker(Routing):
    """Shared broker state; the routing of application messages is `Routing`'s half."""

    def __init__(
        self,
        settings: BrokerSettings,
        hooks: HookChain,
        persistence: Persistence | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.hooks = hooks
        self.clock: Clock = clock if clock is not None else LoopClock()
        # Where durable sessions and retained messages are written (storage/broker_state.py); the base
        # class records nothing. The composition root may swap it in later (see `persistence`).
        self._persistence = persistence if persistence is not None else Persistence()
        self.flows = QosFlows(lambda: self._persistence)
        self.sessions: dict[str, Session] = {}
        # Who receives a session's deliveries now: its connection, or a control-plane watcher.
        self.connections: dict[str, DeliveryReceiver] = {}
        self.subscriptions: SubscriptionTree[SubscriptionRecord] = SubscriptionTree()
        self.retained: RetainedStore[Message] = RetainedStore(self.clock.time)
        self.stats = Stats()
        # Receivers that hold a publisher's acknowledgement until they have the message on disk (bridges).
        self.ack_holds = AckHolds()
        # This Roost's ID on the path of bridged messages (user property roost-via), set when bridges start
        # (bridge/manager.py); a PUBLISH carrying it looped back and is not routed (broker/engine/admission.py).
        self.via: str | None = None
        # Sessions, connections and subscriptions per tenant mount: limits and access changes cost what
        # they touch (broker/tenants.py).
        self.tenants = TenantIndex()
        # The connection events the engine reports, for the dashboard's Events page (broker/events.py).
        self.events = EventLog(wall=self.clock.time)
        self.started_at = self.clock.time()

    @property
    def persistence(self) -> Persistence:  # type: ignore[override]
        return self._persistence

    @persistence.setter
    def persistence(self, persistence: Persistence) -> None:
        self._persistence = persistence

    # -- sessions -------------------------------------------------------------------------------------------

    def attach(
        self, connection: DeliveryReceiver, client: ClientInfo, clean_start: bool, expiry: int, will: Will | None
    ) -> tuple[Session, bool]:
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
            self.tenants.connected(client.mount, -1)
            old_will = old_connection.taken_over()
            # The old connection ended without DISCONNECT: its will goes now, unless it has a delay and the
            # session continues, in which case the new connection cancels it [MQTT-3.1.3-9].
            if old_will is not None and (clean_start or will_delay(old_will) == 0):
                self.publish_will(old_will, old_connection.client)
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
            self.tenants.add_session(client.mount, key)
        session.expiry_interval = expiry
        session.client = client
        session.disconnected_at = None
        self.connections[key] = connection
        self._persist_attached(session, will)
        # Counted here and in detach, not as len(connections): the control plane's internal watchers
        # (BrokerService.watch) sit in that dict too and are not clients.
        self.stats.clients_connected += 1
        self.tenants.connected(client.mount, 1)
        return session, present

    def _persist_attached(self, session: Session, will: Will | None) -> None:
        """Write the session as it is now connected, if it outlives its connection: with its will, so
        that a crash does not lose the will (see `restore`)."""
        persistence = self._persistence
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

    def detach(self, connection: DeliveryReceiver, session: Session, will: Will | None) -> None:
        """The connection ended. Publish or schedule its will, and end or keep the session."""
        key = session.key
        mount = _mount(session)
        if self.connections.get(key) is connection:
            del self.connections[key]
            self.stats.clients_connected -= 1
            self.tenants.connected(mount, -1)
        if self.sessions.get(key) is not session:
            return  # Already replaced (clean-start takeover) or removed (kicked).
        session.disconnected_at = self.clock.time()
        session.armed_will = None
        expiry = session.expiry_interval
        if will is not None:
            delay = will_delay(will)
            if delay == 0 or expiry == 0:
                self.publish_will(will, connection.client)
            else:
                session.pending_will = will
                session.will_timer = self.clock.call_later(
                    min(delay, expiry), self._will_delay_elapsed, session, connection.client
                )
        if expiry == 0:
            self._discard_session(session, mount)
            return
        if expiry != NEVER_EXPIRES:
            session.expiry_timer = self.clock.call_later(expiry, self._session_expired, session, connection.client)
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

    def _discard_session(self, session: Session, mount: str | None = None) -> None:
        """Remove the session and its subscriptions; `mount` is its tenant's (`_mount(session)`), when
        the caller has it already."""
        if mount is None:
            mount = _mount(session)
        subscriptions = session.subscriptions
        for record in subscriptions.values():
            group, plain = parse_shared(record.topic_filter)
            self.subscriptions.unsubscribe(plain, session.key, group)
        if session.durable:
            session.durable = False
            self.persistence.session_removed(session)
        if subscriptions:
            self.tenants.subscribed(mount, -len(subscriptions))
            subscriptions.clear()
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
            self.tenants.remove_session(mount, session.key)

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

    def restore(self, sessions: Iterable[Session], retained: Iterable[Message], broken: Broken | None = None) -> None:
        """Take back what a store kept from the last run, before any client connects; then the caller may
        remove what is no longer allowed (revoked credentials) and calls `resume_timers()`.

        Every restored session is disconnected; `disconnected_at` is when its connection ended (a store
        sets the restart time for a session whose client was connected when the process died, and turns
        the will of that connection into a pending will: the connection ended without DISCONNECT
        [MQTT-3.1.2-8]).

        A session or retained message that raises while it is put back is left out, logged, and handed to
        `broken(kind, key, exception)` (the store moves it aside): stored state never stops a start.
        """
        now = self.clock.time()
        for message in retained:
            try:
                if message.expired(now):
                    self.persistence.retained_removed(message.topic)
                else:
                    self.retained.set(message.topic, message)
            except Exception as exc:
                with contextlib.suppress(Exception):  # it may be half in
                    self.retained.delete(message.topic)
                self._broken(broken, "retained", message.topic, exc)
        restored = 0
        for session in sessions:
            try:
                self.sessions[session.key] = session
                for record in session.subscriptions.values():
                    if session.client is not None:
                        # Not stored: whether the ACL grants the filter whole or in part, asked again now.
                        grant = self.hooks.authorize_subscribe(
                            session.client, unmount_filter(record.topic_filter, session.client.mount)
                        )
                        record.partial = grant is Grant.PARTIAL
                    group, plain = parse_shared(record.topic_filter)
                    self.subscriptions.subscribe(plain, session.key, record, group)
            except Exception as exc:
                self._forget(session)
                self._broken(broken, "session", session.key, exc)
                continue
            restored += 1
            self.tenants.add_session(_mount(session), session.key)
            self.tenants.subscribed(_mount(session), len(session.subscriptions))
        self.stats.subscriptions = len(self.subscriptions)
        self.stats.retained = len(self.retained)
        if restored or len(self.retained):
            log.info("restored %d sessions and %d retained messages", restored, len(self.retained))

    def resume_timers(self, broken: Broken | None = None) -> None:
        """Start the clocks of the restored sessions: session expiry and will delays count from the moment
        their connection ended, time spent down included [MQTT-3.1.2-23]. What ran out meanwhile happens
        now, after every session is in place, so that a will published now reaches restored subscribers.
        A session whose will or expiry raises now is removed and handed to `broken` (see `restore`)."""
        now = self.clock.time()
        for session in list(self.sessions.values()):
            if session.key in self.connections or session.disconnected_at is None:
                continue
            if session.will_timer is not None or session.expiry_timer is not None:
                continue
            try:
                self._resume(session, now)
            except Exception as exc:
                self._cancel_timers(session, publish_pending_will=False)
                self._forget(session)
                self._broken(broken, "session", session.key, exc)

    def _forget(self, session: Session) -> None:
        """Take a restored session out again without a word to the store (it moves the rows aside)."""
        for record in session.subscriptions.values():
            group, plain = parse_shared(record.topic_filter)
            try:
                self.subscriptions.unsubscribe(plain, session.key, group)
            except Exception:  # a filter the trie could not take in is not in it
                log.debug("could not unsubscribe %r of %r", record.topic_filter, session.key)
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
            mount = _mount(session)
            if session.key in self.tenants.session_keys(mount):
                self.tenants.remove_session(mount, session.key)
                self.tenants.subscribed(mount, -len(session.subscriptions))
        self.stats.subscriptions = len(self.subscriptions)

    @staticmethod
    def _broken(broken: Broken | None, kind: str, key: str, exc: Exception) -> None:
        log.error("could not restore the stored %s %r: %s: %s; skipped", kind, key, type(exc).__name__, exc)
        if broken is not None:
            broken(kind, key, exc)

    def _resume(self, session: Session, now: float) -> None:
        """One restored session's clocks (see `resume_timers`)."""
        assert session.disconnected_at is not None
        elapsed = max(0.0, now - session.disconnected_at)
        expiry = session.expiry_interval
        will = session.pending_will
        if will is not None:
            due = min(will_delay(will), expiry) - elapsed
            if due > 0:
                session.will_timer = self.clock.call_later(due, self._will_delay_elapsed, session, session.client)
            else:
                self._will_delay_elapsed(session, session.client)
        if expiry == NEVER_EXPIRES:
            return
        if elapsed >= expiry:
            self._session_expired(session, session.client)
        else:
            session.expiry_timer = self.clock.call_later(
                expiry - elapsed, self._session_expired, session, session.client
            )

    # -- subscriptions --------------------------------------------------------------------------------------

    def subscribe(self, session: Session, record: SubscriptionRecord) -> SubscribeOutcome:
        group, plain = parse_shared(record.topic_filter)
        existed = record.topic_filter in session.subscriptions
        if not existed:
            self.tenants.subscribed(_mount(session), 1)
        session.subscriptions[record.topic_filter] = record
        self.subscriptions.subscribe(plain, session.key, record, group)
        self.stats.subscriptions = len(self.subscriptions)
        if session.durable:
            self.persistence.subscription_added(session, record)
        return SubscribeOutcome(existed=existed)

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        if session.subscriptions.pop(topic_filter, None) is None:
            return False
        self.tenants.subscribed(_mount(session), -1)
        group, plain = parse_shared(topic_filter)
        self.subscriptions.unsubscribe(plain, session.key, group)
        self.stats.subscriptions = len(self.subscriptions)
        if session.durable:
            self.persistence.subscription_removed(session, topic_filter)
        return True

    def subscription_limit(self, session: Session, internal_filter: str) -> str | None:
        """The limit one more subscription of `session` would go over (counted in `Stats.limit_hits`), or
        None. O(1): the session's own count and its tenant's (broker/tenants.py). A filter the session
        already holds replaces its subscription and is never refused."""
        if internal_filter in session.subscriptions:
            return None
        per_client = self.settings.max_subscriptions_per_client
        if per_client and len(session.subscriptions) >= per_client:
            return self._limit_hit(CLIENT_SUBSCRIPTIONS)
        client = session.client
        if client is not None and client.mount:
            limit = self.hooks.tenant_limits(client).max_subscriptions
            if limit and self.tenants.subscriptions(client.mount) >= limit:
                return self._limit_hit(TENANT_SUBSCRIPTIONS)
        return None

    def connection_limit(self, client: ClientInfo) -> str | None:
        """The limit a new connection of `client` would go over (its tenant's connections), or None. A
        connection that takes over one with the same client id adds none."""
        if not client.mount:
            return None
        limit = self.hooks.tenant_limits(client).max_connections
        if limit and self.tenants.connections(client.mount) >= limit and client.session_key not in self.connections:
            # Refused with CONNACK 0x97 Quota exceeded (v5) or 3 Server unavailable (3.1.1, v3_connack_code).
            log.info("refused %s (user %r): the tenant has %d clients connected, its limit", client.client_id,
                     client.username, limit)
            return self._limit_hit(TENANT_CONNECTIONS)
        return None

    def _limit_hit(self, limit: str) -> str:
        self.stats.limit_hits[limit] += 1
        return limit

    def retained_for(self, topic_filter: str) -> Iterator[Message]:
        """Unexpired retained messages matching a plain filter; expired ones are removed on the way."""
        now = self.clock.time()
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

    def publish_will(self, will: Will, client: ClientInfo | None) -> None:
        """Publish a will message as its client's PUBLISH would be: only to a topic it may still publish
        to (no `$` topic, inside its tenant's space, within the topic limits), and counted against its
        quota by the publish hook (over it, 0x97, the will is dropped). Checked now, not only at CONNECT:
        access and quota change while a will waits (and a restored will may predate today's limits).
        Every will dropped is counted (`stats.wills_dropped` and the drop reasons)."""
        if client is not None:
            reason = will_refusal(will, client, self.settings, self.stats, self.hooks)
            if reason is not None:
                self.stats.wills_dropped[reason] += 1
                if reason == "quota":
                    self.stats.dropped_quota += 1
                else:
                    self.stats.dropped_acl += 1
                log.info("will of %s to %r dropped (%s)", client.client_id, will.topic[:200], reason)
                return
        properties = will.properties
        expires_at = None
        if properties is not EMPTY_PROPERTIES:
            if properties.message_expiry_interval is not None:
                expires_at = self.clock.time() + properties.message_expiry_interval
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

    # -- administration -------------------------------------------------------------------------------------

    def revalidate_subscriptions(self, where: Callable[[ClientInfo], bool], mounts: Iterable[str] | None = None) -> int:
        """Ask the hooks again about every subscription of the matching sessions (connected or not) and
        remove those no longer allowed, with the queued deliveries that only they had asked for. Returns
        how many subscriptions were removed. This is how a narrowed ACL stops deliveries at once.
        `mounts` limits the work to those tenants' sessions (None: every session)."""
        return sum(self.revalidate_steps(where, mounts, seconds=0))

    def revalidate_steps(
        self, where: Callable[[ClientInfo], bool], mounts: Iterable[str] | None = None, seconds: float = 0.002,
        timer: Callable[[], float] = time.perf_counter,
    ) -> Iterator[int]:
        """`revalidate_subscriptions` in time slices: once a slice has run `seconds` (0: never) it yields
        how many it removed since the last yield, so that a caller may let the loop run between slices
        (LiveAccess does: 400,000 subscriptions must not stall anyone, their own tenant's clients
        included). Slices are timed rather than counted: what a check costs depends on the rules, and a
        busy machine stretches them. Sessions that end or change between slices are taken as they are then."""
        removed = 0
        until = timer() + seconds
        for session in self.tenant_sessions(mounts):
            client = session.client
            if client is None or not where(client):
                continue
            dropped = False
            for internal, record in list(session.subscriptions.items()):
                if self.sessions.get(session.key) is not session:
                    break  # ended (kicked, expired) during an earlier slice
                if session.subscriptions.get(internal) is record:
                    grant = self.hooks.authorize_subscribe(client, unmount_filter(internal, client.mount))
                    if not grant:
                        self.unsubscribe(session, internal)
                        removed += 1
                        dropped = True
                    else:
                        # Narrowed to a part: from now on each message is checked at delivery.
                        record.partial = grant is Grant.PARTIAL
                if seconds and timer() >= until:
                    yield removed
                    removed = 0
                    until = timer() + seconds
            if dropped and session.queue:
                self._prune_queue(session)
        yield removed

    def tenant_sessions(self, mounts: Iterable[str] | None = None) -> list[Session]:
        """The sessions (connected or not) of the tenants with these mount points; every session with None.
        Found through the tenant index: the cost follows those tenants' sessions, not the broker's."""
        if mounts is None:
            return list(self.sessions.values())
        sessions = self.sessions
        found = []
        for mount in mounts:
            for key in self.tenants.session_keys(mount):
                session = sessions.get(key)
                if session is not None:
                    found.append(session)
        return found

    def _prune_queue(self, session: Session) -> None:
        filters = [parse_shared(f)[1] for f in session.subscriptions]
        kept: list[Delivery] = []
        dropped: list[Delivery] = []
        for delivery in session.queue:
            matching = any(topic_matches(f, delivery.message.topic) for f in filters)
            (kept if matching else dropped).append(delivery)
        session.queue.clear()
        session.queue.extend(kept)
        for delivery in dropped:
            self.flows.discarded(session, delivery)

    def connected(self) -> list[DeliveryReceiver]:
        return list(self.connections.values())

    def find_clients(
        self, predicate: Callable[[ClientInfo], bool], mounts: Iterable[str] | None = None
    ) -> list[ClientInfo]:
        """Clients with a session (connected or not) or a connection, for which `predicate` is true; with
        `mounts`, only those tenants' (every connected tenant client has a session, so their sessions
        are enough)."""
        sessions = self.tenant_sessions(mounts)
        found = {s.key: s.client for s in sessions if s.client is not None and predicate(s.client)}
        if mounts is not None:
            return list(found.values())  # type: ignore[arg-type]
        for key, connection in self.connections.items():
            if key not in found and connection.client is not None and predicate(connection.client):
                found[key] = connection.client
        return list(found.values())


def _mount(session: Session) -> str:
    """The tenant mount a session belongs to ("" outside any tenant, and for the control plane's watchers)."""
    client = session.client
    return client.mount if client is not None else ""


def unmount_filter(internal: str, mount: str) -> str:
    """A stored (internal) filter as its client named it: the mount point taken out again."""
    if not mount:
        return internal
    group, plain = parse_shared(internal)
    if plain.startswith(mount):
        plain = plain[len(mount):]
    return plain if group is None else f"$share/{group}/{plain}"


def will_delay(will: Will) -> int:
    delay = will.properties.will_delay_interval
    return delay or 0
