"""One client's network connection: where the sans-IO codec meets asyncio.

`MQTTConnection` is an `asyncio.Protocol`, as uvicorn's h11 protocol is: `data_received` feeds the codec's
`PacketReader`, each decoded packet is handled synchronously, and replies are appended to an output buffer
that is written once per event-loop iteration (coalesced writes). Nothing here awaits: even a CONNECT is
authenticated synchronously, because the hooks answer from memory.

Flow control: the transport's write buffer has a high-water mark. Above it the connection is `congested`:
QoS 0 messages to it are dropped and counted, QoS 1/2 messages wait in its session's bounded queue, and the
connection stops reading from its own client (a client that does not read its acknowledgements is slowed
down, not buffered for without bound).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from dataclasses import replace
from functools import partial
from typing import Any, cast

from broker.ack_holds import Wait
from broker.codec import (
    EMPTY_PROPERTIES,
    NEED_DATA,
    Auth,
    Connack,
    Connect,
    Disconnect,
    PacketReader,
    Pingreq,
    Pingresp,
    Properties,
    ProtocolVersion,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
    encode,
    encode_publish,
    v3_connack_code,
)
from broker.codec.topics import parse_shared, validate_topic_filter, validate_topic_name
from broker.core import Broker
from broker.errors import ProtocolError, UnsupportedProtocolVersion
from broker.hooks import AuthResult, ClientInfo, ConnectRequest, Decision
from broker.session import NEVER_EXPIRES, Message, Session, SubscriptionRecord

__all__ = ["MQTTConnection"]

log = logging.getLogger("roost.connection")

_V5 = ProtocolVersion.MQTT_5
_NEW, _CONNECTED, _CLOSED = range(3)
_SUBSCRIBE_REFUSED_V3 = 0x80
# A read at least this large means the client has a backlog: yield to the loop after handling it.
_YIELD_AFTER_BYTES = 16_384


class MQTTConnection(asyncio.Protocol):
    """The broker side of one MQTT network connection."""

    def __init__(self, broker: Broker, listener: str = "tcp") -> None:
        self.broker = broker
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.reader = PacketReader(None, broker.settings.max_packet_size)
        self.state = _NEW
        self.version: int = 4
        self.client: ClientInfo | None = None
        # The tenant's topic prefix (see ClientInfo.mount); empty for clients outside any tenant.
        self.mount = ""
        self.session: Session | None = None
        self.will: Will | None = None
        self.remote_address = "?"
        self.connected_at = 0.0
        self.congested = False
        # PUBLISH packets sent to this client (a tenant's "messages out" adds these up, see BrokerService).
        self.messages_sent = 0
        # Outbound flow: how many QoS 1/2 deliveries may be unacknowledged [MQTT-3.3.4-7].
        self.inflight_limit = broker.settings.max_inflight
        # The client's own maximum packet size; larger PUBLISH packets are not sent to it [MQTT-3.1.2-24].
        self.max_outgoing_size = 268_435_460
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._loop = broker.loop
        self._last_read = 0.0
        self._keep_alive = 0
        self._timer: asyncio.TimerHandle | None = None
        # The cache keys of this client's QoS 0 PUBLISH forms, by retain flag (see send_message).
        self._forms: tuple[tuple[int, str, bool], tuple[int, str, bool]] = ((4, "", False), (4, "", True))
        # The form in which this client takes a plain QoS 0 PUBLISH as another client sent it (see
        # Broker.publish_plain); None when it needs its own encoding (v5 with outgoing topic aliases).
        self.plain_form: tuple[int, str, bool] | None = None
        # The publish ACL's answers by topic: the topic inside the broker, or "" (refused); see _route.
        self._publish_acl: dict[str, str] = {}
        self._publish_hook = broker.hooks.publish_hook
        # With strict durability, acknowledgements wait until what they acknowledge is on disk, and any
        # acknowledgement waits for the receivers that hold it (broker/ack_holds.py); those waiting are
        # queued here, so that later ones go out behind them (see _ack).
        self._strict = broker.persistence.strict
        self._held_acks: deque[list[Any]] = deque()
        # QoS 1/2 PUBLISH packets to this client waiting for their packet identifier to be on disk
        # (strict durability, see Broker._send_inflight); later ones wait behind them.
        self.held_sends = 0
        self._acl_generation = -1
        self._aliases_in: dict[int, str] = {}
        self._aliases_out: dict[str, int] = {}
        self._alias_out_max = 0
        self._expiry_at_connect = 0
        self._closing = False
        self._reading_paused = False
        self._yielding = False
        # Resolved when the network connection is gone; shutdown awaits these.
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio.Protocol -----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        peer = self.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.remote_address = f"{peer[0]}:{peer[1]}"
        high = self.broker.settings.write_buffer_high
        self.transport.set_write_buffer_limits(high=high, low=high // 4)
        self.broker.stats.connections_opened += 1
        self.broker.open_connections.add(self)
        if self.broker.closing:
            # Accepted while the broker shuts down (the listener was closing): not served.
            self._close()
            return
        self._last_read = self._loop.time()
        # A connection that never sends its CONNECT costs a bounded time [MQTT-3.1.4-1 context].
        self._timer = self._loop.call_later(self.broker.settings.connect_timeout, self._connect_timed_out)

    def data_received(self, data: bytes) -> None:
        self._last_read = self._loop.time()
        self.broker.stats.bytes_received += len(data)
        self.reader.receive_data(data)
        self._process()
        if len(data) >= _YIELD_AFTER_BYTES and not self._yielding and not self._reading_paused and not self._closing:
            # A flooding client: stop reading it until the loop's next turn. libuv would otherwise read the
            # same socket up to 32 times per wake-up, and every other client (subscribers' writes,
            # PINGREQs) would wait behind megabytes of one publisher's backlog.
            self._yielding = True
            self.transport.pause_reading()  # type: ignore[union-attr]
            self._loop.call_soon(self._end_yield)

    def _end_yield(self) -> None:
        self._yielding = False
        if not self._reading_paused and not self._closing and self.transport is not None:
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # Close the transport; connection_lost follows.

    def pause_writing(self) -> None:
        log.debug("%s is slow: write buffer above its high-water mark", self._who())
        self.congested = True
        self._pause_reading()

    def resume_writing(self) -> None:
        log.debug("%s caught up: write buffer drained", self._who())
        self.congested = False
        self._resume_reading()
        if self.session is not None and self.state == _CONNECTED:
            self.broker.drain(self, self.session)

    def connection_lost(self, exc: Exception | None) -> None:
        state = self.state
        self.state = _CLOSED
        self._closing = True
        self.broker.open_connections.discard(self)
        if self.messages_sent:
            sent = self.broker.sent_by_closed_mount
            sent[self.mount] = sent.get(self.mount, 0) + self.messages_sent
        if not self.closed.done():
            self.closed.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if state == _CONNECTED and self.session is not None:
            session, self.session = self.session, None
            will, self.will = self.will, None
            self.broker.detach(self, session, will)
            if self.client is not None:
                self.broker.hooks.connection_closed(self.client)
            log.debug("client %s disconnected", self.client.client_id if self.client else "?")

    # -- reading --------------------------------------------------------------------------------------------

    def _process(self) -> None:
        """Handle every complete packet in the buffer, unless authentication or congestion pauses us."""
        reader = self.reader
        handlers = _HANDLERS
        try:
            while self.state != _CLOSED and not self._closing and not self._reading_paused:
                if self.state == _CONNECTED:
                    plain = reader.take_plain_publishes()
                    if plain:
                        self._on_plain_publishes(plain)
                        continue
                packet = reader.next_packet()
                if packet is NEED_DATA:
                    return
                if self.state == _NEW:
                    self._on_connect(packet)  # type: ignore[arg-type]
                    continue
                handler = handlers.get(type(packet))
                if handler is None:
                    raise ProtocolError(f"a client may not send {type(packet).__name__}", ReasonCode.PROTOCOL_ERROR)
                handler(self, packet)
        except ProtocolError as exc:
            self._protocol_error(exc)
        except Exception:
            # One bad client never takes the broker down: close it and keep serving everyone else.
            log.exception("internal error handling a packet from %s; closing its connection", self._who())
            self._close_with(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR)

    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self._closing:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self._closing:
            self._reading_paused = False
            if not self._yielding:  # else _end_yield resumes it on the loop's next turn
                self.transport.resume_reading()
            self._process()

    # -- CONNECT --------------------------------------------------------------------------------------------

    def _on_connect(self, packet: Connect) -> None:
        """The first packet must be a CONNECT [MQTT-3.1.0-1]; the reader refuses anything else."""
        assert isinstance(packet, Connect)
        self.version = packet.protocol_version
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        props = packet.properties
        settings = self.broker.settings
        if props.authentication_method is not None:
            # No enhanced authentication method is offered [MQTT-4.12.0-1].
            return self._refuse(ReasonCode.BAD_AUTHENTICATION_METHOD)
        client_id = packet.client_id
        assigned = False
        if not client_id:
            if self.version == _V5 or (self.version == 4 and packet.clean_start):
                client_id = "auto-" + uuid.uuid4().hex  # [MQTT-3.1.3-6][MQTT-3.2.2-16]
                assigned = True
            else:
                # 3.1.1 with clean session 0, or 3.1: an empty client id is refused [MQTT-3.1.3-8].
                return self._refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)
        keep_alive = packet.keep_alive
        server_keep_alive: int | None = None
        if settings.max_keepalive < 65_535 and (keep_alive == 0 or keep_alive > settings.max_keepalive):
            if self.version != _V5:
                # 3.1.1 has no way to tell the client another value: refuse it, as Mosquitto does.
                return self._refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID)
            keep_alive = server_keep_alive = settings.max_keepalive  # [MQTT-3.2.2-21]
        will = packet.will
        if will is not None:
            try:
                validate_topic_name(will.topic)
            except ProtocolError:
                return self._refuse(ReasonCode.TOPIC_NAME_INVALID)
            if will.retain and not settings.retain_available:
                return self._refuse(ReasonCode.RETAIN_NOT_SUPPORTED)  # [MQTT-3.2.2-13]
        if self.version == _V5:
            expiry = props.session_expiry_interval or 0
            if props.receive_maximum is not None:
                self.inflight_limit = min(self.inflight_limit, props.receive_maximum)
            if props.maximum_packet_size is not None:
                self.max_outgoing_size = props.maximum_packet_size
            self._alias_out_max = props.topic_alias_maximum or 0
        else:
            expiry = 0 if packet.clean_start else NEVER_EXPIRES
        self._expiry_at_connect = expiry
        granted_expiry = min(expiry, settings.max_session_expiry)
        certificate_cn, certificate_serial = _peer_certificate(self.transport)
        request = ConnectRequest(
            client_id=client_id,
            username=packet.username,
            password=packet.password,
            protocol_version=self.version,
            remote_address=self.remote_address,
            assigned_client_id=assigned,
            certificate_cn=certificate_cn,
            certificate_serial=certificate_serial,
        )
        self._authenticate(request, packet, keep_alive, server_keep_alive, granted_expiry, expiry)

    def _authenticate(
        self,
        request: ConnectRequest,
        packet: Connect,
        keep_alive: int,
        server_keep_alive: int | None,
        granted_expiry: int,
        requested_expiry: int,
    ) -> None:
        """Ask the hooks, then accept (CONNACK, attach the session) or refuse. Synchronous: the hooks answer
        from memory, so a CONNECT costs no task and no extra turn of the loop, and packets the client sent
        right behind its CONNECT are handled in the same read."""
        try:
            result = self.broker.hooks.authenticate(request)
        except Exception:
            log.exception("authentication hook failed for %s", request.client_id)
            result = AuthResult(Decision.DENY, ReasonCode.SERVER_UNAVAILABLE)
        if result.decision is not Decision.ALLOW:
            self.broker.stats.auth_failures += 1
            log.info(
                "refused %s from %s (user %r): reason 0x%02x",
                request.client_id, self.remote_address, request.username, result.reason_code,
            )
            self.state = _NEW
            self._refuse(result.reason_code, logged=True)
            return
        client = result.client or ClientInfo(request.client_id, request.username, self.version)
        self.client = client
        self.mount = client.mount
        self._forms = ((self.version, client.mount, False), (self.version, client.mount, True))
        self.plain_form = None if self.version == _V5 and self._alias_out_max else self._forms[False]
        self.will = packet.will
        self.state = _CONNECTED
        session, present = self.broker.attach(self, client, packet.clean_start, granted_expiry)
        self.session = session
        self.connected_at = time.time()
        props = EMPTY_PROPERTIES
        if self.version == _V5:
            settings = self.broker.settings
            props = Properties(
                session_expiry_interval=granted_expiry if granted_expiry != requested_expiry else None,
                receive_maximum=settings.receive_maximum if settings.receive_maximum != 65_535 else None,
                retain_available=None if settings.retain_available else 0,
                maximum_packet_size=settings.max_packet_size,
                assigned_client_identifier=request.client_id if request.assigned_client_id else None,
                topic_alias_maximum=settings.topic_alias_maximum or None,
                server_keep_alive=server_keep_alive,
            )
        self._send(Connack(session_present=present, reason_code=0, properties=props))
        self.reader.max_packet_size = self.broker.settings.max_packet_size
        self._keep_alive = keep_alive
        if keep_alive:
            # Enforced at one and a half times the keep alive [MQTT-3.1.2-22 (v5) / MQTT-3.1.2-24 (3.1.1)].
            self._timer = self._loop.call_later(keep_alive * 1.5, self._check_keep_alive)
        self.broker.hooks.connection_opened(client)
        log.debug("client %s connected from %s (v%d, session present %s)", client.client_id, self.remote_address, self.version, present)
        if present:
            self._resume_session(session)

    def _resume_session(self, session: Session) -> None:
        """Resend unacknowledged deliveries with DUP set, PUBRELs for released ones [MQTT-4.4.0-1]."""
        for packet_id, delivery in list(session.inflight.items()):
            if delivery.released:
                self._send(Pubrel(packet_id))
            elif not self.send_message(
                delivery.message, delivery.qos, delivery.retain, delivery.subscription_ids, packet_id, dup=True
            ):
                del session.inflight[packet_id]
                if session.durable:
                    self.broker.persistence.delivery_removed(session, delivery)
        self.broker.drain(self, session)

    def _refuse(self, reason_code: int, logged: bool = False) -> None:
        """Answer the CONNECT with a refusal and close [MQTT-3.2.2-6 / MQTT-3.2.2-7]."""
        if not logged:
            log.info("refused a client from %s: reason 0x%02x", self.remote_address, reason_code)
        self.broker.stats.connections_refused += 1
        self.broker.stats.refused_by_reason[reason_code] += 1
        code = reason_code if self.version == _V5 else v3_connack_code(reason_code)
        self._send(Connack(session_present=False, reason_code=code))
        self._close()

    def _on_second_connect(self, packet: Connect) -> None:
        raise ProtocolError("a second CONNECT is a protocol error [MQTT-3.1.0-2]")

    def _on_auth(self, packet: Auth) -> None:
        raise ProtocolError("AUTH without an authentication method [MQTT-4.12.0-1]")

    # -- PUBLISH from the client ----------------------------------------------------------------------------

    def _on_publish(self, packet: Publish) -> None:
        topic = packet.topic
        props = packet.properties
        qos = packet.qos
        v5 = self.version == _V5
        if props is not EMPTY_PROPERTIES:
            if props.subscription_identifiers:
                raise ProtocolError("a client PUBLISH carries a subscription identifier [MQTT-3.3.4-6]")
            alias = props.topic_alias
            if alias is not None:
                topic = self._resolve_alias(alias, topic)
        session = self.session
        assert session is not None and self.client is not None
        if qos == 2 and packet.packet_id in session.awaiting_release:
            # A resent QoS 2 PUBLISH whose PUBREL has not come: acknowledge, do not route again [MQTT-4.3.3-9].
            # (Strict: after the first one's record is on disk, if its commit is still being written.)
            self._ack(encode(Pubrec(packet.packet_id), self.version), session.durable)  # type: ignore[arg-type]
            return
        writes = self.broker.persistence.writes if self._strict else 0
        if qos == 2 and len(session.awaiting_release) >= self.broker.settings.receive_maximum:
            raise ProtocolError("receive maximum exceeded [MQTT-3.3.4-9]", ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)
        if packet.retain and not self.broker.settings.retain_available:
            raise ProtocolError("retain is not available [MQTT-3.3.1-?]", ReasonCode.RETAIN_NOT_SUPPORTED)
        reason = 0
        waits: list[Wait] = []
        # The publish ACL, cached per topic (see _route), inlined here: this runs for every message.
        routed = self._publish_acl.get(topic) if self._acl_generation == self.broker.hooks.generation else None
        if routed is None:
            routed = self._route(topic)
        if not routed:
            # v5 hears 0x87; 3.1.1 has no way to hear it and gets a positive acknowledgement [MQTT-3.3.5-2].
            reason = ReasonCode.NOT_AUTHORIZED if v5 else 0
            self.broker.stats.dropped_acl += 1
            log.debug("publish by %s to %r not authorized", self.client.client_id, topic)
        elif v5 and props.payload_format_indicator == 1 and not _is_utf8(packet.payload):
            reason = ReasonCode.PAYLOAD_FORMAT_INVALID
        elif self._publish_hook is not None and (
            code := self._publish_hook(self.client, topic, packet.payload, qos, packet.retain)
        ):
            # Refused by a hook, e.g. the hourly quota (0x97). 3.1.1 cannot hear a reason: QoS 0 is dropped,
            # and for QoS 1/2 the connection is closed rather than acknowledged [MQTT-3.3.5-2].
            self.broker.stats.dropped_quota += 1
            if not v5 and qos:
                raise ProtocolError("publish refused (quota exceeded) [MQTT-3.3.5-2]", code)
            reason = code
        else:
            expires_at = None
            if props is not EMPTY_PROPERTIES:
                if props.message_expiry_interval is not None:
                    expires_at = time.time() + props.message_expiry_interval
                if props.topic_alias is not None:
                    props = replace(props, topic_alias=None)
                    if props == EMPTY_PROPERTIES:
                        props = EMPTY_PROPERTIES
            message = Message(
                routed, packet.payload, qos, packet.retain, props, expires_at, session.key, self.client.username
            )
            if qos == 0 and packet.properties is EMPTY_PROPERTIES and not packet.retain:
                # Subscribers of this client's form (same version, same tenant, no properties to add) get
                # the very bytes it sent: no encoding on the way out. (Not when it used a topic alias:
                # those bytes name no topic.)
                message.wire = (self._forms[False], self.reader.last_packet_bytes())
            if qos:
                holds = self.broker.ack_holds
                holds.begin()
                self.broker.publish(message)
                waits = holds.end()
            else:
                self.broker.publish(message)
        if qos == 0:
            return
        packet_id: int = packet.packet_id  # type: ignore[assignment]
        if qos == 1:
            # PUBACK with reason 0 and no properties has the same 4 bytes in every version [MQTT-3.4.2-1].
            ack = encode(Puback(packet_id, reason), self.version) if reason else b"\x40\x02" + packet_id.to_bytes(2, "big")
        else:
            if reason < 0x80:
                session.awaiting_release.add(packet_id)
                if session.durable:
                    self.broker.persistence.release_awaited(session, packet_id)
            ack = encode(Pubrec(packet_id, reason), self.version)
        if self._strict or waits or self._held_acks:
            self._ack(ack, self._strict and self.broker.persistence.writes != writes, waits)
        else:
            self._write(ack)

    def _ack(self, data: bytes, dirtied: bool, waits: list[Wait] | None = None) -> None:
        """Send an acknowledgement. With strict durability it waits until the state it acknowledges is on
        disk (`dirtied`: the packet it answers changed recorded state); it also waits for the receivers
        that hold it (`waits`, broker/ack_holds.py: a bridge's outbox). It never overtakes one that is
        waiting, so acknowledgements keep the order of what they answer [MQTT-4.6.0-2]."""
        held = self._held_acks
        if not held and not waits and not (self._strict and dirtied):
            self._write(data)
            return
        # [data, how many calls back it still waits for]; the 1 is a guard, so that a wait that calls
        # back at once cannot send it before every wait is registered.
        entry: list[Any] = [data, 1]
        held.append(entry)
        for wait in waits or ():
            entry[1] += 1
            wait(partial(self._ack_ready, entry))
        if self._strict and (dirtied or len(held) > 1):
            entry[1] += 1
            if not self.broker.persistence.when_durable(partial(self._ack_ready, entry)):
                entry[1] -= 1
        self._ack_ready(entry)

    def _ack_ready(self, entry: list[Any]) -> None:
        """One thing an acknowledgement waited for is done; send every acknowledgement at the head of the
        queue that waits for nothing more (dropped if the connection has closed: the client will resend)."""
        entry[1] -= 1
        held = self._held_acks
        while held and held[0][1] == 0:
            self._write(held.popleft()[0])

    def _route(self, topic: str) -> str:
        """Where this client's PUBLISH to `topic` goes inside the broker: the topic under its tenant's
        namespace, or "" when it may not publish there. Topics starting with `$` belong to the broker ($SYS,
        and the tenants' namespaces): no client publishes to them [MQTT-4.7.2-1 context]. Answers are
        cached per topic until the hooks say that access changed, so a client publishing to a few topics
        asks the ACL once per topic."""
        cache = self._acl_cache()
        routed = cache.get(topic)
        if routed is None:
            assert self.client is not None
            allowed = not topic.startswith("$") and self.broker.hooks.authorize_publish(self.client, topic)
            routed = self.mount + topic if allowed else ""
            if len(cache) < 1024:
                cache[topic] = routed
        return routed

    def _acl_cache(self) -> dict[str, str]:
        """The cache of publish ACL answers, emptied first if access changed since it was filled."""
        generation = self.broker.hooks.generation
        if self._acl_generation != generation:
            self._publish_acl.clear()
            self._acl_generation = generation
        return self._publish_acl

    def _on_plain_publishes(self, batch: list[tuple[str, int, bytes]]) -> None:
        """Route the plain QoS 0 PUBLISH packets the reader took whole (`PacketReader.take_plain_publishes`):
        the steps of `_on_publish` for the packet a busy broker sees most, with no packet object, through
        `Broker.publish_plain`, which can forward the bytes the client sent as they are."""
        broker = self.broker
        hooks = broker.hooks
        stats = broker.stats
        publish_plain = broker.publish_plain
        client = self.client
        assert client is not None and self.session is not None
        acl = self._publish_acl
        hook = self._publish_hook
        sender = self.session.key
        username = client.username
        form = self._forms[False]
        for topic, offset, wire in batch:
            # What the general path checks before each packet: routing a message runs hooks and the control
            # plane's watchers, which may close this connection (a kick) or change access meanwhile.
            if self._closing:
                return  # the rest of the run goes unread, as it would have stayed in the buffer
            routed = acl.get(topic) if self._acl_generation == hooks.generation else None
            if routed is None:
                routed = self._route(topic)
            if not routed:
                stats.dropped_acl += 1
                log.debug("publish by %s to %r not authorized", client.client_id, topic)
                continue
            payload = wire[offset:]
            if hook is not None and hook(client, topic, payload, 0, False):
                stats.dropped_quota += 1  # QoS 0: nothing to tell the client, in either version
                continue
            publish_plain(routed, payload, wire, form, sender, username)

    def _internal_filter(self, topic_filter: str) -> tuple[str | None, str, str] | None:
        """Map a client's filter into the broker's namespace: (share group, plain internal filter, full
        internal filter); None when a tenant client names a `$` filter it may not read."""
        group, plain = parse_shared(topic_filter)
        mount = self.mount
        if plain.startswith("$"):
            # `$` filters name the broker's own topics; tenants' namespaces also start with `$`, so only
            # `$SYS` is ever reachable, and from inside a tenant only by admins.
            client = self.client
            if not plain.startswith("$SYS") or (mount and not (client is not None and client.is_admin)):
                return None
        elif mount:
            plain = mount + plain
        full = plain if group is None else f"$share/{group}/{plain}"
        return group, plain, full

    def _resolve_alias(self, alias: int, topic: str) -> str:
        """Map a v5 topic alias to its topic [MQTT-3.3.2-8][MQTT-3.3.2-9][MQTT-3.3.2-10]."""
        if alias == 0 or alias > self.broker.settings.topic_alias_maximum:
            raise ProtocolError("topic alias out of range [MQTT-3.3.2-8]", ReasonCode.TOPIC_ALIAS_INVALID)
        if topic:
            self._aliases_in[alias] = topic
            return topic
        known = self._aliases_in.get(alias)
        if known is None:
            raise ProtocolError("unknown topic alias [MQTT-3.3.2-?]", ReasonCode.PROTOCOL_ERROR)
        return known

    def _on_pubrel(self, packet: Pubrel) -> None:
        session = self.session
        assert session is not None
        if packet.packet_id in session.awaiting_release:
            session.awaiting_release.discard(packet.packet_id)
            if session.durable:
                self.broker.persistence.release_done(session, packet.packet_id)
            self._ack(encode(Pubcomp(packet.packet_id), self.version), session.durable)
        else:
            code = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if self.version == _V5 else 0
            self._ack(encode(Pubcomp(packet.packet_id, code), self.version), False)

    # -- acknowledgements of our PUBLISH --------------------------------------------------------------------

    def _on_puback(self, packet: Puback) -> None:
        session = self.session
        assert session is not None
        delivery = session.inflight.get(packet.packet_id)
        if delivery is not None and delivery.qos == 1:
            del session.inflight[packet.packet_id]
            if session.durable:
                self.broker.persistence.delivery_removed(session, delivery)
            if session.queue:
                self.broker.drain(self, session)

    def _on_pubrec(self, packet: Pubrec) -> None:
        session = self.session
        assert session is not None
        delivery = session.inflight.get(packet.packet_id)
        if delivery is None or delivery.qos != 2:
            code = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if self.version == _V5 else 0
            self._send(Pubrel(packet.packet_id, code))
            return
        if packet.reason_code >= 0x80:
            # The receiver refused it: the exchange ends here [MQTT-4.3.3-4 context].
            del session.inflight[packet.packet_id]
            if session.durable:
                self.broker.persistence.delivery_removed(session, delivery)
            if session.queue:
                self.broker.drain(self, session)
            return
        delivery.released = True
        if session.durable:
            # Strict durability: the PUBREL goes once "released" is on disk, so that a restart resumes
            # this exchange with PUBREL, never with the PUBLISH again [MQTT-4.3.3-5].
            self.broker.persistence.delivery_changed(session, delivery)
        self._ack(encode(Pubrel(packet.packet_id), self.version), session.durable)

    def _on_pubcomp(self, packet: Pubcomp) -> None:
        session = self.session
        assert session is not None
        delivery = session.inflight.get(packet.packet_id)
        if delivery is not None and delivery.qos == 2:
            del session.inflight[packet.packet_id]
            if session.durable:
                self.broker.persistence.delivery_removed(session, delivery)
            if session.queue:
                self.broker.drain(self, session)

    # -- SUBSCRIBE / UNSUBSCRIBE ----------------------------------------------------------------------------

    def _on_subscribe(self, packet: Subscribe) -> None:
        session = self.session
        client = self.client
        assert session is not None and client is not None
        v5 = self.version == _V5
        sub_id = packet.properties.subscription_identifiers[0] if packet.properties.subscription_identifiers else None
        codes: list[int] = []
        retained: list[tuple[SubscriptionRecord, list[Message]]] = []
        for sub in packet.subscriptions:
            topic_filter = sub.topic_filter
            try:
                validate_topic_filter(topic_filter)
            except ProtocolError:
                codes.append(ReasonCode.TOPIC_FILTER_INVALID if v5 else _SUBSCRIBE_REFUSED_V3)
                continue
            if sub.no_local and topic_filter.startswith("$share/"):
                raise ProtocolError("No Local on a shared subscription [MQTT-3.8.3-4]")
            internal = self._internal_filter(topic_filter)
            if internal is None or not self.broker.hooks.authorize_subscribe(client, topic_filter):
                codes.append(ReasonCode.NOT_AUTHORIZED if v5 else _SUBSCRIBE_REFUSED_V3)
                continue
            group, plain, full = internal
            record = SubscriptionRecord(
                full, sub.qos, sub.no_local, sub.retain_as_published, sub.retain_handling, sub_id
            )
            outcome = self.broker.subscribe(session, record)
            codes.append(sub.qos)  # Granted QoS: every QoS is supported [MQTT-3.9.3-1].
            # Retained messages: not for shared subscriptions [MQTT-3.8.4-?]; retain handling 0 always, 1 only
            # for a new subscription, 2 never [MQTT-3.3.1-9][MQTT-3.3.1-10][MQTT-3.3.1-11].
            if group is None and (sub.retain_handling == 0 or (sub.retain_handling == 1 and not outcome.existed)):
                retained.append((record, list(self.broker.retained_for(plain))))
        self._send(Suback(packet.packet_id, tuple(codes)))  # [MQTT-3.8.4-1]
        for record, messages in retained:
            sub_ids = (record.subscription_id,) if record.subscription_id is not None else ()
            for message in messages:
                qos = message.qos if message.qos < record.qos else record.qos
                # Sent because of a new subscription: the RETAIN flag is 1 [MQTT-3.3.1-8].
                self.broker.deliver(session, message, qos, True, sub_ids)

    def _on_unsubscribe(self, packet: Unsubscribe) -> None:
        session = self.session
        assert session is not None
        codes = []
        for topic_filter in packet.topic_filters:
            internal = self._internal_filter(topic_filter)
            removed = internal is not None and self.broker.unsubscribe(session, internal[2])  # [MQTT-3.10.4-1]
            codes.append(ReasonCode.SUCCESS if removed else ReasonCode.NO_SUBSCRIPTION_EXISTED)
        self._send(Unsuback(packet.packet_id, tuple(codes) if self.version == _V5 else ()))  # [MQTT-3.10.4-4]

    # -- PINGREQ / DISCONNECT -------------------------------------------------------------------------------

    def _on_pingreq(self, packet: Pingreq) -> None:
        self._send(Pingresp())  # [MQTT-3.12.4-1]

    def _on_disconnect(self, packet: Disconnect) -> None:
        session = self.session
        assert session is not None
        if self.version == _V5:
            expiry = packet.properties.session_expiry_interval
            if expiry is not None:
                if self._expiry_at_connect == 0 and expiry != 0:
                    raise ProtocolError("session expiry raised from 0 at DISCONNECT [MQTT-3.14.2-2]")
                session.expiry_interval = min(expiry, self.broker.settings.max_session_expiry)
            if packet.reason_code != ReasonCode.DISCONNECT_WITH_WILL_MESSAGE:
                self.will = None  # A normal DISCONNECT discards the will [MQTT-3.1.2-10].
        else:
            self.will = None  # [MQTT-3.1.2-10]
        self._close()  # [MQTT-3.14.4-1]

    # -- sending --------------------------------------------------------------------------------------------

    def send_message(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        packet_id: int | None,
        dup: bool = False,
    ) -> bool:
        """Encode and queue one PUBLISH to this client. False if it exceeds the client's maximum packet
        size and was discarded [MQTT-3.1.2-25].

        A QoS 0 PUBLISH is the same bytes for every client that gets the same form of it (version, tenant,
        retain flag, and for v5 no per-client properties), so the last encoding is kept on the message:
        a fan-out encodes once per distinct form, not once per subscriber."""
        version = self.version
        v5 = version == _V5
        if qos == 0 and (not v5 or not (sub_ids or message.expires_at is not None or self._alias_out_max)):
            form = self._forms[retain]
            wire = message.wire
            if wire is not None and wire[0] == form:
                data = wire[1]
            else:
                topic = self._client_topic(message.topic)
                props = message.properties if v5 else EMPTY_PROPERTIES
                data = encode_publish(topic, message.payload, 0, retain, False, None, props, version)
                message.wire = (form, data)
        elif not v5:
            topic = self._client_topic(message.topic)
            data = encode_publish(topic, message.payload, qos, retain, dup, packet_id, EMPTY_PROPERTIES, version)
        else:
            topic = self._client_topic(message.topic)
            props = message.properties
            if message.expires_at is not None or sub_ids or self._alias_out_max:
                changes: dict[str, Any] = {}
                if message.expires_at is not None:
                    changes["message_expiry_interval"] = message.remaining_expiry()
                if sub_ids:
                    changes["subscription_identifiers"] = sub_ids
                if self._alias_out_max:
                    alias = self._aliases_out.get(topic)
                    if alias is not None:
                        changes["topic_alias"] = alias
                        topic = ""
                    elif len(self._aliases_out) < self._alias_out_max:
                        alias = self._aliases_out[topic] = len(self._aliases_out) + 1
                        changes["topic_alias"] = alias
                props = replace(props, **changes)
            data = encode_publish(topic, message.payload, qos, retain, dup, packet_id, props, version)
        if len(data) > self.max_outgoing_size:
            self.broker.stats.dropped_too_large += 1
            return False
        stats = self.broker.stats
        stats.messages_sent += 1
        self.messages_sent += 1
        if qos:  # QoS 0 counts are the totals less these (see broker/stats.py)
            stats.sent_by_qos[qos] += 1
            stats.sent_bytes_by_qos[qos] += len(message.payload)
        if not self._closing:  # _write, inlined for the hot path
            self._out.append(data)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        return True

    def send_plain(self, data: bytes) -> None:
        """Queue a QoS 0 PUBLISH that is already in this client's `plain_form`: the bytes another client
        sent (Broker.publish_plain). The tail of send_message, without a Message."""
        stats = self.broker.stats
        if len(data) > self.max_outgoing_size:
            stats.dropped_too_large += 1  # [MQTT-3.1.2-25]
            return
        stats.messages_sent += 1
        self.messages_sent += 1
        if not self._closing:
            self._out.append(data)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)

    def _client_topic(self, topic: str) -> str:
        """A topic inside the broker as this client names it: without its tenant's namespace."""
        mount = self.mount
        return topic[len(mount):] if mount and topic.startswith(mount) else topic

    def _send(self, packet: Any) -> None:
        self._write(encode(packet, self.version))

    def _write(self, data: bytes) -> None:
        if self._closing:
            return
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write everything queued in this loop iteration with one call (coalesced writes)."""
        self._flush_scheduled = False
        out = self._out
        if not out or self.transport is None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.broker.stats.bytes_sent += len(data)
        self.transport.write(data)

    # -- closing --------------------------------------------------------------------------------------------

    def _close(self) -> None:
        """Flush what is queued and close gracefully."""
        if self._closing or self.transport is None:
            return
        self._flush()
        self._closing = True
        self.transport.close()

    def _close_with(self, reason_code: int) -> None:
        """Close after a v5 DISCONNECT carrying `reason_code` (3.1.1 has no server DISCONNECT)."""
        if self.state == _CONNECTED and self.version == _V5 and not self._closing:
            self._send(Disconnect(reason_code))
        self._close()

    def _protocol_error(self, exc: ProtocolError) -> None:
        self.broker.stats.protocol_errors += 1
        log.info("protocol error from %s: %s (0x%02x); closing", self._who(), exc, exc.reason_code)
        if self.state == _NEW:
            version = getattr(exc, "protocol_version", None) or self.reader.version
            if isinstance(exc, UnsupportedProtocolVersion):
                # Answer in a dialect the client understands: 3.1.1 return code 1 or v5 0x84 [MQTT-3.1.2-2].
                self.version = version if version in (3, 4, 5) else 4
                self._refuse(ReasonCode.UNSUPPORTED_PROTOCOL_VERSION, logged=True)
                return
            if version == _V5:
                self.version = _V5
                self._refuse(exc.reason_code, logged=True)
                return
            self._close()  # [MQTT-3.1.4-1]
            return
        self._close_with(exc.reason_code)

    def _connect_timed_out(self) -> None:
        self._timer = None
        if self.state == _NEW:
            log.info("no CONNECT from %s within %.0f s; closing", self.remote_address, self.broker.settings.connect_timeout)
            self._close()

    def _check_keep_alive(self) -> None:
        """Drop a client silent for 1.5 times its keep alive; its will is then published [MQTT-3.1.2-24]."""
        self._timer = None
        if self.state != _CONNECTED:
            return
        limit = self._keep_alive * 1.5
        idle = self._loop.time() - self._last_read
        if idle >= limit:
            log.info("client %s silent for %.1f s (keep alive %d s); closing", self._who(), idle, self._keep_alive)
            self._close_with(ReasonCode.KEEP_ALIVE_TIMEOUT)
            return
        self._timer = self._loop.call_later(limit - idle, self._check_keep_alive)

    def taken_over(self) -> Will | None:
        """Another connection took this client id [MQTT-3.1.4-3]: close (v5: 0x8E) and hand back the will.

        The session now belongs to the new connection, so this connection's end must not touch it.
        """
        will, self.will = self.will, None
        self.session = None
        self._close_with(ReasonCode.SESSION_TAKEN_OVER)
        self.state = _CLOSED
        if self.client is not None:
            self.broker.hooks.connection_closed(self.client)
        return will

    def take_will(self) -> Will | None:
        """Hand over this connection's will (the broker publishes it); it will not be published again."""
        will, self.will = self.will, None
        return will if self.state == _CONNECTED else None

    def close_for_admin(self) -> None:
        """Closed by an administrator (kick, revoked credentials): v5 hears 0x98, no will is sent."""
        self.will = None
        self._close_with(ReasonCode.ADMINISTRATIVE_ACTION)

    def close_for_shutdown(self) -> None:
        """The broker is stopping: v5 hears 0x8B (its will was already published by `Broker.shutdown`)."""
        if self.state == _CONNECTED:
            self._close_with(ReasonCode.SERVER_SHUTTING_DOWN)
        else:
            self._close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _who(self) -> str:
        return self.client.client_id if self.client is not None else self.remote_address


def _peer_certificate(transport: asyncio.BaseTransport | None) -> tuple[str | None, str | None]:
    """The subject CN and serial (upper-case hex, no leading zeros) of the client certificate that the TLS
    handshake verified; (None, None) on plain TCP or when the client presented none."""
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None, None
    certificate = ssl_object.getpeercert()  # Only a verified certificate is reported.
    if not certificate or "serialNumber" not in certificate:
        return None, None
    common_name = next(
        (value for rdn in certificate.get("subject", ()) for key, value in rdn if key == "commonName"), None
    )
    return common_name, format(int(certificate["serialNumber"], 16), "X")


# Which method handles which packet once connected: one table for every connection (built per connection,
# it was a tenth of the cost of accepting one).
_HANDLERS: dict[type, Any] = {
    Publish: MQTTConnection._on_publish,
    Puback: MQTTConnection._on_puback,
    Pubrec: MQTTConnection._on_pubrec,
    Pubrel: MQTTConnection._on_pubrel,
    Pubcomp: MQTTConnection._on_pubcomp,
    Subscribe: MQTTConnection._on_subscribe,
    Unsubscribe: MQTTConnection._on_unsubscribe,
    Pingreq: MQTTConnection._on_pingreq,
    Disconnect: MQTTConnection._on_disconnect,
    Connect: MQTTConnection._on_second_connect,
    Auth: MQTTConnection._on_auth,
}


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
