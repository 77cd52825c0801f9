"""One client's MQTT protocol, sans-IO: bytes and the time in; bytes, a close and a deadline out.

`Connection` is to Roost what h11's `Connection` is to uvicorn: it holds no socket, no event loop and no
task. Its inputs are `receive_data(data, now)`, `handle_timeout(now)`, `pause_writing()` /
`resume_writing()` (the transport's buffer went above or below its high-water mark) and
`connection_lost()`. Its outputs are `data_to_send()`, `close_requested` (`CLOSE`, or `LINGER` after a
server DISCONNECT: the shell closes its write side and discards input for a short bounded time first, so
the client can read the reason code) and `next_deadline()`. `on_output` is called when output starts to
wait or a close is asked for, so the shell knows to flush on its next turn.

Routing is synchronous: the broker calls back into `send_message` / `send_plain` (this is a
`broker.receivers.DeliveryReceiver`) while a message is routed, from this connection or any other.

PUBLISH from the client takes one path: `check_publish` and `Admission.admit` (ACL, payload format, the
on_publish hooks; broker/engine/inbound.py and admission.py), the broker's route, then `publish_ack`, for
the plain QoS 0 packets that `PacketReader.take_plain_publishes` takes in runs and for every other PUBLISH
alike. Every PUBLISH to the client is written by `send_plain` (`send_message` encodes,
then calls it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from broker.codec import (
    EMPTY_PROPERTIES, NEED_DATA, Auth, Connack, Connect, Disconnect, PacketReader, Pingreq, Pingresp,
    ProtocolVersion, Puback, Pubcomp, Publish, Pubrec, Pubrel, ReasonCode, Subscribe, Unsubscribe, Will, encode,
    v3_connack_code,
)
from broker.core import Broker
from broker.ack_holds import Wait
from broker.engine.acks import AckOrder
from broker.engine.admission import Admission, publish_message
from broker.engine.inbound import check_publish, publish_ack
from broker.engine.connect import Terms, accepting_connack, connect_error_answer, negotiate
from broker.engine.outbound import PublishEncoder
from broker.engine.slots import CONNECTION_SLOTS
from broker.engine.subscribe import send_retained, subscribe, unsubscribe
from broker.errors import PacketTooLarge, ProtocolError
from broker.hooks import AuthResult, ClientInfo, ConnectRequest, Decision
from broker.receivers import PlainForm
from broker.session import Message, Session

__all__ = ["CLOSE", "LINGER", "Connection"]

log = logging.getLogger("roost.connection")

_V5, _V3_1 = ProtocolVersion.MQTT_5, ProtocolVersion.MQTT_3_1
_ALLOW = Decision.ALLOW  # a module global: Python 3.11 does not specialise attribute loads on a class
_NEW, _CONNECTED, _CLOSED = range(3)
# What `close_requested` asks of the shell: close now, or close the write side and linger first.
CLOSE, LINGER = 1, 2


# The encoder of a client not connected yet (never used: no PUBLISH goes to it), shared.
_UNCONNECTED = PublishEncoder()


def _nothing() -> None:
    """The default `on_output`: a test reads `data_to_send()` when it likes."""


class Connection:
    """The broker side of one MQTT connection, as a protocol state machine over bytes."""

    __slots__ = CONNECTION_SLOTS  # an idle connection holds no 1.7 KB instance dict (see slots.py)

    def __init__(
        self,
        broker: Broker,
        listener: str = "tcp",
        remote_address: str = "?",
        certificate: tuple[str | None, str | None] = (None, None),
        now: float = 0.0,
    ) -> None:
        self.broker = broker
        self.listener = listener
        self.remote_address = remote_address
        self.certificate = certificate
        settings = broker.settings
        self.reader = PacketReader(None, min(settings.max_connect_size, settings.max_packet_size), from_client=True)
        self.state = _NEW
        self.version: int = 4
        self.client: ClientInfo | None = None
        # The tenant's topic prefix (see ClientInfo.mount); empty for clients outside any tenant.
        self.mount = ""
        self.session: Session | None = None
        self.will: Will | None = None
        self.connected_at = 0.0
        self.tls = False  # set by the shell: the transport is TLS (the dashboard's Clients page)
        self.close_reason: int | None = None  # why it ended, for `broker.events` (None: nobody said)
        self.congested = False
        # PUBLISH packets sent to / received from this client (a tenant's messages out and in add these up).
        self.messages_sent = self.messages_received = 0
        # Outbound flow: how many QoS 1/2 deliveries may be unacknowledged [MQTT-3.3.4-7].
        self.inflight_limit = settings.max_inflight
        # QoS 1/2 PUBLISH packets waiting for their packet identifier to be on disk (strict durability, see
        # Routing._send_inflight); later ones wait behind them.
        self.held_sends = 0
        self.encoder = _UNCONNECTED  # replaced at CONNECT: nothing is sent to a client before it
        self.plain_form: PlainForm | None = None
        # Set by the shell: called when output starts to wait (or a close is asked for).
        self.on_output: Callable[[], None] = _nothing
        self.close_requested = 0
        self.closing = False
        # The deadline moved earlier (a CONNECT set the keep alive): the shell re-arms its timer.
        self.rearm = False
        self._out: list[bytes] = []
        self._last_read = now
        self._connect_deadline = now + settings.connect_timeout
        self.keep_alive = 0
        self.admission: Admission  # made at CONNECT, for the client that was let in
        # Acknowledgements that wait (strict durability, receivers' holds), in the order they leave; made
        # with the first acknowledgement (most connections of a connect storm send none).
        self._acks: AckOrder | None = None
        self._expiry_at_connect = 0

    # -- inputs ---------------------------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the client. Every complete packet is handled now, unless congestion pauses us; after
        a close was asked for, input is discarded (the lingering close)."""
        if self.closing:
            return
        self._last_read = now
        self.broker.stats.bytes_received += len(data)
        self.reader.receive_data(data)
        self._process()

    def handle_timeout(self, now: float) -> None:
        """The deadline from `next_deadline()` passed: enforce the CONNECT timeout or the keep alive."""
        if self.closing:
            return
        if self.state == _NEW:
            if now >= self._connect_deadline:
                # A connection that never sends its CONNECT costs a bounded time [MQTT-3.1.4-1 context].
                log.info("no CONNECT from %s within %.0f s; closing", self.remote_address,
                         self.broker.settings.connect_timeout)
                self._close()
        elif self.state == _CONNECTED and self.keep_alive:
            idle = now - self._last_read
            if idle >= self.keep_alive * 1.5:
                # Silent for 1.5 times its keep alive: dropped, its will published [MQTT-3.1.2-24].
                log.info("client %s silent for %.1f s (keep alive %d s); closing", self._who(), idle,
                         self.keep_alive)
                self._close_with(ReasonCode.KEEP_ALIVE_TIMEOUT)

    def next_deadline(self) -> float | None:
        """When `handle_timeout` should next be called (the clock `now` came from), or None."""
        if self.closing:
            return None
        if self.state == _NEW:
            return self._connect_deadline
        if self.state == _CONNECTED and self.keep_alive:
            # Enforced at one and a half times the keep alive [MQTT-3.1.2-22 (v5) / MQTT-3.1.2-24 (3.1.1)].
            return self._last_read + self.keep_alive * 1.5
        return None

    def pause_writing(self) -> None:
        """The transport's buffer is above its high-water mark: QoS 0 to us is dropped, QoS 1/2 queued, and
        what the client sends waits unread until we catch up."""
        log.debug("%s is slow: write buffer above its high-water mark", self._who())
        self.congested = True

    def resume_writing(self) -> None:
        log.debug("%s caught up: write buffer drained", self._who())
        self.congested = False
        if self.closing:
            return
        self._process()
        if self.session is not None and self.state == _CONNECTED:
            self.broker.drain(self, self.session)

    def connection_lost(self, error: str = "") -> None:
        """The network connection is gone (`error`: why, when the transport said): detach the session; the
        will goes or waits [MQTT-3.1.2-8]."""
        state = self.state
        self.state = _CLOSED
        self.closing = True
        self.on_output = _nothing  # the shell's method: no cycle between it and us (AckOrder.close)
        if self._acks is not None:
            self._acks.close()
        self.broker.events.ended(self.client, self.remote_address, self.close_reason, error)
        if state == _CONNECTED and self.session is not None:
            session, self.session = self.session, None
            will, self.will = self.will, None
            self.broker.detach(self, session, will)
            client = self.client
            if client is not None:  # always, once connected
                self.broker.hooks.connection_closed(client)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("client %s disconnected", client.client_id)

    @property
    def pending_bytes(self) -> int | None:
        """Bytes held while the CONNECT is not handled (the pre-authentication budget), else None."""
        return self.reader.buffered if self.state == _NEW and not self.closing else None

    def refuse_pending(self) -> None:
        self._close()  # the pre-authentication budget is spent: no CONNACK, as for a silent client

    # -- outputs --------------------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued since the last call, as one write (coalesced writes)."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.broker.stats.bytes_sent += len(data)
        return data

    # -- reading --------------------------------------------------------------------------------------------

    def _process(self) -> None:
        """Handle every complete packet in the buffer, unless a close or congestion stops us."""
        reader = self.reader
        handlers = _HANDLERS
        try:
            while not self.closing and not self.congested:
                if self.state == _CONNECTED:
                    plain = reader.take_plain_publishes()
                    if plain:
                        self._on_plain_publishes(plain)
                        continue
                packet = reader.next_packet()
                if packet is NEED_DATA:
                    return
                if self.state == _NEW:
                    self._on_connect(packet)  # type: ignore[arg-type]  # the reader lets only CONNECT through
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

    # -- CONNECT --------------------------------------------------------------------------------------------

    def _on_connect(self, packet: Connect) -> None:
        """The first packet must be a CONNECT [MQTT-3.1.0-1]; the reader refuses anything else. The hooks
        answer from memory, so a CONNECT costs no task, and packets right behind it are handled in the same
        read."""
        self.version = packet.protocol_version
        terms = negotiate(packet, self.broker.settings, self.broker.stats)
        if isinstance(terms, int):
            return self._refuse(terms, who=(packet.client_id, packet.username))
        request = ConnectRequest(terms.client_id, packet.username, packet.password, self.version,
                                 self.remote_address, terms.assigned_client_id, *self.certificate)
        broker = self.broker
        try:
            result = broker.hooks.authenticate(request)
        except Exception:  # a hook that fails refuses with 0x88 Server unavailable, and the broker goes on
            log.exception("authentication hook failed for %s", request.client_id)
            result = AuthResult(Decision.DENY, ReasonCode.SERVER_UNAVAILABLE)
        if result.decision is not _ALLOW:
            broker.stats.auth_failures += 1
            log.info("refused %s from %s (user %r): reason 0x%02x",
                     request.client_id, self.remote_address, request.username, result.reason_code)
            return self._refuse(result.reason_code, logged=True, who=(request.client_id, request.username))
        client = result.client or ClientInfo(request.client_id, request.username, self.version)
        if broker.connection_limit(client) is not None:  # the tenant's plan (broker/tenants.py), logged there
            return self._refuse(ReasonCode.QUOTA_EXCEEDED, logged=True, who=(request.client_id, request.username))
        self._accept(packet, terms, client)

    def _accept(self, packet: Connect, terms: Terms, client: ClientInfo) -> None:
        broker = self.broker
        self.client = client
        self.mount = client.mount
        self.inflight_limit = terms.inflight_limit
        self.encoder = PublishEncoder(self.version, client.mount, terms.alias_out_max, terms.max_outgoing_size,
                                      broker.clock.time)
        self.plain_form = self.encoder.plain_form
        self.admission = Admission(broker, client)
        self.will = packet.will
        self.state = _CONNECTED
        self.reader.max_packet_size = broker.settings.max_packet_size  # max_connect_size until now
        self._expiry_at_connect = terms.requested_expiry
        session, present = broker.attach(self, client, packet.clean_start, terms.granted_expiry, packet.will)
        self.session = session
        self.connected_at = broker.clock.time()
        broker.events.connected(client, self.remote_address)
        # MQTT 3.1 has no Session Present flag: its CONNACK's first byte is reserved, 0 (3.1 section 3.2).
        flag = present and self.version != _V3_1
        self._write(accepting_connack(terms, broker.settings, self.version, flag))
        self.keep_alive = terms.keep_alive
        self.rearm = True
        broker.hooks.connection_opened(client)
        if log.isEnabledFor(logging.DEBUG):  # one call, not two, while debug is off (a connect storm's path)
            log.debug("client %s connected from %s (v%d, session present %s)", client.client_id,
                      self.remote_address, self.version, present)
        if present:
            self._resume_session(session)

    def _resume_session(self, session: Session) -> None:
        """Resend unacknowledged deliveries with DUP set, PUBRELs for released ones [MQTT-4.4.0-1]."""
        for packet_id, delivery in list(session.inflight.items()):
            if delivery.released:
                self._send(Pubrel(packet_id))
            else:
                self.broker.transmit(self, session, delivery, packet_id, dup=True)
        self.broker.drain(self, session)

    def _refuse(self, reason_code: int, logged: bool = False, who: tuple[str, str | None] = ("", None)) -> None:
        """Refuse the CONNECT of `who` (client id, user name, when read) and close [MQTT-3.2.2-6 / MQTT-3.2.2-7]."""
        self.broker.events.refused(who, self.remote_address, reason_code)
        if not logged:
            log.info("refused a client from %s: reason 0x%02x", self.remote_address, reason_code)
        stats = self.broker.stats
        stats.connections_refused += 1
        stats.refused_by_reason[reason_code] += 1
        self._send(Connack(False, reason_code if self.version == _V5 else v3_connack_code(reason_code)))
        self._close()

    def _on_second_connect(self, packet: Connect) -> None:
        raise ProtocolError("a second CONNECT is a protocol error [MQTT-3.1.0-2]")

    def _on_auth(self, packet: Auth) -> None:
        raise ProtocolError("AUTH without an authentication method [MQTT-4.12.0-1]")

    # -- PUBLISH from the client: one path ------------------------------------------------------------------

    def _on_plain_publishes(self, batch: list[tuple[str, int, bytes]]) -> None:
        """The plain QoS 0 PUBLISH packets the reader took whole: admitted and routed as every PUBLISH is,
        with no packet object, through `publish_plain`, which can forward the client's bytes as they are."""
        self.messages_received += len(batch)
        publish_plain = self.broker.publish_plain
        admit = self.admission.admit
        assert self.client is not None and self.session is not None
        sender = self.session.key
        username = self.client.username
        form = self.encoder.own_form
        for topic, offset, wire in batch:
            # Routing runs hooks and the control plane's watchers, which may close this connection (a kick)
            # or change access meanwhile: checked before each packet, as the general path does.
            if self.closing:
                return  # the rest of the run goes unread, as it would have stayed in the buffer
            payload = wire[offset:]
            routed = admit(topic, payload, 0, False, EMPTY_PROPERTIES)
            if type(routed) is str:
                publish_plain(routed, payload, wire, form, sender, username)

    def _on_publish(self, packet: Publish) -> None:
        self.messages_received += 1
        topic = packet.topic
        props = packet.properties
        qos = packet.qos
        if props is not EMPTY_PROPERTIES:
            if props.subscription_identifiers:
                raise ProtocolError("a client PUBLISH carries a subscription identifier [MQTT-3.3.4-6]")
            if props.topic_alias is not None:
                topic = self.admission.resolve_alias(props.topic_alias, topic)
        session = self.session
        assert session is not None and self.client is not None
        packet_id: int = packet.packet_id or 0
        if qos == 2 and packet_id in session.awaiting_release:
            # A resent QoS 2 PUBLISH whose PUBREL has not come: acknowledge, do not route again [MQTT-4.3.3-9].
            # (Strict: after the first one's record is on disk, if its commit is still being written.)
            self._ack(encode(Pubrec(packet_id), self.version), session.durable)
            return
        check_publish(packet, self.broker.settings, len(session.awaiting_release))
        routed = self.admission.admit(topic, packet.payload, qos, packet.retain, props)
        message = None
        if type(routed) is str:
            # Subscribers of this client's form get the very bytes it sent (QoS 0, no properties, no RETAIN).
            wire = (self.encoder.own_form, self.reader.last_packet_bytes()) if (
                qos == 0 and props is EMPTY_PROPERTIES and not packet.retain) else None
            message = publish_message(routed, packet, session.key, self.client.username, self.broker.clock.time(),
                                      wire)
        if qos == 0:
            if message is not None:
                self.broker.route(message)
            return
        ack, reason = publish_ack(qos, packet_id, 0 if message is not None else int(routed), self.version)
        recorded = qos == 2 and reason < 0x80 and self.broker.flows.received(session, packet_id)
        # The acknowledgement goes before any copy routed back to this client: a publisher that subscribes
        # hears PUBACK/PUBREC first, then its message.
        mark = len(self._out)
        waits: list[Wait] = []
        if message is not None:
            # Receivers may hold the acknowledgement until they have the message on disk (a bridge's outbox).
            holds = self.broker.ack_holds
            holds.begin()
            recorded = self.broker.route(message)[1] or recorded
            waits = holds.end()
        self._ack(ack, recorded, mark, waits)

    def _ack(self, data: bytes, dirtied: bool, at: int | None = None, waits: list[Wait] | None = None) -> None:
        """Send an acknowledgement, at position `at` of the output when given, unless it must wait
        (`AckOrder`, broker/engine/acks.py): with strict durability until the state it acknowledges is on
        disk (`dirtied`: the packet it answers changed recorded state), for the receivers that hold it
        (`waits`), and behind any acknowledgement waiting, so they keep the order of what they answer
        [MQTT-4.6.0-2]."""
        acks = self._acks
        if acks is None:
            acks = self._acks = AckOrder(self.broker.persistence, self._write)
        if acks.must_wait(data, dirtied, waits or ()):
            return
        if at is None or self.closing:
            self._write(data)
        else:
            self._out.insert(at, data)
            if len(self._out) == 1:
                self.on_output()

    def _on_pubrel(self, packet: Pubrel) -> None:
        recorded = self.broker.flows.release_received(self.session, packet.packet_id)  # type: ignore[arg-type]
        if recorded is None:
            code = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if self.version == _V5 else 0
            self._ack(encode(Pubcomp(packet.packet_id, code), self.version), False)
        else:
            self._ack(encode(Pubcomp(packet.packet_id), self.version), recorded)

    # -- acknowledgements of our PUBLISH --------------------------------------------------------------------

    def _on_puback_or_pubcomp(self, packet: Puback | Pubcomp) -> None:
        session = self.session
        assert session is not None
        qos = 1 if type(packet) is Puback else 2  # the end of a QoS 1 or a QoS 2 delivery
        if self.broker.flows.acknowledged(session, packet.packet_id, qos) is not None and session.queue:
            self.broker.drain(self, session)

    def _on_pubrec(self, packet: Pubrec) -> None:
        session = self.session
        assert session is not None
        delivery = self.broker.flows.released(session, packet.packet_id, packet.reason_code)
        if delivery is None:
            code = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND if self.version == _V5 else 0
            self._send(Pubrel(packet.packet_id, code))
        elif not delivery.released:  # refused by the receiver: the exchange ended
            if session.queue:
                self.broker.drain(self, session)
        else:
            # Strict durability: the PUBREL goes once "released" is on disk, so that a restart resumes this
            # exchange with PUBREL, never with the PUBLISH again [MQTT-4.3.3-5].
            self._ack(encode(Pubrel(packet.packet_id), self.version), session.durable)

    # -- SUBSCRIBE / UNSUBSCRIBE ----------------------------------------------------------------------------

    def _on_subscribe(self, packet: Subscribe) -> None:
        assert self.session is not None and self.client is not None
        suback, retained = subscribe(self.broker, self.session, self.client, self.version, packet, self.reader.bridge)
        self._send(suback)
        send_retained(self.broker, self.session, retained)

    def _on_unsubscribe(self, packet: Unsubscribe) -> None:
        assert self.session is not None and self.client is not None
        self._send(unsubscribe(self.broker, self.session, self.client, self.version, packet))

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
        self.close_reason = packet.reason_code if self.version == _V5 else 0
        self._close()  # [MQTT-3.14.4-1]

    # -- sending: what the router calls (broker.receivers.DeliveryReceiver) ---------------------------------

    def send_message(
        self,
        message: Message,
        qos: int,
        retain: bool,
        sub_ids: tuple[int, ...],
        packet_id: int | None,
        dup: bool = False,
    ) -> bool:
        """Queue one PUBLISH to this client; False if it exceeds the client's maximum packet size and was
        discarded (counted) [MQTT-3.1.2-25]."""
        data = self.encoder.encode(message, qos, retain, sub_ids, packet_id, dup)
        if data is None:
            self.broker.stats.dropped_too_large += 1
            return False
        if qos:  # QoS 0 counts are the totals less these (see broker/stats.py)
            stats = self.broker.stats
            stats.sent_by_qos[qos] += 1
            stats.sent_bytes_by_qos[qos] += len(message.payload)
        return self.send_plain(data)

    def send_plain(self, data: bytes) -> bool:
        """Queue PUBLISH bytes already in this client's form: the one write of a PUBLISH to this client,
        counted once (`send_message` encodes, `Routing.publish_plain` forwards the publisher's bytes)."""
        stats = self.broker.stats
        if len(data) > self.encoder.max_size:
            stats.dropped_too_large += 1  # [MQTT-3.1.2-25]
            return False
        stats.messages_sent += 1
        self.messages_sent += 1
        if not self.closing:
            out = self._out
            out.append(data)
            if len(out) == 1:
                self.on_output()
        return True

    def _send(self, packet: Any) -> None:
        self._write(encode(packet, self.version))

    def _write(self, data: bytes) -> None:
        if self.closing:
            return
        out = self._out
        out.append(data)
        if len(out) == 1:
            self.on_output()

    # -- closing --------------------------------------------------------------------------------------------

    def _close(self, action: int = CLOSE) -> None:
        """Ask the shell to flush what is queued and close; nothing is read or written after this."""
        if self.closing:
            return
        self.closing = True
        self.close_requested = action
        self.on_output()

    def _close_with(self, reason_code: int, linger: bool = True) -> None:
        """Close after a v5 DISCONNECT carrying `reason_code` (3.1.1 has no server DISCONNECT), lingering so
        the client can read it while it is still sending."""
        self.close_reason = reason_code
        if self.state == _CONNECTED and self.version == _V5 and not self.closing:
            self._send(Disconnect(reason_code))
            self._close(LINGER if linger else CLOSE)
        else:
            self._close()

    def _protocol_error(self, exc: ProtocolError) -> None:
        exc.__traceback__ = None  # the dead reader keeps exc: its frames would keep our bytes alive (limits.py)
        self.broker.stats.protocol_errors += 1
        log.info("protocol error from %s: %s (0x%02x); closing", self._who(), exc, exc.reason_code)
        if self.state != _NEW:
            return self._close_with(exc.reason_code)
        if isinstance(exc, PacketTooLarge):
            self.broker.stats.pending_refused["connect_size"] += 1  # over max_connect_size (broker/limits.py)
        answer = connect_error_answer(exc, self.reader.version)
        if answer is None:
            return self._close()  # [MQTT-3.1.4-1]
        self.version, code = answer
        self._refuse(code, logged=True)

    def taken_over(self) -> Will | None:
        """Another connection took this client id [MQTT-3.1.4-3]: close (v5: 0x8E) and hand back the will.
        The session now belongs to the new connection, so this connection's end must not touch it."""
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
        """The broker is stopping: v5 hears 0x8B (its will was already published), with no lingering."""
        self._close_with(ReasonCode.SERVER_SHUTTING_DOWN, linger=False)

    def _who(self) -> str:
        return self.client.client_id if self.client is not None else self.remote_address


# Which method handles which packet once connected: one table for every connection.
_HANDLERS: dict[type, Callable[[Connection, Any], None]] = {
    Publish: Connection._on_publish, Puback: Connection._on_puback_or_pubcomp, Pubrec: Connection._on_pubrec,
    Pubrel: Connection._on_pubrel, Pubcomp: Connection._on_puback_or_pubcomp, Subscribe: Connection._on_subscribe,
    Unsubscribe: Connection._on_unsubscribe, Pingreq: Connection._on_pingreq, Disconnect: Connection._on_disconnect,
    Connect: Connection._on_second_connect, Auth: Connection._on_auth,
}

