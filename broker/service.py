"""The narrow service API through which the control plane reaches the broker.

The control plane never touches sessions or connections directly: it kicks clients, publishes messages,
lists who is connected, reads plain snapshots of the broker's state (`snapshot()` for metrics and the
dashboard) and hands WebSocket transports over (`accept`), through these few calls.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.codec import Will
from broker.codec.topics import parse_shared, validate_topic_filter
from broker.connection import MQTTConnection
from broker.core import Broker
from broker.engine import Connection
from broker.events import Event
from broker.history import MetricsHistory, Point, TenantHistory
from broker.hooks import ClientInfo
from broker.limits import check_topic, describe_topic_limit
from broker.persistence import Persistence
from broker.registry import ServerState
from broker.session import Message, Session, SubscriptionRecord
from broker.stats import Stats

if TYPE_CHECKING:
    from broker.inspect import ClientDetail, Page, RetainedItem, Scan, SharedGroupView, SubscriptionView

__all__ = ["BrokerService", "BrokerSnapshot", "ClientSummary", "SessionSnapshot", "Watch", "WatchedMessage"]

_WATCH_IDS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class ClientSummary:
    client_id: str
    username: str | None
    protocol_version: int
    remote_address: str
    listener: str
    connected_at: float
    subscriptions: tuple[str, ...]
    mount: str = ""  # the client's tenant namespace ("" outside any tenant)
    session_key: str = ""  # the broker's key for the client: unique across tenants


@dataclass(frozen=True, slots=True)
class WatchedMessage:
    """A message seen by a `Watch`, its topic as the tenant names it (the mount point taken out)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """One session as the metrics see it."""

    key: str
    connected: bool
    queued: int
    inflight: int
    user_id: object  # the tenant's user id (ClientInfo.attributes["user_id"]), when the hook set one


@dataclass(frozen=True, slots=True)
class BrokerSnapshot:
    """The broker's counters and sizes at one moment, detached from the live objects."""

    started_at: float
    stats: Stats
    retained: int
    sessions: tuple[SessionSnapshot, ...]
    # The durable-state store's counters (commits, rows written, ...); `enabled` False without a store.
    persistence: Persistence
    # Connections that have not finished CONNECT, and the bytes buffered for them (broker/limits.py).
    pending_connections: int = 0
    pending_bytes: int = 0


class _Watcher:
    """A `DeliveryReceiver` inside the process: every message is handed to a callback at QoS 0 (never
    queued, never in flight). It has no `client`, so it is no MQTT client: `clients()`, kicks and ACL
    checks pass it by."""

    client = None
    congested = False
    inflight_limit = 0
    held_sends = 0
    plain_form = None  # takes no PUBLISH bytes as they are: Broker.publish_plain makes it a Message

    def __init__(self, mount: str, callback: Callable[[WatchedMessage], None]) -> None:
        self.mount = mount
        self.callback = callback

    def send_message(self, message: Message, qos: int, retain: bool, sub_ids: tuple[int, ...],
                     packet_id: int | None, dup: bool = False) -> bool:
        topic = message.topic[len(self.mount):] if message.topic.startswith(self.mount) else message.topic
        self.callback(WatchedMessage(topic, message.payload, message.qos, retain))
        return True

    def send_plain(self, data: bytes) -> bool:
        raise AssertionError("a watcher has no plain form")  # plain_form is None: never called

    def taken_over(self) -> Will | None:
        return None  # no client takes over a watcher's key (they start with U+0000)

    def close_for_admin(self) -> None:
        """Nothing to close: `Watch.close()` ends a watcher."""


class Watch:
    """A subscription held by the control plane (the dashboard's live view); `close()` ends it."""

    def __init__(self, broker: Broker, key: str, mount: str = "") -> None:
        self._broker = broker
        self._key = key
        self._mount = mount
        self._open = True

    def close(self) -> None:
        """End the watch (idempotent): its subscription leaves the trie at once."""
        if self._open:
            self._open = False
            self._broker.tenants.subscribed(self._mount, -1)  # counted by BrokerService.watch
        self._broker.connections.pop(self._key, None)
        self._broker.remove_session(self._key)


def _inspect() -> Any:
    """broker/inspect.py, imported at the dashboard console's first look: a broker nobody inspects does not
    hold it."""
    from broker import inspect

    return inspect


class BrokerService:
    def __init__(self, broker: Broker, server: ServerState | None = None,
                 history: MetricsHistory | None = None) -> None:
        self.broker = broker
        # The open connections of the listeners (one is made when none is given: a broker without them).
        self.server = server if server is not None else ServerState(broker)
        # The last hour of figures for the dashboard's charts; `broker.history.run_history` fills it.
        self.history = history if history is not None else MetricsHistory()
        self.tenant_history = TenantHistory(self.history.interval, self.history.span)

    @property
    def closing(self) -> bool:
        """The broker is shutting down (long-lived control-plane streams end)."""
        return self.server.closing

    def accept(self, listener: str) -> asyncio.Protocol:
        """The protocol for one more MQTT connection on a transport the control plane accepted (MQTT over
        WebSocket): the same connection every listener makes, registered with them."""
        return MQTTConnection(self.server, listener)

    def snapshot(self) -> BrokerSnapshot:
        """Counters and session sizes now, for `/metrics` and the dashboard."""
        broker = self.broker
        connected = broker.connections
        sessions = tuple(
            SessionSnapshot(
                key,
                key in connected,
                len(session.queue),
                len(session.inflight),
                session.client.attributes.get("user_id") if session.client is not None else None,
            )
            for key, session in broker.sessions.items()
        )
        preauth = self.server.preauth
        return BrokerSnapshot(broker.started_at, broker.stats.copy(), len(broker.retained), sessions,
                              broker.persistence, len(preauth), preauth.bytes)

    def counters(self) -> dict[str, int]:
        """The broker's plain counters now (see broker/stats.py)."""
        return self.broker.stats.as_dict()

    def is_connected(self, session_key: str) -> bool:
        """Whether a client (or a watch) with this session key is connected now."""
        return session_key in self.broker.connections

    def kick(
        self,
        client_id: str | None = None,
        username: str | None = None,
        where: Callable[[ClientInfo], bool] | None = None,
        mounts: Iterable[str] | None = None,
    ) -> int:
        """Disconnect matching clients at once (v5: DISCONNECT 0x98) and end their sessions, connected or
        not. `client_id` names a client outside any tenant; tenant clients are found by `username` or by
        `where`, a predicate on their `ClientInfo`, among the tenants with these `mounts` when given (only
        their sessions are looked at). Returns how many sessions or connections were ended."""
        broker = self.broker
        targets: set[str] = set()
        if client_id is not None:
            targets.add(client_id)
        if username is not None:
            targets.update(
                c.session_key for c in broker.find_clients(lambda info: info.username == username, mounts)
            )
        if where is not None:
            targets.update(c.session_key for c in broker.find_clients(where, mounts))
        return sum(1 for target in targets if broker.remove_session(target))

    def revalidate_subscriptions(self, where: Callable[[ClientInfo], bool], mounts: Iterable[str] | None = None) -> int:
        """Re-check the subscriptions of matching clients against the hooks; remove what is now denied.
        Cached publish decisions are dropped too, so the next publish is checked against the new rules.
        With `mounts`, only those tenants' sessions are looked at."""
        self.broker.hooks.invalidate()
        return self.broker.revalidate_subscriptions(where, mounts)

    def revalidate_steps(self, where: Callable[[ClientInfo], bool], mounts: Iterable[str] | None,
                         seconds: float) -> Iterator[int]:
        """`revalidate_subscriptions` in slices of `seconds` (see Broker.revalidate_steps): the caller lets
        the loop run between them. Cached publish decisions are dropped at once."""
        self.broker.hooks.invalidate()
        return self.broker.revalidate_steps(where, mounts, seconds)

    def access_changed(self) -> None:
        """The hooks may answer differently now: cached publish and delivery decisions are dropped, so each
        client's next PUBLISH (and each delivery to a partly granted subscription) asks them again. O(1):
        connections notice the new generation at their next PUBLISH."""
        self.broker.hooks.invalidate()

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False, mount: str = "") -> int:
        """Publish as the broker itself, into a tenant's namespace when `mount` is given; returns how many
        sessions it was delivered or queued to."""
        return self.broker.publish(Message(mount + topic, payload, qos, retain))

    def topic_limit_problem(self, topic: str) -> str | None:
        """None if a topic name or filter (as a tenant names it) is within `max_topic_levels` and
        `max_topic_length`, else a sentence naming the limit, for the REST answer (422); counted."""
        settings = self.broker.settings
        limit = check_topic(topic, settings, self.broker.stats, "rest")
        return None if limit is None else describe_topic_limit(limit, topic, settings)

    def drop_retained(self, origin: str) -> int:
        """Remove the retained messages published by clients that authenticated as `origin`."""
        return self.broker.drop_retained(lambda _topic, message: message.origin == origin)

    def drop_retained_where(self, where: Callable[[str, str | None], bool]) -> int:
        """Remove the retained messages for which `where(topic, origin user name)` is true."""
        return self.broker.drop_retained(lambda topic, message: where(topic, message.origin))

    def tenant_messages_sent(self, mount: str) -> int:
        """PUBLISH packets sent so far to the clients of one tenant namespace, connected or gone."""
        return self.server.messages_sent(mount)

    def drop_tenant_retained(self, mount: str) -> int:
        """Remove every retained message in a tenant's namespace."""
        return self.broker.drop_retained(lambda topic, _message: topic.startswith(mount))

    def online_usernames(self) -> set[str]:
        """User names of the clients connected now (a device's status is `online` while it is in here)."""
        return {c.client.username for c in self.broker.connected() if c.client is not None and c.client.username}

    def clients(self) -> list[ClientSummary]:
        result = []
        for connection in self.broker.connected():
            if not isinstance(connection, Connection):
                continue  # a watcher, or another receiver that is no MQTT connection
            client = connection.client
            session = connection.session
            if client is None or session is None:
                continue
            result.append(
                ClientSummary(
                    client_id=client.client_id,
                    username=client.username,
                    protocol_version=client.protocol_version,
                    remote_address=connection.remote_address,
                    listener=connection.listener,
                    connected_at=connection.connected_at,
                    subscriptions=tuple(session.subscriptions),
                    mount=client.mount,
                    session_key=client.session_key,
                )
            )
        return result

    def tenant_usage(self, mount: str) -> tuple[int, int]:
        """(clients connected, subscriptions held) of the tenant with this mount point, live views included
        in the subscriptions: what its plan's max_connections and max_subscriptions bound."""
        tenants = self.broker.tenants
        return tenants.connections(mount), tenants.subscriptions(mount)

    def uptime(self) -> float:
        return self.broker.clock.time() - self.broker.started_at

    def watch(self, mount: str, topic_filter: str, callback: Callable[[WatchedMessage], None],
              *, retained: bool = True) -> Watch:
        """Subscribe the control plane to `topic_filter` inside the namespace `mount`: `callback` gets
        every matching message, synchronously while it is routed, so it must be quick and must not block
        (put it on a bounded queue). Retained messages matching the filter are handed over first.

        The filter is the tenant's own (no mount point, no `$` topics, no shared subscription); a bad one
        raises `ProtocolError`. The watcher is not a client and is never counted as one by `clients()`."""
        validate_topic_filter(topic_filter)
        if parse_shared(topic_filter)[0] is not None or topic_filter.startswith("$"):
            raise ValueError("a watch takes a plain filter inside the namespace, not $ topics or $share")
        broker = self.broker
        # MQTT strings cannot contain U+0000 [MQTT-1.5.4-2], so no client's session key starts with it.
        key = f"\x00watch\x00{next(_WATCH_IDS)}"
        session = Session(key)
        broker.sessions[key] = session
        watcher = _Watcher(mount, callback)
        broker.connections[key] = watcher
        internal = mount + topic_filter
        broker.subscribe(session, SubscriptionRecord(internal, 0))
        # A watch has no client, so the broker does not count it; it is the tenant's subscription all the
        # same (the caller checks the plan's max_subscriptions with tenant_usage first).
        broker.tenants.subscribed(mount, 1)
        if retained:
            for message in list(broker.retained_for(internal)):
                watcher.send_message(message, 0, True, (), None)
        return Watch(broker, key, mount)

    # -- the dashboard's console: read-only pages (broker/inspect.py), events and history -------------------
    # `mount` None is the whole broker (administrators); a tenant's mount narrows every view to it. The
    # large views are scans, done a slice at a time (broker/inspect.py `Scan`).

    def client_page(self, mount: str | None, text: str = "", offset: int = 0, limit: int = 50) -> Scan[ClientDetail]:
        return _inspect().client_page(self.broker, mount, text, offset, limit)

    def subscription_page(self, mount: str | None, text: str = "", offset: int = 0,
                          limit: int = 50) -> Scan[SubscriptionView]:
        return _inspect().subscription_page(self.broker, mount, text, offset, limit)

    def shared_group_page(self, mount: str | None, offset: int = 0, limit: int = 50) -> Scan[SharedGroupView]:
        return _inspect().shared_groups(self.broker, mount, offset, limit)

    def retained_page(self, mount: str | None, topic_filter: str = "#", offset: int = 0,
                      limit: int = 50) -> Page[RetainedItem]:
        return _inspect().retained_page(self.broker, mount, topic_filter, offset, limit)

    def delete_retained(self, mount: str | None, topic_filter: str) -> int:
        """Remove the retained messages matching a filter (a topic name is a filter of itself) inside
        `mount`; returns how many went. Persisted ones are removed from the store too."""
        doomed = set(_inspect().retained_topics(self.broker, mount, topic_filter))
        if not doomed:
            return 0
        return self.broker.drop_retained(lambda topic, _message: topic in doomed)

    def client_counts(self) -> dict[str, int]:
        """Connected MQTT clients by tenant namespace (the control plane's watchers are not clients)."""
        return _inspect().client_counts(self.broker)

    def kick_client(self, session_key: str, reason: str, by: str) -> ClientInfo | None:
        """`kick` for one connected client, with the reason given, written to the event log; returns who
        was kicked (None: no such client is connected)."""
        connection = self.broker.connections.get(session_key)
        if not isinstance(connection, Connection) or connection.client is None:
            return None  # not connected, or a watcher
        client = connection.client
        self.broker.events.kicked(client, connection.remote_address, f"by {by}: {reason}" if reason else f"by {by}")
        self.broker.remove_session(session_key)
        return client

    def events(self) -> list[Event]:
        """The event log, newest first."""
        return list(self.broker.events.newest_first())

    def events_dropped(self) -> int:
        """Events pushed out of the event log since the start (it keeps the last `DEFAULT_EVENTS`)."""
        return self.broker.events.dropped

    def history_points(self, mount: str | None = None) -> list[Point]:
        """The broker's last hour (mount None), or one tenant namespace's."""
        return self.history.points() if mount is None else self.tenant_history.points(mount)
