"""One bridge: local messages up through a durable outbox, upstream commands down, over one link.

    local publisher -> Broker.route -> _Receiver.send_message -> Bridge._forward -> Outbox (disk)
                          (PUBACK held until the outbox commit: broker/ack_holds.py)     |
                                                                  Bridge._pump -> link.send -> upstream
    upstream -> link -> Bridge.command -> Broker.publish (the local namespace, sender = the bridge)

The receiver is a `DeliveryReceiver` in the router (as the control plane's watchers are): one session whose
subscriptions are the `forward` filters inside the bridged namespace, at QoS 0 with No Local and Retain As
Published, so the router hands it every matching message synchronously, with the message's own QoS and
retain flag, and never queues for it. What the bridge publishes locally carries its session key as
sender, so No Local [MQTT-3.8.3-3] keeps a command that came down from going back up.

QoS 1/2 go through the outbox (storage/outbox.py) and leave it only when the upstream acknowledged them.
QoS 0 goes at once while the link is up, and waits in a bounded queue in memory while it is down (the
oldest dropped first, counted). Caps: the outbox's (messages, bytes, age); with `policy = "refuse"`
`RefuseWhenFull` answers new QoS 1/2 PUBLISH packets with 0x97 (Quota exceeded) while it is full, so
publishers back off; with "drop_oldest" the oldest messages not in flight make room (counted).

The link is retried with exponential backoff and full jitter (`reconnect_min` doubling up to
`reconnect_max`, a random delay in the upper half), reset once a link has stayed up for 10 s. A backlog
that waited when the link came up drains at `drain_rate` messages per second (a token bucket), so a long
outage does not take the gateway's loop and uplink from its live traffic (QoS 0 goes at once, and the
local broker keeps its loop); QoS 1/2 messages keep their order, new ones after the backlog.

Loops between separate bridges (A bridges sensors/# to B, B bridges sensors/# to A), which No Local cannot
see (two sessions): every message a bridge forwards carries the user property `roost-via: ID` (this
Roost's ID, `via`; added once, so a message keeps the path of the Roosts it passed through), and a Roost
does not take back a message naming it: the broker acknowledges such a PUBLISH and does not route it
(broker/engine/admission.py), and a command that comes down naming it is acknowledged and not published
(`looped`). Only MQTT 5 carries properties: over a 3.1.1 hop the path is lost (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bridge.config import BridgeConfig
from bridge.errors import LinkError
from bridge.link import Command, UpstreamLink
from bridge.mqtt_link import MQTTLink
from broker.codec import EMPTY_PROPERTIES, Properties, Will
from broker.codec.topics import validate_topic_name
from broker.core import Broker
from broker.engine.admission import VIA
from broker.errors import ProtocolError
from broker.hooks import ClientInfo, Hook
from broker.session import Message, Session, SubscriptionRecord
from broker.topic_match import topic_matches
from storage.outbox import Outbox, OutboxEntry, open_outbox

__all__ = ["Bridge", "BridgeCounters", "RefuseWhenFull", "link_for"]

log = logging.getLogger("roost.bridge")

_STABLE_AFTER = 10.0  # a link up this long resets the backoff


@dataclass(slots=True)
class BridgeCounters:
    """What a bridge has done since Roost started (REST, /metrics); the outbox counts what it dropped."""

    queued: int = 0  # QoS 1/2 messages taken into the outbox
    sent: int = 0  # QoS 1/2 PUBLISH (or PUBREL) packets sent, resends included
    resent: int = 0  # of those, sent again: DUP set, after a lost link or a restart
    acknowledged: int = 0  # PUBACK / PUBCOMP received: the message left the outbox
    rejected: int = 0  # of those, with a failure reason code (v5): the upstream would not take it
    refused: int = 0  # refused locally while the outbox was full (policy refuse)
    qos0_sent: int = 0
    qos0_dropped: int = 0  # the link was down and the in-memory queue full, or the link congested
    commands: int = 0  # messages brought down and published locally
    looped: int = 0  # brought down naming this Roost in roost-via (it passed through here): not published


class _Receiver:
    """The bridge's `broker.receivers.DeliveryReceiver` (as `BrokerService.watch`'s watcher is): every
    matching message is handed over synchronously at QoS 0, never queued or in flight, so the router needs
    nothing special for it. It has no `client`, so it is no MQTT client: listings, kicks and ACL checks
    pass it by. A QoS 1/2 message it takes into the outbox holds its publisher's acknowledgement until the
    commit (`Broker.ack_holds`, broker/ack_holds.py)."""

    client = None
    congested = False  # never: QoS 0 that cannot go up waits in the bridge's own bounded queue
    inflight_limit = 0  # never used: its subscriptions are QoS 0, so nothing is ever in flight to it
    held_sends = 0
    plain_form = None  # takes no PUBLISH bytes as they are: Broker.publish_plain makes it a Message

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def send_message(self, message: Message, qos: int, retain: bool, sub_ids: tuple[int, ...],
                     packet_id: int | None, dup: bool = False) -> bool:
        self.bridge._forward(message, retain)
        return True

    def send_plain(self, data: bytes) -> bool:
        raise AssertionError("a bridge has no plain form")  # plain_form is None: never called

    def taken_over(self) -> Will | None:
        return None  # no client takes over a bridge's key (it starts with U+0000)

    def close_for_admin(self) -> None:
        """Nothing to close: the bridge ends with Roost."""


class Bridge:
    """One configured bridge. `start()` once the broker exists, `stop()` before it shuts down."""

    def __init__(self, config: BridgeConfig, link: UpstreamLink | None = None) -> None:
        self.config = config
        self.broker: Broker = None  # type: ignore[assignment]  # given to start()
        self.link: UpstreamLink = link if link is not None else link_for(config)
        self.key = f"\x00bridge\x00{config.name}"  # no client's session key contains U+0000 [MQTT-1.5.4-2]
        self.mount = ""
        self.origin: str | None = None
        self.via: str | None = None  # this Roost's ID on forwarded messages' path (set by bridge/manager.py)
        self._via_only = EMPTY_PROPERTIES  # the properties of a forwarded message that had none
        self.outbox: Outbox | None = None
        # State a user sees (REST, /metrics).
        self.connected = False
        self.state = "stopped"  # stopped, connecting, connected, backoff
        self.connected_since: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.session_present = False
        self.connects = 0
        self.counters = BridgeCounters()
        self._qos0: deque[tuple[str, bytes, bool, Properties]] = deque()
        self._tasks: list[asyncio.Task[None]] = []
        self._tokens = 0.0
        self._tokens_at = 0.0
        self._pump_timer: asyncio.TimerHandle | None = None
        self._stopping = False
        self._pumping = False
        self._backlog_upto = 0  # outbox messages up to here were waiting when the link came up (paced)

    # -- lifecycle --------------------------------------------------------------------------------------------

    async def start(self, broker: Broker, data_dir: Path, mount: str, origin: str | None,
                    via: str | None = None) -> None:
        """Open the outbox, join the router, and start the link (which connects in the background)."""
        config = self.config
        self.broker = broker
        self.mount, self.origin = mount, origin
        # NATS bridges mark what they forward with their own Roost-Origin header instead (bridge/nats_link.py).
        self.via = via if config.nats is None else None
        if self.via is not None:
            self._via_only = Properties(user_properties=((VIA, self.via),))
        outbox = self.outbox = await open_outbox(
            data_dir, config.name, max_messages=config.max_messages, max_bytes=config.max_bytes,
            max_age=config.max_age, commit_interval=config.commit_interval,
        )
        outbox.on_ready = self._pump
        self.link.on_writable = self._pump
        session = Session(self.key)
        broker.sessions[self.key] = session
        broker.connections[self.key] = _Receiver(self)
        for topic_filter in config.forward:
            broker.subscribe(session, SubscriptionRecord(mount + topic_filter, 0, no_local=True, retain_as_published=True))
        self._tasks.append(asyncio.create_task(outbox.run(), name=f"bridge-{config.name}-outbox"))
        self._tasks.append(asyncio.create_task(self._run_link(), name=f"bridge-{config.name}-link"))
        if outbox.count:
            log.info("bridge %s: %d messages waiting in the outbox from the last run", config.name, outbox.count)

    async def stop(self) -> None:
        """Leave the router, close the link politely (the upstream keeps the session), write the outbox."""
        self._stopping = True
        broker = self.broker
        if broker is not None:
            broker.connections.pop(self.key, None)
            broker.remove_session(self.key)
        if self._pump_timer is not None:
            self._pump_timer.cancel()
        self.link.close("Roost is stopping")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.outbox is not None:
            await self.outbox.close()
        self.state = "stopped"
        self.connected = False

    async def _run_link(self) -> None:
        attempt = 0
        while not self._stopping:
            self.state = "connecting"
            try:
                self.session_present = await self.link.connect(self)
            except LinkError as exc:
                self._failed(str(exc))
                attempt += 1
                await self._back_off(attempt)
                continue
            up_at = time.monotonic()
            self.connects += 1
            self.connected, self.state, self.connected_since = True, "connected", time.time()
            log.info("bridge %s: connected to %s (session %s)", self.config.name, self.config.safe_url,
                     "resumed" if self.session_present else "new")
            assert self.outbox is not None
            # What waited when the link came up is the backlog, drained at drain_rate; what comes after is
            # live traffic, sent as fast as the link takes it.
            self._backlog_upto = self.outbox.last_seq
            self._pump()
            reason = await self.link.closed()
            self.connected, self.connected_since = False, None
            assert self.outbox is not None
            self.outbox.put_back()
            if self._stopping:
                return
            self._failed(reason)
            attempt = 1 if time.monotonic() - up_at >= _STABLE_AFTER else attempt + 1
            await self._back_off(attempt)

    def _failed(self, reason: str) -> None:
        self.last_error, self.last_error_at = reason, time.time()
        log.warning("bridge %s: %s", self.config.name, reason)

    async def _back_off(self, attempt: int) -> None:
        """Exponential backoff with jitter: a random delay in the upper half of min * 2^(attempt-1), capped."""
        self.state = "backoff"
        ceiling = min(self.config.reconnect_max, self.config.reconnect_min * 2 ** min(attempt - 1, 30))
        await asyncio.sleep(random.uniform(ceiling / 2, ceiling))

    # -- local -> upstream ------------------------------------------------------------------------------------

    def _forward(self, message: Message, retain: bool) -> None:
        """A local message matched a forward filter (called by the router, synchronously)."""
        if message.sender == self.key:
            return  # came down through this bridge (No Local covers it; a second guard costs nothing)
        topic = message.topic[len(self.mount):]
        qos = min(message.qos, self.config.qos)
        properties = self._with_via(message.properties)
        if qos == 0:
            self._forward_qos0(topic, message.payload, retain, properties)
            return
        outbox = self.outbox
        assert outbox is not None
        if self.config.policy == "refuse" and outbox.full:
            # A client's PUBLISH was answered 0x97 by RefuseWhenFull before it got here; this is a will or
            # a message from the control plane, with no one to tell.
            self.counters.refused += 1
            return
        outbox.add(topic, message.payload, qos, retain, _hop_properties(properties), message.expires_at)
        self.counters.queued += 1
        self.broker.ack_holds.hold(outbox.when_committed)
        # The sender takes it after its commit (Outbox.on_ready -> _pump).

    def _with_via(self, properties: Properties) -> Properties:
        """`properties` with `roost-via: ID` added (once), so the upstreams know it passed through here."""
        via = self.via
        if via is None:
            return properties
        if properties is EMPTY_PROPERTIES:
            return self._via_only
        mark = (VIA, via)
        if mark in properties.user_properties:
            return properties
        return replace(properties, user_properties=(*properties.user_properties, mark))

    def _forward_qos0(self, topic: str, payload: bytes, retain: bool, properties: Properties) -> None:
        if self.connected and not self._qos0 and self.link.send_qos0(topic, payload, retain, properties):
            self.counters.qos0_sent += 1
            return
        queue = self._qos0
        if self.config.qos0_queue == 0:
            self.counters.qos0_dropped += 1
            return
        if len(queue) >= self.config.qos0_queue:
            queue.popleft()
            self.counters.qos0_dropped += 1
        queue.append((topic, payload, retain, properties))

    def _pump(self) -> None:
        """Send what the link has room for: the QoS 0 queue, then outbox messages in order, the backlog
        paced by `drain_rate`."""
        if not self.connected or self._stopping or self._pumping:
            return  # (an acknowledgement during a send: the running loop goes on, no recursion)
        self._pumping = True
        try:
            self._pump_now()
        finally:
            self._pumping = False

    def _pump_now(self) -> None:
        link, outbox = self.link, self.outbox
        assert outbox is not None
        queue = self._qos0
        while queue:
            topic, payload, retain, properties = queue[0]
            if not link.send_qos0(topic, payload, retain, properties):
                break
            queue.popleft()
            self.counters.qos0_sent += 1
        rate = self.config.drain_rate
        while link.up and outbox.in_flight < link.window and not link.congested:
            next_seq = outbox.next_seq()
            if rate and next_seq is not None and next_seq <= self._backlog_upto and not self._take_token(rate):
                break
            entry = outbox.take()
            if entry is None:
                break
            self.counters.sent += 1
            if entry.dup:
                self.counters.resent += 1
            link.send(entry)

    def _take_token(self, rate: float) -> bool:
        now = time.monotonic()
        burst = max(1.0, min(rate, float(self.link.window)))
        self._tokens = min(burst, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        if self._pump_timer is None:
            def again() -> None:
                self._pump_timer = None
                self._pump()
            self._pump_timer = asyncio.get_running_loop().call_later((1.0 - self._tokens) / rate, again)
        return False

    # -- LinkHandler ------------------------------------------------------------------------------------------

    def acked(self, entry: OutboxEntry, refused: int) -> None:
        assert self.outbox is not None
        self.outbox.acked(entry)
        self.counters.acknowledged += 1
        if refused:
            self.counters.rejected += 1
            log.warning("bridge %s: the upstream refused %r (0x%02X); dropped", self.config.name, entry.topic, refused)
        self._pump()

    def received(self, entry: OutboxEntry) -> None:
        assert self.outbox is not None
        link = self.link
        self.outbox.release(entry, lambda: link.release(entry))

    def command(self, command: Command, done: Callable[[], None]) -> bool:
        """Publish a message that came down into the local namespace, the prefix already off."""
        outbox = self.outbox
        assert outbox is not None
        topic = command.topic
        try:
            validate_topic_name(topic)
        except ProtocolError:
            return False
        if topic.startswith("$") or "\x00" in topic:
            return False
        properties = command.properties
        if self.via is not None and properties is not EMPTY_PROPERTIES and (VIA, self.via) in properties.user_properties:
            self.counters.looped += 1  # it passed through this Roost already: acknowledged, not published
            return False
        if command.ref is not None and outbox.inbound_has(command.ref):
            done()  # published before a restart of Roost; its PUBREL has not come yet [MQTT-4.3.3-9]
            return True
        expires_at = None
        if properties is not EMPTY_PROPERTIES:
            if properties.message_expiry_interval is not None:
                expires_at = time.time() + properties.message_expiry_interval
            properties = _hop_properties(properties)
        qos = min(command.qos, self.config.qos)
        self.broker.publish(Message(self.mount + topic, command.payload, qos, command.retain, properties, expires_at,
                                    self.key, self.origin))
        self.counters.commands += 1
        if command.ref is not None:
            outbox.inbound_add(command.ref, done)
        elif command.qos and self.broker.persistence.when_durable(done):
            pass  # strict durability: acknowledged once the local sessions holding it are on disk
        elif command.qos:
            done()
        return True

    def command_done(self, ref: int) -> None:
        assert self.outbox is not None
        self.outbox.inbound_done(ref)

    # -- what a user sees -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The bridge's state for REST and the dashboard (plain values)."""
        outbox = self.outbox
        oldest = outbox.oldest_enqueued() if outbox is not None else None
        return {
            "name": self.config.name,
            "url": self.config.safe_url,
            "protocol": "nats" if self.config.nats is not None else "5" if self.config.protocol == 5 else "3.1.1",
            "user": self.config.user,
            "forward": list(self.config.forward),
            "subscribe": list(self.config.subscribe),
            "remote_prefix": self.config.remote_prefix,
            "state": self.state,
            "connected": self.connected,
            "connected_to": self.link.connected_to if self.connected else None,
            "stream": self.config.nats.stream if self.config.nats is not None else None,
            "via": self.via,
            "connected_since": self.connected_since,
            "session_present": self.session_present,
            "subscribed": self.link.subscribed,
            "subscribe_failures": list(self.link.subscribe_failures),
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "connects": self.connects,
            "backlog": {
                "messages": outbox.count if outbox is not None else 0,
                "bytes": outbox.bytes if outbox is not None else 0,
                "oldest_age": round(max(0.0, time.time() - oldest), 3) if oldest is not None else None,
                "in_flight": outbox.in_flight if outbox is not None else 0,
                "qos0_queued": len(self._qos0),
            },
            "limits": {
                "max_messages": self.config.max_messages,
                "max_bytes": self.config.max_bytes,
                "max_age": self.config.max_age,
                "policy": self.config.policy,
            },
            "counters": {
                **asdict(self.counters),
                "dropped": outbox.dropped if outbox is not None else 0,
            },
        }


class RefuseWhenFull(Hook):
    """`policy = "refuse"`: a QoS 1/2 PUBLISH that a full bridge would have to forward is answered 0x97
    (Quota exceeded), so the publisher backs off and keeps it [MQTT-3.3.5-2 context]; 3.1.1 clients, who
    cannot hear a reason, are disconnected instead, as for the hourly quota."""

    def __init__(self, bridges: list[Bridge]) -> None:
        self.bridges = [b for b in bridges if b.config.policy == "refuse"]

    def on_publish(self, client: ClientInfo, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        if not qos:
            return 0
        for bridge in self.bridges:
            outbox = bridge.outbox
            if (
                outbox is not None and outbox.full and client.mount == bridge.mount
                and any(topic_matches(f, topic) for f in bridge.config.forward)
            ):
                bridge.counters.refused += 1
                return 0x97
        return 0


def link_for(config: BridgeConfig) -> UpstreamLink:
    """The link for the url's scheme (as uvicorn's `auto.py` picks a protocol): NATS JetStream for nats://
    and tls:// (nats-py is imported only when such a bridge is configured), MQTT for mqtt:// and mqtts://."""
    if config.nats is not None:
        from bridge.nats_link import NATSLink

        return NATSLink(config, config.nats)
    return MQTTLink(config)


def _hop_properties(properties: Properties) -> Properties:
    """The properties that travel with a message to the next broker: not the topic alias or subscription
    identifiers, which belong to one hop [MQTT-3.3.2-7]."""
    if properties is EMPTY_PROPERTIES or not (properties.topic_alias or properties.subscription_identifiers):
        return properties
    return replace(properties, topic_alias=None, subscription_identifiers=())
