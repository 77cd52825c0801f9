"""Retained messages through a running Roost, MQTT 3.1.1 and 5: stored and sent to new subscriptions with
RETAIN 1, replaced, deleted by an empty payload, the RETAIN flag on ordinary forwarding (Retain As
Published), Retain Handling 0/1/2, and message expiry of a retained message.

Numbering is MQTT 5.0's unless a test says "3.1.1". (`tests/broker/test_retained.py` tests the store itself.)
"""

from __future__ import annotations

import itertools
import time

import pytest

from broker.codec import Properties, Subscription
from tests.helpers import paho_properties
from tests.pubsub_helpers import drain, raw_factory, sync_all  # noqa: F401  (fixture)

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


def new_subscriber(client_factory, client_id: str, topic_filter: str, qos: int = 1, version: int = 5, **options):
    """A client subscribed to the sync topic, then to `topic_filter`, with everything sent so far received."""
    sub = client_factory(client_id, version=version)
    sub.subscribe("sync/marker", qos=2)
    sub.subscribe(topic_filter, qos=qos, **options)
    return sub


_syncers = itertools.count()


def settle(client_factory, *subs, version: int = 5) -> None:
    """Everything published so far has reached `subs` (each subscribed to the sync topic)."""
    sync_all(client_factory(f"syncer-{next(_syncers)}", version=version), subs)


# -- stored, replaced, deleted ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_message_sent_to_new_subscription_with_retain_1(client_factory, version: int) -> None:
    """A retained message (stored [MQTT-3.3.1-5]) goes to each new matching subscription with RETAIN 1
    (3.1.1 [MQTT-3.3.1-6][MQTT-3.3.1-8]) at its own QoS downgraded to the granted one [MQTT-3.8.4-8]."""
    pub = client_factory("pub", version=version)
    for qos in (0, 1, 2):
        pub.publish(f"ret/q{qos}", f"kept at {qos}".encode(), qos=qos, retain=True)
    pub.publish("other/x", b"not matching", qos=1, retain=True)
    subs = {qos: new_subscriber(client_factory, f"sub{qos}", "ret/#", qos, version) for qos in (0, 1, 2)}
    settle(client_factory, *subs.values(), version=version)
    for sub_qos, sub in subs.items():
        got = sorted((m.topic, m.payload, m.qos, m.retain) for m in drain(sub))
        assert got == [(f"ret/q{q}", f"kept at {q}".encode(), min(q, sub_qos), True) for q in (0, 1, 2)], sub_qos


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_message_replaced_not_by_non_retained(client_factory, version: int) -> None:
    """A newer retained message replaces the stored one [MQTT-3.3.1-5]; a PUBLISH with RETAIN 0 neither
    stores nor replaces it [MQTT-3.3.1-8]."""
    pub = client_factory("pub", version=version)
    pub.publish("rep/t", b"first", qos=1, retain=True)
    pub.publish("rep/t", b"second", qos=1, retain=True)
    pub.publish("rep/t", b"not retained", qos=1, retain=False)
    pub.publish("rep/u", b"never retained", qos=1, retain=False)
    sub = new_subscriber(client_factory, "sub", "rep/+", version=version)
    settle(client_factory, sub, version=version)
    assert [(m.topic, m.payload, m.retain) for m in drain(sub)] == [("rep/t", b"second", True)]


@pytest.mark.parametrize("version", VERSIONS)
def test_empty_retained_payload_deletes_and_is_forwarded(client_factory, version: int) -> None:
    """A retained PUBLISH with an empty payload is forwarded as usual but removes the retained message
    [MQTT-3.3.1-6] and is not stored itself [MQTT-3.3.1-7] (3.1.1 [MQTT-3.3.1-10][MQTT-3.3.1-11])."""
    existing = new_subscriber(client_factory, "existing", "del/t", version=version)
    pub = client_factory("pub", version=version)
    pub.publish("del/t", b"soon gone", qos=1, retain=True)
    pub.publish("del/t", b"", qos=1, retain=True)
    settle(client_factory, existing, version=version)
    assert [m.payload for m in drain(existing)] == [b"soon gone", b""]
    late = new_subscriber(client_factory, "late", "del/#", version=version)
    settle(client_factory, late, version=version)
    assert drain(late) == []


# -- the RETAIN flag on forwarding --------------------------------------------------------------------------


def test_forwarded_retained_publish_has_retain_0_in_v311(client_factory) -> None:
    """3.1.1: a message sent because it matches an established subscription has RETAIN 0, however it was
    published (3.1.1 [MQTT-3.3.1-9])."""
    sub = new_subscriber(client_factory, "sub", "fw/t", version=4)
    pub = client_factory("pub", version=4)
    pub.publish("fw/t", b"x", qos=1, retain=True)
    message = sub.expect()
    assert (message.payload, message.retain) == (b"x", False)


def test_retain_as_published(client_factory) -> None:
    """Retain As Published 0: RETAIN 0 on forwarding [MQTT-3.3.1-12]; 1: RETAIN as received [MQTT-3.3.1-13].
    Retained messages sent because of a new subscription have RETAIN 1 either way (section 3.3.1.3)."""
    pub = client_factory("pub", version=5)
    pub.publish("rap/old", b"old", qos=1, retain=True)
    plain = new_subscriber(client_factory, "plain", "rap/#", retain_as_published=False)
    asis = new_subscriber(client_factory, "asis", "rap/#", retain_as_published=True)
    assert [(m.payload, m.retain) for m in (plain.expect(), asis.expect())] == [(b"old", True), (b"old", True)]
    pub.publish("rap/new", b"retained", qos=1, retain=True)
    pub.publish("rap/new", b"ordinary", qos=1, retain=False)
    settle(client_factory, plain, asis)
    assert [(m.payload, m.retain) for m in drain(plain)] == [(b"retained", False), (b"ordinary", False)]
    assert [(m.payload, m.retain) for m in drain(asis)] == [(b"retained", True), (b"ordinary", False)]


# -- Retain Handling ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_retain_handling_0_sends_on_every_subscribe(client_factory, version: int) -> None:
    """Retain Handling 0 (and 3.1.1): retained messages are sent on each SUBSCRIBE, also when it replaces an
    existing subscription [MQTT-3.3.1-9][MQTT-3.8.4-4] (3.1.1 [MQTT-3.8.4-3])."""
    client_factory("pub", version=version).publish("rh0/t", b"kept", qos=1, retain=True)
    sub = new_subscriber(client_factory, "sub", "rh0/t", version=version)
    assert sub.expect().payload == b"kept"
    sub.subscribe("rh0/t", qos=1)
    again = sub.expect()
    assert (again.payload, again.retain) == (b"kept", True)


def test_retain_handling_1_only_for_a_new_subscription(client_factory) -> None:
    """Retain Handling 1: sent if the subscription did not exist, not when it is replaced [MQTT-3.3.1-10]."""
    client_factory("pub", version=5).publish("rh1/t", b"kept", qos=1, retain=True)
    sub = new_subscriber(client_factory, "sub", "rh1/t", retain_handling=1)
    assert sub.expect().payload == b"kept"
    sub.subscribe("rh1/t", qos=2, retain_handling=1)
    settle(client_factory, sub)
    assert drain(sub) == []
    sub.unsubscribe("rh1/t")
    sub.subscribe("rh1/t", qos=1, retain_handling=1)  # new again
    assert sub.expect().payload == b"kept"


def test_retain_handling_2_never_sends(client_factory) -> None:
    """Retain Handling 2: retained messages are not sent [MQTT-3.3.1-11]; later messages still are."""
    pub = client_factory("pub", version=5)
    pub.publish("rh2/t", b"kept", qos=1, retain=True)
    sub = new_subscriber(client_factory, "sub", "rh2/#", retain_handling=2)
    settle(client_factory, sub)
    assert drain(sub) == []
    pub.publish("rh2/t", b"live", qos=1)
    assert sub.expect().payload == b"live"


# -- properties and expiry of retained messages -------------------------------------------------------------


def test_retained_message_keeps_properties_and_gets_subscription_id(client_factory, raw_factory) -> None:
    """A retained message is sent later with the properties it was published with
    [MQTT-3.3.2-4][MQTT-3.3.2-15][MQTT-3.3.2-16][MQTT-3.3.2-18][MQTT-3.3.2-20], plus the identifier of the
    subscription it is sent for [MQTT-3.3.4-3]."""
    user = [("b", "1"), ("a", "2"), ("b", "3")]
    props = paho_properties(
        PayloadFormatIndicator=1, ContentType="text/plain", ResponseTopic="r/t", CorrelationData=b"c",
        UserProperty=user,
    )
    client_factory("pub", version=5).publish("rp/t", b"hello", qos=1, retain=True, properties=props)
    raw = raw_factory("raw", 5)
    raw.subscribe(Subscription("rp/#", 1), properties=Properties(subscription_identifiers=(7,)))
    publish = raw.expect_publish()
    assert (publish.topic, publish.payload, publish.qos, publish.retain) == ("rp/t", b"hello", 1, True)
    assert publish.properties == Properties(
        payload_format_indicator=1, content_type="text/plain", response_topic="r/t", correlation_data=b"c",
        user_properties=tuple(user), subscription_identifiers=(7,),
    )


def test_retained_message_expiry(client_factory) -> None:
    """A retained message with a Message Expiry Interval is sent with the remaining interval [MQTT-3.3.2-6]
    and no longer once it has expired [MQTT-3.3.2-5]. Lets 1.2 s of real time pass."""
    pub = client_factory("pub", version=5)
    pub.publish("exp/short", b"short", qos=1, retain=True, properties=paho_properties(MessageExpiryInterval=1))
    pub.publish("exp/long", b"long", qos=1, retain=True, properties=paho_properties(MessageExpiryInterval=30))
    early = new_subscriber(client_factory, "early", "exp/#")
    settle(client_factory, early)
    got = {m.payload: m.properties.MessageExpiryInterval for m in drain(early)}
    assert set(got) == {b"short", b"long"}
    assert 0 < got[b"short"] <= 1 and 28 <= got[b"long"] <= 30
    time.sleep(1.2)  # let the short one expire (real time: expiry is wall-clock)
    late = new_subscriber(client_factory, "late", "exp/#")
    late311 = new_subscriber(client_factory, "late311", "exp/#", version=4)
    settle(client_factory, late, late311)
    remaining = [(m.payload, m.properties.MessageExpiryInterval) for m in drain(late)]
    assert len(remaining) == 1 and remaining[0][0] == b"long"
    assert 27 <= remaining[0][1] <= 29  # 30 s minus the time it waited in the server
    assert [m.payload for m in drain(late311)] == [b"long"]


def test_retained_message_from_v5_to_v311_and_back(client_factory) -> None:
    """Retained messages are shared by both protocol versions: each gets it in its own dialect."""
    client_factory("pub5", version=5).publish(
        "mix/five", b"5", qos=2, retain=True, properties=paho_properties(UserProperty=[("k", "v")])
    )
    client_factory("pub4", version=4).publish("mix/four", b"4", qos=2, retain=True)
    v4 = new_subscriber(client_factory, "v4", "mix/#", qos=2, version=4)
    v5 = new_subscriber(client_factory, "v5", "mix/#", qos=2, version=5)
    settle(client_factory, v4, v5)
    for sub in (v4, v5):
        assert sorted((m.topic, m.payload, m.qos, m.retain) for m in drain(sub)) == [
            ("mix/five", b"5", 2, True), ("mix/four", b"4", 2, True),
        ]
