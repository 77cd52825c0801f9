"""Decoding one packet body (the fixed header already split off) into a packet dataclass.

Every rule the peer can break maps to an error carrying its reason code, and the message cites the
normative statement ([MQTT-x.y.z-n]; 3.1.1 numbering where only 3.1.1 has it, else the MQTT 5 section):

    MalformedPacket (0x81)          the bytes cannot be parsed as the spec says
    ProtocolError (0x82, or as given)  parsable, but the content breaks a rule
    UnsupportedProtocolVersion (0x84)  CONNECT names a protocol we do not speak

Any ProtocolError raised while decoding a CONNECT after its protocol level byte was read carries that
level as `protocol_version`, so the broker can answer (CONNACK 0x84 / return code 1 ...) in the client's
own dialect. MQTT 3.1 ("MQIsdp") did not reserve the fixed-header flags of PUBREL, SUBSCRIBE and
UNSUBSCRIBE as strictly as 3.1.1 does, so a DUP bit there is tolerated for version 3 only.

Levels 0x84 and 0x83 (the 3.1.1 and 3.1 levels with the bridge bit, Mosquitto's `try_private`) are read
as 4 and 3 with `Connect.bridge` set: the spec defines only 4 and 3 [MQTT-3.1.2-2]; this is the documented
extension Mosquitto's bridges use (docs/architecture.md says what Roost does with it).
"""

from __future__ import annotations

from collections.abc import Callable

from broker.errors import MalformedPacket, ProtocolError, UnsupportedProtocolVersion

from ._wire import Buffer, read_bin, read_str, read_u16, read_u8
from .packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from .properties import EMPTY_PROPERTIES, WILL_PROPERTIES, decode_properties
from .reason_codes import (
    AUTH_CODES,
    CONNACK_CODES,
    DISCONNECT_CODES,
    PUBACK_CODES,
    PUBREL_CODES,
    SUBACK_CODES,
    UNSUBACK_CODES,
    V3_CONNACK_CODES,
    V3_SUBACK_CODES,
    PacketType,
    ReasonCode,
)
from .topics import SHARE_PREFIX, validate_topic_name

__all__ = ["decode_packet"]

_KNOWN_PROTOCOLS = {("MQTT", 4), ("MQTT", 5), ("MQIsdp", 3)}
# Levels with the bridge bit (0x80) set: Mosquitto's `try_private` for 3.1.1 and 3.1 (see Connect.bridge).
_BRIDGE_BIT = 0x80
_BRIDGE_PROTOCOLS = {("MQTT", 4), ("MQIsdp", 3)}


def decode_packet(packet_type_and_flags: int, body: bytes | bytearray | memoryview, version: int | None) -> Packet:
    """Decode one complete packet body. `version` None means "expect CONNECT" (its level is detected)."""
    if isinstance(body, memoryview):
        body = body.tobytes()
    return decode_body(packet_type_and_flags, body, 0, len(body), version)


def decode_body(first: int, buf: Buffer, pos: int, end: int, version: int | None) -> Packet:
    """Decode the packet whose body is `buf[pos:end]`; used by PacketReader to avoid copying the body."""
    packet_type = first >> 4
    if packet_type == 3 and version is not None:  # the hot path
        return decode_publish(first, buf, pos, end, version)
    if packet_type == 0:
        raise MalformedPacket("packet type 0 is reserved (section 2.1.2)")
    if version is None and packet_type != 1:
        raise ProtocolError("the first packet sent by a client must be CONNECT [MQTT-3.1.0-1]")
    if packet_type == 15 and version != 5:
        raise MalformedPacket("packet type 15 is reserved before MQTT 5 (3.1.1 section 2.2.1)")
    flags = first & 0x0F
    expected = 2 if packet_type in (6, 8, 10) else 0
    if flags != expected and not (version == 3 and flags & 0x07 == expected):
        if expected:
            raise MalformedPacket(
                "fixed header flags of PUBREL, SUBSCRIBE and UNSUBSCRIBE must be 0010 "
                "[MQTT-3.6.1-1][MQTT-3.8.1-1][MQTT-3.10.1-1]"
            )
        raise MalformedPacket("reserved fixed header flags must be 0 [MQTT-2.1.3-1]")
    return _DECODERS[packet_type](buf, pos, end, version)  # type: ignore[arg-type]


def decode_publish(first: int, buf: Buffer, pos: int, end: int, version: int) -> Publish:
    # The hot path: the topic string read is inlined (same rules as _wire.read_str).
    qos = (first >> 1) & 3
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    dup = first & 8 != 0
    if dup and not qos:
        raise MalformedPacket("DUP flag set on a QoS 0 PUBLISH [MQTT-3.3.1-2]")
    if pos + 2 > end:
        raise MalformedPacket("PUBLISH ends inside its topic name length")
    stop = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("topic name length runs past the end of the packet")
    try:
        topic = str(buf[pos + 2 : stop], "utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("topic name is not well-formed UTF-8 [MQTT-1.5.4-1]") from None
    pos = stop
    packet_id = None
    if qos:
        if pos + 2 > end:
            raise MalformedPacket("PUBLISH ends inside its packet identifier")
        packet_id = buf[pos] << 8 | buf[pos + 1]
        if not packet_id:
            raise ProtocolError("PUBLISH with QoS > 0 needs a non-zero packet identifier [MQTT-2.3.1-1]")
        pos += 2
    properties = EMPTY_PROPERTIES
    if version == 5:
        if pos < end and buf[pos] == 0:  # no properties: the common case, inlined
            pos += 1
        else:
            properties, pos = decode_properties(buf, pos, end, PacketType.PUBLISH)
            if properties.topic_alias == 0:
                raise ProtocolError("topic alias 0 is not permitted [MQTT-3.3.2-8]", ReasonCode.TOPIC_ALIAS_INVALID)
    if not topic:
        if properties.topic_alias is None:
            raise ProtocolError("empty topic name without a topic alias [MQTT-3.3.2-1][MQTT-4.7.3-1]")
    elif "+" in topic or "#" in topic or "\x00" in topic:
        if "\x00" in topic:
            raise MalformedPacket("topic name contains U+0000 [MQTT-1.5.4-2]")
        raise ProtocolError("topic name contains a wildcard [MQTT-3.3.2-2]", ReasonCode.TOPIC_NAME_INVALID)
    payload = buf[pos:end]
    if type(payload) is not bytes:
        payload = bytes(payload)
    return Publish(topic, payload, qos, first & 1 != 0, dup, packet_id, properties)


def _connect(buf: Buffer, pos: int, end: int, version: int | None) -> Connect:
    name, pos = read_str(buf, pos, end)
    level, pos = read_u8(buf, pos, end)
    bridge = level & _BRIDGE_BIT != 0 and (name, level & ~_BRIDGE_BIT) in _BRIDGE_PROTOCOLS
    if bridge:
        level &= ~_BRIDGE_BIT
    try:
        if (name, level) not in _KNOWN_PROTOCOLS:
            raise UnsupportedProtocolVersion(
                f"unsupported protocol name {name!r} / level {level} [MQTT-3.1.2-1][MQTT-3.1.2-2]"
            )
        return _connect_rest(buf, pos, end, name, level, bridge)
    except ProtocolError as exc:
        exc.protocol_version = level  # type: ignore[attr-defined]
        raise


def _connect_rest(buf: Buffer, pos: int, end: int, name: str, level: int, bridge: bool) -> Connect:
    flags, pos = read_u8(buf, pos, end)
    if flags & 0x01:
        raise MalformedPacket("CONNECT reserved flag must be 0 [MQTT-3.1.2-3]")
    will_flag = flags & 0x04
    will_qos = (flags >> 3) & 3
    will_retain = bool(flags & 0x20)
    password_flag = flags & 0x40
    username_flag = flags & 0x80
    if not will_flag and will_qos:
        raise MalformedPacket("will QoS must be 0 without the will flag [MQTT-3.1.2-11][MQTT-3.1.2-13]")
    if not will_flag and will_retain:
        raise MalformedPacket("will retain must be 0 without the will flag [MQTT-3.1.2-11][MQTT-3.1.2-15]")
    if will_qos == 3:
        raise MalformedPacket("will QoS 3 [MQTT-3.1.2-14]")
    if password_flag and not username_flag and level != 5:
        raise MalformedPacket("password flag set without the user name flag [MQTT-3.1.2-22]")
    keep_alive, pos = read_u16(buf, pos, end)
    properties = EMPTY_PROPERTIES
    if level == 5:
        properties, pos = decode_properties(buf, pos, end, PacketType.CONNECT)
        if properties.authentication_data is not None and properties.authentication_method is None:
            raise ProtocolError("authentication data without authentication method (section 3.1.2.11.10)")
    client_id, pos = read_str(buf, pos, end)
    will = None
    if will_flag:
        will_properties = EMPTY_PROPERTIES
        if level == 5:
            will_properties, pos = decode_properties(buf, pos, end, WILL_PROPERTIES)
        will_topic, pos = read_str(buf, pos, end)
        validate_topic_name(will_topic)  # [MQTT-3.1.3-11]: a topic name, so no wildcards
        will_payload, pos = read_bin(buf, pos, end)
        will = Will(will_topic, will_payload, will_qos, will_retain, will_properties)
    username = None
    if username_flag:
        username, pos = read_str(buf, pos, end)
    password = None
    if password_flag:
        password, pos = read_bin(buf, pos, end)
    if pos != end:
        raise MalformedPacket("bytes after the last CONNECT payload field")
    return Connect(client_id, level, bool(flags & 0x02), keep_alive, username, password, will, properties, name,
                   bridge)


def _connack(buf: Buffer, pos: int, end: int, version: int) -> Connack:
    flags, pos = read_u8(buf, pos, end)
    if flags & 0xFE:
        raise MalformedPacket("CONNACK acknowledge flags bits 7-1 are reserved [MQTT-3.2.2-1]")
    code, pos = read_u8(buf, pos, end)
    properties = EMPTY_PROPERTIES
    if version == 5:
        if code not in CONNACK_CODES:
            raise ProtocolError(f"reason code 0x{code:02X} is not valid in CONNACK (section 3.2.2.2)")
        properties, pos = decode_properties(buf, pos, end, PacketType.CONNACK)
    elif code not in V3_CONNACK_CODES:
        raise ProtocolError(f"CONNACK return code {code} is reserved (3.1.1 section 3.2.2.3)")
    if code and flags:
        raise ProtocolError("session present must be 0 when the connection is refused [MQTT-3.2.2-4]")
    if pos != end:
        raise MalformedPacket("bytes after the end of CONNACK")
    return Connack(bool(flags), code, properties)


def _packet_id(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    packet_id, pos = read_u16(buf, pos, end)
    if not packet_id:
        raise ProtocolError("packet identifier 0 [MQTT-2.3.1-1][MQTT-2.2.1-3]")
    return packet_id, pos


def _ack_decoder(
    cls: type[Puback | Pubrec | Pubrel | Pubcomp], codes: frozenset[int]
) -> Callable[[Buffer, int, int, int], Packet]:
    context = cls.packet_type

    def decode(buf: Buffer, pos: int, end: int, version: int) -> Packet:
        packet_id, pos = _packet_id(buf, pos, end)
        if pos == end:  # MQTT 3.x, or MQTT 5 short form: reason 0, no properties [MQTT-3.4.2-1]
            return cls(packet_id)
        if version != 5:
            raise MalformedPacket(f"{context.name} has a remaining length of 2 (3.1.1 section 3.4.1)")
        code = buf[pos]
        if code not in codes:
            raise ProtocolError(f"reason code 0x{code:02X} is not valid in {context.name}")
        pos += 1
        properties = EMPTY_PROPERTIES
        if pos < end:  # remaining length 3: reason code only, no properties
            properties, pos = decode_properties(buf, pos, end, context)
            if pos != end:
                raise MalformedPacket(f"bytes after the end of {context.name}")
        return cls(packet_id, code, properties)

    return decode


def _subscribe(buf: Buffer, pos: int, end: int, version: int) -> Subscribe:
    packet_id, pos = _packet_id(buf, pos, end)
    properties = EMPTY_PROPERTIES
    if version == 5:
        properties, pos = decode_properties(buf, pos, end, PacketType.SUBSCRIBE)
    subscriptions = []
    while pos < end:
        topic_filter, pos = read_str(buf, pos, end)
        if not topic_filter:
            raise ProtocolError("topic filter must be at least one character long [MQTT-4.7.3-1]",
                                ReasonCode.TOPIC_FILTER_INVALID)
        options, pos = read_u8(buf, pos, end)
        qos = options & 3
        if version == 5:
            if options & 0xC0:
                raise MalformedPacket("subscription options bits 6-7 are reserved [MQTT-3.8.3-5]")
            if qos == 3:
                raise ProtocolError("subscription maximum QoS 3 (section 3.8.3.1)")
            retain_handling = (options >> 4) & 3
            if retain_handling == 3:
                raise ProtocolError("retain handling 3 (section 3.8.3.1)")
            no_local = bool(options & 0x04)
            if no_local and topic_filter.startswith(SHARE_PREFIX):
                raise ProtocolError("no local set on a shared subscription [MQTT-3.8.3-4]")
            subscriptions.append(
                Subscription(topic_filter, qos, no_local, bool(options & 0x08), retain_handling)
            )
        else:
            if options & 0xFC or qos == 3:
                raise MalformedPacket("requested QoS must be 0, 1 or 2 and bits 2-7 zero [MQTT-3-8.3-4]")
            subscriptions.append(Subscription(topic_filter, qos))
    if not subscriptions:
        raise ProtocolError("SUBSCRIBE must contain at least one subscription [MQTT-3.8.3-3]")
    return Subscribe(packet_id, tuple(subscriptions), properties)


def _suback(buf: Buffer, pos: int, end: int, version: int) -> Suback:
    packet_id, pos = _packet_id(buf, pos, end)
    properties = EMPTY_PROPERTIES
    if version == 5:
        properties, pos = decode_properties(buf, pos, end, PacketType.SUBACK)
    codes = tuple(buf[pos:end])
    if not codes:
        raise ProtocolError("SUBACK must contain a reason code per subscription (section 3.9.3)")
    allowed = SUBACK_CODES if version == 5 else V3_SUBACK_CODES
    for code in codes:
        if code not in allowed:
            raise ProtocolError(f"reason code 0x{code:02X} is not valid in SUBACK [MQTT-3.9.3-2]")
    return Suback(packet_id, codes, properties)


def _unsubscribe(buf: Buffer, pos: int, end: int, version: int) -> Unsubscribe:
    packet_id, pos = _packet_id(buf, pos, end)
    properties = EMPTY_PROPERTIES
    if version == 5:
        properties, pos = decode_properties(buf, pos, end, PacketType.UNSUBSCRIBE)
    topic_filters = []
    while pos < end:
        topic_filter, pos = read_str(buf, pos, end)
        if not topic_filter:
            raise ProtocolError("topic filter must be at least one character long [MQTT-4.7.3-1]",
                                ReasonCode.TOPIC_FILTER_INVALID)
        topic_filters.append(topic_filter)
    if not topic_filters:
        raise ProtocolError("UNSUBSCRIBE must contain at least one topic filter [MQTT-3.10.3-2]")
    return Unsubscribe(packet_id, tuple(topic_filters), properties)


def _unsuback(buf: Buffer, pos: int, end: int, version: int) -> Unsuback:
    packet_id, pos = _packet_id(buf, pos, end)
    if version != 5:
        if pos != end:
            raise MalformedPacket("UNSUBACK has a remaining length of 2 (3.1.1 section 3.11.1)")
        return Unsuback(packet_id)
    properties, pos = decode_properties(buf, pos, end, PacketType.UNSUBACK)
    codes = tuple(buf[pos:end])
    if not codes:
        raise ProtocolError("UNSUBACK must contain a reason code per topic filter (section 3.11.3)")
    for code in codes:
        if code not in UNSUBACK_CODES:
            raise ProtocolError(f"reason code 0x{code:02X} is not valid in UNSUBACK (section 3.11.3)")
    return Unsuback(packet_id, codes, properties)


def _empty_decoder(cls: type[Pingreq | Pingresp]) -> Callable[[Buffer, int, int, int], Packet]:
    instance = cls()

    def decode(buf: Buffer, pos: int, end: int, version: int) -> Packet:
        if pos != end:
            raise MalformedPacket(f"{cls.packet_type.name} has no variable header or payload")
        return instance

    return decode


def _reason_decoder(
    cls: type[Disconnect | Auth], codes: frozenset[int]
) -> Callable[[Buffer, int, int, int], Packet]:
    context = cls.packet_type
    bare = cls()

    def decode(buf: Buffer, pos: int, end: int, version: int) -> Packet:
        if pos == end:  # MQTT 3.x, or MQTT 5 short form: reason 0, no properties [MQTT-3.14.2-1]
            return bare
        if version != 5:
            raise MalformedPacket(f"{context.name} has no variable header before MQTT 5")
        code = buf[pos]
        if code not in codes:
            raise ProtocolError(f"reason code 0x{code:02X} is not valid in {context.name}")
        pos += 1
        properties = EMPTY_PROPERTIES
        if pos < end:  # remaining length 1: reason code only
            properties, pos = decode_properties(buf, pos, end, context)
            if pos != end:
                raise MalformedPacket(f"bytes after the end of {context.name}")
        return cls(code, properties)

    return decode


_DECODERS: dict[int, Callable[[Buffer, int, int, int], Packet]] = {
    1: _connect,  # type: ignore[dict-item]
    2: _connack,
    4: _ack_decoder(Puback, PUBACK_CODES),
    5: _ack_decoder(Pubrec, PUBACK_CODES),
    6: _ack_decoder(Pubrel, PUBREL_CODES),
    7: _ack_decoder(Pubcomp, PUBREL_CODES),
    8: _subscribe,
    9: _suback,
    10: _unsubscribe,
    11: _unsuback,
    12: _empty_decoder(Pingreq),
    13: _empty_decoder(Pingresp),
    14: _reason_decoder(Disconnect, DISCONNECT_CODES),
    15: _reason_decoder(Auth, AUTH_CODES),
}
