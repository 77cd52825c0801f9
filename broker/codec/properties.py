"""MQTT 5 properties (section 2.2.2): one frozen dataclass, and its wire format.

Every property has an identifier, a data type and the packets it may appear in (the table of section
2.2.2.2, plus the Will Properties of the CONNECT payload, section 3.1.3.2). The decoder enforces that
table, the "more than once" rules and the value ranges; each breach is a Protocol Error (0x82), while bytes
that cannot be parsed at all are a Malformed Packet (0x81).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from broker.errors import MalformedPacket, ProtocolError

from ._wire import (
    Buffer,
    encode_bin,
    encode_str,
    encode_varint,
    pack_u16,
    pack_u32,
    read_bin,
    read_str,
    read_u16,
    read_u32,
    read_u8,
    read_varint,
)
from .reason_codes import PacketType

__all__ = ["EMPTY_PROPERTIES", "WILL_PROPERTIES", "Properties", "decode_properties", "encode_properties"]

# Where a property may appear: a bit per packet type; bit 0 (packet type 0 is reserved) stands for the
# Will Properties of a CONNECT payload.
WILL_PROPERTIES: Final = 0


@dataclass(frozen=True, slots=True, repr=False)
class Properties:
    """The properties of one MQTT 5 packet; None (or an empty tuple) means "absent"."""

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None

    def __repr__(self) -> str:  # only what is present: a packet's repr stays readable
        present = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in self.__slots__
            if getattr(self, name) is not None and getattr(self, name) != ()
        )
        return f"Properties({present})"


EMPTY_PROPERTIES: Final = Properties()

_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)

_W = 1 << WILL_PROPERTIES
_T = PacketType
_CONNECT, _CONNACK, _PUBLISH = 1 << _T.CONNECT, 1 << _T.CONNACK, 1 << _T.PUBLISH
_ACKS = 1 << _T.PUBACK | 1 << _T.PUBREC | 1 << _T.PUBREL | 1 << _T.PUBCOMP
_SUBSCRIBE, _SUBACK = 1 << _T.SUBSCRIBE, 1 << _T.SUBACK
_UNSUBSCRIBE, _UNSUBACK = 1 << _T.UNSUBSCRIBE, 1 << _T.UNSUBACK
_DISCONNECT, _AUTH = 1 << _T.DISCONNECT, 1 << _T.AUTH

# identifier: (field, data type, where allowed) -- MQTT 5 section 2.2.2.2
_TABLE: Final[dict[int, tuple[str, int, int]]] = {
    0x01: ("payload_format_indicator", _BYTE, _PUBLISH | _W),
    0x02: ("message_expiry_interval", _U32, _PUBLISH | _W),
    0x03: ("content_type", _STR, _PUBLISH | _W),
    0x08: ("response_topic", _STR, _PUBLISH | _W),
    0x09: ("correlation_data", _BIN, _PUBLISH | _W),
    0x0B: ("subscription_identifiers", _VARINT, _PUBLISH | _SUBSCRIBE),
    0x11: ("session_expiry_interval", _U32, _CONNECT | _CONNACK | _DISCONNECT),
    0x12: ("assigned_client_identifier", _STR, _CONNACK),
    0x13: ("server_keep_alive", _U16, _CONNACK),
    0x15: ("authentication_method", _STR, _CONNECT | _CONNACK | _AUTH),
    0x16: ("authentication_data", _BIN, _CONNECT | _CONNACK | _AUTH),
    0x17: ("request_problem_information", _BYTE, _CONNECT),
    0x18: ("will_delay_interval", _U32, _W),
    0x19: ("request_response_information", _BYTE, _CONNECT),
    0x1A: ("response_information", _STR, _CONNACK),
    0x1C: ("server_reference", _STR, _CONNACK | _DISCONNECT),
    0x1F: ("reason_string", _STR, _CONNACK | _ACKS | _SUBACK | _UNSUBACK | _DISCONNECT | _AUTH),
    0x21: ("receive_maximum", _U16, _CONNECT | _CONNACK),
    0x22: ("topic_alias_maximum", _U16, _CONNECT | _CONNACK),
    0x23: ("topic_alias", _U16, _PUBLISH),
    0x24: ("maximum_qos", _BYTE, _CONNACK),
    0x25: ("retain_available", _BYTE, _CONNACK),
    0x26: (
        "user_properties",
        _PAIR,
        _CONNECT | _CONNACK | _PUBLISH | _W | _ACKS | _SUBSCRIBE | _SUBACK | _UNSUBSCRIBE | _UNSUBACK
        | _DISCONNECT | _AUTH,
    ),
    0x27: ("maximum_packet_size", _U32, _CONNECT | _CONNACK),
    0x28: ("wildcard_subscription_available", _BYTE, _CONNACK),
    0x29: ("subscription_identifier_available", _BYTE, _CONNACK),
    0x2A: ("shared_subscription_available", _BYTE, _CONNACK),
}

# Byte properties whose only legal values are 0 and 1 (sections 3.1.2.11.6/7, 3.2.2.3.4/5/11/12/13, 3.3.2.3.2).
_BOOLEAN_BYTES: Final = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
# Properties that must not be zero.
_NON_ZERO: Final = {
    0x0B: "subscription identifier 0 (section 3.8.2.1.2)",
    0x21: "receive maximum 0 (sections 3.1.2.11.3, 3.2.2.3.3)",
    0x27: "maximum packet size 0 (sections 3.1.2.11.4, 3.2.2.3.6)",
}

_READERS = {_BYTE: read_u8, _U16: read_u16, _U32: read_u32, _VARINT: read_varint, _STR: read_str, _BIN: read_bin}


def decode_properties(buf: Buffer, pos: int, end: int, context: int) -> tuple[Properties, int]:
    """Decode a property section (length then properties) at `pos` for the packet type `context`
    (or WILL_PROPERTIES). Returns the shared EMPTY_PROPERTIES when the section is empty."""
    if pos < end and buf[pos] == 0:  # the common case: property length 0
        return EMPTY_PROPERTIES, pos + 1
    length, pos = read_varint(buf, pos, end)
    stop = pos + length
    if stop > end:
        raise MalformedPacket("property length runs past the end of the packet")
    mask = 1 << context
    values: dict[str, Any] = {}
    while pos < stop:
        ident, pos = read_varint(buf, pos, stop)
        entry = _TABLE.get(ident)
        if entry is None:
            raise MalformedPacket(f"unknown property identifier 0x{ident:02X} (section 2.2.2.2)")
        name, kind, allowed = entry
        if not allowed & mask:
            raise MalformedPacket(f"property {name} is not valid for this packet type (section 2.2.2.2)")
        if kind == _PAIR:
            key, pos = read_str(buf, pos, stop)
            value, pos = read_str(buf, pos, stop)
            values.setdefault(name, []).append((key, value))
            continue
        value, pos = _READERS[kind](buf, pos, stop)
        if ident in _BOOLEAN_BYTES and value > 1:
            raise ProtocolError(f"property {name} must be 0 or 1, got {value}")
        if value == 0 and ident in _NON_ZERO:
            raise ProtocolError(f"{_NON_ZERO[ident]} is a Protocol Error")
        if ident == 0x0B:
            if name in values and context != PacketType.PUBLISH:
                raise ProtocolError("subscription identifier included more than once (section 3.8.2.1.2)")
            values.setdefault(name, []).append(value)
            continue
        if name in values:
            raise ProtocolError(f"property {name} included more than once (section 2.2.2.2)")
        values[name] = value
    for name in ("user_properties", "subscription_identifiers"):
        if name in values:
            values[name] = tuple(values[name])
    return Properties(**values), stop


def _encode_value(kind: int, value: Any) -> bytes:
    if kind == _BYTE:
        return bytes((value,))
    if kind == _U16:
        return pack_u16(value)
    if kind == _U32:
        return pack_u32(value)
    if kind == _VARINT:
        return encode_varint(value)
    if kind == _STR:
        return encode_str(value)
    return encode_bin(value)


_ENCODE_ORDER: Final = tuple((ident, name, kind) for ident, (name, kind, _) in _TABLE.items())


def encode_properties(props: Properties) -> bytes:
    """The property section (length prefix included) holding every field that is not None / empty."""
    if props is EMPTY_PROPERTIES:
        return b"\x00"
    parts: list[bytes] = []
    for ident, name, kind in _ENCODE_ORDER:
        value = getattr(props, name)
        if value is None or value == ():
            continue
        prefix = bytes((ident,))
        if kind == _PAIR:
            for key, val in value:
                parts.append(prefix + encode_str(key) + encode_str(val))
        elif ident == 0x0B:
            for sub_id in value:
                parts.append(prefix + encode_varint(sub_id))
        else:
            parts.append(prefix + _encode_value(kind, value))
    body = b"".join(parts)
    return encode_varint(len(body)) + body
