"""Publish/subscribe through a running Roost, MQTT 3.1.1 and 5: QoS end to end, SUBACK/UNSUBACK codes,
wildcards, overlapping subscriptions and their identifiers, No Local, v5 properties passed through, topic
aliases, Receive Maximum, Maximum Packet Size and QoS 2 exactly-once.

paho clients play the ordinary roles; `RawPeer` (Roost's own codec on a socket) is used where the test must
see or withhold individual packets. Numbering is MQTT 5.0's unless a test says "3.1.1".
"""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes

from broker.codec import (
    Properties,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Subscription,
)
from tests.helpers import paho_properties
from tests.pubsub_helpers import RawPeer, codes, drain, raw_factory, sync_all  # noqa: F401  (fixture)

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


def subscribe_sync(client, topic: str = "sync/marker") -> None:
    client.subscribe(topic, qos=2)


def sync(publisher, subscriber, topic: str = "sync/marker") -> None:
    sync_all(publisher, [subscriber], topic)


# -- QoS end to end ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_qos_is_minimum_of_published_and_granted(client_factory, version: int) -> None:
    """Every published QoS (0/1/2, the publisher's flow completing at that QoS) to subscribers granted
    0/1/2: each gets the message at min(published QoS, granted QoS) [MQTT-3.8.4-8] (3.1.1: [MQTT-3.8.4-6])."""
    subs = {}
    for sub_qos in (0, 1, 2):
        subs[sub_qos] = client_factory(f"sub{sub_qos}", version=version)
        assert codes(subs[sub_qos].subscribe("qos/#", qos=sub_qos)) == [sub_qos]
    pub = client_factory("pub", version=version)
    for pub_qos in (0, 1, 2):
        pub.publish(f"qos/{pub_qos}", f"at {pub_qos}".encode(), qos=pub_qos)  # waits for PUBACK / PUBCOMP
    for sub_qos, sub in subs.items():
        got = sorted((m.topic, m.payload, m.qos, m.retain) for m in (sub.expect(), sub.expect(), sub.expect()))
        assert got == [(f"qos/{q}", f"at {q}".encode(), min(q, sub_qos), False) for q in (0, 1, 2)], sub_qos


@pytest.mark.parametrize("version", VERSIONS)
def test_suback_grants_each_requested_qos_in_order(raw_factory, version: int) -> None:
    """One reason code per filter, in order, each the granted QoS [MQTT-3.8.4-6][MQTT-3.8.4-7][MQTT-3.9.3-1]."""
    raw = raw_factory("subber", version)
    suback = raw.subscribe(Subscription("a/2", 2), Subscription("a/0", 0), Subscription("a/1", 1))
    assert suback.reason_codes == (2, 0, 1)


@pytest.mark.parametrize("version", VERSIONS)
def test_qos1_delivery_has_packet_id_and_ends_at_puback(client_factory, raw_factory, version: int) -> None:
    """A QoS 1 delivery has a packet identifier and DUP 0 [MQTT-4.3.2-2]; after the PUBACK nothing is resent."""
    raw = raw_factory("raw-sub", version)
    raw.subscribe(Subscription("q1/t", 1))
    pub = client_factory("pub", version=version)
    pub.publish("q1/t", b"one", qos=1)
    publish = raw.expect_publish()
    assert (publish.topic, publish.payload, publish.qos, publish.dup) == ("q1/t", b"one", 1, False)
    assert publish.packet_id is not None
    raw.send(Puback(publish.packet_id))
    raw.expect_nothing()


# -- QoS 2 both ways ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_resent_publish_before_pubrel_is_delivered_once(client_factory, raw_factory, version: int) -> None:
    """Until PUBREL, a PUBLISH with the same packet id (DUP) is answered PUBREC and not delivered again
    [MQTT-4.3.3-10]; PUBREL is answered PUBCOMP [MQTT-4.3.3-11]."""
    sub = client_factory("sub", version=version)
    sub.subscribe("eo/#", qos=2)
    raw = raw_factory("raw-pub", version)
    raw.send(Publish("eo/t", b"once", qos=2, packet_id=7))
    assert raw.receive() == Pubrec(7)
    raw.send(Publish("eo/t", b"once", qos=2, dup=True, packet_id=7))
    assert raw.receive() == Pubrec(7)
    raw.send(Pubrel(7))
    assert raw.receive() == Pubcomp(7)
    # A QoS 2 marker from the same publisher on the same topic comes after any second copy would have.
    raw.send(Publish("eo/t", b"marker", qos=2, packet_id=8))
    assert raw.receive() == Pubrec(8)
    raw.send(Pubrel(8))
    assert raw.receive() == Pubcomp(8)
    assert [sub.expect().payload, sub.expect().payload] == [b"once", b"marker"]
    sync(client_factory("syncer", version=version), sub, "eo/sync")
    assert drain(sub) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_packet_id_is_new_message_after_pubcomp(client_factory, raw_factory, version: int) -> None:
    """After PUBCOMP the same packet identifier starts a new application message [MQTT-4.3.3-12]."""
    sub = client_factory("sub", version=version)
    sub.subscribe("eo2/t", qos=2)
    raw = raw_factory("raw-pub", version)
    for payload in (b"first", b"second"):
        raw.send(Publish("eo2/t", payload, qos=2, packet_id=9))
        assert raw.receive() == Pubrec(9)
        raw.send(Pubrel(9))
        assert raw.receive() == Pubcomp(9)
    assert [sub.expect().payload, sub.expect().payload] == [b"first", b"second"]


@pytest.mark.parametrize("version", VERSIONS)
def test_qos2_flow_to_raw_subscriber(client_factory, raw_factory, version: int) -> None:
    """The broker as QoS 2 sender: PUBLISH, PUBREC -> PUBREL with the same id [MQTT-4.3.3-4], PUBCOMP ends
    it, and the message is not sent again [MQTT-4.3.3-6]."""
    raw = raw_factory("raw-sub", version)
    raw.subscribe(Subscription("q2/t", 2))
    pub = client_factory("pub", version=version)
    pub.publish("q2/t", b"two", qos=2)
    publish = raw.expect_publish()
    assert (publish.topic, publish.payload, publish.qos, publish.dup) == ("q2/t", b"two", 2, False)
    raw.send(Pubrec(publish.packet_id))
    assert raw.receive() == Pubrel(publish.packet_id)
    raw.send(Pubcomp(publish.packet_id))
    raw.expect_nothing()


def test_pubrel_for_unknown_packet_id_gets_pubcomp_0x92(raw_factory) -> None:
    """A PUBREL nobody is waiting for is still answered, v5 with 0x92 Packet Identifier not found [MQTT-4.3.3-11]."""
    raw = raw_factory("raw", 5)
    raw.send(Pubrel(42))
    assert raw.receive() == Pubcomp(42, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND)


# -- wildcards ---------------------------------------------------------------------------------------------

TOPICS = [
    "sport",
    "sport/tennis",
    "sport/tennis/player1",
    "sport/tennis/player1/ranking",
    "sport/tennis/player2",
    "sport/",
    "/finance",
]

WILDCARD_CASES = {
    # filter: the topics of TOPICS it must match (section 4.7.1)
    "sport/tennis/player1": {"sport/tennis/player1"},
    "sport/#": {"sport", "sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking",
                "sport/tennis/player2", "sport/"},
    "sport/tennis/#": {"sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking",
                       "sport/tennis/player2"},
    "sport/tennis/+": {"sport/tennis/player1", "sport/tennis/player2"},
    "sport/+": {"sport/tennis", "sport/"},
    "+": {"sport"},
    "+/+": {"sport/tennis", "sport/", "/finance"},
    "/+": {"/finance"},
    "+/tennis/#": {"sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis/player2"},
    "#": {"sport", "sport/tennis", "sport/tennis/player1", "sport/tennis/player1/ranking",
          "sport/tennis/player2", "sport/", "/finance"},
    "sport/tennis/player1/#": {"sport/tennis/player1", "sport/tennis/player1/ranking"},
    "Sport/#": set(),  # no normalisation, case included [MQTT-4.7.3-4]
}


@pytest.mark.parametrize("version", VERSIONS)
def test_wildcard_matching_through_broker(client_factory, version: int) -> None:
    """'#' and '+' match as section 4.7.1 says: '#' includes the parent level, '+' matches one level,
    an empty one too. One subscriber per filter."""
    subs = {}
    for index, topic_filter in enumerate(WILDCARD_CASES):
        sub = subs[topic_filter] = client_factory(f"sub{index}", version=version)
        assert codes(sub.subscribe(topic_filter, qos=1)) == [1]
        subscribe_sync(sub)
    pub = client_factory("pub", version=version)
    for topic in TOPICS:
        pub.publish(topic, topic.encode(), qos=1)
    sync_all(pub, subs.values())
    for topic_filter, sub in subs.items():
        received = sorted(m.topic for m in drain(sub))
        assert received == sorted(WILDCARD_CASES[topic_filter]), topic_filter


SYS_CASES = {
    # [MQTT-4.7.2-1]: a filter starting with a wildcard never matches a topic starting with '$' ...
    "#": False,
    "+/broker/version": False,
    "+/#": False,
    "+/+/+": False,
    # ... but one that names the '$' level does.
    "$SYS/#": True,
    "$SYS/broker/+": True,
    "$SYS/+/version": True,
    "$SYS/broker/version": True,
}


@pytest.mark.parametrize("version", VERSIONS)
def test_leading_wildcard_does_not_match_dollar_topics(client_factory, version: int) -> None:
    """The broker's own retained `$SYS/broker/version`: filters starting with '#' or '+' never get it, those
    whose first level is `$SYS` do [MQTT-4.7.2-1]. (Clients may not publish to `$` topics in Roost.)"""
    subs = {}
    for index, topic_filter in enumerate(SYS_CASES):
        sub = subs[topic_filter] = client_factory(f"sub{index}", version=version)
        subscribe_sync(sub)
        assert codes(sub.subscribe(topic_filter, qos=0)) == [0]
    sync_all(client_factory("pub", version=version), subs.values())
    for topic_filter, sub in subs.items():
        versions = [m.payload for m in drain(sub) if m.topic == "$SYS/broker/version"]
        if SYS_CASES[topic_filter]:
            assert len(versions) == 1 and versions[0].startswith(b"roost "), topic_filter
        else:
            assert versions == [], topic_filter


@pytest.mark.parametrize(
    ("version", "refused"), [pytest.param(4, 0x80, id="v311"), pytest.param(5, 0x8F, id="v5")]
)
def test_invalid_topic_filters_refused_per_filter(client_factory, raw_factory, version: int, refused: int) -> None:
    """Each malformed filter gets its own failure code (v5 0x8F Topic Filter invalid, 3.1.1 0x80) and the
    valid ones beside it are granted and work [MQTT-3.8.4-5][MQTT-3.9.3-2][MQTT-4.7.1-1][MQTT-4.7.1-2]."""
    raw = raw_factory("raw", version)
    suback = raw.subscribe(
        Subscription("ok/#", 1),
        Subscription("a/#/b", 1),
        Subscription("a+", 1),
        Subscription("ok2/+", 2),
        Subscription("a/b#", 0),
        Subscription("+a/b", 0),
    )
    assert suback.reason_codes == (1, refused, refused, 2, refused, refused)
    pub = client_factory("pub", version=version)
    pub.publish("ok/x", b"1", qos=1)
    pub.publish("ok2/y", b"2", qos=1)
    assert [(p.topic, p.payload) for p in (raw.expect_publish(), raw.expect_publish())] == [
        ("ok/x", b"1"), ("ok2/y", b"2"),
    ]


# -- UNSUBSCRIBE -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_stops_delivery(client_factory, version: int) -> None:
    """After UNSUBACK no new message matching the filter is delivered [MQTT-3.10.4-1][MQTT-3.10.4-2]."""
    sub = client_factory("sub", version=version)
    subscribe_sync(sub)
    sub.subscribe("un/+", qos=1)
    pub = client_factory("pub", version=version)
    pub.publish("un/a", b"before", qos=1)
    assert sub.expect().payload == b"before"
    sub.unsubscribe("un/+")
    pub.publish("un/a", b"after", qos=1)
    sync(pub, sub)
    assert drain(sub) == []


def test_unsuback_codes_v5(raw_factory) -> None:
    """v5 UNSUBACK: one code per filter, in order: 0x00 Success, 0x11 No subscription existed; filters are
    compared character by character, so 'u/+' does not remove 'u/#' [MQTT-3.10.4-1][MQTT-3.11.3-1]."""
    raw = raw_factory("raw", 5)
    raw.subscribe("u/#", "u/a")
    unsuback = raw.unsubscribe("u/a", "u/+", "never/subscribed", "u/#")
    assert unsuback.reason_codes == (0x00, 0x11, 0x11, 0x00)
    assert raw.unsubscribe("u/#").reason_codes == (0x11,)


def test_unsuback_v311_has_no_reason_codes(raw_factory) -> None:
    """3.1.1 UNSUBACK is just the packet identifier, whether or not the subscription existed (3.1.1 [MQTT-3.10.4-4])."""
    raw = raw_factory("raw", 4)
    raw.subscribe("u/#")
    assert raw.unsubscribe("u/#", "nope").reason_codes == ()


# -- overlapping subscriptions and subscription identifiers -----------------------------------------------


def sub_id(identifier: int):
    return paho_properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=identifier)


def subscription_ids(message) -> list[int]:
    return sorted(getattr(message.properties, "SubscriptionIdentifier", []) or [])


@pytest.mark.parametrize("pub_qos", [1, 2])
def test_overlapping_subscriptions_one_copy_at_highest_qos_with_every_identifier(client_factory, pub_qos: int) -> None:
    """One copy at the highest granted QoS [MQTT-3.3.4-2], carrying the identifiers of every matching
    subscription that has one [MQTT-3.3.4-3][MQTT-3.3.4-4]."""
    sub = client_factory("sub", version=5)
    subscribe_sync(sub)
    sub.subscribe("ov/+", qos=0, properties=sub_id(1))
    sub.subscribe("ov/#", qos=2, properties=sub_id(22))
    sub.subscribe("ov/t", qos=1, properties=sub_id(333))
    sub.subscribe("+/t", qos=0)  # no identifier
    pub = client_factory("pub", version=5)
    pub.publish("ov/t", b"x", qos=pub_qos)
    sync(pub, sub)
    messages = drain(sub)
    assert len(messages) == 1
    assert messages[0].qos == pub_qos
    assert subscription_ids(messages[0]) == [1, 22, 333]


def test_overlapping_subscriptions_v311_one_copy_at_highest_qos(client_factory) -> None:
    """3.1.1: the message is delivered respecting the maximum QoS of all matching subscriptions
    (3.1.1 [MQTT-3.3.5-1]); Roost sends one copy."""
    sub = client_factory("sub", version=4)
    subscribe_sync(sub)
    sub.subscribe("ov/+", qos=0)
    sub.subscribe("ov/#", qos=2)
    pub = client_factory("pub", version=4)
    pub.publish("ov/t", b"x", qos=2)
    sync(pub, sub)
    messages = drain(sub)
    assert [(m.payload, m.qos) for m in messages] == [(b"x", 2)]


def test_subscription_identifier_on_single_subscription(client_factory) -> None:
    """The identifier of the subscription is sent with the message [MQTT-3.3.4-3]; a subscription without
    one gets none; replacing the subscription without an identifier removes it [MQTT-3.8.4-3]."""
    sub = client_factory("sub", version=5)
    sub.subscribe("sid/t", qos=1, properties=sub_id(268_435_455))  # the largest identifier
    sub.subscribe("other/t", qos=1)
    pub = client_factory("pub", version=5)
    pub.publish("sid/t", b"a", qos=1)
    assert subscription_ids(sub.expect()) == [268_435_455]
    pub.publish("other/t", b"b", qos=1)
    assert subscription_ids(sub.expect()) == []
    sub.subscribe("sid/t", qos=1)
    pub.publish("sid/t", b"c", qos=1)
    assert subscription_ids(sub.expect()) == []


def test_subscription_identifier_applies_to_every_filter_of_the_subscribe(client_factory) -> None:
    """The identifier of a SUBSCRIBE belongs to each of its subscriptions (section 3.8.2.1.2)."""
    sub = client_factory("sub", version=5)
    sub.subscribe([("m/a", 1), ("m/b", 1)], properties=sub_id(5))
    pub = client_factory("pub", version=5)
    pub.publish("m/a", b"a", qos=1)
    pub.publish("m/b", b"b", qos=1)
    assert [subscription_ids(sub.expect()), subscription_ids(sub.expect())] == [[5], [5]]


# -- No Local -----------------------------------------------------------------------------------------------


def test_no_local_skips_own_messages_only(client_factory) -> None:
    """No Local: not forwarded to the publishing client [MQTT-3.8.3-3], still to others and still from others."""
    me = client_factory("me", version=5)
    me.subscribe("nl/#", qos=1, no_local=True)
    subscribe_sync(me)
    other = client_factory("other", version=5)
    other.subscribe("nl/#", qos=1)
    me.publish("nl/mine", b"mine", qos=1)
    assert other.expect().payload == b"mine"
    other.publish("nl/theirs", b"theirs", qos=1)
    assert me.expect().payload == b"theirs"
    sync(other, me)
    assert drain(me) == []


def test_no_local_with_overlapping_plain_subscription(client_factory) -> None:
    """No Local applies per subscription: an overlapping subscription without it still delivers the client's
    own message, once [MQTT-3.8.3-3][MQTT-3.3.4-2]."""
    me = client_factory("me", version=5)
    me.subscribe("nl2/#", qos=1, no_local=True, properties=sub_id(1))
    me.subscribe("nl2/t", qos=1, properties=sub_id(2))
    me.publish("nl2/t", b"mine", qos=1)
    message = me.expect()
    assert message.payload == b"mine"
    assert subscription_ids(message) == [2]


# -- v5 properties pass through ----------------------------------------------------------------------------


def test_publish_properties_forwarded_unaltered(client_factory, raw_factory) -> None:
    """Payload Format Indicator [MQTT-3.3.2-4], Response Topic [MQTT-3.3.2-15], Correlation Data
    [MQTT-3.3.2-16], User Properties unaltered and in order, duplicates kept [MQTT-3.3.2-17][MQTT-3.3.2-18],
    and Content Type [MQTT-3.3.2-20] reach the subscriber as sent."""
    raw = raw_factory("raw-sub", 5)
    raw.subscribe(Subscription("props/t", 1))
    pub = client_factory("pub", version=5)
    user = [("z", "1"), ("a", "2"), ("z", "3"), ("empty", ""), ("ünï", "çødé")]
    props = paho_properties(
        PayloadFormatIndicator=1,
        ResponseTopic="reply/to/me",
        CorrelationData=b"\x00\x01corr\xff",
        ContentType="application/json; charset=utf-8",
        UserProperty=user,
    )
    pub.publish("props/t", b'{"k": 1}', qos=1, properties=props)
    publish = raw.expect_publish()
    assert publish.payload == b'{"k": 1}'
    assert publish.properties == Properties(
        payload_format_indicator=1,
        response_topic="reply/to/me",
        correlation_data=b"\x00\x01corr\xff",
        content_type="application/json; charset=utf-8",
        user_properties=tuple(user),
    )


def test_publish_properties_not_sent_to_v311_subscriber(client_factory, raw_factory) -> None:
    """A 3.1.1 subscriber gets the same message without properties (its PUBLISH has none to carry)."""
    raw = raw_factory("raw-sub", 4)
    raw.subscribe(Subscription("props/t", 1))
    pub = client_factory("pub", version=5)
    pub.publish("props/t", b"x", qos=1, properties=paho_properties(UserProperty=[("a", "b")], ContentType="c"))
    publish = raw.expect_publish()
    assert (publish.topic, publish.payload, publish.qos) == ("props/t", b"x", 1)


# -- topic aliases ---------------------------------------------------------------------------------------


def test_topic_alias_from_client(client_factory, raw_factory) -> None:
    """A client sets an alias with topic + alias, then uses it with an empty topic [MQTT-3.3.2-12]; the
    subscriber (which accepts no aliases) gets the full topic and no alias each time; an alias can be
    remapped to another topic."""
    sub = client_factory("sub", version=5)
    sub.subscribe("alias/#", qos=1)
    raw = raw_factory("raw-pub", 5)
    raw.send(Publish("alias/one", b"1", qos=1, packet_id=1, properties=Properties(topic_alias=3)))
    assert raw.receive() == Puback(1)
    raw.send(Publish("", b"2", qos=1, packet_id=2, properties=Properties(topic_alias=3)))
    assert raw.receive() == Puback(2)
    raw.send(Publish("alias/two", b"3", qos=0, properties=Properties(topic_alias=3)))
    raw.send(Publish("", b"4", qos=1, packet_id=3, properties=Properties(topic_alias=3)))
    assert raw.receive() == Puback(3)
    got = [sub.expect() for _ in range(4)]
    assert [(m.topic, m.payload) for m in got] == [
        ("alias/one", b"1"), ("alias/one", b"2"), ("alias/two", b"3"), ("alias/two", b"4"),
    ]
    assert all(getattr(m.properties, "TopicAlias", None) is None for m in got)


def test_topic_alias_above_maximum_disconnects_0x94(raw_factory) -> None:
    """An alias above the Topic Alias Maximum from CONNACK [MQTT-3.3.2-9] is answered DISCONNECT 0x94
    Topic Alias invalid, and the connection closes [MQTT-4.13.1-1]."""
    raw = raw_factory("raw", 5)
    maximum = raw.connack.properties.topic_alias_maximum
    assert maximum == 64  # Roost's default
    raw.send(Publish("alias/t", b"x", qos=0, properties=Properties(topic_alias=maximum)))  # the largest valid one
    raw.send(Publish("alias/t", b"x", qos=0, properties=Properties(topic_alias=maximum + 1)))
    assert raw.expect_disconnect().reason_code == ReasonCode.TOPIC_ALIAS_INVALID


def test_unknown_topic_alias_with_empty_topic_is_protocol_error(raw_factory) -> None:
    """An empty topic with an alias that has no mapping: DISCONNECT 0x82 Protocol Error."""
    raw = raw_factory("raw", 5)
    raw.send(Publish("", b"x", qos=0, properties=Properties(topic_alias=9)))
    assert raw.expect_disconnect().reason_code == ReasonCode.PROTOCOL_ERROR


def test_topic_alias_to_subscriber_that_accepts_them(client_factory, roost) -> None:
    """To a client whose CONNECT allows aliases, Roost may use them: the first PUBLISH maps topic and alias,
    later ones carry the alias with an empty topic, never above the client's maximum [MQTT-3.3.2-11]."""
    raw = RawPeer(roost.mqtt_port, 5)
    try:
        raw.open("raw-sub", properties=Properties(topic_alias_maximum=1))
        raw.subscribe(Subscription("ta/#", 0))
        pub = client_factory("pub", version=5)
        pub.publish("ta/a", b"1", qos=1)
        pub.publish("ta/a", b"2", qos=1)
        pub.publish("ta/b", b"3", qos=1)
        first, second, third = raw.expect_publish(), raw.expect_publish(), raw.expect_publish()
        assert (first.topic, first.properties.topic_alias) == ("ta/a", 1)
        assert (second.topic, second.properties.topic_alias, second.payload) == ("", 1, b"2")
        assert third.topic == "ta/b" and third.properties.topic_alias in (None, 1)
    finally:
        raw.close()


# -- flow control and packet size -------------------------------------------------------------------------


def test_receive_maximum_limits_unacknowledged_qos1(client_factory, roost) -> None:
    """A subscriber with Receive Maximum 2 has at most 2 unacknowledged QoS 1 PUBLISHes [MQTT-3.3.4-9];
    each PUBACK lets the next one through, in order [MQTT-4.6.0-6]."""
    raw = RawPeer(roost.mqtt_port, 5)
    try:
        raw.open("slow", properties=Properties(receive_maximum=2))
        raw.subscribe(Subscription("rm/t", 1))
        pub = client_factory("pub", version=5)
        for n in range(5):
            pub.publish("rm/t", str(n).encode(), qos=1)
        first, second = raw.expect_publish(), raw.expect_publish()
        assert [first.payload, second.payload] == [b"0", b"1"]
        assert raw.until_pingresp() == []  # other packets are not held back [MQTT-3.3.4-10]
        raw.send(Puback(first.packet_id))
        third = raw.expect_publish()
        assert third.payload == b"2"
        assert raw.until_pingresp() == []
        raw.send(Puback(second.packet_id))
        raw.send(Puback(third.packet_id))
        assert [raw.expect_publish().payload, raw.expect_publish().payload] == [b"3", b"4"]
    finally:
        raw.close()


def test_receive_maximum_counts_qos2_until_pubcomp(client_factory, roost) -> None:
    """A QoS 2 delivery holds its slot until PUBCOMP, not PUBREC (section 4.9) [MQTT-3.3.4-9]."""
    raw = RawPeer(roost.mqtt_port, 5)
    try:
        raw.open("slow2", properties=Properties(receive_maximum=1))
        raw.subscribe(Subscription("rm2/t", 2))
        pub = client_factory("pub", version=5)
        pub.publish("rm2/t", b"a", qos=2)
        pub.publish("rm2/t", b"b", qos=2)
        first = raw.expect_publish()
        assert first.payload == b"a"
        raw.send(Pubrec(first.packet_id))
        assert raw.until_pingresp() == [Pubrel(first.packet_id)]
        raw.send(Pubcomp(first.packet_id))
        assert raw.expect_publish().payload == b"b"
    finally:
        raw.close()


@pytest.mark.parametrize("qos", [0, 1])
def test_maximum_packet_size_skips_larger_messages(client_factory, roost, qos: int) -> None:
    """A PUBLISH larger than the client's Maximum Packet Size is discarded, as if sent [MQTT-3.1.2-25];
    smaller ones after it still arrive (and a discarded QoS 1 one holds no in-flight slot)."""
    raw = RawPeer(roost.mqtt_port, 5)
    try:
        raw.open("small", properties=Properties(maximum_packet_size=64, receive_maximum=1))
        raw.subscribe(Subscription("mps/t", qos))
        pub = client_factory("pub", version=5)
        pub.publish("mps/t", b"small-1", qos=1)
        pub.publish("mps/t", b"L" * 200, qos=1)
        first = raw.expect_publish()
        assert first.payload == b"small-1"
        if qos:
            raw.send(Puback(first.packet_id))
        pub.publish("mps/t", b"small-2", qos=1)
        second = raw.expect_publish()
        assert second.payload == b"small-2"
        if qos:
            raw.send(Puback(second.packet_id))
        assert raw.until_pingresp() == []
    finally:
        raw.close()


def test_qos0_not_held_back_by_a_full_receive_maximum(client_factory, roost) -> None:
    """Receive Maximum counts QoS 1 and 2 PUBLISHes only [MQTT-3.3.4-9]: with the window full, a QoS 0
    message still goes out at once."""
    raw = RawPeer(roost.mqtt_port, 5)
    try:
        raw.open("full", properties=Properties(receive_maximum=1))
        raw.subscribe(Subscription("rm0/#", 1))
        pub = client_factory("pub", version=5)
        pub.publish("rm0/a", b"held", qos=1)
        pub.publish("rm0/a", b"queued", qos=1)
        pub.publish("rm0/b", b"qos0", qos=0)
        first = raw.expect_publish()
        assert first.payload == b"held"
        assert [(p.payload, p.qos) for p in raw.until_pingresp()] == [(b"qos0", 0)]
        raw.send(Puback(first.packet_id))
        assert raw.expect_publish().payload == b"queued"
    finally:
        raw.close()


def test_message_expiry_interval_forwarded(client_factory, raw_factory) -> None:
    """A live message with a Message Expiry Interval reaches the subscriber with the time left, not more
    [MQTT-3.3.2-6]."""
    raw = raw_factory("raw-sub", 5)
    raw.subscribe(Subscription("mei/t", 1))
    client_factory("pub", version=5).publish("mei/t", b"x", qos=1, properties=paho_properties(MessageExpiryInterval=60))
    publish = raw.expect_publish()
    assert 59 <= publish.properties.message_expiry_interval <= 60


def test_invalid_utf8_with_payload_format_indicator_refused(client_factory, raw_factory) -> None:
    """Payload Format Indicator 1 promises UTF-8; a payload that is not is refused with PUBACK 0x99 Payload
    format invalid (section 3.3.2.3.2) and not forwarded."""
    sub = client_factory("sub", version=5)
    subscribe_sync(sub)
    sub.subscribe("pfi/t", qos=1)
    raw = raw_factory("raw-pub", 5)
    raw.send(Publish("pfi/t", b"\xff\xfe", qos=1, packet_id=1, properties=Properties(payload_format_indicator=1)))
    assert raw.receive() == Puback(1, ReasonCode.PAYLOAD_FORMAT_INVALID)
    sync(client_factory("pub", version=5), sub)
    assert drain(sub) == []


def test_subscription_identifier_in_client_publish_is_protocol_error(raw_factory) -> None:
    """A client PUBLISH must not carry a Subscription Identifier [MQTT-3.3.4-6]: DISCONNECT 0x82."""
    raw = raw_factory("raw", 5)
    raw.send(Publish("sidp/t", b"x", qos=0, properties=Properties(subscription_identifiers=(1,))))
    assert raw.expect_disconnect().reason_code == ReasonCode.PROTOCOL_ERROR
