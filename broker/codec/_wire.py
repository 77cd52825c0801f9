"""Reading and writing the MQTT data representations (MQTT 5 section 1.5), shared by the codec modules.

Readers take `(buf, pos, end)` and return `(value, new_pos)`; `buf` is bytes or bytearray and `end` is the
end of the enclosing structure, so a length running past it is a Malformed Packet. Writers return bytes.
"""

from __future__ import annotations

from struct import Struct

from broker.errors import MalformedPacket

Buffer = bytes | bytearray

_U16 = Struct(">H")
_U32 = Struct(">I")
pack_u16 = _U16.pack
pack_u32 = _U32.pack

MAX_VARINT = 268_435_455


def read_u8(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    if pos >= end:
        raise MalformedPacket("packet ends inside a byte field")
    return buf[pos], pos + 1


def read_u16(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    if pos + 2 > end:
        raise MalformedPacket("packet ends inside a two byte integer")
    return buf[pos] << 8 | buf[pos + 1], pos + 2


def read_u32(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    if pos + 4 > end:
        raise MalformedPacket("packet ends inside a four byte integer")
    return _U32.unpack_from(buf, pos)[0], pos + 4


def read_varint(buf: Buffer, pos: int, end: int) -> tuple[int, int]:
    """A Variable Byte Integer: at most four bytes, minimally encoded [MQTT-1.5.5-1]."""
    value = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise MalformedPacket("packet ends inside a variable byte integer")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and pos - start > 1:
                raise MalformedPacket("variable byte integer not minimally encoded [MQTT-1.5.5-1]")
            return value, pos
        shift += 7
        if shift == 28:
            raise MalformedPacket("variable byte integer longer than four bytes [MQTT-1.5.5-1]")


def read_str(buf: Buffer, pos: int, end: int) -> tuple[str, int]:
    """A UTF-8 Encoded String: well-formed UTF-8 without surrogates [MQTT-1.5.4-1] and without U+0000
    [MQTT-1.5.4-2]. A BOM is kept, never stripped [MQTT-1.5.4-3]."""
    if pos + 2 > end:
        raise MalformedPacket("packet ends inside a string length")
    stop = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("string length runs past the end of the packet")
    try:
        text = str(buf[pos + 2 : stop], "utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("string is not well-formed UTF-8 [MQTT-1.5.4-1]") from None
    if "\x00" in text:
        raise MalformedPacket("string contains U+0000 [MQTT-1.5.4-2]")
    return text, stop


def read_bin(buf: Buffer, pos: int, end: int) -> tuple[bytes, int]:
    """Binary Data: a two byte length then that many bytes (section 1.5.6)."""
    if pos + 2 > end:
        raise MalformedPacket("packet ends inside a binary data length")
    stop = pos + 2 + (buf[pos] << 8 | buf[pos + 1])
    if stop > end:
        raise MalformedPacket("binary data length runs past the end of the packet")
    return bytes(buf[pos + 2 : stop]), stop


def encode_varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    if value > MAX_VARINT:
        raise ValueError(f"{value} does not fit in a variable byte integer")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_str(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError("a UTF-8 string is at most 65535 bytes long")
    return pack_u16(len(data)) + data


def encode_bin(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError("binary data is at most 65535 bytes long")
    return pack_u16(len(data)) + data
