"""The conformance gaps of issue 15, each through a socket (tests/broker/engine/test_conformance.py has them
in memory): what independent suites saw Roost do wrong, as a client sees it now."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import pytest

from broker.codec import (
    Connect,
    Disconnect,
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
    encode,
)
from tests.helpers import RawClient, RoostThread, sync

VERSIONS = [4, 5]


def _raw(roost: RoostThread, version: int, client_id: str, **kwargs) -> RawClient:
    raw = RawClient(roost.mqtt_port, version)
    if version == 3:
        kwargs.setdefault("protocol_name", "MQIsdp")
    assert raw.connect(client_id, **kwargs).reason_code == 0
    return raw


def _barrier(raw: RawClient) -> list:
    """Everything that arrives before a PINGRESP (the proof that nothing else was queued)."""
    raw.send(Pingreq())
    packets = []
    while not isinstance(packet := raw.receive(), Pingresp):
        packets.append(packet)
    return packets


# -- deny wins, but does not refuse `#` -----------------------------------------------------------------------


@pytest.mark.parametrize(("version", "refused"), [(4, 0x80), (5, 0x87)])
def test_hash_is_granted_beside_a_denied_topic(make_roost: Callable[..., RoostThread], client_factory, version: int,
                                               refused: int) -> None:
    """`[mqtt.anonymous] deny = ["test/nosubscribe"]`: `#` and `+/+` are granted and get every retained and
    live message except those on the denied topic; SUBSCRIBE to exactly the denied topic is refused."""
    roost = make_roost(anonymous={"deny": ["test/nosubscribe"]})
    service = roost.roost.service  # type: ignore[union-attr]
    roost.call(lambda: service.publish("test/nosubscribe", b"hidden", qos=1, retain=True))
    roost.call(lambda: service.publish("test/open", b"shown", qos=1, retain=True))
    raw = _raw(roost, version, "sub")
    raw.send(Subscribe(1, tuple(Subscription(f, qos=0) for f in ("#", "+/+", "test/nosubscribe"))))
    assert raw.receive() == Suback(1, (0, 0, refused))
    retained = _barrier(raw)
    assert [(p.topic, p.retain) for p in retained] == [("test/open", True), ("test/open", True)]
    pub = RawClient(roost.mqtt_port, 5)
    pub.connect("pub")
    pub.send(Publish("test/nosubscribe", b"no"))
    pub.send(Publish("test/live", b"yes"))
    _barrier(pub)
    live = _barrier(raw)
    # `#` and `+/+` overlap: one delivery [MQTT-3.3.4-2]; the denied topic filtered out of both.
    assert [(p.topic, p.payload) for p in live] == [("test/live", b"yes")]
    raw.close()
    pub.close()


# -- MQTT 3.1 ---------------------------------------------------------------------------------------------


def test_mqtt_3_1_connack_never_says_session_present(roost: RoostThread) -> None:
    """MQTT 3.1 has no Session Present flag: the first byte of its CONNACK is 0, a resumed session too."""
    first = _raw(roost, 3, "legacy", clean_start=False)
    first.send(Disconnect())
    assert first.closed_by_broker()
    first.close()
    sock = socket.create_connection(("127.0.0.1", roost.mqtt_port), timeout=5)
    try:
        sock.sendall(encode(Connect("legacy", protocol_version=3, clean_start=False, protocol_name="MQIsdp"), 3))
        assert sock.recv(4) == bytes.fromhex("20 02 00 00")
    finally:
        sock.close()


# -- a reason code the client can read ------------------------------------------------------------------------


def test_a_client_still_sending_reads_the_servers_disconnect(make_roost: Callable[..., RoostThread]) -> None:
    """After DISCONNECT 0x93 the broker closes its write side and discards what still arrives for a
    moment, so a client that keeps sending reads the reason code instead of a reset."""
    roost = make_roost(receive_maximum=1)
    raw = _raw(roost, 5, "eager")
    chunk = encode(Publish("t", b"x" * 1000), 5) * 16

    def keep_sending() -> None:
        """The client goes on publishing, unaware that the broker has already said no (about 0.3 s:
        less than the broker's linger, enough for a broker that closes at once to answer with a reset)."""
        try:
            for _ in range(30):
                raw.send_raw(chunk)
                threading.Event().wait(0.01)  # a paced sender, not a flood
        except OSError:
            pass

    raw.send(Publish("t", b"1", qos=2, packet_id=1))
    raw.send(Publish("t", b"2", qos=2, packet_id=2))
    sender = threading.Thread(target=keep_sending)
    sender.start()
    sender.join(5)
    # Only now does the client read: the reason code must still be there, then the end of the stream.
    assert raw.receive() == Pubrec(1)
    assert raw.receive() == Disconnect(0x93)
    assert raw.closed_by_broker()  # the broker's write side is shut: end of stream after the reason
    # Its read side is not, for a moment: more bytes are taken and discarded, never answered with a reset
    # (a socket closed at once would reset the first of these and refuse the next: EPIPE/ECONNRESET).
    for _ in range(5):
        raw.send_raw(chunk)
        threading.Event().wait(0.02)  # time for a reset to come back, if the broker answered with one
    raw.close()


# -- packets a server never receives; acknowledgements of the wrong kind --------------------------------------


@pytest.mark.parametrize("raw_packet", ["20 03 00 00 00", "90 04 00 01 00 00", "b0 03 00 01 00", "d0 00"],
                         ids=["CONNACK", "SUBACK", "UNSUBACK", "PINGRESP"])
def test_server_only_packets_from_a_v5_client_are_a_protocol_error(roost: RoostThread, raw_packet: str) -> None:
    raw = _raw(roost, 5, "confused")
    raw.send_raw(bytes.fromhex(raw_packet))
    assert raw.receive() == Disconnect(0x82)
    assert raw.closed_by_broker()
    raw.close()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("qos", "wrong"), [(1, Pubcomp(1)), (1, Pubrec(1)), (2, Puback(1))],
                         ids=["PUBCOMP-for-QoS1", "PUBREC-for-QoS1", "PUBACK-for-QoS2"])
def test_a_wrong_kind_of_acknowledgement_closes_the_connection(roost: RoostThread, version: int, qos: int,
                                                                wrong) -> None:
    sub = _raw(roost, version, "sub")
    sub.send(Subscribe(1, (Subscription("w", qos=qos),)))
    sub.receive()
    pub = _raw(roost, 5, "pub")
    pub.send(Publish("w", b"x", qos=qos, packet_id=1))
    delivery = sub.receive()
    assert isinstance(delivery, Publish) and delivery.packet_id == 1
    sub.send(wrong)
    if version == 5:
        assert sub.receive() == Disconnect(0x82)
    assert sub.closed_by_broker()
    sub.close()
    pub.close()


# -- the subscriber's Maximum Packet Size ---------------------------------------------------------------------


@pytest.mark.parametrize("qos", [1, 2])
def test_too_large_for_the_subscriber_is_dropped_and_the_publisher_acknowledged(roost: RoostThread,
                                                                                qos: int) -> None:
    """[MQTT-3.1.2-25] dropped and counted; the publisher's PUBACK/PUBCOMP is immediate; the next flows."""
    sub = _raw(roost, 5, "small", properties=Properties(maximum_packet_size=64))
    sub.send(Subscribe(1, (Subscription("big", qos=qos),)))
    sub.receive()
    pub = _raw(roost, 5, "pub")
    pub.send(Publish("big", b"x" * 500, qos=qos, packet_id=1))
    if qos == 1:
        assert pub.receive() == Puback(1)
    else:
        assert pub.receive() == Pubrec(1)
        pub.send(Pubrel(1))
        assert pub.receive() == Pubcomp(1)
    pub.send(Publish("big", b"fits", qos=qos, packet_id=2))
    assert isinstance(pub.receive(), (Puback, Pubrec))
    delivered = sub.receive()
    assert isinstance(delivered, Publish) and delivered.payload == b"fits"
    dropped = roost.call(lambda: roost.roost.broker.stats.dropped_too_large)  # type: ignore[union-attr]
    assert dropped == 1
    sub.close()
    pub.close()


# -- order of acknowledgement ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_pubrec_comes_before_the_publishers_own_copy(roost: RoostThread, version: int) -> None:
    raw = _raw(roost, version, "echo")
    raw.send(Subscribe(1, (Subscription("me", qos=2),)))
    raw.receive()
    raw.send(Publish("me", b"echo", qos=2, packet_id=5))
    assert raw.receive() == Pubrec(5)
    copy = raw.receive()
    assert isinstance(copy, Publish) and copy.payload == b"echo"
    raw.close()


# -- server keep alive ----------------------------------------------------------------------------------------


def test_max_keepalive_shows_as_server_keep_alive(make_roost: Callable[..., RoostThread]) -> None:
    """[MQTT-3.2.2-21] max_keepalive 60, a v5 client asking for 300: CONNACK Server Keep Alive 60."""
    roost = make_roost(max_keepalive=60)
    raw = RawClient(roost.mqtt_port, 5)
    connack = raw.connect("k", keep_alive=300)
    assert connack.reason_code == 0 and connack.properties.server_keep_alive == 60
    raw.close()
