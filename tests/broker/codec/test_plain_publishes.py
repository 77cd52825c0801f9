"""PacketReader.take_plain_publishes: the run of plain QoS 0 PUBLISH packets taken whole, sans-IO.

A plain PUBLISH has the first byte 0x30 (QoS 0, no DUP, no RETAIN), a minimally encoded remaining length of
one or two bytes, a size within `max_packet_size`, a non-empty well-formed UTF-8 topic name without
wildcards or U+0000, and in MQTT 5 a property length of 0. Every other packet stops the run and is left for
`next_packet()`, which decodes it or raises the error a receiver must raise. The property test at the end
checks the one promise that matters most: taking runs never changes what the stream decodes to.
"""

from __future__ import annotations

import random
import tracemalloc
from typing import Any

import pytest

from broker.codec import (
    NEED_DATA,
    Connect,
    PacketReader,
    Pingreq,
    Properties,
    Publish,
    ReasonCode,
    encode,
)
from broker.errors import MalformedPacket, PacketTooLarge, ProtocolError
from tests.helpers import varint

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


# -- building packets ---------------------------------------------------------------------------------------


def topic_field(name: bytes) -> bytes:
    """A topic name as written on the wire: two byte length, then the bytes as given (section 1.5.4)."""
    return len(name).to_bytes(2, "big") + name


def raw_publish(name: bytes, payload: bytes, version: int, first: int = 0x30) -> bytes:
    """A QoS 0 PUBLISH written by hand, for topic names `Publish` and `encode` would not produce."""
    body = topic_field(name) + (b"\x00" if version == 5 else b"") + payload
    return bytes((first,)) + varint(len(body)) + body


def plain(topic: str, payload: bytes, version: int) -> bytes:
    return encode(Publish(topic, payload), version)


def take_all(reader: PacketReader) -> list[tuple[str, bytes, bytes]]:
    """take_plain_publishes() as (topic, payload, wire) triples, checking the wire bytes are `bytes`."""
    taken = []
    for topic, offset, wire in reader.take_plain_publishes():
        assert type(wire) is bytes
        taken.append((topic, wire[offset:], wire))
    return taken


# -- runs of plain packets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_a_run_of_plain_packets_is_taken_in_order(version: int) -> None:
    """Topic, payload (`wire[offset:]`) and the packet's very bytes, in the order sent; one and two byte
    remaining lengths, an empty payload, binary payloads and a multi-byte UTF-8 topic name."""
    messages = [
        ("a", b""),
        ("sensors/temp", b"21.5"),
        ("sensors/temp", bytes(range(256))),
        ("m\u00fcnchen/\u6e29\u5ea6", b"\x00\xff" * 500),
        ("a", b"x" * 127),
        ("/leading/slash/", b"y"),
    ]
    wires = [plain(topic, payload, version) for topic, payload in messages]
    reader = PacketReader(version)
    reader.receive_data(b"".join(wires))
    assert take_all(reader) == [(t, p, w) for (t, p), w in zip(messages, wires)]
    assert reader.take_plain_publishes() == []
    assert reader.next_packet() is NEED_DATA


@pytest.mark.parametrize("version", VERSIONS)
def test_largest_two_byte_remaining_length_is_plain(version: int) -> None:
    """16 383 is the largest remaining length that fits in two bytes (section 1.5.5): still plain; one byte
    more needs three bytes and is left for next_packet."""
    overhead = 2 + 1 + (1 if version == 5 else 0)  # topic length, topic "t", property length
    at_limit = plain("t", b"a" * (16_383 - overhead), version)
    above = plain("t", b"b" * (16_384 - overhead), version)
    assert len(at_limit) == 1 + 2 + 16_383 and len(above) == 1 + 3 + 16_384
    reader = PacketReader(version)
    reader.receive_data(at_limit + above)
    assert take_all(reader) == [("t", b"a" * (16_383 - overhead), at_limit)]
    assert reader.take_plain_publishes() == []
    assert reader.next_packet() == Publish("t", b"b" * (16_384 - overhead))


def test_packet_of_exactly_the_maximum_size_is_taken() -> None:
    wire = plain("t", b"x" * 100, 4)
    reader = PacketReader(4, max_packet_size=len(wire))
    reader.receive_data(wire)
    assert take_all(reader) == [("t", b"x" * 100, wire)]


# -- what stops a run ---------------------------------------------------------------------------------------

# Each case: a packet that is not plain, and what next_packet must make of it: the decoded packet, or the
# error class and reason code a receiver must raise.
NOT_PLAIN: list[Any] = [
    pytest.param(4, encode(Publish("t/q1", b"p", qos=1, packet_id=1), 4),
                 Publish("t/q1", b"p", qos=1, packet_id=1), id="v311-qos1"),
    pytest.param(5, encode(Publish("t/q2", b"p", qos=2, packet_id=9), 5),
                 Publish("t/q2", b"p", qos=2, packet_id=9), id="v5-qos2"),
    pytest.param(4, encode(Publish("t/r", b"p", retain=True), 4), Publish("t/r", b"p", retain=True), id="v311-retain"),
    pytest.param(5, encode(Publish("t/r", b"p", retain=True), 5), Publish("t/r", b"p", retain=True), id="v5-retain"),
    pytest.param(4, encode(Publish("t/d", b"p", qos=1, dup=True, packet_id=3), 4),
                 Publish("t/d", b"p", qos=1, dup=True, packet_id=3), id="v311-dup-qos1"),
    # DUP on QoS 0 is malformed [MQTT-3.3.1-2]: next_packet must see it.
    pytest.param(4, raw_publish(b"t/d", b"p", 4, first=0x38), (MalformedPacket, ReasonCode.MALFORMED_PACKET),
                 id="v311-dup-qos0-MQTT-3.3.1-2"),
    pytest.param(5, raw_publish(b"t/d", b"p", 5, first=0x38), (MalformedPacket, ReasonCode.MALFORMED_PACKET),
                 id="v5-dup-qos0-MQTT-3.3.1-2"),
    # QoS 3 is malformed [MQTT-3.3.1-4].
    pytest.param(4, raw_publish(b"t", b"p", 4, first=0x36), (MalformedPacket, ReasonCode.MALFORMED_PACKET),
                 id="v311-qos3-MQTT-3.3.1-4"),
    pytest.param(5, encode(Publish("t/p", b"p", properties=Properties(message_expiry_interval=10)), 5),
                 Publish("t/p", b"p", properties=Properties(message_expiry_interval=10)), id="v5-properties"),
    pytest.param(5, encode(Publish("t/p", b"p", properties=Properties(payload_format_indicator=1)), 5),
                 Publish("t/p", b"p", properties=Properties(payload_format_indicator=1)), id="v5-format-indicator"),
    pytest.param(4, encode(Publish("t/big", b"z" * 16_384), 4), Publish("t/big", b"z" * 16_384),
                 id="v311-three-byte-remaining-length"),
    pytest.param(5, encode(Publish("t/big", b"z" * 20_000), 5), Publish("t/big", b"z" * 20_000),
                 id="v5-three-byte-remaining-length"),
    # 0x85 0x00 is 5 in two bytes: not minimal [MQTT-1.5.5-1].
    pytest.param(4, b"\x30\x85\x00" + topic_field(b"abc"), (MalformedPacket, ReasonCode.MALFORMED_PACKET),
                 id="v311-non-minimal-remaining-length-MQTT-1.5.5-1"),
    pytest.param(5, b"\x30\x86\x00" + topic_field(b"abc") + b"\x00", (MalformedPacket, ReasonCode.MALFORMED_PACKET),
                 id="v5-non-minimal-remaining-length-MQTT-1.5.5-1"),
    # No wildcard in a topic name [MQTT-3.3.2-2]: 0x90 Topic Name invalid.
    pytest.param(4, raw_publish(b"a/+/c", b"p", 4), (ProtocolError, ReasonCode.TOPIC_NAME_INVALID),
                 id="v311-plus-MQTT-3.3.2-2"),
    pytest.param(5, raw_publish(b"a/#", b"p", 5), (ProtocolError, ReasonCode.TOPIC_NAME_INVALID),
                 id="v5-hash-MQTT-3.3.2-2"),
    pytest.param(4, raw_publish(b"+", b"p", 4), (ProtocolError, ReasonCode.TOPIC_NAME_INVALID),
                 id="v311-lone-plus-MQTT-3.3.2-2"),
    # U+0000 in a UTF-8 string is malformed [MQTT-1.5.4-2].
    pytest.param(4, raw_publish(b"a\x00b", b"p", 4), (MalformedPacket, ReasonCode.MALFORMED_PACKET),
                 id="v311-nul-MQTT-1.5.4-2"),
    pytest.param(5, raw_publish(b"a/\x00", b"p", 5), (MalformedPacket, ReasonCode.MALFORMED_PACKET),
                 id="v5-nul-MQTT-1.5.4-2"),
    # Ill-formed UTF-8 is malformed [MQTT-1.5.4-1]: a stray continuation byte, a lone surrogate, an overlong.
    pytest.param(4, raw_publish(b"a\x80", b"p", 4), (MalformedPacket, ReasonCode.MALFORMED_PACKET),
                 id="v311-bad-utf8-MQTT-1.5.4-1"),
    pytest.param(5, raw_publish(b"\xed\xa0\x80", b"p", 5), (MalformedPacket, ReasonCode.MALFORMED_PACKET),
                 id="v5-surrogate-MQTT-1.5.4-1"),
    pytest.param(4, raw_publish(b"\xc0\xaf", b"p", 4), (MalformedPacket, ReasonCode.MALFORMED_PACKET),
                 id="v311-overlong-MQTT-1.5.4-1"),
    # An empty topic name with no topic alias [MQTT-3.3.2-1][MQTT-4.7.3-1].
    pytest.param(4, raw_publish(b"", b"p", 4), (ProtocolError, ReasonCode.PROTOCOL_ERROR), id="v311-empty-topic"),
    pytest.param(5, raw_publish(b"", b"p", 5), (ProtocolError, ReasonCode.PROTOCOL_ERROR), id="v5-empty-topic"),
    # A topic length that runs past the end of the packet, and packets too short to hold one.
    pytest.param(4, b"\x30\x05\x00\x09abc", (MalformedPacket, ReasonCode.MALFORMED_PACKET),
                 id="v311-topic-length-past-the-end"),
    pytest.param(4, b"\x30\x00", (MalformedPacket, ReasonCode.MALFORMED_PACKET), id="v311-remaining-length-0"),
    pytest.param(4, b"\x30\x01\x00", (MalformedPacket, ReasonCode.MALFORMED_PACKET), id="v311-remaining-length-1"),
    # MQTT 5: the property length must be there.
    pytest.param(5, b"\x30\x05" + topic_field(b"abc"), (MalformedPacket, ReasonCode.MALFORMED_PACKET),
                 id="v5-no-property-length"),
    # Other packet types.
    pytest.param(4, encode(Pingreq(), 4), Pingreq(), id="v311-pingreq"),
]


@pytest.mark.parametrize(("version", "raw", "expected"), NOT_PLAIN)
def test_a_packet_that_is_not_plain_stops_the_run_and_is_left_for_next_packet(
    version: int, raw: bytes, expected: Any
) -> None:
    before = plain("run/before", b"1", version)
    after = plain("run/after", b"2", version)
    reader = PacketReader(version)
    reader.receive_data(before + raw + after)
    assert take_all(reader) == [("run/before", b"1", before)]
    assert reader.take_plain_publishes() == []  # still stopped there: nothing skipped
    if isinstance(expected, tuple):
        error_class, reason_code = expected
        with pytest.raises(error_class) as info:
            reader.next_packet()
        assert type(info.value) is error_class
        assert info.value.reason_code == reason_code
        # The reader is dead after an error, for take_plain_publishes too.
        with pytest.raises(error_class) as again:
            reader.take_plain_publishes()
        assert again.value is info.value
    else:
        assert reader.next_packet() == expected
        assert take_all(reader) == [("run/after", b"2", after)]
        assert reader.next_packet() is NEED_DATA


@pytest.mark.parametrize("version", VERSIONS)
def test_a_packet_over_max_packet_size_is_left_for_next_packet(version: int) -> None:
    """The maximum packet size counts the whole packet; next_packet refuses it with 0x95."""
    small = plain("t", b"s", version)
    big = plain("t", b"x" * 200, version)
    reader = PacketReader(version, max_packet_size=len(big) - 1)
    reader.receive_data(small + big)
    assert take_all(reader) == [("t", b"s", small)]
    assert reader.take_plain_publishes() == []
    with pytest.raises(PacketTooLarge) as info:
        reader.next_packet()
    assert info.value.reason_code == ReasonCode.PACKET_TOO_LARGE


def test_a_lowered_max_packet_size_applies_to_the_next_take() -> None:
    wire = plain("t", b"x" * 50, 4)
    reader = PacketReader(4)
    reader.receive_data(wire + wire)
    reader.max_packet_size = len(wire) - 1
    assert reader.take_plain_publishes() == []
    with pytest.raises(PacketTooLarge):
        reader.next_packet()


@pytest.mark.parametrize("version", VERSIONS)
def test_a_wildcard_topic_is_not_taken_even_after_its_prefix_was(version: int) -> None:
    """The topic cache is keyed by the name's bytes: a name that merely starts like a taken one is checked."""
    good = plain("a/b", b"1", version)
    reader = PacketReader(version)
    reader.receive_data(good + good + raw_publish(b"a/b/#", b"2", version))
    assert [t for t, _, _ in take_all(reader)] == ["a/b", "a/b"]
    with pytest.raises(ProtocolError) as info:
        reader.next_packet()
    assert info.value.reason_code == ReasonCode.TOPIC_NAME_INVALID  # [MQTT-3.3.2-2]


@pytest.mark.parametrize("version", VERSIONS)
def test_an_incomplete_packet_stops_the_run_and_is_taken_once_complete(version: int) -> None:
    """Cut the second packet at every byte: the first is taken, the rest waits; once the rest arrives the
    second is taken whole (from the buffer that a pending partial packet made a bytearray)."""
    first = plain("t/1", b"one", version)
    second = plain("t/2", b"two" * 50, version)  # a two byte remaining length
    for cut in range(len(second)):
        reader = PacketReader(version)
        reader.receive_data(first + second[:cut])
        assert take_all(reader) == [("t/1", b"one", first)], cut
        assert reader.take_plain_publishes() == [], cut
        assert reader.next_packet() is NEED_DATA, cut
        reader.receive_data(second[cut:])
        assert take_all(reader) == [("t/2", b"two" * 50, second)], cut
        assert reader.next_packet() is NEED_DATA, cut


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("payload_size", [3, 300], ids=["one-byte-length", "two-byte-length"])
def test_a_packet_split_across_two_reads_is_taken_as_bytes(version: int, payload_size: int) -> None:
    """The second read appends to a bytearray; the wire bytes handed out are still `bytes`, whether the
    completed packet ends the buffer or more packets follow it."""
    wire = plain("split/topic", b"p" * payload_size, version)
    follower = plain("split/next", b"n", version)
    for tail in (b"", follower):
        for cut in (1, 3, len(wire) // 2, len(wire) - 1):
            reader = PacketReader(version)
            reader.receive_data(wire[:cut])
            assert reader.take_plain_publishes() == []
            reader.receive_data(wire[cut:] + tail)
            expected = [("split/topic", b"p" * payload_size, wire)]
            if tail:
                expected.append(("split/next", b"n", follower))
            assert take_all(reader) == expected, (cut, tail)
            assert reader.next_packet() is NEED_DATA


def test_a_partial_packet_after_a_run_stays_pending() -> None:
    """A run taken from a bytearray buffer leaves the partial packet behind it intact."""
    one, two, three = (plain(f"p/{i}", bytes([i]) * 40, 4) for i in range(3))
    reader = PacketReader(4)
    reader.receive_data(one[:10])
    reader.receive_data(one[10:] + two + three[:7])
    assert [t for t, _, _ in take_all(reader)] == ["p/0", "p/1"]
    reader.receive_data(three[7:])
    assert take_all(reader) == [("p/2", b"\x02" * 40, three)]


def test_nothing_is_taken_before_connect() -> None:
    """A server's reader awaits CONNECT (version None): a PUBLISH first is for next_packet to refuse
    [MQTT-3.1.0-1]."""
    reader = PacketReader()
    reader.receive_data(plain("t", b"x", 4))
    assert reader.take_plain_publishes() == []
    with pytest.raises(ProtocolError) as info:
        reader.next_packet()
    assert info.value.reason_code == ReasonCode.PROTOCOL_ERROR


@pytest.mark.parametrize("version", VERSIONS)
def test_plain_packets_behind_connect_are_taken_once_it_is_decoded(version: int) -> None:
    one, two = plain("t/1", b"1", version), plain("t/2", b"2", version)
    reader = PacketReader()
    reader.receive_data(encode(Connect("c", version), version) + one + two)
    assert reader.take_plain_publishes() == []
    assert reader.next_packet() == Connect("c", version)
    assert take_all(reader) == [("t/1", b"1", one), ("t/2", b"2", two)]


@pytest.mark.parametrize("version", VERSIONS)
def test_mixed_stream_keeps_its_order(version: int) -> None:
    """plain, QoS 1, plain: take, next_packet, take."""
    first = plain("m/1", b"a", version)
    qos1 = Publish("m/2", b"b", qos=1, packet_id=5)
    third = plain("m/3", b"c", version)
    reader = PacketReader(version)
    reader.receive_data(first + encode(qos1, version) + third)
    assert take_all(reader) == [("m/1", b"a", first)]
    assert reader.next_packet() == qos1
    assert take_all(reader) == [("m/3", b"c", third)]
    assert reader.take_plain_publishes() == []
    assert reader.next_packet() is NEED_DATA


@pytest.mark.parametrize("version", VERSIONS)
def test_more_distinct_topics_than_the_cache_holds(version: int) -> None:
    """The topic cache is bounded (128 names): 1000 distinct topics, twice over and interleaved with
    repeats, all come back right, and a wildcard name is refused after the cache has been refilled."""
    topics = [f"many/{i}/\u00e9" for i in range(1000)]
    order = topics + topics[::-1] + [topics[i % 7] for i in range(200)]
    wires = [plain(topic, topic.encode()[::-1], version) for topic in order]
    reader = PacketReader(version)
    reader.receive_data(b"".join(wires) + raw_publish(b"many/+", b"", version))
    taken = take_all(reader)
    assert taken == [(t, t.encode()[::-1], w) for t, w in zip(order, wires)]
    with pytest.raises(ProtocolError) as info:
        reader.next_packet()
    assert info.value.reason_code == ReasonCode.TOPIC_NAME_INVALID


def test_a_large_partial_packet_is_not_copied_by_each_take() -> None:
    """A 1 MiB QoS 0 PUBLISH (Roost's default maximum) arrives in 32 KiB reads, and the connection calls
    take_plain_publishes after each: while the packet is incomplete, a take allocates no copy of what is
    buffered, so the cost of a large packet stays linear in its size."""
    wire = plain("big", b"x" * (1 << 20), 4)
    reader = PacketReader(4)
    largest = 0
    for start in range(0, len(wire) - 32_768, 32_768):
        reader.receive_data(wire[start : start + 32_768])
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            assert reader.take_plain_publishes() == []
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        largest = max(largest, peak - before)
        assert reader.next_packet() is NEED_DATA
    assert largest < 16_384, f"a take allocated {largest} bytes while a large packet was pending"
    reader.receive_data(wire[start + 32_768 :])
    assert reader.next_packet() == Publish("big", b"x" * (1 << 20))


# -- property: taking runs never changes what the stream decodes to -----------------------------------------


def _random_packet(rng: random.Random, version: int) -> bytes:
    """One valid packet a client may send: mostly plain QoS 0 PUBLISH, and every kind of not-plain one."""
    topic = rng.choice(["a", "a/b", "sensors/temp", "\u00fcber/\u6e29", "x" * 200, "s/" + str(rng.randrange(300))])
    kind = rng.choices(
        ["plain", "qos1", "qos2", "retain", "dup", "props", "big", "ping", "two-byte"],
        weights=[50, 6, 4, 6, 3, 4, 2, 3, 8],
    )[0]
    payload = rng.randbytes(rng.choice([0, 1, 5, 60, 127, 300]))
    if kind == "plain":
        return plain(topic, payload, version)
    if kind == "two-byte":
        return plain(topic, rng.randbytes(rng.randrange(128, 16_000)), version)
    if kind == "big":
        return plain(topic, rng.randbytes(rng.randrange(16_384, 40_000)), version)
    if kind == "ping":
        return encode(Pingreq(), version)
    if kind == "props" and version == 5:
        props = Properties(user_properties=(("k", "v"),)) if rng.random() < 0.5 else Properties(content_type="t")
        return encode(Publish(topic, payload, properties=props), version)
    packet_id = rng.randrange(1, 65_536)
    if kind in ("qos1", "props"):
        return encode(Publish(topic, payload, qos=1, packet_id=packet_id), version)
    if kind == "qos2":
        return encode(Publish(topic, payload, qos=2, packet_id=packet_id), version)
    if kind == "dup":
        return encode(Publish(topic, payload, qos=1, dup=True, packet_id=packet_id), version)
    return encode(Publish(topic, payload, retain=True), version)


def _summary(packet: Any) -> tuple[Any, ...]:
    if isinstance(packet, Publish):
        return (packet.topic, packet.payload, packet.qos, packet.retain)
    return (type(packet).__name__,)


def _chunks(rng: random.Random, stream: bytes) -> list[bytes]:
    chunks = []
    pos = 0
    while pos < len(stream):
        size = rng.choice([1, 2, 3, 5, 17, 100, 1000, 5000, 70_000])
        chunks.append(stream[pos : pos + size])
        pos += size
    return chunks


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("seed", range(12))
def test_taking_runs_decodes_the_same_as_next_packet_alone(version: int, seed: int) -> None:
    """A stream of 400 mixed packets, fed in random chunks and consumed as the connection does (take the
    run, else next_packet, until neither has anything), gives the same (topic, payload, qos, retain)
    sequence as next_packet alone on the whole stream."""
    rng = random.Random(seed)
    packets = [_random_packet(rng, version) for _ in range(400)]
    stream = b"".join(packets)

    reference = PacketReader(version)
    reference.receive_data(stream)
    expected = []
    while (packet := reference.next_packet()) is not NEED_DATA:
        expected.append(_summary(packet))
    assert len(expected) == len(packets)

    reader = PacketReader(version)
    got: list[tuple[Any, ...]] = []
    wires: list[bytes] = []
    for chunk in _chunks(rng, stream):
        reader.receive_data(chunk)
        while True:
            if rng.random() < 0.8:  # now and then skip the fast path, as a connection before CONNECT does
                run = reader.take_plain_publishes()
                if run:
                    for topic, offset, wire in run:
                        assert type(wire) is bytes and wire[0] == 0x30
                        got.append((topic, wire[offset:], 0, False))
                        wires.append(wire)
                    continue
            packet = reader.next_packet()
            if packet is NEED_DATA:
                break
            got.append(_summary(packet))
            wires.append(reader.last_packet_bytes())
    assert got == expected
    assert wires == packets  # every packet's own bytes, whichever way it was read
