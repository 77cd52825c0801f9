"""PacketReader: frames a byte stream into packets, h11 style.

    reader = PacketReader()            # a server: the first packet must be CONNECT
    reader.receive_data(chunk)
    while (packet := reader.next_packet()) is not NEED_DATA:
        handle(packet)

It keeps one buffer and an offset into it, so decoding many packets from one read copies nothing but the
fields themselves; the buffer is compacted only when new data arrives. The remaining length is parsed
inline, and a packet above `max_packet_size` is refused as soon as its fixed header is complete, before
its body arrives. After any error the reader is dead: every later call raises the same error again.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

from broker.errors import MalformedPacket, PacketTooLarge, ProtocolError

from .decode import decode_body, decode_publish
from .packets import Packet

__all__ = ["NEED_DATA", "NeedData", "PacketReader"]

# The largest packet MQTT can express: 1 byte of type, 4 of remaining length, 268 435 455 of body.
MAX_PACKET_SIZE: Final = 268_435_460
# How many topic names take_plain_publishes() remembers, already decoded and checked, per reader.
_KNOWN_TOPICS: Final = 128
# The known topics of a reader before its first plain PUBLISH: one read-only empty mapping for every reader.
_NO_TOPICS: Final = MappingProxyType({})


class NeedData:
    """The type of the NEED_DATA sentinel: no complete packet is buffered yet."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()
# Packet types that flow from server to client only: CONNACK, SUBACK, UNSUBACK, PINGRESP.
_SERVER_ONLY = frozenset((2, 9, 11, 13))


class PacketReader:
    """Turns received bytes into packets. `version` None means "a server awaiting CONNECT": it is set from
    the CONNECT's protocol level. `max_packet_size` may be lowered at any time (e.g. after CONNECT)."""

    __slots__ = ("version", "bridge", "max_packet_size", "_buf", "_pos", "_error", "_last_start", "_topics", "_refused")

    def __init__(
        self, version: int | None = None, max_packet_size: int = MAX_PACKET_SIZE, from_client: bool = False
    ) -> None:
        self.version = version
        self.bridge = False  # the CONNECT had the bridge bit (level 0x84 / 0x83): see Connect.bridge
        # A server's reader: packets only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP) are a
        # Protocol Error by their type, before their body is looked at (MQTT 5 section 2.1.2: each type's
        # direction of flow), so a v5 client hears 0x82 rather than a Malformed Packet for their bodies.
        self._refused = _SERVER_ONLY if from_client else frozenset()
        self.max_packet_size = max_packet_size
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._error: ProtocolError | None = None
        self._last_start = 0  # where the packet last returned by next_packet() starts in the buffer
        self._topics: dict[bytes, str] = _NO_TOPICS  # type: ignore[assignment]  # see take_plain_publishes

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken as packets: what this reader holds (see broker/limits.py)."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes) -> None:
        """Append received bytes (an empty chunk is ignored)."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        if pos >= len(buf):  # everything consumed: adopt the chunk as the buffer, no copy
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
        elif type(buf) is bytes:  # a partial packet is pending: switch to a growable buffer
            grown = bytearray(memoryview(buf)[pos:])
            grown += data
            self._buf = grown
            self._pos = 0
        else:
            if pos:
                del buf[:pos]  # cheap: CPython advances the bytearray's start instead of moving bytes
                self._pos = 0
            buf += data

    def next_packet(self) -> Packet | NeedData:
        """The next complete packet, or NEED_DATA. Raises a ProtocolError subclass for a bad stream."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if pos >= end:
            return NEED_DATA
        first = buf[pos]
        if self.version is None and first >> 4 != 1:
            return self._fail(ProtocolError("the first packet sent by a client must be CONNECT [MQTT-3.1.0-1]"))
        # Remaining length, a Variable Byte Integer of at most four bytes (section 2.1.4), parsed inline.
        index = pos + 1
        if index >= end:
            return NEED_DATA
        byte = buf[index]
        index += 1
        length = byte & 0x7F
        if byte & 0x80:
            shift = 7
            while True:
                if index >= end:
                    return NEED_DATA
                byte = buf[index]
                index += 1
                length |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
                if shift == 28:
                    return self._fail(MalformedPacket("remaining length longer than four bytes [MQTT-1.5.5-1]"))
            if byte == 0:
                return self._fail(MalformedPacket("remaining length not minimally encoded [MQTT-1.5.5-1]"))
        stop = index + length
        if stop - pos > self.max_packet_size:
            return self._fail(
                PacketTooLarge(f"packet of {stop - pos} bytes exceeds the maximum of {self.max_packet_size}")
            )
        if stop > end:
            return NEED_DATA
        if first >> 4 in self._refused:
            return self._fail(ProtocolError(f"a client may not send packet type {first >> 4} (section 2.1.2)"))
        self._pos = stop
        self._last_start = pos
        try:
            if first >> 4 == 3 and self.version is not None:
                packet = decode_publish(first, buf, index, stop, self.version)  # the hot path, one call less
            else:
                packet = decode_body(first, buf, index, stop, self.version)
        except ProtocolError as exc:
            return self._fail(exc)
        if self.version is None:
            self.version = packet.protocol_version  # type: ignore[union-attr]  # it is a Connect
            self.bridge = packet.bridge  # type: ignore[union-attr]
        return packet

    def take_plain_publishes(self) -> list[tuple[str, int, bytes]]:
        """Take the run of *plain* PUBLISH packets at the head of the buffer, as (topic, payload offset,
        wire bytes) tuples; the payload is `wire[offset:]`. An empty list when the next packet is not one.

        Plain means the message traffic of a busy broker: QoS 0, no DUP and no RETAIN flag, a remaining
        length of at most two bytes, a non-empty topic name with no wildcard and no U+0000, and in MQTT 5 no
        properties. Such a packet needs no packet object: the broker routes its topic and can forward its
        very bytes to subscribers that take them as they are. Only packets that are complete and valid are
        taken; the first one that is anything else stops the run and is left for `next_packet`, which
        decodes it, or refuses it with the reason.

        The reader remembers the topic names it has decoded and checked, by their bytes (up to 128), so
        that a client publishing to a few topics pays for UTF-8 decoding and the checks once per topic."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        pos = self._pos
        end = len(buf)
        taken: list[tuple[str, int, bytes]] = []
        if pos + 4 > end or buf[pos] != 0x30 or self.version is None:
            return taken
        if type(buf) is not bytes:
            # Slices of a bytearray are bytearrays: take the packets from bytes. Only once the first one is
            # complete and small, so that a large packet arriving in many reads is not copied at each.
            size = 2 + buf[pos + 1]
            if size >= 0x82:
                if buf[pos + 2] >= 0x80:  # a remaining length of three bytes or more: not plain
                    return taken
                size += 1 - 0x80 + (buf[pos + 2] << 7)
            if pos + size > end:
                return taken
            buf = self._buf = bytes(memoryview(buf)[pos:])
            pos = 0
            end = len(buf)
        v5 = self.version == 5
        limit = self.max_packet_size
        known = self._topics
        append = taken.append
        while pos + 4 <= end and buf[pos] == 0x30:
            byte = buf[pos + 1]
            if byte < 0x80:
                index = pos + 2
                length = byte
            else:
                second = buf[pos + 2]
                if second >= 0x80 or not second:  # longer, or not minimally encoded: next_packet decides
                    break
                index = pos + 3
                length = (byte & 0x7F) | second << 7
            stop = index + length
            if stop > end or stop - pos > limit:
                break
            offset = index + 2 + (buf[index] << 8 | buf[index + 1])
            if offset > stop:
                break
            name = buf[index + 2 : offset]
            topic = known.get(name)
            if topic is None:
                try:
                    topic = str(name, "utf-8")
                except UnicodeDecodeError:
                    break
                if not topic or "+" in topic or "#" in topic or "\x00" in topic:  # [MQTT-3.3.2-2][MQTT-1.5.4-2]
                    break
                if len(known) >= _KNOWN_TOPICS or known is _NO_TOPICS:
                    known = self._topics = {}  # also the first: a dict of this reader's own
                known[name] = topic
            if v5:
                if offset == stop or buf[offset]:  # properties follow: not plain
                    break
                offset += 1
            append((topic, offset - pos, buf[pos:stop]))
            pos = stop
        self._pos = pos
        return taken

    def last_packet_bytes(self) -> bytes:
        """The wire bytes of the packet the last `next_packet()` returned; valid until `receive_data`.

        A broker forwarding a PUBLISH unchanged (same version, no properties to rewrite) can send these
        bytes on instead of encoding the packet again."""
        buf = self._buf
        raw = buf[self._last_start : self._pos]
        return raw if type(raw) is bytes else bytes(raw)

    def _fail(self, error: ProtocolError) -> NeedData:
        self._error = error
        self._buf = b""
        raise error
