"""A sans-IO MQTT client for the bridge's upstream link: bytes in, events out, and back (h11's way).

    client = ClientConnection(options)
    transport.write(client.connect())
    for event in client.receive_data(chunk, now):   # Connected, Acked, Received, Incoming, ...
        ...
    transport.write(client.publish(...))
    action = client.tick(now)                       # PINGREQ bytes, DEAD, or None

No socket and no asyncio: the keep-alive and acknowledgement clocks are the `now` the caller passes, so
every rule here is testable with plain bytes (tests/bridge/test_mqtt_client.py). Packets are Roost's own
codec (`broker/codec/`). The client keeps what the protocol needs on this connection only (which QoS 2
messages have had PUBREC, which packet identifiers are in flight); what must outlive the connection
(the messages, their release state) is the caller's, in the outbox.

Errors: the upstream breaking the protocol raises `ProtocolError` (from the codec or from here); the
caller closes the link.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final, Union

from broker.codec import (
    EMPTY_PROPERTIES, NEED_DATA, Connack, Connect, Disconnect, PacketReader, Pingreq, Pingresp, Properties,
    Puback, Pubcomp, Publish, Pubrec, Pubrel, Suback, Subscribe, Subscription, Unsuback, encode, encode_publish,
)
from broker.codec.reason_codes import ReasonCode
from broker.errors import ProtocolError

__all__ = [
    "DEAD", "Acked", "ClientConnection", "ClientOptions", "Connected", "Dead", "Event", "Incoming", "Received",
    "Refused", "Released", "ServerDisconnect", "Subscribed",
]

_V5 = 5


@dataclass(frozen=True, slots=True)
class ClientOptions:
    client_id: str
    version: int = 5  # 5, or 4 (3.1.1)
    keep_alive: int = 30
    username: str | None = None
    password: str | None = None
    session_expiry: int = 7 * 86_400  # v5; 3.1.1 sessions are kept by clean session 0
    try_private: bool = False  # 3.1.1: the bridge bit (protocol level 0x84)
    receive_maximum: int = 64  # how many QoS 1/2 messages the upstream may send us at once (v5)
    max_packet_size: int = 268_435_455


# -- events ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """CONNACK accepted the connection. `session_present`: the upstream kept our session [MQTT-3.2.2-2]."""

    session_present: bool
    receive_maximum: int  # the upstream's: at most this many of our QoS 1/2 messages in flight [MQTT-3.3.4-7]
    maximum_qos: int
    retain_available: bool
    maximum_packet_size: int
    keep_alive: int  # the upstream's Server Keep Alive when it set one [MQTT-3.1.2-21], else ours


@dataclass(frozen=True, slots=True)
class Refused:
    """CONNACK refused the connection (v5 reason code, or 3.1.1 return code)."""

    reason_code: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Acked:
    """The upstream finished with one of our messages: PUBACK (QoS 1), PUBCOMP (QoS 2), or a PUBREC with a
    failure code (>= 0x80: the QoS 2 flow ends there [MQTT-4.3.3-4] context). `reason_code` >= 0x80 means it
    refused the message (v5 only)."""

    packet_id: int
    reason_code: int = 0


@dataclass(frozen=True, slots=True)
class Received:
    """PUBREC for one of our QoS 2 messages: the caller records that, then sends `release(packet_id)`."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Incoming:
    """A PUBLISH from the upstream. QoS 1: answer `puback`; QoS 2: `pubrec`, then PUBCOMP on `Released`.
    `duplicate` (QoS 2): its packet identifier is awaiting PUBREL on this connection, so it was delivered
    already: answer PUBREC only [MQTT-4.3.3-9]."""

    publish: Publish
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Released:
    """PUBREL from the upstream for a QoS 2 message it sent: answer `pubcomp(packet_id)`."""

    packet_id: int


@dataclass(frozen=True, slots=True)
class Subscribed:
    packet_id: int
    reason_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ServerDisconnect:
    """The upstream sent DISCONNECT (v5) with a reason."""

    reason_code: int
    reason: str | None = None


class Dead:
    """The type of DEAD: the upstream stayed silent past the keep-alive grace: the link is dead."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DEAD"


DEAD: Final = Dead()

Event = Union[Connected, Refused, Acked, Received, Incoming, Released, Subscribed, ServerDisconnect]


# -- the connection ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Clock:
    last_sent: float = 0.0
    last_received: float = 0.0
    ping_sent_at: float | None = None


@dataclass(slots=True)
class ClientConnection:
    """One network connection's worth of MQTT client protocol."""

    options: ClientOptions
    connected: bool = False
    keep_alive: int = 0
    clock: _Clock = field(default_factory=_Clock)
    # QoS 2 messages from the upstream whose PUBREL has not come, on this connection [MQTT-4.3.3-9].
    awaiting_release: set[int] = field(default_factory=set)
    _reader: PacketReader = field(init=False)

    def __post_init__(self) -> None:
        self._reader = PacketReader(self.options.version, self.options.max_packet_size)
        self.keep_alive = self.options.keep_alive

    @property
    def version(self) -> int:
        return self.options.version

    def connect(self, now: float) -> bytes:
        """The CONNECT packet. The session is persistent: clean start 0 [MQTT-3.1.2-4], with a session
        expiry (v5) so that what is sent to our subscriptions while the link is down waits for us."""
        options = self.options
        properties = EMPTY_PROPERTIES
        if options.version == _V5:
            properties = Properties(
                session_expiry_interval=options.session_expiry,
                receive_maximum=options.receive_maximum,
                maximum_packet_size=options.max_packet_size,
            )
        packet = Connect(
            client_id=options.client_id,
            protocol_version=options.version,
            clean_start=False,
            keep_alive=options.keep_alive,
            username=options.username,
            password=options.password.encode() if options.password is not None else None,
            properties=properties,
            # The bridge bit: protocol level 0x84 (Mosquitto's try_private; see broker/codec/packets.py).
            bridge=options.version == 4 and options.try_private,
        )
        data = encode(packet, options.version)
        self.clock.last_sent = now
        return data

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Every event the bytes complete, in order. Raises ProtocolError for a bad stream."""
        self._reader.receive_data(data)
        self.clock.last_received = now
        self.clock.ping_sent_at = None  # any packet shows the link alive
        events: list[Event] = []
        reader = self._reader
        while (packet := reader.next_packet()) is not NEED_DATA:
            event = self._handle(packet)
            if event is not None:
                events.append(event)
        return events

    def _handle(self, packet: object) -> Event | None:
        kind = type(packet)
        if not self.connected:
            if kind is not Connack:
                raise ProtocolError("the first packet from the server must be CONNACK [MQTT-3.2.0-1]")
            return self._on_connack(packet)  # type: ignore[arg-type]
        if kind is Publish:
            publish: Publish = packet  # type: ignore[assignment]
            if publish.qos == 2:
                duplicate = publish.packet_id in self.awaiting_release
                self.awaiting_release.add(publish.packet_id)  # type: ignore[arg-type]
                return Incoming(publish, duplicate)
            return Incoming(publish)
        if kind is Puback or kind is Pubcomp:
            return Acked(packet.packet_id, packet.reason_code)  # type: ignore[union-attr]
        if kind is Pubrec:
            code = packet.reason_code  # type: ignore[union-attr]
            if code >= 0x80:
                return Acked(packet.packet_id, code)  # type: ignore[union-attr]
            return Received(packet.packet_id)  # type: ignore[union-attr]
        if kind is Pubrel:
            self.awaiting_release.discard(packet.packet_id)  # type: ignore[union-attr]
            return Released(packet.packet_id)  # type: ignore[union-attr]
        if kind is Suback:
            return Subscribed(packet.packet_id, packet.reason_codes)  # type: ignore[union-attr]
        if kind is Pingresp or kind is Unsuback:
            return None
        if kind is Disconnect:
            return ServerDisconnect(packet.reason_code, packet.properties.reason_string)  # type: ignore[union-attr]
        raise ProtocolError(f"a server does not send {kind.__name__} to a client")

    def _on_connack(self, packet: Connack) -> Event:
        if packet.reason_code != 0:
            return Refused(packet.reason_code, packet.properties.reason_string)
        self.connected = True
        props = packet.properties
        if props.server_keep_alive is not None:
            self.keep_alive = props.server_keep_alive  # [MQTT-3.1.2-21]
        return Connected(
            session_present=packet.session_present,
            receive_maximum=props.receive_maximum or 65_535,
            maximum_qos=2 if props.maximum_qos is None else props.maximum_qos,
            retain_available=props.retain_available != 0,
            maximum_packet_size=props.maximum_packet_size or 268_435_455,
            keep_alive=self.keep_alive,
        )

    # -- what the client sends -------------------------------------------------------------------------------

    def _sent(self, data: bytes, now: float) -> bytes:
        self.clock.last_sent = now
        return data

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool, packet_id: int | None, dup: bool,
                properties: Properties, now: float) -> bytes:
        """A PUBLISH; `dup` when this packet identifier may have reached the upstream before [MQTT-3.3.1-1]."""
        if self.version != _V5:
            properties = EMPTY_PROPERTIES
        elif properties is not EMPTY_PROPERTIES and (properties.topic_alias or properties.subscription_identifiers):
            properties = replace(properties, topic_alias=None, subscription_identifiers=())
        return self._sent(encode_publish(topic, payload, qos, retain, dup and qos > 0, packet_id, properties,
                                         self.version), now)

    def release(self, packet_id: int, now: float) -> bytes:
        """PUBREL after PUBREC [MQTT-4.3.3-3]; also resent after a reconnect for a released message."""
        return self._sent(encode(Pubrel(packet_id), self.version), now)

    def puback(self, packet_id: int, now: float, reason_code: int = 0) -> bytes:
        return self._sent(encode(Puback(packet_id, reason_code), self.version), now)

    def pubrec(self, packet_id: int, now: float, reason_code: int = 0) -> bytes:
        if reason_code >= 0x80:
            self.awaiting_release.discard(packet_id)
        return self._sent(encode(Pubrec(packet_id, reason_code), self.version), now)

    def pubcomp(self, packet_id: int, now: float) -> bytes:
        return self._sent(encode(Pubcomp(packet_id), self.version), now)

    def subscribe(self, packet_id: int, filters: tuple[str, ...], qos: int, now: float) -> bytes:
        """SUBSCRIBE with No Local (nothing we forward comes back down [MQTT-3.8.3-3]) and Retain As
        Published (a retained message stays retained locally [MQTT-3.3.1-12]) in v5; in 3.1.1 those come
        from the bridge bit, or from filters that do not overlap (bridge/config.py)."""
        v5 = self.version == _V5
        # Retain handling 1: retained messages only for a new subscription [MQTT-3.3.1-10], so that
        # subscribing again after a reconnect does not bring every retained command down again.
        subscriptions = tuple(
            Subscription(f, qos, no_local=v5, retain_as_published=v5, retain_handling=1 if v5 else 0) for f in filters
        )
        return self._sent(encode(Subscribe(packet_id, subscriptions), self.version), now)

    def disconnect(self) -> bytes:
        """DISCONNECT 0x00: the session is kept (its expiry runs), and no will is published."""
        return encode(Disconnect(ReasonCode.SUCCESS if self.version == _V5 else 0), self.version)

    # -- clocks ----------------------------------------------------------------------------------------------

    def tick(self, now: float) -> bytes | Dead | None:
        """Keep alive: PINGREQ when we have sent nothing for keep_alive seconds [MQTT-3.1.2-23]; DEAD when
        the upstream has then stayed silent for half a keep-alive more (a silent network must not look
        connected); None otherwise."""
        keep_alive = self.keep_alive
        if not keep_alive or not self.connected:
            return None
        clock = self.clock
        if clock.ping_sent_at is not None:
            if now - clock.ping_sent_at >= max(1.0, keep_alive / 2):
                return DEAD
            return None
        if now - clock.last_sent >= keep_alive or now - clock.last_received >= keep_alive:
            clock.ping_sent_at = now
            return self._sent(encode(Pingreq(), self.version), now)
        return None

