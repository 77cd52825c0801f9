"""encode -> decode gives the packet back, for every packet type and protocol version, and every MQTT 5
property in every packet that allows it (section 2.2.2.2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from broker.codec import (
    EMPTY_PROPERTIES,
    NEED_DATA,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketReader,
    Pingreq,
    Pingresp,
    Properties,
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
    encode,
)
from broker.errors import MalformedPacket, ProtocolError


def roundtrip(packet: Packet, version: int) -> Packet:
    reader = PacketReader(None if isinstance(packet, Connect) else version)
    reader.receive_data(encode(packet, version))
    decoded = reader.next_packet()
    assert reader.next_packet() is NEED_DATA
    assert reader.version == version
    return decoded  # type: ignore[return-value]


def packets_for(version: int) -> list[Packet]:
    """Every packet type, in the form that survives a round trip in `version`."""
    v5 = version == 5
    props = Properties(reason_string="why", user_properties=(("a", "1"), ("a", "2"))) if v5 else EMPTY_PROPERTIES
    packets: list[Packet] = [
        Connect("client-1", version),
        Connect("c", version, False, 0, "user", b"\x00pw", Will("last/will", b"\xffbye", 2, True)),
        Connect("c", version, True, 65535, "u", None, Will("w", b"", 1, False)),
        Connack(),
        Connack(True, 0),
        Connack(False, 0x87 if v5 else 5, props),
        Publish("a/b", b"payload"),
        Publish("a/b", b"", 1, True, True, 1),
        Publish("a/\u00e9/\U0001f600", b"x" * 70000, 2, False, False, 65535),
        Puback(1),
        Pubrec(2, 0x10 if v5 else 0, props),
        Pubrel(3, 0x92 if v5 else 0),
        Pubcomp(65535, 0, props),
        Subscribe(4, (Subscription("a/+", 1), Subscription("#", 2), Subscription("$share/g/x", 0))),
        Suback(4, (0, 1, 2, 0x80), props),
        Unsubscribe(5, ("a/+", "b")),
        Unsuback(5, (0, 0x11) if v5 else (), props),
        Pingreq(),
        Pingresp(),
        Disconnect(),
    ]
    if v5:
        packets += [
            Subscribe(
                6,
                (Subscription("a", 1, True, True, 1), Subscription("b", 2, False, False, 2)),
                Properties(subscription_identifiers=(7,), user_properties=(("k", "v"),)),
            ),
            Disconnect(0x04),
            Disconnect(0x8E, props),
            Auth(),
            Auth(0x18, Properties(authentication_method="SCRAM-SHA-1", authentication_data=b"\x01\x02")),
        ]
    return packets


@pytest.mark.parametrize("version", [3, 4, 5])
def test_every_packet_type_round_trips(version: int) -> None:
    packets = packets_for(version)
    assert {type(p) for p in packets} >= {
        Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe, Suback, Unsubscribe, Unsuback,
        Pingreq, Pingresp, Disconnect,
    }
    for packet in packets:
        assert roundtrip(packet, version) == packet


def test_version_3_connect_is_named_mqisdp() -> None:
    packet = Connect("c", 3)
    assert packet.protocol_name == "MQIsdp"
    assert encode(packet, 3)[2:10] == b"\x00\x06MQIsdp"


@pytest.mark.parametrize("version", [3, 4])
def test_version_3_never_writes_properties_or_v5_fields(version: int) -> None:
    props = Properties(reason_string="r", user_properties=(("k", "v"),))
    assert encode(Puback(1, 0x10, props), version) == b"\x40\x02\x00\x01"
    assert encode(Disconnect(0x8E, props), version) == b"\xe0\x00"
    assert encode(Unsuback(1, (0x11,), props), version) == b"\xb0\x02\x00\x01"
    sub = Subscription("a", 1, no_local=True, retain_as_published=True, retain_handling=2)
    assert roundtrip(Subscribe(1, (sub,), props), version) == Subscribe(1, (Subscription("a", 1),))
    publish = Publish("t", b"x", properties=Properties(topic_alias=3, message_expiry_interval=4))
    assert roundtrip(publish, version) == Publish("t", b"x")
    with pytest.raises(ValueError):
        encode(Auth(), version)


def test_mqtt5_short_forms() -> None:
    """[MQTT-3.4.2-1] and friends: reason 0 without properties is omitted; DISCONNECT/AUTH are empty."""
    assert encode(Puback(7), 5) == b"\x40\x02\x00\x07"
    assert encode(Pubrec(7, 0x10), 5) == b"\x50\x03\x00\x07\x10"
    assert encode(Pubrel(7), 5) == b"\x62\x02\x00\x07"
    assert encode(Pubcomp(7, 0, Properties()), 5) == b"\x70\x02\x00\x07"  # an equal, non-shared empty
    assert encode(Disconnect(), 5) == b"\xe0\x00"
    assert encode(Disconnect(0x04), 5) == b"\xe0\x01\x04"
    assert encode(Auth(), 5) == b"\xf0\x00"


def test_empty_property_section_decodes_to_the_shared_object() -> None:
    assert roundtrip(Publish("t", b"x"), 5).properties is EMPTY_PROPERTIES
    assert roundtrip(Puback(1, 0x10), 5).properties is EMPTY_PROPERTIES


def test_connect_encoded_for_another_version_is_refused() -> None:
    with pytest.raises(ValueError):
        encode(Connect("c", 4), 5)
    with pytest.raises(ValueError):
        encode(Connect("c", 4, password=b"pw"), 4)  # [MQTT-3.1.2-22]


# --- every property in every packet (MQTT 5 section 2.2.2.2, written out independently of the codec) ---

SAMPLES: dict[str, Any] = {
    "payload_format_indicator": 1,
    "message_expiry_interval": 0xFFFFFFFF,
    "content_type": "application/json",
    "response_topic": "reply/to",
    "correlation_data": b"\x00\x01",
    "subscription_identifiers": (268_435_455,),
    "session_expiry_interval": 3600,
    "assigned_client_identifier": "auto-1",
    "server_keep_alive": 30,
    "authentication_method": "SCRAM-SHA-1",
    "authentication_data": b"\x10\x20",
    "request_problem_information": 0,
    "will_delay_interval": 5,
    "request_response_information": 1,
    "response_information": "resp/",
    "server_reference": "other:1883",
    "reason_string": "because",
    "receive_maximum": 65535,
    "topic_alias_maximum": 10,
    "topic_alias": 1,
    "maximum_qos": 1,
    "retain_available": 0,
    "user_properties": (("k", "v"), ("k", "v2"), ("", "")),
    "maximum_packet_size": 1024,
    "wildcard_subscription_available": 1,
    "subscription_identifier_available": 0,
    "shared_subscription_available": 1,
}

ACKS = ["PUBACK", "PUBREC", "PUBREL", "PUBCOMP"]
ALLOWED: dict[str, set[str]] = {
    "payload_format_indicator": {"PUBLISH", "WILL"},
    "message_expiry_interval": {"PUBLISH", "WILL"},
    "content_type": {"PUBLISH", "WILL"},
    "response_topic": {"PUBLISH", "WILL"},
    "correlation_data": {"PUBLISH", "WILL"},
    "subscription_identifiers": {"PUBLISH", "SUBSCRIBE"},
    "session_expiry_interval": {"CONNECT", "CONNACK", "DISCONNECT"},
    "assigned_client_identifier": {"CONNACK"},
    "server_keep_alive": {"CONNACK"},
    "authentication_method": {"CONNECT", "CONNACK", "AUTH"},
    "authentication_data": {"CONNECT", "CONNACK", "AUTH"},
    "request_problem_information": {"CONNECT"},
    "will_delay_interval": {"WILL"},
    "request_response_information": {"CONNECT"},
    "response_information": {"CONNACK"},
    "server_reference": {"CONNACK", "DISCONNECT"},
    "reason_string": {"CONNACK", *ACKS, "SUBACK", "UNSUBACK", "DISCONNECT", "AUTH"},
    "receive_maximum": {"CONNECT", "CONNACK"},
    "topic_alias_maximum": {"CONNECT", "CONNACK"},
    "topic_alias": {"PUBLISH"},
    "maximum_qos": {"CONNACK"},
    "retain_available": {"CONNACK"},
    "user_properties": {"CONNECT", "CONNACK", "PUBLISH", "WILL", *ACKS, "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE",
                        "UNSUBACK", "DISCONNECT", "AUTH"},
    "maximum_packet_size": {"CONNECT", "CONNACK"},
    "wildcard_subscription_available": {"CONNACK"},
    "subscription_identifier_available": {"CONNACK"},
    "shared_subscription_available": {"CONNACK"},
}

BUILDERS: dict[str, Callable[[Properties], Packet]] = {
    "CONNECT": lambda p: Connect("c", 5, properties=p),
    "WILL": lambda p: Connect("c", 5, will=Will("w", b"x", 1, False, p)),
    "CONNACK": lambda p: Connack(False, 0, p),
    "PUBLISH": lambda p: Publish("t", b"x", 1, packet_id=9, properties=p),
    "PUBACK": lambda p: Puback(1, 0, p),
    "PUBREC": lambda p: Pubrec(1, 0, p),
    "PUBREL": lambda p: Pubrel(1, 0, p),
    "PUBCOMP": lambda p: Pubcomp(1, 0, p),
    "SUBSCRIBE": lambda p: Subscribe(1, (Subscription("a"),), p),
    "SUBACK": lambda p: Suback(1, (0,), p),
    "UNSUBSCRIBE": lambda p: Unsubscribe(1, ("a",), p),
    "UNSUBACK": lambda p: Unsuback(1, (0,), p),
    "DISCONNECT": lambda p: Disconnect(0, p),
    "AUTH": lambda p: Auth(0x18, p),
}


def test_samples_cover_every_property_field() -> None:
    assert set(SAMPLES) == set(ALLOWED) == set(Properties.__dataclass_fields__)


@pytest.mark.parametrize("where", sorted(BUILDERS))
def test_every_allowed_property_round_trips(where: str) -> None:
    props = Properties(**{name: SAMPLES[name] for name, places in ALLOWED.items() if where in places})
    packet = BUILDERS[where](props)
    assert roundtrip(packet, 5) == packet


def test_publish_may_repeat_subscription_identifiers() -> None:
    packet = Publish("t", b"", properties=Properties(subscription_identifiers=(1, 2, 3)))
    assert roundtrip(packet, 5) == packet


@pytest.mark.parametrize(
    "name,where",
    [(name, where) for name, places in ALLOWED.items() for where in sorted(BUILDERS) if where not in places],
)
def test_property_outside_its_packets_is_malformed(name: str, where: str) -> None:
    """Section 2.2.2.2: "A Control Packet which contains an Identifier which is not valid for its packet
    type ... is a Malformed Packet" (0x81)."""
    packet = BUILDERS[where](Properties(**{name: SAMPLES[name]}))
    reader = PacketReader(None if where in ("CONNECT", "WILL") else 5)
    reader.receive_data(encode(packet, 5))
    with pytest.raises(MalformedPacket) as info:
        reader.next_packet()
    assert info.value.reason_code == 0x81


def test_subscription_identifier_repeated_in_subscribe_is_a_protocol_error() -> None:
    packet = Subscribe(1, (Subscription("a"),), Properties(subscription_identifiers=(1, 2)))
    reader = PacketReader(5)
    reader.receive_data(encode(packet, 5))
    with pytest.raises(ProtocolError):
        reader.next_packet()


@pytest.mark.parametrize(
    "field,value",
    [
        ("maximum_qos", 2),
        ("retain_available", 2),
        ("wildcard_subscription_available", 3),
        ("subscription_identifier_available", 2),
        ("shared_subscription_available", 255),
        ("receive_maximum", 0),
        ("maximum_packet_size", 0),
    ],
)
def test_property_values_out_of_range_are_protocol_errors(field: str, value: int) -> None:
    reader = PacketReader(5)
    reader.receive_data(encode(Connack(False, 0, Properties(**{field: value})), 5))
    with pytest.raises(ProtocolError) as info:
        reader.next_packet()
    assert info.value.reason_code == 0x82
