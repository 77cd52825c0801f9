"""Property-based tests: arbitrary bytes never escape as anything but a ProtocolError, and generated
packets survive a round trip."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.codec import (
    NEED_DATA,
    Connect,
    PacketReader,
    Properties,
    Publish,
    Subscribe,
    Subscription,
    encode,
    encode_publish,
)
from broker.errors import ProtocolError

from .corpus import frame

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND = settings(max_examples=200, deadline=None)

versions = st.sampled_from([None, 3, 4, 5])


def feed(version: int | None, chunks: list[bytes]) -> None:
    reader = PacketReader(version, max_packet_size=4096)
    try:
        for chunk in chunks:
            reader.receive_data(chunk)
            while reader.next_packet() is not NEED_DATA:
                pass
    except ProtocolError:
        pass


@FUZZ
@given(versions, st.lists(st.binary(max_size=64), max_size=4))
def test_random_bytes_raise_only_protocol_errors(version: int | None, chunks: list[bytes]) -> None:
    feed(version, chunks)


@FUZZ
@given(versions, st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=48)), min_size=1, max_size=4))
def test_well_framed_random_bodies_raise_only_protocol_errors(
    version: int | None, packets: list[tuple[int, bytes]]
) -> None:
    """Correct framing gets the garbage past the framer into every packet decoder."""
    feed(version, [frame(first, body) for first, body in packets])


@FUZZ
@given(st.sampled_from([3, 4, 5]), st.binary(max_size=48))
def test_random_connect_bodies_raise_only_protocol_errors(version: int, tail: bytes) -> None:
    name = b"\x00\x06MQIsdp" if version == 3 else b"\x00\x04MQTT"
    feed(None, [frame(0x10, name + bytes((version,)) + tail)])


@FUZZ
@given(st.sampled_from([0x30, 0x32, 0x82, 0xA2, 0x40, 0xE0, 0x20, 0x90, 0xB0, 0xF0]), st.binary(max_size=40))
def test_random_v5_property_sections_raise_only_protocol_errors(first: int, tail: bytes) -> None:
    prefix = b"\x00\x01a\x00\x01" if first in (0x30, 0x32) else b"\x00\x01"
    feed(5, [frame(first, prefix + tail)])


# --- round trips ---------------------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
topic_names = text.filter(lambda t: t and "+" not in t and "#" not in t)
user_properties = st.lists(st.tuples(text, text), max_size=3).map(tuple)


@st.composite
def publishes(draw: st.DrawFn) -> tuple[Publish, int]:
    version = draw(st.sampled_from([3, 4, 5]))
    qos = draw(st.integers(0, 2))
    props = Properties()
    if version == 5:
        props = Properties(
            payload_format_indicator=draw(st.none() | st.integers(0, 1)),
            message_expiry_interval=draw(st.none() | st.integers(0, 2**32 - 1)),
            content_type=draw(st.none() | text),
            response_topic=draw(st.none() | topic_names),
            correlation_data=draw(st.none() | st.binary(max_size=16)),
            subscription_identifiers=tuple(draw(st.lists(st.integers(1, 268_435_455), max_size=3))),
            topic_alias=draw(st.none() | st.integers(1, 65535)),
            user_properties=draw(user_properties),
        )
    packet = Publish(
        draw(topic_names),
        draw(st.binary(max_size=300)),
        qos,
        draw(st.booleans()),
        draw(st.booleans()) if qos else False,
        draw(st.integers(1, 65535)) if qos else None,
        props,
    )
    return packet, version


@ROUND
@given(publishes())
def test_generated_publish_round_trips(case: tuple[Publish, int]) -> None:
    packet, version = case
    raw = encode(packet, version)
    assert raw == encode_publish(
        packet.topic, packet.payload, packet.qos, packet.retain, packet.dup, packet.packet_id,
        packet.properties, version,
    )
    reader = PacketReader(version)
    reader.receive_data(raw)
    expected = packet if version == 5 else Publish(
        packet.topic, packet.payload, packet.qos, packet.retain, packet.dup, packet.packet_id
    )
    assert reader.next_packet() == expected


@st.composite
def subscribes(draw: st.DrawFn) -> tuple[Subscribe, int]:
    version = draw(st.sampled_from([3, 4, 5]))
    v5 = version == 5
    subscriptions = draw(
        st.lists(
            st.builds(
                Subscription,
                text.filter(bool),
                st.integers(0, 2),
                st.booleans() if v5 else st.just(False),
                st.booleans() if v5 else st.just(False),
                st.integers(0, 2) if v5 else st.just(0),
            ).filter(lambda s: not (s.no_local and s.topic_filter.startswith("$share/"))),
            min_size=1,
            max_size=5,
        )
    )
    props = Properties()
    if v5:
        props = Properties(
            subscription_identifiers=tuple(draw(st.lists(st.integers(1, 268_435_455), max_size=1))),
            user_properties=draw(user_properties),
        )
    return Subscribe(draw(st.integers(1, 65535)), tuple(subscriptions), props), version


@ROUND
@given(subscribes())
def test_generated_subscribe_round_trips(case: tuple[Subscribe, int]) -> None:
    packet, version = case
    reader = PacketReader(version)
    reader.receive_data(encode(packet, version))
    assert reader.next_packet() == packet


@ROUND
@given(st.sampled_from([3, 4, 5]), text, st.integers(0, 65535), st.booleans(), st.none() | text,
       st.none() | st.binary(max_size=20))
def test_generated_connect_round_trips(
    version: int, client_id: str, keep_alive: int, clean: bool, username: str | None, password: bytes | None
) -> None:
    if version != 5 and username is None:
        password = None  # [MQTT-3.1.2-22]
    packet = Connect(client_id, version, clean, keep_alive, username, password)
    reader = PacketReader()
    reader.receive_data(encode(packet, version))
    assert reader.next_packet() == packet
