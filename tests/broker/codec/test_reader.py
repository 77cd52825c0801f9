"""PacketReader: framing, buffering, size limits and the dead-after-error rule."""

from __future__ import annotations

import pytest

from broker.codec import (
    NEED_DATA,
    Connect,
    NeedData,
    PacketReader,
    Pingreq,
    Puback,
    Publish,
    encode,
    encode_publish,
    EMPTY_PROPERTIES,
)
from broker.errors import MalformedPacket, PacketTooLarge, ProtocolError

from .corpus import VALID


def drain(reader: PacketReader) -> list[object]:
    packets = []
    while (packet := reader.next_packet()) is not NEED_DATA:
        packets.append(packet)
    return packets


def test_need_data_is_a_singleton_sentinel() -> None:
    assert isinstance(NEED_DATA, NeedData)
    assert repr(NEED_DATA) == "NEED_DATA"
    assert PacketReader(4).next_packet() is NEED_DATA


def test_many_packets_in_one_read() -> None:
    packets = [Publish(f"t/{i}", bytes([i % 256]) * (i % 300)) for i in range(2000)]
    reader = PacketReader(4)
    reader.receive_data(b"".join(encode(p, 4) for p in packets))
    assert drain(reader) == packets


def test_version_is_detected_from_connect() -> None:
    reader = PacketReader()
    reader.receive_data(encode(Connect("c", 5), 5) + encode(Puback(1, 0x10), 5))
    assert reader.next_packet() == Connect("c", 5)
    assert reader.version == 5
    assert reader.next_packet() == Puback(1, 0x10)


def _stream(version: int) -> tuple[bytes, list[object]]:
    cases = [c for c in VALID if c.version == version]
    return b"".join(c.raw for c in cases), [c.expected for c in cases]


@pytest.mark.parametrize("version", [4, 5])
def test_packets_split_at_every_byte_boundary(version: int) -> None:
    stream, expected = _stream(version)
    for cut in range(len(stream) + 1):
        reader = PacketReader(version)
        reader.receive_data(stream[:cut])
        got = drain(reader)
        reader.receive_data(stream[cut:])
        got += drain(reader)
        assert got == expected, cut


@pytest.mark.parametrize("version", [4, 5])
def test_packets_fed_one_byte_at_a_time(version: int) -> None:
    stream, expected = _stream(version)
    reader = PacketReader(version)
    got = []
    for i in range(len(stream)):
        reader.receive_data(stream[i : i + 1])
        got += drain(reader)
    assert got == expected


def test_large_packet_in_chunks_with_following_packets() -> None:
    big = encode_publish("big", b"z" * 300_000, 1, False, False, 1, EMPTY_PROPERTIES, 5)
    stream = big + encode(Pingreq(), 5) + big
    reader = PacketReader(5)
    got = []
    for i in range(0, len(stream), 4096):
        reader.receive_data(stream[i : i + 4096])
        got += drain(reader)
    assert [type(p) for p in got] == [Publish, Pingreq, Publish]
    assert got[0].payload == b"z" * 300_000


def test_bytearray_and_memoryview_input_is_copied() -> None:
    data = bytearray(encode(Publish("a", b"x"), 4))
    reader = PacketReader(4)
    reader.receive_data(data)  # type: ignore[arg-type]
    data[:] = b"\x00" * len(data)
    assert reader.next_packet() == Publish("a", b"x")


def test_remaining_length_of_five_bytes_is_malformed_without_waiting() -> None:
    """[MQTT-1.5.5-1]: at most four bytes. The fifth byte need not arrive."""
    reader = PacketReader(4)
    reader.receive_data(b"\x30\xff\xff\xff\xff")
    with pytest.raises(MalformedPacket):
        reader.next_packet()


def test_largest_remaining_length_is_accepted_by_the_framer() -> None:
    reader = PacketReader(4)
    reader.receive_data(b"\x30\xff\xff\xff\x7f")
    assert reader.next_packet() is NEED_DATA  # 268 435 455 bytes announced, waiting for them


def test_too_large_is_detected_from_the_fixed_header_alone() -> None:
    reader = PacketReader(4, max_packet_size=1000)
    reader.receive_data(b"\x30\xe7\x07")  # remaining length 999: 1002 bytes in all
    with pytest.raises(PacketTooLarge) as info:
        reader.next_packet()
    assert info.value.reason_code == 0x95


def test_packet_of_exactly_the_maximum_size_is_accepted() -> None:
    raw = encode(Publish("t", b"x" * 100), 4)
    reader = PacketReader(4, max_packet_size=len(raw))
    reader.receive_data(raw)
    assert reader.next_packet() == Publish("t", b"x" * 100)


def test_max_packet_size_can_be_lowered_after_connect() -> None:
    reader = PacketReader()
    reader.receive_data(encode(Connect("c", 4), 4))
    reader.next_packet()
    reader.max_packet_size = 10
    reader.receive_data(encode(Publish("t", b"x" * 20), 4))
    with pytest.raises(PacketTooLarge):
        reader.next_packet()


def test_first_packet_must_be_connect_decided_on_the_first_byte() -> None:
    """[MQTT-3.1.0-1]"""
    reader = PacketReader()
    reader.receive_data(b"\x30")
    with pytest.raises(ProtocolError) as info:
        reader.next_packet()
    assert info.value.reason_code == 0x82


def test_reader_is_dead_after_an_error() -> None:
    reader = PacketReader(4)
    reader.receive_data(b"\x00\x00" + encode(Pingreq(), 4))
    with pytest.raises(MalformedPacket) as first:
        reader.next_packet()
    with pytest.raises(MalformedPacket) as again:
        reader.next_packet()
    assert again.value is first.value
    with pytest.raises(MalformedPacket):
        reader.receive_data(encode(Pingreq(), 4))
