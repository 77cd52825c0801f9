"""Shared subscriptions (`$share/{ShareName}/{filter}`, MQTT 5 section 4.8.2) through a running Roost.

3.1.1 has no shared subscriptions of its own, but brokers accept the same filters from 3.1.1 clients, and
so does Roost: members of one group may speak either version.
"""

from __future__ import annotations

import itertools

import pytest
from paho.mqtt.packettypes import PacketTypes

from broker.codec import Publish, ReasonCode, Subscribe, Subscription
from tests.helpers import paho_properties
from tests.pubsub_helpers import codes, drain, raw_factory, sync_all  # noqa: F401  (fixture)

_syncers = itertools.count()


def member(client_factory, client_id: str, topic_filter: str, qos: int = 1, version: int = 5, **options):
    client = client_factory(client_id, version=version)
    client.subscribe("sync/marker", qos=2)
    assert codes(client.subscribe(topic_filter, qos=qos, **options)) == [qos]
    return client


def settle(client_factory, *subs) -> None:
    sync_all(client_factory(f"syncer-{next(_syncers)}", version=5), subs)


def payloads(client) -> list[bytes]:
    return [m.payload for m in drain(client)]


def test_round_robin_between_v5_and_v311_members(client_factory) -> None:
    """Each message goes to one member of the group [MQTT-4.8.2 "delivered to only one"], taking turns:
    six messages, two members (one v5, one 3.1.1), three each, none twice."""
    a = member(client_factory, "a", "$share/g/rr/t", version=5)
    b = member(client_factory, "b", "$share/g/rr/t", version=4)
    pub = client_factory("pub", version=5)
    sent = [f"m{n}".encode() for n in range(6)]
    for payload in sent:
        pub.publish("rr/t", payload, qos=1)
    settle(client_factory, a, b)
    got_a, got_b = payloads(a), payloads(b)
    assert sorted(got_a + got_b) == sent
    assert len(got_a) == len(got_b) == 3
    assert {got_a[0], got_b[0]} == {b"m0", b"m1"}  # alternating from the first message on


def test_two_groups_and_a_plain_subscriber_each_get_a_copy(client_factory) -> None:
    """Every group is a subscription of its own, and a non-shared subscription is unaffected by shared ones
    (section 4.8.2): each group delivers every message once, the plain subscriber gets them all."""
    g1a = member(client_factory, "g1a", "$share/one/grp/#")
    g1b = member(client_factory, "g1b", "$share/one/grp/#", version=4)
    g2 = member(client_factory, "g2", "$share/two/grp/#", qos=2)
    plain = member(client_factory, "plain", "grp/#")
    pub = client_factory("pub", version=5)
    sent = [f"m{n}".encode() for n in range(4)]
    for payload in sent:
        pub.publish("grp/x", payload, qos=1)
    settle(client_factory, g1a, g1b, g2, plain)
    assert sorted(payloads(g1a) + payloads(g1b)) == sent
    assert payloads(g2) == sent
    assert payloads(plain) == sent


def test_same_share_name_on_different_filters_are_different_groups(client_factory) -> None:
    """A shared subscription is identified by ShareName and filter together (section 4.8.2)."""
    hash_member = member(client_factory, "hash", "$share/g/sn/#")
    plus_member = member(client_factory, "plus", "$share/g/sn/+")
    client_factory("pub", version=5).publish("sn/x", b"x", qos=1)
    settle(client_factory, hash_member, plus_member)
    assert payloads(hash_member) == [b"x"]
    assert payloads(plus_member) == [b"x"]


@pytest.mark.parametrize("version", [pytest.param(4, id="v311"), pytest.param(5, id="v5")])
def test_no_retained_messages_for_a_new_shared_subscription(client_factory, version: int) -> None:
    """Retained messages are not sent to the Session when it establishes a new Shared Subscription
    (section 4.8.2, "Retained messages"); a plain subscription beside it still gets them."""
    client_factory("pub", version=version).publish("rs/t", b"kept", qos=1, retain=True)
    shared = member(client_factory, "shared", "$share/g/rs/#", version=version)
    plain = member(client_factory, "plain", "rs/#", version=version)
    settle(client_factory, shared, plain)
    assert payloads(shared) == []
    assert payloads(plain) == [b"kept"]


def test_shared_subscription_respects_granted_qos(client_factory) -> None:
    """The message goes at most at the member's granted QoS [MQTT-4.8.2-3]."""
    low = member(client_factory, "low", "$share/g/sq/t", qos=0)
    client_factory("pub", version=5).publish("sq/t", b"x", qos=2)
    message = low.expect()
    assert (message.payload, message.qos) == (b"x", 0)


def test_shared_subscription_carries_its_subscription_identifier(client_factory) -> None:
    """A subscription identifier given with a shared subscription comes with its messages [MQTT-3.3.4-3]."""
    sub = member(client_factory, "sub", "$share/g/sid/t",
                 properties=paho_properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=42))
    client_factory("pub", version=5).publish("sid/t", b"x", qos=1)
    assert sub.expect().properties.SubscriptionIdentifier == [42]


def test_retain_as_published_on_a_shared_subscription(client_factory) -> None:
    """Retain As Published is a subscription option of shared subscriptions too [MQTT-3.3.1-13]."""
    sub = member(client_factory, "sub", "$share/g/rap/t", retain_as_published=True)
    client_factory("pub", version=5).publish("rap/t", b"x", qos=1, retain=True)
    message = sub.expect()
    assert (message.payload, message.retain) == (b"x", True)


def test_client_with_plain_and_shared_subscription(client_factory) -> None:
    """A client holding a non-shared subscription and the only membership of a group: the message comes
    once for the plain subscription and once more through the group (section 4.8.2: "this could result in
    a second copy being sent to this Client"), or at least once. Roost merges them into one copy, carrying
    both subscription identifiers."""
    sub = client_factory("sub", version=5)
    sub.subscribe("sync/marker", qos=2)
    sub.subscribe("both/t", qos=1, properties=paho_properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=1))
    sub.subscribe("$share/g/both/t", qos=1, properties=paho_properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=2))
    client_factory("pub", version=5).publish("both/t", b"x", qos=1)
    settle(client_factory, sub)
    messages = drain(sub)
    assert 1 <= len(messages) <= 2
    assert sorted(i for m in messages for i in m.properties.SubscriptionIdentifier) == [1, 2]


def test_unsubscribe_from_a_shared_subscription(client_factory) -> None:
    """UNSUBSCRIBE names the full `$share/...` filter: 0x00 [MQTT-3.10.4-1]; the plain filter is a
    different subscription (0x11), and the remaining member then gets every message."""
    a = member(client_factory, "a", "$share/g/us/t")
    b = member(client_factory, "b", "$share/g/us/t")
    assert codes(b.unsubscribe("us/t")) == [0x11]
    assert codes(b.unsubscribe("$share/g/us/t")) == [0x00]
    pub = client_factory("pub", version=5)
    for n in range(3):
        pub.publish("us/t", str(n).encode(), qos=1)
    settle(client_factory, a, b)
    assert payloads(a) == [b"0", b"1", b"2"]
    assert payloads(b) == []


def test_disconnected_member_is_skipped(client_factory) -> None:
    """A member whose (clean) session ended is gone from the group: the others get everything."""
    a = member(client_factory, "a", "$share/g/off/t")
    b = member(client_factory, "b", "$share/g/off/t", version=4)
    b.disconnect()
    pub = client_factory("pub", version=5)
    for n in range(3):
        pub.publish("off/t", str(n).encode(), qos=1)
    settle(client_factory, a)
    assert payloads(a) == [b"0", b"1", b"2"]


def test_no_local_on_a_shared_subscription_is_a_protocol_error(raw_factory) -> None:
    """No Local on a shared subscription is a Protocol Error [MQTT-3.8.3-4]: DISCONNECT 0x82 and close."""
    raw = raw_factory("raw", 5)
    raw.send(Subscribe(1, (Subscription("$share/g/nl/t", 1, no_local=True),)))
    assert raw.expect_disconnect().reason_code == ReasonCode.PROTOCOL_ERROR


INVALID_SHARED = [
    "$share//t",      # empty ShareName [MQTT-4.8.2-1]
    "$share/g+/t",    # wildcard in the ShareName [MQTT-4.8.2-2]
    "$share/g#/t",
    "$share/+/t",
    "$share/g",       # no '/' and filter after the ShareName [MQTT-4.8.2-2]
    "$share/g/",      # an empty filter after it
    "$share/g/a/#/b", # the filter itself is invalid [MQTT-4.7.1-1]
]


@pytest.mark.parametrize(("version", "refused"), [pytest.param(4, 0x80, id="v311"), pytest.param(5, 0x8F, id="v5")])
def test_invalid_share_names_refused_per_filter(raw_factory, version: int, refused: int) -> None:
    """Malformed shared filters get 0x8F Topic Filter invalid (3.1.1: 0x80), each in its own slot, while
    valid ones in the same SUBSCRIBE are granted [MQTT-3.9.3-1][MQTT-3.9.3-2]."""
    raw = raw_factory("raw", version)
    filters = ["$share/ok/#", *INVALID_SHARED, "$share/ok2/a/+"]
    suback = raw.subscribe(*(Subscription(f, 1) for f in filters))
    assert suback.reason_codes == (1, *(refused for _ in INVALID_SHARED), 1)
    # The connection is still usable.
    raw.send(Publish("a/b", b"x", qos=0))
    publish = raw.expect_publish()
    assert (publish.topic, publish.payload) == ("a/b", b"x")
