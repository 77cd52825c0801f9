"""Malformed and forbidden input from a client: the broker closes that client and keeps serving everyone else.

Packets are written by hand (`RawClient.send_raw`) after a successful CONNECT. For MQTT 5 the broker sends a
DISCONNECT carrying the reason code of section 4.13 (0x81 Malformed Packet for bytes that cannot be parsed as
the spec says, 0x82 Protocol Error for parsable content that breaks a rule, or the more specific code the spec
names) and closes [MQTT-4.13.1-1]; MQTT 3.1.1 has no server DISCONNECT, so the broker just closes
[MQTT-4.8.0-1 (3.1.1)]. A client connected before the bad one still publishes and receives afterwards.
A malformed CONNECT is closed without CONNACK in 3.1.1 [MQTT-3.1.4-1] and answered with CONNACK >= 0x80 in v5.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.codec import (
    NEED_DATA,
    Connack,
    Connect,
    Disconnect,
    PacketReader,
    Pingreq,
    Pingresp,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    encode,
)
from tests.helpers import (
    TIMEOUT,
    PahoClient,
    RawClient,
    RoostThread,
    roost_document,
    varint,
)

# -- building packets by hand ---------------------------------------------------------------------------------


def packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def s(data: str | bytes) -> bytes:
    """A length-prefixed string or binary field (sections 1.5.4, 1.5.6); bytes are written as given."""
    raw = data.encode() if isinstance(data, str) else data
    return len(raw).to_bytes(2, "big") + raw


def props(version: int, body: bytes = b"") -> bytes:
    """A property section for v5, nothing for 3.1.1."""
    return varint(len(body)) + body if version == 5 else b""


PID = b"\x00\x01"


# -- what the bad client sees ---------------------------------------------------------------------------------


def outcome(raw: RawClient) -> tuple[list[Any], bool]:
    """Every packet the broker sends until it closes the connection, and whether it did close in time."""
    packets: list[Any] = []
    reader = PacketReader(raw.version)
    try:
        while True:
            data = raw.sock.recv(65536)
            if not data:
                return packets, True
            reader.receive_data(data)
            while (item := reader.next_packet()) is not NEED_DATA:
                packets.append(item)
    except (ConnectionResetError, BrokenPipeError):
        return packets, True
    except TimeoutError:
        return packets, False


def assert_closed_with(raw: RawClient, version: int, reason_code: int) -> None:
    """v5: one DISCONNECT with `reason_code`, then the close; 3.1.1: a close and nothing else."""
    packets, closed = outcome(raw)
    assert closed, f"the broker did not close the connection (sent {packets})"
    if version == 5:
        assert packets == [Disconnect(reason_code)] or (
            len(packets) == 1 and isinstance(packets[0], Disconnect) and packets[0].reason_code == reason_code
        ), f"expected DISCONNECT 0x{reason_code:02X}, got {packets}"
    else:
        assert packets == [], f"3.1.1 has no server DISCONNECT, got {packets}"


_ids = itertools.count()


def connected(roost: RoostThread, version: int, client_id: str = "bad") -> RawClient:
    raw = RawClient(roost.mqtt_port, version)
    connack = raw.connect(f"{client_id}-{next(_ids)}")
    assert isinstance(connack, Connack) and connack.reason_code == 0
    return raw


def still_serving(bystander: PahoClient, topic: str = "alive/check") -> None:
    """The client connected before the bad one still publishes and receives."""
    payload = f"alive-{id(object())}".encode()
    bystander.publish(topic, payload, qos=1)
    message = bystander.expect()
    assert (message.topic, message.payload) == (topic, payload)


# One broker for the whole module (starting and stopping one per test would cost more than the tests): each
# test's bad client is closed, and the bystander proves the broker is unharmed.
@pytest.fixture(scope="module")
def roost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostThread]:
    instance = RoostThread(roost_document(tmp_path_factory.mktemp("bad-input"))).start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def bystander(roost: RoostThread) -> Iterator[PahoClient]:
    client = PahoClient(roost.mqtt_port, client_id="bystander", version=5).connect()
    client.subscribe("alive/#", qos=1)
    yield client
    client.client.disconnect()
    client.client.loop_stop()


# -- malformed or forbidden packets after CONNECT ---------------------------------------------------------------

# name -> (bytes for a given version, v5 reason code, versions it applies to)
Case = tuple[Callable[[int], bytes], int, tuple[int, ...]]
BOTH = (4, 5)
V5 = (5,)

CASES: dict[str, Case] = {
    # Reserved fixed-header flags must have the listed values [MQTT-2.1.3-1]: Malformed Packet.
    "pingreq_reserved_flags_MQTT-2.1.3-1": (lambda v: packet(0xC1, b""), 0x81, BOTH),
    "puback_reserved_flags_MQTT-2.1.3-1": (lambda v: packet(0x42, PID), 0x81, BOTH),
    "subscribe_flags_0000_MQTT-3.8.1-1": (lambda v: packet(0x80, PID + props(v) + s("a") + b"\x00"), 0x81, BOTH),
    "unsubscribe_flags_0000_MQTT-3.10.1-1": (lambda v: packet(0xA0, PID + props(v) + s("a")), 0x81, BOTH),
    # A Variable Byte Integer has at most four bytes (section 1.5.5).
    "remaining_length_of_5_bytes": (lambda v: b"\x30\xff\xff\xff\xff\x01", 0x81, BOTH),
    # Not minimally encoded: 0x80 0x00 for 0 [MQTT-1.5.5-1].
    "remaining_length_not_minimal_MQTT-1.5.5-1": (lambda v: b"\xc0\x80\x00", 0x81, BOTH),
    # PUBLISH with both QoS bits set [MQTT-3.3.1-4]: Malformed Packet.
    "publish_qos_3_MQTT-3.3.1-4": (lambda v: packet(0x36, s("a") + PID + props(v)), 0x81, BOTH),
    # DUP set on QoS 0 [MQTT-3.3.1-2]: Malformed Packet.
    "publish_dup_on_qos_0_MQTT-3.3.1-2": (lambda v: packet(0x38, s("a") + props(v)), 0x81, BOTH),
    # Wildcards in a topic name [MQTT-3.3.2-2]: 0x90 Topic Name invalid.
    "publish_topic_with_plus_MQTT-3.3.2-2": (lambda v: packet(0x30, s("a/+") + props(v)), 0x90, BOTH),
    "publish_topic_with_hash_MQTT-3.3.2-2": (lambda v: packet(0x30, s("a/#") + props(v)), 0x90, BOTH),
    # Ill-formed UTF-8, surrogates and U+0000 in a string [MQTT-1.5.4-1][MQTT-1.5.4-2]: Malformed Packet.
    "publish_topic_invalid_utf8_MQTT-1.5.4-1": (lambda v: packet(0x30, s(b"a/\xff") + props(v)), 0x81, BOTH),
    "publish_topic_surrogate_MQTT-1.5.4-1": (lambda v: packet(0x30, s(b"a/\xed\xa0\x80") + props(v)), 0x81, BOTH),
    "publish_topic_with_u0000_MQTT-1.5.4-2": (lambda v: packet(0x30, s(b"a\x00b") + props(v)), 0x81, BOTH),
    # A zero-length topic without a topic alias is a Protocol Error (section 3.3.2.1) [MQTT-4.7.3-1].
    "publish_empty_topic_without_alias": (lambda v: packet(0x30, s("") + props(v)), 0x82, BOTH),
    # A QoS 1 PUBLISH needs a non-zero packet identifier [MQTT-2.2.1-3]: parsable, so a Protocol Error.
    "publish_qos1_packet_id_0_MQTT-2.2.1-3": (lambda v: packet(0x32, s("a") + b"\x00\x00" + props(v)), 0x82, BOTH),
    "subscribe_packet_id_0_MQTT-2.2.1-3": (lambda v: packet(0x82, b"\x00\x00" + props(v) + s("a") + b"\x00"), 0x82, BOTH),
    # At least one filter [MQTT-3.8.3-2]: "A SUBSCRIBE packet with no Payload is a Protocol Error".
    "subscribe_without_filters_MQTT-3.8.3-2": (lambda v: packet(0x82, PID + props(v)), 0x82, BOTH),
    "unsubscribe_without_filters_MQTT-3.10.3-2": (lambda v: packet(0xA2, PID + props(v)), 0x82, BOTH),
    # Reserved bits of the subscription options: v5 bits 6-7 [MQTT-3.8.3-5], 3.1.1 bits 2-7
    # [MQTT-3-8.3-4 (3.1.1)]: Malformed Packet.
    "subscribe_options_reserved_bits_MQTT-3.8.3-5": (
        lambda v: packet(0x82, PID + props(v) + s("a") + (b"\x40" if v == 5 else b"\x04")), 0x81, BOTH,
    ),
    "subscribe_requested_qos_3": (lambda v: packet(0x82, PID + props(v) + s("a") + b"\x03"), 0x82, BOTH),
    # Packets only a server sends (section 2.1.2 table 2-1 "Direction of flow").
    "client_sends_connack": (lambda v: packet(0x20, b"\x00\x00" + props(v)), 0x82, BOTH),
    "client_sends_suback": (lambda v: packet(0x90, PID + props(v) + b"\x00"), 0x82, BOTH),
    "client_sends_unsuback": (lambda v: packet(0xB0, PID + props(v) + (b"\x00" if v == 5 else b"")), 0x82, BOTH),
    "client_sends_pingresp": (lambda v: packet(0xD0, b""), 0x82, BOTH),
    # Packet type 0 is reserved (section 2.1.2), 15 is reserved in 3.1.1.
    "packet_type_0_reserved": (lambda v: packet(0x00, b""), 0x81, BOTH),
    "packet_type_15_in_3.1.1": (lambda v: packet(0xF0, b""), 0x81, (4,)),
    # A second CONNECT [MQTT-3.1.0-2]: Protocol Error.
    "second_connect_MQTT-3.1.0-2": (lambda v: encode(Connect("again", protocol_version=v), v), 0x82, BOTH),
    # v5 properties: a repeated Payload Format Indicator is a Protocol Error (section 3.3.2.3.2) ...
    "publish_duplicate_property": (lambda v: packet(0x30, s("a") + props(v, b"\x01\x00\x01\x00")), 0x82, V5),
    "publish_duplicate_message_expiry": (
        lambda v: packet(0x30, s("a") + props(v, b"\x02\x00\x00\x00\x0a\x02\x00\x00\x00\x0a")), 0x82, V5,
    ),
    # ... a client may not send a Subscription Identifier in PUBLISH [MQTT-3.3.4-6] ...
    "publish_with_subscription_identifier_MQTT-3.3.4-6": (lambda v: packet(0x30, s("a") + props(v, b"\x0b\x01")), 0x82, V5),
    # ... an unknown property identifier is a Malformed Packet (section 2.2.2.2) ...
    "publish_unknown_property": (lambda v: packet(0x30, s("a") + props(v, b"\x7f\x00")), 0x81, V5),
    # ... a property that runs past the end of its section cannot be parsed.
    "publish_property_length_past_end": (lambda v: packet(0x30, s("a") + b"\x05\x01"), 0x81, V5),
    # Topic alias 0 [MQTT-3.3.2-8]: 0x94 Topic Alias invalid.
    "publish_topic_alias_0_MQTT-3.3.2-8": (lambda v: packet(0x30, s("a") + props(v, b"\x23\x00\x00")), 0x94, V5),
    # Above the Topic Alias Maximum the server announced (64 by default) [MQTT-3.3.2-9].
    "publish_topic_alias_too_big_MQTT-3.3.2-9": (lambda v: packet(0x30, s("a") + props(v, b"\x23\x01\x00")), 0x94, V5),
    # An alias never set, with an empty topic: Protocol Error (section 3.3.2.3.4).
    "publish_unknown_topic_alias": (lambda v: packet(0x30, s("") + props(v, b"\x23\x00\x05")), 0x82, V5),
    # AUTH when the CONNECT named no authentication method: Protocol Error (section 4.12).
    "auth_without_authentication_method": (lambda v: packet(0xF0, b""), 0x82, V5),
    # DISCONNECT with a reason code that is not valid for it (section 3.14.2.1).
    "disconnect_invalid_reason_code": (lambda v: packet(0xE0, b"\x03"), 0x82, V5),
    # DISCONNECT raising the session expiry from 0 [MQTT-3.14.2-2]: Protocol Error.
    "disconnect_raises_session_expiry_MQTT-3.14.2-2": (
        lambda v: packet(0xE0, b"\x00" + props(v, b"\x11\x00\x00\x00\x0a")), 0x82, V5,
    ),
}

PARAMS = [
    pytest.param(name, version, id=f"v{version}-{name}")
    for name, (_, _, versions) in CASES.items()
    for version in versions
]


@pytest.mark.parametrize(("name", "version"), PARAMS)
def test_malformed_packet_closes_only_that_client(
    roost: RoostThread, bystander: PahoClient, name: str, version: int
) -> None:
    build, reason_code, _ = CASES[name]
    raw = connected(roost, version)
    raw.send_raw(build(version))
    assert_closed_with(raw, version, reason_code)
    raw.close()
    still_serving(bystander)


# A property that is not valid for the packet type is a Malformed Packet (section 2.2.2.2): "A Control Packet
# which contains an Identifier which is not valid for its packet type ... is a Malformed Packet. If received,
# use a CONNACK or DISCONNECT packet with Reason Code 0x81".
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(s("a") + props(5, b"\x11\x00\x00\x00\x0a"), id="publish_with_session_expiry"),
        pytest.param(s("a") + props(5, b"\x21\x00\x0a"), id="publish_with_receive_maximum"),
    ],
)
def test_property_not_valid_for_the_packet_type_is_malformed(
    roost: RoostThread, bystander: PahoClient, body: bytes
) -> None:
    raw = connected(roost, 5)
    raw.send_raw(packet(0x30, body))
    assert_closed_with(raw, 5, 0x81)
    raw.close()
    still_serving(bystander)


@pytest.mark.parametrize("version", [4, 5])
def test_valid_packets_before_the_bad_one_are_handled(roost: RoostThread, bystander: PahoClient, version: int) -> None:
    """Packets ahead of the malformed one in the same read are processed in order (a QoS 1 PUBLISH is
    routed and acknowledged), then the connection is closed."""
    raw = connected(roost, version)
    good = encode(Publish("alive/before", b"first", qos=1, packet_id=7), version)
    raw.send_raw(good + packet(0xC1, b""))
    packets, closed = outcome(raw)
    assert closed
    assert [type(p).__name__ for p in packets] == ["Puback"] + (["Disconnect"] if version == 5 else [])
    assert bystander.expect().payload == b"first"
    raw.close()
    still_serving(bystander)


# -- maximum packet size ----------------------------------------------------------------------------------------


@pytest.fixture
def small_roost(make_roost: Callable[..., RoostThread]) -> RoostThread:
    return make_roost(max_packet_size=1024)


@pytest.fixture
def small_bystander(small_roost: RoostThread) -> Any:
    client = PahoClient(small_roost.mqtt_port, client_id="bystander", version=5).connect()
    client.subscribe("alive/#", qos=1)
    yield client
    client.client.disconnect()
    client.client.loop_stop()


def _publish_of_size(size: int, version: int) -> bytes:
    """A QoS 0 PUBLISH to `alive/big` of exactly `size` bytes on the wire."""
    head = s("alive/big") + props(version)
    # Remaining length below 16384 takes two bytes: 1 + 2 + len(body) == size.
    return packet(0x30, head + b"x" * (size - 3 - len(head)))


@pytest.mark.parametrize("version", [4, 5])
def test_packet_at_the_maximum_size_is_accepted(small_roost: RoostThread, small_bystander: PahoClient, version: int) -> None:
    raw = connected(small_roost, version)
    data = _publish_of_size(1024, version)
    assert len(data) == 1024
    raw.send_raw(data)
    assert len(small_bystander.expect().payload) > 900
    raw.send(Pingreq())
    assert isinstance(raw.receive(), Pingresp)
    raw.close()


@pytest.mark.parametrize("version", [4, 5])
def test_packet_above_the_maximum_size_is_refused(small_roost: RoostThread, small_bystander: PahoClient, version: int) -> None:
    """Above the Maximum Packet Size announced in CONNACK: DISCONNECT 0x95 Packet too large (section
    3.2.2.3.6) [MQTT-3.2.2-15]; the message is not delivered."""
    raw = connected(small_roost, version)
    data = _publish_of_size(1025, version)
    assert len(data) == 1025
    raw.send_raw(data)
    assert_closed_with(raw, version, 0x95)
    raw.close()
    still_serving(small_bystander)
    assert small_bystander.messages.empty()


def test_oversized_packet_is_refused_from_its_header(small_roost: RoostThread, small_bystander: PahoClient) -> None:
    """A remaining length announcing 100 MB is refused at once: the broker does not wait for the body."""
    raw = connected(small_roost, 5)
    raw.send_raw(b"\x30" + varint(100_000_000) + s("alive/big"))
    assert_closed_with(raw, 5, 0x95)
    raw.close()
    still_serving(small_bystander)


def test_max_packet_size_is_announced_in_connack(small_roost: RoostThread) -> None:
    """[MQTT-3.2.2-15 context] the v5 CONNACK carries the limit the client must respect."""
    raw = RawClient(small_roost.mqtt_port, 5)
    assert raw.connect("announce").properties.maximum_packet_size == 1024
    raw.close()


# -- malformed CONNECT ------------------------------------------------------------------------------------------


def connect_bytes(version: int, flags: int, payload_tail: bytes = b"", client_id: str = "cid",
                  connect_props: bytes = b"") -> bytes:
    body = s("MQTT") + bytes((version, flags)) + b"\x00\x3c" + props(version, connect_props) + s(client_id)
    return packet(0x10, body + payload_tail)


def _will_tail(version: int) -> bytes:
    return props(version) + s("will/t") + s(b"bye")


MALFORMED_CONNECTS: dict[str, tuple[Callable[[int], bytes], tuple[int, ...]]] = {
    # The reserved flag must be 0 [MQTT-3.1.2-3].
    "reserved_flag_set_MQTT-3.1.2-3": (lambda v: connect_bytes(v, 0x03), BOTH),
    # Will QoS 3 [MQTT-3.1.2-12 / 3.1.1 MQTT-3.1.2-14].
    "will_qos_3_MQTT-3.1.2-12": (lambda v: connect_bytes(v, 0x1E, _will_tail(v)), BOTH),
    # Will QoS without the will flag [MQTT-3.1.2-11].
    "will_qos_without_will_flag_MQTT-3.1.2-11": (lambda v: connect_bytes(v, 0x0A), BOTH),
    # Will retain without the will flag [MQTT-3.1.2-13].
    "will_retain_without_will_flag_MQTT-3.1.2-13": (lambda v: connect_bytes(v, 0x22), BOTH),
    # 3.1.1: a password without a user name [MQTT-3.1.2-22 (3.1.1)].
    "password_without_username_MQTT-3.1.2-22": (lambda v: connect_bytes(v, 0x42, s(b"pw")), (4,)),
    # Client identifier that is not UTF-8 [MQTT-1.5.4-1].
    "client_id_invalid_utf8_MQTT-1.5.4-1": (
        lambda v: packet(0x10, s("MQTT") + bytes((v, 0x02)) + b"\x00\x3c" + props(v) + s(b"\xff\xfe")), BOTH,
    ),
    # Bytes after the last payload field (section 3.1.3).
    "trailing_bytes": (lambda v: connect_bytes(v, 0x02, b"\x00"), BOTH),
    # A v5 CONNECT property section that runs past the packet.
    "property_length_past_end": (
        lambda v: packet(0x10, s("MQTT") + bytes((v, 0x02)) + b"\x00\x3c" + b"\x09\x11"), V5,
    ),
    # A repeated Session Expiry Interval is a Protocol Error (section 3.1.2.11.2).
    "duplicate_session_expiry": (
        lambda v: connect_bytes(v, 0x02, connect_props=b"\x11\x00\x00\x00\x01\x11\x00\x00\x00\x01"), V5,
    ),
    # Receive Maximum 0 is a Protocol Error (section 3.1.2.11.3).
    "receive_maximum_0": (lambda v: connect_bytes(v, 0x02, connect_props=b"\x21\x00\x00"), V5),
}


@pytest.mark.parametrize(
    ("name", "version"),
    [pytest.param(n, v, id=f"v{v}-{n}") for n, (_, versions) in MALFORMED_CONNECTS.items() for v in versions],
)
def test_malformed_connect(roost: RoostThread, bystander: PahoClient, name: str, version: int) -> None:
    """3.1.1: closed without CONNACK [MQTT-3.1.4-1]; v5: CONNACK with a reason code >= 0x80, then closed
    [MQTT-3.1.4-1][MQTT-3.2.2-7] (section 4.13)."""
    build, _ = MALFORMED_CONNECTS[name]
    raw = RawClient(roost.mqtt_port, version)
    raw.send_raw(build(version))
    packets, closed = outcome(raw)
    assert closed
    if version == 5:
        assert len(packets) == 1 and isinstance(packets[0], Connack), packets
        assert packets[0].reason_code >= 0x80
        assert not packets[0].session_present  # [MQTT-3.2.2-6]
    else:
        assert packets == []
    raw.close()
    still_serving(bystander)


@pytest.mark.parametrize(
    ("name", "code"),
    [("reserved_flag_set_MQTT-3.1.2-3", 0x81), ("will_qos_3_MQTT-3.1.2-12", 0x81),
     ("property_length_past_end", 0x81), ("duplicate_session_expiry", 0x82), ("receive_maximum_0", 0x82)],
)
def test_malformed_v5_connect_reason_code(roost: RoostThread, name: str, code: int) -> None:
    """The CONNACK says which: 0x81 Malformed Packet or 0x82 Protocol Error (section 4.13)."""
    raw = RawClient(roost.mqtt_port, 5)
    raw.send_raw(MALFORMED_CONNECTS[name][0](5))
    packets, closed = outcome(raw)
    assert closed and [p.reason_code for p in packets] == [code]
    raw.close()


def test_connect_with_a_property_not_valid_for_connect_is_malformed(roost: RoostThread) -> None:
    """Topic Alias (0x23) is not a CONNECT property: Malformed Packet, CONNACK 0x81 (section 2.2.2.2)."""
    raw = RawClient(roost.mqtt_port, 5)
    raw.send_raw(connect_bytes(5, 0x02, connect_props=b"\x23\x00\x01"))
    packets, closed = outcome(raw)
    assert closed and [p.reason_code for p in packets] == [0x81]
    raw.close()


@pytest.mark.parametrize("first", [packet(0xC0, b""), packet(0x30, s("a")), b"GET / HTTP/1.1\r\n\r\n"])
def test_first_packet_not_connect_is_closed_without_connack(roost: RoostThread, bystander: PahoClient, first: bytes) -> None:
    """The first packet must be CONNECT [MQTT-3.1.0-1]; anything else is closed without an answer."""
    raw = RawClient(roost.mqtt_port, 5)
    raw.send_raw(first)
    packets, closed = outcome(raw)
    assert closed and packets == []
    raw.close()
    still_serving(bystander)


def test_unsupported_protocol_level(roost: RoostThread) -> None:
    """An unknown protocol level: CONNACK return code 0x01, then closed [MQTT-3.1.2-2 (3.1.1)]."""
    raw = RawClient(roost.mqtt_port, 4)
    raw.send_raw(packet(0x10, s("MQTT") + bytes((2, 0x02)) + b"\x00\x3c" + s("cid")))
    packets, closed = outcome(raw)
    assert closed and len(packets) == 1 and packets[0].reason_code == 1
    raw.close()


# -- random bytes -----------------------------------------------------------------------------------------------


def _framed() -> st.SearchStrategy[bytes]:
    """A plausible fixed header (any type and flags) in front of a random body: reaches the decoders."""
    return st.builds(lambda first, body: packet(first, body), st.integers(0, 255), st.binary(max_size=48))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    version=st.sampled_from([4, 5]),
    data=st.one_of(st.binary(min_size=1, max_size=96), st.lists(_framed(), min_size=1, max_size=3).map(b"".join)),
)
def test_random_bytes_after_connect_never_hurt_the_broker(roost: RoostThread, version: int, data: bytes) -> None:
    """Whatever a connected client sends, the broker keeps serving: a fresh client connects and round-trips a
    message. A v5 client never hears 0x83 (an internal error) for bad input."""
    raw = connected(roost, version, "fuzz")
    try:
        raw.send_raw(data)
        raw.sock.shutdown(socket.SHUT_WR)  # EOF: the broker has read everything once it closes
    except (BrokenPipeError, ConnectionResetError):
        pass  # already closed by the broker
    packets, closed = outcome_lenient(raw)
    raw.close()
    assert closed, "the broker did not close a connection that reached EOF"
    if version == 5:
        assert not any(isinstance(p, Disconnect) and p.reason_code == 0x83 for p in packets), packets

    fresh = connected(roost, 5, "fresh")
    fresh.send(Subscribe(1, (Subscription("fuzz/check", qos=1),)))
    assert isinstance(fresh.receive(), Suback)
    fresh.send(Publish("fuzz/check", data[:16], qos=0))
    message = fresh.receive()
    assert isinstance(message, Publish) and message.payload == data[:16]
    fresh.close()


def outcome_lenient(raw: RawClient) -> tuple[list[Any], bool]:
    """Like `outcome`, but stops decoding (keeps reading) if the bytes turn out not to be decodable."""
    try:
        return outcome(raw)
    except Exception:
        raw.sock.settimeout(TIMEOUT)
        try:
            while raw.sock.recv(65536):
                pass
        except OSError:
            pass
        return [], True
