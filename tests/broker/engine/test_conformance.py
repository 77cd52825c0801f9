"""The conformance gaps of issue 15, in memory (tests/broker/test_conformance.py has each through a socket)."""

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
)
from broker.engine import CLOSE, LINGER
from broker.hooks import AnonymousHook, ClientInfo, Decision
from broker.service import BrokerService
from tests.broker.engine.helpers import Peer, World

VERSIONS = [4, 5]
REFUSED = {4: 0x80, 5: 0x87}


def _subscribe(peer: Peer, *filters: str, qos: int = 1) -> tuple[int, ...]:
    peer.send(Subscribe(1, tuple(Subscription(f, qos=qos) for f in filters)))
    suback = peer.receive()
    assert isinstance(suback, Suback)
    return suback.reason_codes


# -- deny wins, but does not refuse `#` -----------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_a_wildcard_over_a_denied_topic_is_granted_and_filtered(version: int) -> None:
    """Mosquitto's model: `#` and `+/+` are granted although test/nosubscribe is denied, and every
    message is checked against the reader's ACL at delivery; SUBSCRIBE to exactly the denied topic is
    refused (0x80 / 0x87)."""
    world = World([AnonymousHook(True, deny=("test/nosubscribe",))])
    service = BrokerService(world.broker)
    service.publish("test/nosubscribe", b"retained secret", qos=1, retain=True)
    service.publish("test/open", b"retained", qos=1, retain=True)
    sub, pub = world.peer(version), world.peer(5)
    sub.connect("sub")
    pub.connect("pub")
    sub.send(Subscribe(1, tuple(Subscription(f, qos=1) for f in ("#", "+/+", "test/nosubscribe"))))
    suback, *retained = sub.received()
    assert suback == Suback(1, (1, 1, REFUSED[version]))
    assert [(m.topic, m.retain) for m in retained] == [("test/open", True)] * 2  # one per granted filter
    for message in retained:
        sub.send(Puback(message.packet_id))
    pub.send(Publish("test/nosubscribe", b"no", qos=1, packet_id=1), Publish("test/other", b"yes", qos=1, packet_id=2))
    delivered = sub.ping()
    assert [m.topic for m in delivered] == ["test/other"]


def test_narrowing_the_acl_acts_at_once_on_a_partly_granted_subscription() -> None:
    """The per-message answers are cached, and forgotten when access changes (`invalidate`)."""
    hook = AnonymousHook(True, deny=("a/secret",))
    world = World([hook])
    sub, pub = world.peer(), world.peer()
    sub.connect("sub")
    pub.connect("pub")
    assert _subscribe(sub, "a/+", qos=0) == (0,)
    pub.send(Publish("a/soon-closed", b"1"))
    assert [m.payload for m in sub.ping()] == [b"1"]
    hook.deny = ("a/secret", "a/soon-closed")
    world.broker.hooks.invalidate()
    pub.send(Publish("a/soon-closed", b"2"), Publish("a/still-open", b"3"))
    assert [m.payload for m in sub.ping()] == [b"3"]


def test_narrowing_turns_a_whole_grant_into_a_filtered_one() -> None:
    """A subscription granted whole, whose filter a new deny rule now overlaps, is kept (no deny covers
    it) and filtered from then on, once access is revalidated (what LiveAccess does after every change)."""
    hook = AnonymousHook(True)
    world = World([hook])
    sub, pub = world.peer(), world.peer()
    sub.connect("sub")
    pub.connect("pub")
    assert _subscribe(sub, "b/#", qos=0) == (0,)
    hook.deny = ("b/closed",)
    assert BrokerService(world.broker).revalidate_subscriptions(lambda client: True) == 0
    pub.send(Publish("b/closed", b"no"), Publish("b/open", b"yes"))
    assert [m.payload for m in sub.ping()] == [b"yes"]


def test_the_read_check_asks_once_per_topic() -> None:
    """The fan-in case: many messages to one topic through a partly granted filter cost one ACL answer."""

    class Counting(AnonymousHook):
        reads = 0

        def authorize_read(self, client: ClientInfo, topic: str) -> Decision:
            Counting.reads += 1
            return super().authorize_read(client, topic)

    world = World([Counting(True, deny=("x/secret",))])
    sub, pub = world.peer(), world.peer()
    sub.connect("sub")
    pub.connect("pub")
    _subscribe(sub, "x/+", qos=0)
    pub.send(*[Publish("x/busy", b"%d" % i) for i in range(50)])
    assert len(sub.ping()) == 50
    assert Counting.reads == 1


# -- MQTT 3.1: no session present flag ------------------------------------------------------------------------


def test_mqtt_3_1_connack_first_byte_is_zero_on_a_resumed_session() -> None:
    world = World()
    first = world.peer(3)
    assert first.connect("old", clean_start=False).reason_code == 0
    first.drop()
    again = world.peer(3)
    again.send(Connect("old", protocol_version=3, clean_start=False, protocol_name="MQIsdp"))
    assert again.engine.data_to_send() == bytes.fromhex("20 02 00 00")
    assert world.broker.sessions["old"].client is not None  # the session was resumed all the same


# -- a reason code the client can read ------------------------------------------------------------------------


def test_server_disconnect_lingers_and_discards_what_follows() -> None:
    """After DISCONNECT 0x93 (receive maximum exceeded) the engine asks for a lingering close, and what the
    client still sends is discarded rather than answered."""
    world = World(receive_maximum=1)
    peer = world.peer()
    peer.connect("eager")
    peer.send(Publish("t", b"1", qos=2, packet_id=1), Publish("t", b"2", qos=2, packet_id=2))
    assert peer.received() == [Pubrec(1), Disconnect(0x93)]
    assert peer.closed == LINGER
    peer.send(Publish("t", b"3", qos=2, packet_id=3))
    assert peer.received() == []


# -- packets a server never receives; acknowledgements of the wrong kind --------------------------------------


@pytest.mark.parametrize("raw", ["20 03 00 00 00", "90 04 00 01 00 00", "b0 03 00 01 00", "d0 00"],
                         ids=["CONNACK", "SUBACK", "UNSUBACK", "PINGRESP"])
def test_packets_only_a_server_sends_are_a_protocol_error(raw: str) -> None:
    world = World()
    peer = world.peer(5)
    peer.connect("c")
    peer.send_bytes(bytes.fromhex(raw))
    assert peer.received() == [Disconnect(0x82)]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("qos", "wrong"), [(1, Pubcomp(1)), (1, Pubrec(1)), (2, Puback(1))],
                         ids=["PUBCOMP-for-QoS1", "PUBREC-for-QoS1", "PUBACK-for-QoS2"])
def test_an_acknowledgement_of_the_wrong_kind_closes_the_connection(version: int, qos: int, wrong) -> None:
    world = World()
    sub, pub = world.peer(version), world.peer(5)
    sub.connect("sub")
    pub.connect("pub")
    _subscribe(sub, "w", qos=qos)
    pub.send(Publish("w", b"x", qos=qos, packet_id=9))
    [delivery] = sub.received()
    assert delivery.packet_id == 1
    sub.send(wrong)
    assert sub.received() == ([Disconnect(0x82)] if version == 5 else [])
    assert sub.closed == (LINGER if version == 5 else CLOSE)


# -- the subscriber's Maximum Packet Size ---------------------------------------------------------------------


@pytest.mark.parametrize("qos", [1, 2])
def test_a_message_too_large_for_the_subscriber_is_dropped_and_counted(qos: int) -> None:
    """[MQTT-3.1.2-25] A QoS 1/2 message larger than the subscriber's Maximum Packet Size is discarded as
    if delivered and counted; the publisher's acknowledgement is immediate, and the next message flows."""
    world = World()
    sub, pub = world.peer(5), world.peer(5)
    sub.connect("small", properties=Properties(maximum_packet_size=64, topic_alias_maximum=4))
    pub.connect("pub")
    _subscribe(sub, "big", qos=qos)
    pub.send(Publish("big", b"x" * 200, qos=qos, packet_id=1))
    assert pub.received() == [Puback(1) if qos == 1 else Pubrec(1)]
    if qos == 2:
        pub.send(Pubrel(1))
        assert pub.received() == [Pubcomp(1)]
    assert world.broker.stats.dropped_too_large == 1
    assert world.broker.sessions["small"].inflight == {}
    pub.send(Publish("big", b"fits", qos=qos, packet_id=2))
    [message] = sub.ping()
    # The alias the dropped message would have introduced was never sent: this one names its topic.
    assert (message.topic, message.payload) == ("big", b"fits")


# -- order of acknowledgement ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [1, 2])
def test_the_publisher_hears_its_acknowledgement_before_its_own_copy(version: int, qos: int) -> None:
    world = World()
    peer = world.peer(version)
    peer.connect("self")
    _subscribe(peer, "me", qos=qos)
    peer.send(Publish("me", b"echo", qos=qos, packet_id=5))
    ack, copy = peer.received()
    assert ack == (Puback(5) if qos == 1 else Pubrec(5))
    assert isinstance(copy, Publish) and copy.payload == b"echo"


# -- server keep alive ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("asked", [0, 61, 3600])
def test_max_keepalive_is_told_as_server_keep_alive(asked: int) -> None:
    """[MQTT-3.2.2-21] A v5 client asking for more than max_keepalive (or for none) is told the value."""
    world = World(max_keepalive=60)
    peer = world.peer(5)
    connack = peer.connect("k", keep_alive=asked)
    assert isinstance(connack, Connack) and connack.properties.server_keep_alive == 60
    world.advance(89)
    assert peer.closed == 0
    world.advance(2)  # 1.5 times the server's keep alive, not the client's
    assert peer.closed == LINGER


def test_a_keep_alive_within_the_limit_is_not_overridden() -> None:
    world = World(max_keepalive=60)
    assert world.peer(5).connect("k", keep_alive=30).properties.server_keep_alive is None
