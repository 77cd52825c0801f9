"""Packets for the load generator: pre-encoded once with Roost's codec, and a fast framer for what returns.

The load generator must not be the bottleneck, so nothing here builds a packet object per message: a
message is either a pre-encoded byte string, or a pre-encoded prefix followed by a timestamp. Reading is
the same: `split_frames` only walks fixed headers and hands back offsets; payloads are looked at only when
a scenario needs them (latency timestamps, QoS 1 packet identifiers).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from broker.codec import Connect, Disconnect, Pingreq, Publish, Subscribe, Subscription, encode

__all__ = [
    "CONNACK", "DISCONNECT", "PINGRESP", "PUBACK", "PUBLISH", "SUBACK", "TEXT_STAMP_SIZE", "TIMESTAMP_SIZE",
    "Credentials", "connect_packet", "count_publishes", "disconnect_packet", "pack_stamp", "pingreq_packet",
    "puback_packet", "publish_fields", "publish_packet", "publish_prefix", "read_stamp", "read_text_stamp",
    "split_frames", "subscribe_packet", "text_stamp",
]

# Packet types, as the high nibble of the first byte.
CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP, DISCONNECT = 2, 3, 4, 9, 13, 14
TIMESTAMP_SIZE = 8
TEXT_STAMP_SIZE = 20  # the same stamp as decimal digits, for payloads that must be text (REST publish)
_STAMP = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str


def connect_packet(
    client_id: str, version: int, credentials: Credentials | None = None, keep_alive: int = 600
) -> bytes:
    return encode(
        Connect(
            client_id=client_id,
            protocol_version=version,
            clean_start=True,
            keep_alive=keep_alive,
            username=credentials.username if credentials else None,
            password=credentials.password.encode() if credentials else None,
        ),
        version,
    )


def subscribe_packet(packet_id: int, filters: list[str], qos: int, version: int) -> bytes:
    return encode(Subscribe(packet_id, tuple(Subscription(f, qos) for f in filters)), version)


def publish_packet(topic: str, payload: bytes, qos: int, version: int, packet_id: int | None = None) -> bytes:
    return encode(Publish(topic, payload, qos, packet_id=packet_id), version)


def publish_prefix(topic: str, payload_size: int, version: int) -> bytes:
    """Everything of a QoS 0 PUBLISH before its payload: append `payload_size` bytes to get the packet."""
    whole = publish_packet(topic, bytes(payload_size), 0, version)
    return whole[: len(whole) - payload_size]


def puback_packet(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


def pingreq_packet(version: int) -> bytes:
    return encode(Pingreq(), version)


def disconnect_packet(version: int) -> bytes:
    return encode(Disconnect(), version)


def split_frames(buf: bytes | bytearray) -> tuple[list[tuple[int, int, int]], int]:
    """Complete packets in `buf` as (first byte, body start, body end), and how many bytes they use."""
    frames = []
    n = len(buf)
    pos = 0
    while pos + 2 <= n:
        byte = buf[pos + 1]
        if byte < 0x80:
            start = pos + 2
            end = start + byte
        else:
            length = byte & 0x7F
            index = pos + 2
            shift = 7
            complete = False
            while index < n:
                byte = buf[index]
                index += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    complete = True
                    break
            if not complete:
                break
            start = index
            end = start + length
        if end > n:
            break
        frames.append((buf[pos], start, end))
        pos = end
    return frames, pos


def count_publishes(buf: bytes | bytearray) -> tuple[int, int]:
    """How many complete PUBLISH packets `buf` holds, and how many bytes the complete packets use."""
    count = 0
    n = len(buf)
    pos = 0
    while pos + 2 <= n:
        byte = buf[pos + 1]
        if byte < 0x80:
            end = pos + 2 + byte
        else:
            length = byte & 0x7F
            index = pos + 2
            shift = 7
            while True:
                if index >= n:
                    return count, pos
                byte = buf[index]
                index += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            end = index + length
        if end > n:
            break
        if buf[pos] >> 4 == PUBLISH:
            count += 1
        pos = end
    return count, pos


def publish_fields(buf: bytes | bytearray, first: int, start: int, version: int) -> tuple[int, int]:
    """Of a PUBLISH whose body starts at `start`: its packet identifier (0 for QoS 0) and payload offset."""
    topic_length = (buf[start] << 8) | buf[start + 1]
    index = start + 2 + topic_length
    packet_id = 0
    if first & 0x06:
        packet_id = (buf[index] << 8) | buf[index + 1]
        index += 2
    if version == 5:
        length = 0
        shift = 0
        while True:
            byte = buf[index]
            index += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        index += length
    return packet_id, index


def read_stamp(buf: bytes | bytearray, offset: int) -> int:
    return _STAMP.unpack_from(buf, offset)[0]


def pack_stamp(ns: int) -> bytes:
    return _STAMP.pack(ns)


def text_stamp(ns: int) -> str:
    return f"{ns:020d}"


def read_text_stamp(buf: bytes | bytearray, offset: int) -> int:
    return int(buf[offset:offset + TEXT_STAMP_SIZE])
