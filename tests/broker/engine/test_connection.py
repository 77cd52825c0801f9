"""The protocol engine with no socket: CONNECT, PUBLISH flows, timers on a manual clock, and the codec's
packet corpus driving the engine as it drives the codec."""

from __future__ import annotations

import pytest

from broker.codec import (
    Connack,
    Connect,
    Disconnect,
    Properties,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Will,
)
from broker.engine import CLOSE, LINGER
from tests.broker.codec.corpus import INVALID, Case
from tests.broker.engine.helpers import World

VERSIONS = [4, 5]


@pytest.mark.parametrize("version", VERSIONS)
def test_publish_subscribe_through_memory(version: int) -> None:
    world = World()
    sub, pub = world.peer(version), world.peer(version)
    assert sub.connect("sub").reason_code == 0
    assert pub.connect("pub").reason_code == 0
    sub.send(Subscribe(1, (Subscription("a/#", qos=1),)))
    assert sub.receive() == Suback(1, (1,))
    pub.send(Publish("a/b", b"zero"), Publish("a/b", b"one", qos=1, packet_id=7))
    assert pub.receive() == Puback(7)
    first, second = sub.received()
    assert (first.payload, first.qos, second.payload, second.qos) == (b"zero", 0, b"one", 1)
    sub.send(Puback(second.packet_id))
    assert sub.ping() == []


@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_exactly_once_with_a_resent_publish(version: int) -> None:
    """A QoS 2 PUBLISH resent before PUBREL is acknowledged, not routed again [MQTT-4.3.3-9]."""
    world = World()
    sub, pub = world.peer(version), world.peer(version)
    sub.connect("sub")
    pub.connect("pub")
    sub.send(Subscribe(1, (Subscription("q2", qos=2),)))
    sub.receive()
    pub.send(Publish("q2", b"x", qos=2, packet_id=3))
    assert pub.receive() == Pubrec(3)
    pub.send(Publish("q2", b"x", qos=2, packet_id=3, dup=True))
    assert pub.receive() == Pubrec(3)
    pub.send(Pubrel(3))
    assert pub.receive() == Pubcomp(3)
    [delivery] = sub.received()
    assert delivery.payload == b"x" and delivery.qos == 2
    sub.send(Pubrec(delivery.packet_id))
    assert sub.receive() == Pubrel(delivery.packet_id)
    sub.send(Pubcomp(delivery.packet_id))
    assert sub.ping() == []


def test_connect_timeout_on_the_manual_clock() -> None:
    """A connection that sends no CONNECT is closed after connect_timeout, not before."""
    world = World(connect_timeout=10.0)
    peer = world.peer()
    world.advance(9.9)
    assert peer.closed == 0
    world.advance(0.2)
    assert peer.closed == CLOSE


@pytest.mark.parametrize("version", VERSIONS)
def test_keep_alive_and_the_will(version: int) -> None:
    """Silent for 1.5 times its keep alive, a client is dropped (v5: DISCONNECT 0x8D) and its will goes
    out [MQTT-3.1.2-24]; traffic before the limit keeps it alive."""
    world = World()
    watcher, quiet = world.peer(5), world.peer(version)
    watcher.connect("watcher")
    watcher.send(Subscribe(1, (Subscription("will/#", qos=0),)))
    watcher.receive()
    quiet.connect("quiet", keep_alive=10, will=Will("will/quiet", b"gone"))
    world.advance(14)
    assert quiet.ping() == []  # 14 s of silence is under 15: still connected
    world.advance(14.9)
    assert quiet.closed == 0
    world.advance(0.2)
    assert quiet.closed == (LINGER if version == 5 else CLOSE)
    if version == 5:
        assert quiet.received() == [Disconnect(0x8D)]
    quiet.drop()  # the shell closes; the connection ends
    [will] = watcher.received()
    assert (will.topic, will.payload) == ("will/quiet", b"gone")


def test_will_delay_and_session_expiry_without_sleeping() -> None:
    """A will with a delay goes when the delay ends [MQTT-3.1.3-9]; the session goes at its expiry."""
    world = World()
    watcher, client = world.peer(), world.peer()
    watcher.connect("watcher")
    watcher.send(Subscribe(1, (Subscription("w", qos=0),)))
    watcher.receive()
    client.connect("delayed", clean_start=False, properties=Properties(session_expiry_interval=60),
                   will=Will("w", b"late", properties=Properties(will_delay_interval=30)))
    client.drop()
    world.advance(29)
    assert watcher.ping() == []
    world.advance(1)
    [will] = watcher.received()
    assert will.payload == b"late"
    assert "delayed" in world.broker.sessions
    world.advance(30)
    assert "delayed" not in world.broker.sessions


def test_message_expiry_counts_on_the_injected_wall_clock() -> None:
    """A queued message's remaining expiry is what is left when it is sent [MQTT-3.3.2-6]."""
    world = World()
    sub, pub = world.peer(), world.peer()
    sub.connect("sub", clean_start=False, properties=Properties(session_expiry_interval=300))
    sub.send(Subscribe(1, (Subscription("e", qos=1),)))
    sub.receive()
    sub.drop()
    pub.connect("pub")
    pub.send(Publish("e", b"short", qos=1, packet_id=1, properties=Properties(message_expiry_interval=100)))
    pub.receive()
    world.advance(40)
    back = world.peer()
    assert back.connect("sub", clean_start=False, properties=Properties(session_expiry_interval=300)).session_present
    [message] = back.received()
    assert message.properties.message_expiry_interval == 60


# -- the codec's corpus, through the engine -------------------------------------------------------------------

_SERVER_ONLY = (2, 9, 11, 13)  # CONNACK, SUBACK, UNSUBACK, PINGRESP


def _after_connect(case: Case) -> bool:
    return case.version is not None and case.raw[0] >> 4 != 1


@pytest.mark.parametrize("case", [c for c in INVALID if _after_connect(c)], ids=lambda c: c.name)
def test_every_invalid_corpus_packet_closes_the_connection(case: Case) -> None:
    """Each bad packet of the corpus, sent after CONNECT, closes the connection; a v5 client first hears
    DISCONNECT with the reason the codec gives (a packet only servers send: 0x82, by its type)."""
    world = World(max_packet_size=256)
    peer = world.peer(case.version or 4)
    assert peer.connect("bad").reason_code == 0
    peer.send_bytes(case.raw)
    if case.version == 5:
        expected = 0x82 if case.raw[0] >> 4 in _SERVER_ONLY else case.expected.reason_code  # type: ignore[union-attr]
        assert peer.received() == [Disconnect(expected)]
        assert peer.closed == LINGER
    else:
        assert peer.received() == []
        assert peer.closed == CLOSE


@pytest.mark.parametrize("version", VERSIONS)
def test_a_second_connect_is_a_protocol_error(version: int) -> None:
    world = World()
    peer = world.peer(version)
    peer.connect("twice")
    peer.send(Connect("twice", protocol_version=version))
    assert peer.received() == ([Disconnect(0x82)] if version == 5 else [])
    assert peer.closed


def test_input_after_a_close_is_discarded() -> None:
    """Once a close is asked for, what the client still sends is read and dropped (the lingering close)."""
    world = World()
    peer = world.peer()
    peer.connect("c")
    peer.send_bytes(bytes.fromhex("20 02 00 00"))  # a CONNACK from a client
    assert peer.received() == [Disconnect(0x82)]
    peer.send(Publish("a", b"ignored", qos=1, packet_id=1))
    assert peer.received() == []
    assert world.broker.stats.messages_received == 0


def test_connack_reason_with_server_keep_alive_is_exact() -> None:
    world = World(max_keepalive=60)
    peer = world.peer()
    assert peer.connect("k", keep_alive=300) == Connack(False, 0, Properties(
        maximum_packet_size=1_048_576, topic_alias_maximum=64, receive_maximum=1024, server_keep_alive=60))
