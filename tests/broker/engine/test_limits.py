"""Issue 14's limits inside the sans-IO engine, with no socket: the CONNECT size, what a connection still in
CONNECT reports to the pre-authentication budget, and the topic limits for PUBLISH, SUBSCRIBE and wills.
The budget across connections (`ServerState.preauth`) is driven through real sockets in
tests/broker/test_preauth_budget.py."""

from __future__ import annotations

import pytest

from broker.codec import Connect, Disconnect, Publish, Suback, Subscribe, Subscription, Will, encode
from broker.engine import CLOSE, LINGER
from tests.broker.engine.helpers import World
from tests.helpers import varint

VERSIONS = [4, 5]


def test_a_connect_over_max_connect_size_is_refused_from_its_fixed_header() -> None:
    """A CONNECT announcing 1,000,000 bytes is refused once its fixed header is in, before its body: no
    CONNACK, closed, counted as `connect_size`; the connection no longer counts for the budget."""
    world = World(max_connect_size=4096)
    peer = world.peer()
    peer.send_bytes(b"\x10" + varint(1_000_000) + bytes(100))
    assert peer.received() == []
    assert peer.closed == CLOSE
    assert world.broker.stats.pending_refused["connect_size"] == 1
    assert peer.engine.pending_bytes is None


def test_pending_bytes_follow_the_reader_until_the_connect_is_handled() -> None:
    """While the CONNECT is partial, `pending_bytes` is what the engine holds; once it is accepted, None."""
    world = World()
    peer = world.peer()
    assert peer.engine.pending_bytes == 0
    connect = encode(Connect(client_id="slow", protocol_version=5, will=Will("w", b"p" * 1000)), 5)
    peer.send_bytes(connect[:600])
    assert peer.engine.pending_bytes == 600
    peer.send_bytes(connect[600:])
    assert peer.received()[0].reason_code == 0
    assert peer.engine.pending_bytes is None


def test_after_connect_packets_may_be_as_large_as_max_packet_size() -> None:
    """max_connect_size bounds the CONNECT only: a PUBLISH larger than it, under max_packet_size, is routed."""
    world = World(max_connect_size=1024, max_packet_size=100_000)
    sub, pub = world.peer(), world.peer()
    sub.connect("sub")
    sub.send(Subscribe(1, (Subscription("big", qos=0),)))
    assert sub.receive() == Suback(1, (0,))
    pub.connect("pub")
    pub.send(Publish("big", b"x" * 50_000))
    [delivery] = sub.received()
    assert len(delivery.payload) == 50_000 and pub.closed == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_a_publish_over_the_topic_limits_closes_with_0x90(version: int) -> None:
    """`max_topic_levels` 4: a PUBLISH to 5 levels is Topic Name invalid (v5: DISCONNECT 0x90, then a
    lingering close; 3.1.1: closed), never delivered; 4 levels are routed."""
    world = World(max_topic_levels=4)
    sub, pub = world.peer(5), world.peer(version)
    sub.connect("sub")
    sub.send(Subscribe(1, (Subscription("#", qos=0),)))
    sub.receive()
    pub.connect("pub")
    pub.send(Publish("a/b/c/d", b"ok"))
    assert [p.topic for p in sub.received()] == ["a/b/c/d"]
    pub.send(Publish("a/b/c/d/e", b"too deep"))
    assert pub.closed == (LINGER if version == 5 else CLOSE)
    assert pub.received() == ([Disconnect(0x90)] if version == 5 else [])
    assert sub.ping() == []
    assert world.broker.stats.topic_limit_refused["publish"] == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_a_filter_over_the_topic_limits_is_refused_the_others_granted(version: int) -> None:
    world = World(max_topic_length=20)
    peer = world.peer(version)
    peer.connect()
    peer.send(Subscribe(1, (Subscription("x" * 21, qos=1), Subscription("$share/g/" + "y" * 21, qos=1),
                            Subscription("ok/#", qos=1))))
    refused = 0x8F if version == 5 else 0x80
    assert peer.receive() == Suback(1, (refused, refused, 1))
    assert peer.closed == 0
    assert world.broker.stats.topic_limit_refused["subscribe"] == 2


@pytest.mark.parametrize("topic", ["a/b/c", "$SYS/x"], ids=["too-deep", "dollar"])
@pytest.mark.parametrize("version", VERSIONS)
def test_a_will_no_client_may_publish_to_is_refused_at_connect(version: int, topic: str) -> None:
    """A will over the limits or on a `$` topic: CONNACK 0x90 (3.1.1: return code 5), closed."""
    world = World(max_topic_levels=2)
    peer = world.peer(version)
    connack = peer.connect(will=Will(topic, b"gone"))
    assert connack.reason_code == (0x90 if version == 5 else 5)
    assert peer.closed == CLOSE
    assert world.broker.stats.topic_limit_refused["will"] == (1 if topic == "a/b/c" else 0)


def test_the_budget_says_which_of_its_limits_refuses() -> None:
    """The refusal's log line names the reason: too many pending connections, or the bytes they hold."""
    from broker.limits import PreAuthBudget

    by_count = PreAuthBudget(max_connections=2, max_bytes=1_000)
    assert by_count.admit() and by_count.admit() and not by_count.admit()
    assert by_count.why_full() == "2 connections already await their CONNECT"
    by_bytes = PreAuthBudget(max_connections=10, max_bytes=1_000)
    assert by_bytes.admit() and by_bytes.hold(0, 1_000) and not by_bytes.admit()
    assert by_bytes.why_full() == "the connections awaiting their CONNECT (1) already hold 1000 bytes"
    assert by_bytes.refused["bytes"] == 1
