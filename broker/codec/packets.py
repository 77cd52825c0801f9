"""One frozen, slotted dataclass per MQTT control packet (chapter 3 of MQTT 5 and 3.1.1).

They check cheap invariants when built, so an impossible packet cannot exist; a wrong argument is our own
bug, hence ValueError rather than a ProtocolError. The decoder checks the peer's bytes before building.
Version-specific fields (properties, reason codes) are simply ignored when encoding for MQTT 3.x.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Union

from .properties import EMPTY_PROPERTIES, Properties
from .reason_codes import PacketType

__all__ = [
    "Auth", "Connack", "Connect", "Disconnect", "Packet", "Pingreq", "Pingresp", "Puback", "Pubcomp",
    "Publish", "Pubrec", "Pubrel", "Suback", "Subscribe", "Subscription", "Unsuback", "Unsubscribe", "Will",
]


def _check_qos(qos: int) -> None:
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS must be 0, 1 or 2, not {qos!r}")


def _check_packet_id(packet_id: int) -> None:
    if not 0 < packet_id <= 0xFFFF:
        raise ValueError(f"packet identifier must be in 1..65535, not {packet_id!r}")


@dataclass(frozen=True, slots=True)
class Will:
    """The Will Message carried by CONNECT (section 3.1.2.5 and 3.1.3.2-4)."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = EMPTY_PROPERTIES

    def __post_init__(self) -> None:
        _check_qos(self.qos)


@dataclass(frozen=True, slots=True, init=False)
class Connect:
    """Decoded once per connection, so `__init__` is written by hand, as `Publish`'s is."""

    packet_type: ClassVar[PacketType] = PacketType.CONNECT

    client_id: str
    protocol_version: int
    clean_start: bool
    keep_alive: int
    username: str | None
    password: bytes | None
    will: Will | None
    properties: Properties
    protocol_name: str
    # The bridge bit: protocol level 0x84 (3.1.1) or 0x83 (3.1), Mosquitto's `try_private`. Not in the
    # spec, which defines levels 4 and 3 only [MQTT-3.1.2-2]; a documented extension (docs/architecture.md).
    bridge: bool

    def __init__(
        self,
        client_id: str,
        protocol_version: int = 4,
        clean_start: bool = True,
        keep_alive: int = 60,
        username: str | None = None,
        password: bytes | None = None,
        will: Will | None = None,
        properties: Properties = EMPTY_PROPERTIES,
        protocol_name: str = "MQTT",
        bridge: bool = False,
    ) -> None:
        if protocol_version not in (3, 4, 5):
            raise ValueError(f"unknown protocol version {protocol_version!r}")
        if bridge and protocol_version == 5:
            raise ValueError("the bridge bit is for MQTT 3.1 and 3.1.1 (MQTT 5 bridges use No Local)")
        if protocol_version == 3 and protocol_name == "MQTT":
            # MQTT 3.1 calls itself "MQIsdp": spare callers from having to remember it.
            protocol_name = "MQIsdp"
        if not 0 <= keep_alive <= 0xFFFF:
            raise ValueError("keep alive must fit in two bytes")
        _set_client_id(self, client_id)
        _set_protocol_version(self, protocol_version)
        _set_clean_start(self, clean_start)
        _set_keep_alive(self, keep_alive)
        _set_username(self, username)
        _set_password(self, password)
        _set_will(self, will)
        _set_connect_properties(self, properties)
        _set_protocol_name(self, protocol_name)
        _set_bridge(self, bridge)


@dataclass(frozen=True, slots=True)
class Connack:
    """`reason_code` is the v5 reason code, or for MQTT 3.x the return code; it is written as given."""

    packet_type: ClassVar[PacketType] = PacketType.CONNACK

    session_present: bool = False
    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True, init=False)
class Publish:
    """An application message. Built for every message routed, so `__init__` is written by hand: it sets
    the slots through their descriptors, about twice as fast as the generated frozen `__init__`."""

    packet_type: ClassVar[PacketType] = PacketType.PUBLISH

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None
    properties: Properties

    def __init__(
        self,
        topic: str,
        payload: bytes = b"",
        qos: int = 0,
        retain: bool = False,
        dup: bool = False,
        packet_id: int | None = None,
        properties: Properties = EMPTY_PROPERTIES,
    ) -> None:
        if qos == 0:
            if packet_id is not None:
                raise ValueError("a QoS 0 PUBLISH has no packet identifier [MQTT-2.2.1-2]")
            if dup:
                raise ValueError("DUP must be 0 for QoS 0 [MQTT-3.3.1-2]")
        else:
            _check_qos(qos)
            if packet_id is None:
                raise ValueError("a QoS 1/2 PUBLISH needs a packet identifier")
            _check_packet_id(packet_id)
        _set_topic(self, topic)
        _set_payload(self, payload)
        _set_qos(self, qos)
        _set_retain(self, retain)
        _set_dup(self, dup)
        _set_packet_id(self, packet_id)
        _set_properties(self, properties)


(_set_client_id, _set_protocol_version, _set_clean_start, _set_keep_alive, _set_username, _set_password, _set_will,
 _set_connect_properties, _set_protocol_name, _set_bridge) = (
    getattr(Connect, name).__set__
    for name in ("client_id", "protocol_version", "clean_start", "keep_alive", "username", "password", "will",
                 "properties", "protocol_name", "bridge")
)

(_set_topic, _set_payload, _set_qos, _set_retain, _set_dup, _set_packet_id, _set_properties) = (
    getattr(Publish, name).__set__
    for name in ("topic", "payload", "qos", "retain", "dup", "packet_id", "properties")
)


@dataclass(frozen=True, slots=True)
class Puback:
    packet_type: ClassVar[PacketType] = PacketType.PUBACK

    packet_id: int
    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pubrec:
    packet_type: ClassVar[PacketType] = PacketType.PUBREC

    packet_id: int
    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pubrel:
    packet_type: ClassVar[PacketType] = PacketType.PUBREL

    packet_id: int
    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pubcomp:
    packet_type: ClassVar[PacketType] = PacketType.PUBCOMP

    packet_id: int
    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter with its subscription options (section 3.8.3.1)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0

    def __post_init__(self) -> None:
        _check_qos(self.qos)
        if self.retain_handling not in (0, 1, 2):
            raise ValueError("retain handling must be 0, 1 or 2")


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_type: ClassVar[PacketType] = PacketType.SUBSCRIBE

    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = EMPTY_PROPERTIES

    def __post_init__(self) -> None:
        if not self.subscriptions:
            raise ValueError("SUBSCRIBE needs at least one subscription [MQTT-3.8.3-3]")


@dataclass(frozen=True, slots=True)
class Suback:
    packet_type: ClassVar[PacketType] = PacketType.SUBACK

    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_type: ClassVar[PacketType] = PacketType.UNSUBSCRIBE

    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = EMPTY_PROPERTIES

    def __post_init__(self) -> None:
        if not self.topic_filters:
            raise ValueError("UNSUBSCRIBE needs at least one topic filter [MQTT-3.10.3-2]")


@dataclass(frozen=True, slots=True)
class Unsuback:
    """MQTT 3.x UNSUBACK has no reason codes: the encoder omits them and the decoder returns ()."""

    packet_type: ClassVar[PacketType] = PacketType.UNSUBACK

    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Pingreq:
    packet_type: ClassVar[PacketType] = PacketType.PINGREQ


@dataclass(frozen=True, slots=True)
class Pingresp:
    packet_type: ClassVar[PacketType] = PacketType.PINGRESP


@dataclass(frozen=True, slots=True)
class Disconnect:
    packet_type: ClassVar[PacketType] = PacketType.DISCONNECT

    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


@dataclass(frozen=True, slots=True)
class Auth:
    """MQTT 5 only."""

    packet_type: ClassVar[PacketType] = PacketType.AUTH

    reason_code: int = 0
    properties: Properties = EMPTY_PROPERTIES


Packet = Union[
    Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe, Suback, Unsubscribe, Unsuback,
    Pingreq, Pingresp, Disconnect, Auth,
]
