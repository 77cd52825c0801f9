"""Encoding packets to bytes: pure functions, no state.

`encode(packet, version)` writes the packet for the protocol version negotiated on the connection. For
MQTT 3.1 / 3.1.1 (versions 3 and 4) properties and other v5-only fields are not written; for MQTT 5 the
short forms the spec allows are used (e.g. a PUBACK with reason 0 and no properties is 2 bytes long
[MQTT-3.4.2-1]). Arguments that cannot be encoded are our own bug and raise ValueError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._wire import encode_bin, encode_str, encode_varint, pack_u16
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
    Unsuback,
    Unsubscribe,
)
from .properties import EMPTY_PROPERTIES, Properties, encode_properties

__all__ = ["encode", "encode_publish"]


def encode_publish(
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int | None,
    properties: Properties,
    version: int,
) -> bytes:
    """Encode a PUBLISH without building a Publish: the broker's fan-out path."""
    topic_bytes = topic.encode("utf-8")
    topic_length = len(topic_bytes)
    if topic_length > 0xFFFF:
        raise ValueError("topic name is longer than 65535 bytes")
    first = 0x30 | qos << 1
    if retain:
        first |= 0x01
    if dup:
        first |= 0x08
    if version == 5:
        props = b"\x00" if properties is EMPTY_PROPERTIES else encode_properties(properties)
    else:
        props = b""
    if qos:
        if packet_id is None:
            raise ValueError("a QoS 1/2 PUBLISH needs a packet identifier")
        packet_id_bytes = pack_u16(packet_id)
        remaining = topic_length + 4 + len(props) + len(payload)
    else:
        packet_id_bytes = b""
        remaining = topic_length + 2 + len(props) + len(payload)
    if remaining < 0x80:
        header = bytes((first, remaining, topic_length >> 8, topic_length & 0xFF))
    else:
        header = bytes((first,)) + encode_varint(remaining) + pack_u16(topic_length)
    return b"".join((header, topic_bytes, packet_id_bytes, props, payload))


def encode(packet: Packet, version: int) -> bytes:
    """Encode any packet for a connection speaking `version` (3, 4 or 5)."""
    if type(packet) is Publish:
        return encode_publish(
            packet.topic, packet.payload, packet.qos, packet.retain, packet.dup, packet.packet_id,
            packet.properties, version,
        )
    first, body = _ENCODERS[type(packet)](packet, version)
    return b"".join((bytes((first,)), encode_varint(len(body)), body))


def _is_empty(props: Properties) -> bool:
    return props is EMPTY_PROPERTIES or props == EMPTY_PROPERTIES


def _connect(packet: Connect, version: int) -> tuple[int, bytes]:
    level = packet.protocol_version
    if level != version:
        raise ValueError(f"CONNECT says protocol version {level} but is encoded for version {version}")
    if level != 5 and packet.password is not None and packet.username is None:
        raise ValueError("MQTT 3.x cannot send a password without a user name [MQTT-3.1.2-22]")
    will = packet.will
    flags = 0x02 if packet.clean_start else 0
    if will is not None:
        flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
    if packet.password is not None:
        flags |= 0x40
    if packet.username is not None:
        flags |= 0x80
    parts = [encode_str(packet.protocol_name), bytes((level | 0x80 if packet.bridge else level, flags)),
             pack_u16(packet.keep_alive)]
    if level == 5:
        parts.append(encode_properties(packet.properties))
    parts.append(encode_str(packet.client_id))
    if will is not None:
        if level == 5:
            parts.append(encode_properties(will.properties))
        parts += (encode_str(will.topic), encode_bin(will.payload))
    if packet.username is not None:
        parts.append(encode_str(packet.username))
    if packet.password is not None:
        parts.append(encode_bin(packet.password))
    return 0x10, b"".join(parts)


def _connack(packet: Connack, version: int) -> tuple[int, bytes]:
    body = bytes((1 if packet.session_present else 0, packet.reason_code))
    if version == 5:
        body += encode_properties(packet.properties)
    return 0x20, body


def _ack(first: int) -> Callable[[Any, int], tuple[int, bytes]]:
    def encode_ack(packet: Puback | Pubrec | Pubrel | Pubcomp, version: int) -> tuple[int, bytes]:
        body = pack_u16(packet.packet_id)
        if version == 5:
            if not _is_empty(packet.properties):
                body += bytes((packet.reason_code,)) + encode_properties(packet.properties)
            elif packet.reason_code:
                body += bytes((packet.reason_code,))
        return first, body

    return encode_ack


def _subscribe(packet: Subscribe, version: int) -> tuple[int, bytes]:
    parts = [pack_u16(packet.packet_id)]
    if version == 5:
        parts.append(encode_properties(packet.properties))
    for sub in packet.subscriptions:
        options = sub.qos
        if version == 5:
            options |= (
                (0x04 if sub.no_local else 0) | (0x08 if sub.retain_as_published else 0) | sub.retain_handling << 4
            )
        parts += (encode_str(sub.topic_filter), bytes((options,)))
    return 0x82, b"".join(parts)


def _suback(packet: Suback, version: int) -> tuple[int, bytes]:
    props = encode_properties(packet.properties) if version == 5 else b""
    return 0x90, pack_u16(packet.packet_id) + props + bytes(packet.reason_codes)


def _unsubscribe(packet: Unsubscribe, version: int) -> tuple[int, bytes]:
    parts = [pack_u16(packet.packet_id)]
    if version == 5:
        parts.append(encode_properties(packet.properties))
    parts += (encode_str(topic_filter) for topic_filter in packet.topic_filters)
    return 0xA2, b"".join(parts)


def _unsuback(packet: Unsuback, version: int) -> tuple[int, bytes]:
    body = pack_u16(packet.packet_id)
    if version == 5:
        body += encode_properties(packet.properties) + bytes(packet.reason_codes)
    return 0xB0, body


def _reason(first: int) -> Callable[[Any, int], tuple[int, bytes]]:
    def encode_reason(packet: Disconnect | Auth, version: int) -> tuple[int, bytes]:
        if version != 5:
            if first == 0xF0:
                raise ValueError("AUTH exists only in MQTT 5")
            return first, b""
        if not _is_empty(packet.properties):
            return first, bytes((packet.reason_code,)) + encode_properties(packet.properties)
        if packet.reason_code:
            return first, bytes((packet.reason_code,))
        return first, b""  # [MQTT-3.14.2-1] / section 3.15.2.1

    return encode_reason


_ENCODERS: dict[type, Callable[[Any, int], tuple[int, bytes]]] = {
    Connect: _connect,
    Connack: _connack,
    Puback: _ack(0x40),
    Pubrec: _ack(0x50),
    Pubrel: _ack(0x62),
    Pubcomp: _ack(0x70),
    Subscribe: _subscribe,
    Suback: _suback,
    Unsubscribe: _unsubscribe,
    Unsuback: _unsuback,
    Pingreq: lambda packet, version: (0xC0, b""),
    Pingresp: lambda packet, version: (0xD0, b""),
    Disconnect: _reason(0xE0),
    Auth: _reason(0xF0),
}
