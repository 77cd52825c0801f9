"""Issue 14, attack 1 through real sockets: a filter `+/` 1,200 levels deep and a PUBLISH to `/` * 2000 (2,001
empty levels) once raised RecursionError in routing (the publisher was dropped, a retained copy stored
anyway, a will on that topic raised in connection_lost).

With the default limits (`max_topic_levels` 128, `max_topic_length` 4096, broker/limits.py) they are refused
cleanly: SUBSCRIBE gets 0x8F Topic Filter invalid (3.1.1: 0x80), PUBLISH a DISCONNECT 0x90 Topic Name invalid
(3.1.1: the connection is closed), a will CONNACK 0x90 (3.1.1: return code 5), and nothing is retained.
With the limits raised far above the attack (5000 levels), the same traffic is routed, retained and
delivered: the walks are iterative, nothing recurses on a client's depth.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from broker.codec import Connack, Disconnect, Publish, Suback, Subscribe, Subscription, Will
from tests.helpers import RawClient, RoostThread
from tests.session_helpers import ping, raw_connect, read_until_closed

DEEP_FILTER = "+/" * 1200 + "#"
DEEP_TOPIC = "/" * 2000
VERSIONS = pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
FILTER_REFUSED = {4: 0x80, 5: 0x8F}
HIGH_LIMITS = {"max_topic_levels": 5000, "max_topic_length": 65_535}


def _subscribe(client: RawClient, *filters: str) -> tuple[int, ...]:
    client.send(Subscribe(1, tuple(Subscription(f, 1) for f in filters)))
    suback = client.receive()
    assert isinstance(suback, Suback), suback
    return suback.reason_codes


def _stats(roost: RoostThread) -> dict[str, int]:
    broker = roost.roost.broker  # type: ignore[union-attr]
    return roost.call(lambda: dict(broker.stats.topic_limit_refused))


@VERSIONS
def test_deep_filter_is_refused_and_the_broker_keeps_routing(roost: RoostThread, version: int) -> None:
    """The 1,200-level filter is refused in the SUBACK, beside a normal filter that is granted; the client
    stays connected and still receives what it subscribed to."""
    client, _ = raw_connect(roost.mqtt_port, "deep-sub", version)
    assert _subscribe(client, DEEP_FILTER, "ok/#") == (FILTER_REFUSED[version], 1)
    client.send(Publish("ok/1", b"still routed"))
    delivered = ping(client)
    assert [(p.topic, p.payload) for p in delivered] == [("ok/1", b"still routed")]
    assert _stats(roost)["subscribe"] == 1
    client.close()


@VERSIONS
def test_deep_publish_is_refused_with_0x90_and_nothing_is_retained(roost: RoostThread, version: int) -> None:
    """A PUBLISH to 2,001 levels closes its connection (v5: DISCONNECT 0x90 first); the message is neither
    delivered to a `#` subscriber nor retained; another client keeps working."""
    watcher, _ = raw_connect(roost.mqtt_port, "watcher", 5)
    assert _subscribe(watcher, "#") == (1,)
    publisher, _ = raw_connect(roost.mqtt_port, "deep-pub", version)
    publisher.send(Publish(DEEP_TOPIC, b"boom", qos=1, packet_id=1, retain=True))
    packets = read_until_closed(publisher)
    if version == 5:
        assert packets == [Disconnect(0x90)]
    else:
        assert packets == []
    publisher.close()
    assert ping(watcher) == []
    late, _ = raw_connect(roost.mqtt_port, "late", 5)
    assert _subscribe(late, "#") == (1,)
    assert ping(late) == []  # no retained message was stored
    assert _stats(roost)["publish"] == 1
    late.close()
    watcher.close()


def test_the_attack_sequence_leaves_the_broker_serving(roost: RoostThread) -> None:
    """The whole attack in one go, as the issue ran it: deep SUBSCRIBE, then a deep PUBLISH by another client,
    then a third client's PINGREQ is answered."""
    attacker, _ = raw_connect(roost.mqtt_port, "attacker", 5)
    assert _subscribe(attacker, DEEP_FILTER) == (0x8F,)
    publisher, _ = raw_connect(roost.mqtt_port, "publisher", 5)
    publisher.send(Publish(DEEP_TOPIC, b"x"))
    assert read_until_closed(publisher) == [Disconnect(0x90)]
    bystander, _ = raw_connect(roost.mqtt_port, "bystander", 5)
    assert ping(bystander) == []
    assert ping(attacker) == []
    for client in (attacker, publisher, bystander):
        client.close()


@VERSIONS
def test_a_will_on_the_deep_topic_is_refused_at_connect(roost: RoostThread, version: int) -> None:
    """v5 hears CONNACK 0x90 Topic Name invalid; 3.1.1 return code 5 (its nearest); the will never goes."""
    client, connack = raw_connect(roost.mqtt_port, "deep-will", version, will=Will(DEEP_TOPIC, b"gone", 1, True))
    assert connack.reason_code == (0x90 if version == 5 else 5)
    client.close()
    assert _stats(roost)["will"] == 1


def test_topic_length_limit(make_roost: Callable[..., RoostThread]) -> None:
    """`max_topic_length` counts characters: at the limit is fine, one more is refused."""
    roost = make_roost(max_topic_length=20)
    client, _ = raw_connect(roost.mqtt_port, "long", 5)
    assert _subscribe(client, "a" * 20, "a" * 21) == (1, 0x8F)
    client.send(Publish("a" * 20, b"fits"))
    assert [p.payload for p in ping(client)] == [b"fits"]
    client.send(Publish("b" * 21, b"too long"))
    assert read_until_closed(client) == [Disconnect(0x90)]
    client.close()


def test_levels_limit_is_inclusive(make_roost: Callable[..., RoostThread]) -> None:
    """`max_topic_levels = 3`: `a/b/c` and `a/+/#` are fine, `a/b/c/d` is not."""
    roost = make_roost(max_topic_levels=3)
    client, _ = raw_connect(roost.mqtt_port, "levels", 5)
    assert _subscribe(client, "a/b/c", "a/+/#", "a/b/c/d", "$share/g/a/b/+") == (1, 1, 0x8F, 1)
    client.send(Publish("a/b/c", b"three"))
    assert [p.topic for p in ping(client)] == ["a/b/c"]  # one delivery for the three matching filters
    client.close()


# -- limits raised far above the attack: the walks are iterative -----------------------------------------------


def test_with_high_limits_the_attack_is_routed_and_retained(make_roost: Callable[..., RoostThread]) -> None:
    """max_topic_levels = 5000: the 1,200-level filter is granted, the 2,001-level PUBLISH matches it, is
    delivered and retained, and a later subscriber gets the retained copy. No RecursionError anywhere (the
    publisher would be closed with 0x83 if one were raised)."""
    roost = make_roost(**HIGH_LIMITS)
    subscriber, _ = raw_connect(roost.mqtt_port, "deep-sub", 5)
    assert _subscribe(subscriber, DEEP_FILTER) == (1,)
    publisher, _ = raw_connect(roost.mqtt_port, "deep-pub", 5)
    publisher.send(Publish(DEEP_TOPIC, b"deep", qos=1, packet_id=1, retain=True))
    acks = ping(publisher)
    assert [type(p).__name__ for p in acks] == ["Puback"] and acks[0].reason_code == 0
    assert [(p.topic, p.payload) for p in ping(subscriber)] == [(DEEP_TOPIC, b"deep")]
    late, _ = raw_connect(roost.mqtt_port, "late", 5)
    assert _subscribe(late, DEEP_FILTER) == (1,)
    retained = ping(late)
    assert [(p.topic, p.retain) for p in retained] == [(DEEP_TOPIC, True)]
    for client in (subscriber, publisher, late):
        client.close()


def test_with_high_limits_a_deep_will_is_published(make_roost: Callable[..., RoostThread]) -> None:
    """A will on the 2,001-level topic reaches the 1,200-level subscriber when its client vanishes; the
    clean session is discarded (the client id can connect again without a session present)."""
    roost = make_roost(**HIGH_LIMITS)
    subscriber, _ = raw_connect(roost.mqtt_port, "deep-sub", 5)
    assert _subscribe(subscriber, DEEP_FILTER) == (1,)
    dying, connack = raw_connect(roost.mqtt_port, "dying", 5, will=Will(DEEP_TOPIC, b"gone", 1))
    assert connack.reason_code == 0
    dying.close()  # no DISCONNECT: the will goes [MQTT-3.1.2-8]
    message = subscriber.receive()
    assert isinstance(message, Publish) and (message.topic, message.payload) == (DEEP_TOPIC, b"gone")
    again, connack = raw_connect(roost.mqtt_port, "dying", 5)
    assert isinstance(connack, Connack) and not connack.session_present
    again.close()
    subscriber.close()
