"""The plain QoS 0 PUBLISH path through a running Roost: runs of plain packets taken from one read are
routed with the same rules as any other PUBLISH (publish ACL, on_publish hooks, tenants' namespaces), in
the order the client sent them, and their bytes are forwarded to subscribers of the same form or encoded
again for the others.

Publishers are `RawPeer`s so that hundreds of packets can be put in one write (`send_raw`), which is what
makes the broker take them as a run. Readiness is a SUBACK (the subscription is in place), a PUBACK or a
PINGRESP (the broker routes a PUBLISH synchronously when it reads it, so once a client holds the answer to
a later packet, everything it sent before has been routed: see `tests/pubsub_helpers.py`).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from broker.codec import (
    Disconnect,
    Properties,
    Puback,
    Publish,
    ReasonCode,
    Subscription,
    encode,
)
from broker.hooks import ClientInfo, Decision, Hook, HookChain
from broker.service import BrokerService
from tests.helpers import RoostThread
from tests.pubsub_helpers import RawPeer, raw_peers
from tests.tenant_helpers import make_tenant

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]
H = TypeVar("H", bound=Hook)
PAIRS = [
    pytest.param(4, 4, id="v311-to-v311"),
    pytest.param(5, 5, id="v5-to-v5"),
    pytest.param(4, 5, id="v311-to-v5"),
    pytest.param(5, 4, id="v5-to-v311"),
]


def plain(topic: str, payload: bytes, version: int) -> bytes:
    return encode(Publish(topic, payload), version)


def wildcard_publish(name: bytes, payload: bytes, version: int) -> bytes:
    """A QoS 0 PUBLISH to a topic name with a wildcard, which `encode` would not write."""
    body = len(name).to_bytes(2, "big") + name + (b"\x00" if version == 5 else b"") + payload
    assert len(body) < 128
    return bytes((0x30, len(body))) + body


def publishes(peer: RawPeer, count: int) -> list[Publish]:
    """The next `count` packets, which must all be PUBLISH."""
    return [peer.expect_publish() for _ in range(count)]


def packets_until_closed(peer: RawPeer) -> list[Any]:
    """Every packet the broker sends until it closes the connection."""
    packets: list[Any] = []
    while True:
        try:
            packets.append(peer.receive())
        except (AssertionError, ConnectionResetError):
            return packets


@pytest.fixture
def peers() -> Iterator[Callable[..., RawPeer]]:
    """Connect `RawPeer`s to a given Roost: `peers(roost, client_id, version, **connect)`."""
    with raw_peers() as open_peer:
        yield open_peer


# -- runs delivered in order, to every form -----------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_a_burst_in_one_write_reaches_every_form_in_order(roost: RoostThread, peers, version: int) -> None:
    """600 plain PUBLISH packets in one write, on five topics: a 3.1.1 subscriber, a v5 subscriber and a v5
    subscriber with a Subscription Identifier each receive all of them, in the order sent [MQTT-4.6.0-5],
    with the payloads unchanged, QoS 0 and RETAIN 0. The subscriber of the publisher's own form gets the
    publisher's bytes; the others get them encoded again (the identifier added [MQTT-3.3.4-3])."""
    subscribers = {
        "v311": peers(roost, "sub-v311", 4),
        "v5": peers(roost, "sub-v5", 5),
        "v5-id": peers(roost, "sub-v5-id", 5),
    }
    subscribers["v311"].subscribe("burst/#")
    subscribers["v5"].subscribe("burst/#")
    subscribers["v5-id"].subscribe("burst/#", properties=Properties(subscription_identifiers=(7,)))
    publisher = peers(roost, "pub", version)
    rng = random.Random(version)
    sizes = [0, 1, 10, 126, 127, 128, 300, 1000, 5000, 16_000]
    messages = [(f"burst/{n % 5}", rng.randbytes(rng.choice(sizes))) for n in range(600)]
    publisher.send_raw(b"".join(plain(topic, payload, version) for topic, payload in messages))

    expected = [Publish(topic, payload) for topic, payload in messages]
    assert publishes(subscribers["v311"], len(messages)) == expected
    assert publishes(subscribers["v5"], len(messages)) == expected
    with_id = Properties(subscription_identifiers=(7,))
    assert publishes(subscribers["v5-id"], len(messages)) == [
        Publish(topic, payload, properties=with_id) for topic, payload in messages
    ]
    assert publisher.until_pingresp() == []  # QoS 0: nothing to acknowledge, and still connected
    for subscriber in subscribers.values():
        subscriber.expect_nothing()


@pytest.mark.parametrize(("pub_version", "sub_version"), PAIRS)
def test_a_burst_arriving_in_pieces_is_delivered_whole(roost: RoostThread, peers, pub_version: int,
                                                       sub_version: int) -> None:
    """The same stream cut into writes that split packets (and their remaining lengths) arrives whole and in
    order: a packet completed by a later read is taken from the buffer it was completed in."""
    subscriber = peers(roost, "sub", sub_version)
    subscriber.subscribe("piece/+")
    publisher = peers(roost, "pub", pub_version)
    messages = [(f"piece/{n % 3}", bytes([n % 256]) * (n * 37 % 700)) for n in range(300)]
    stream = b"".join(plain(topic, payload, pub_version) for topic, payload in messages)
    rng = random.Random(pub_version * 10 + sub_version)
    pos = 0
    while pos < len(stream):
        size = rng.choice([1, 2, 3, 7, 100, 999, 4096])
        publisher.send_raw(stream[pos : pos + size])
        pos += size
    assert publishes(subscriber, len(messages)) == [Publish(topic, payload) for topic, payload in messages]
    assert publisher.until_pingresp() == []
    subscriber.expect_nothing()


@pytest.mark.parametrize("version", VERSIONS)
def test_plain_and_other_publishes_in_one_write_keep_their_order(roost: RoostThread, peers, version: int) -> None:
    """Plain QoS 0, QoS 1, retained QoS 0 and plain QoS 0 again, on one topic, in one write: the QoS 1 one
    is acknowledged, and the subscriber receives the four in the order sent [MQTT-4.6.0-5], the retained one
    with RETAIN 0 as it matches an established subscription [MQTT-3.3.1-12] (3.1.1: [MQTT-3.3.1-9]). A later
    subscriber receives the retained one with RETAIN 1 [MQTT-3.3.1-9] (3.1.1: [MQTT-3.3.1-8])."""
    subscriber = peers(roost, "sub", version)
    subscriber.subscribe(Subscription("mix/t", 1))
    publisher = peers(roost, "pub", version)
    publisher.send_raw(
        plain("mix/t", b"first", version)
        + encode(Publish("mix/t", b"second", qos=1, packet_id=1), version)
        + encode(Publish("mix/t", b"third", retain=True), version)
        + plain("mix/t", b"fourth", version)
    )
    ack = publisher.receive()
    assert isinstance(ack, Puback) and (ack.packet_id, ack.reason_code) == (1, 0)
    got = publishes(subscriber, 4)
    assert [(p.payload, p.qos, p.retain) for p in got] == [
        (b"first", 0, False), (b"second", 1, False), (b"third", 0, False), (b"fourth", 0, False)
    ]
    subscriber.send(Puback(got[1].packet_id))  # type: ignore[arg-type]
    assert publisher.until_pingresp() == []

    later = peers(roost, "later", version)
    later.subscribe("mix/t")
    retained = later.expect_publish()
    assert (retained.topic, retained.payload, retained.qos, retained.retain) == ("mix/t", b"third", 0, True)
    later.expect_nothing()


def test_a_v5_publish_with_properties_between_plain_ones_keeps_them(roost: RoostThread, peers) -> None:
    """A v5 QoS 0 PUBLISH with properties in the middle of plain ones is not plain: it reaches a v5
    subscriber, in order, with its User Property and Content Type unaltered [MQTT-3.3.2-17][MQTT-3.3.2-20],
    and a 3.1.1 subscriber with its payload alone."""
    v5 = peers(roost, "sub-v5", 5)
    v5.subscribe("props/t")
    v311 = peers(roost, "sub-v311", 4)
    v311.subscribe("props/t")
    publisher = peers(roost, "pub", 5)
    props = Properties(content_type="text/plain", user_properties=(("k", "v"),))
    publisher.send_raw(
        plain("props/t", b"before", 5)
        + encode(Publish("props/t", b"with", properties=props), 5)
        + plain("props/t", b"after", 5)
    )
    assert publishes(v5, 3) == [
        Publish("props/t", b"before"), Publish("props/t", b"with", properties=props), Publish("props/t", b"after")
    ]
    assert publishes(v311, 3) == [
        Publish("props/t", b"before"), Publish("props/t", b"with"), Publish("props/t", b"after")
    ]


# -- one matching subscription: Broker.publish_plain forwards the publisher's bytes, or encodes -------------


def test_no_local_applies_to_a_plain_publish(roost: RoostThread, peers) -> None:
    """A client whose one matching subscription has No Local does not get its own plain publishes back
    [MQTT-3.8.3-3]; it still gets another client's, forwarded as they are."""
    me = peers(roost, "me", 5)
    me.subscribe(Subscription("nl/#", no_local=True))
    other = peers(roost, "other", 5)
    me.send_raw(plain("nl/mine", b"mine", 5) * 3)
    assert me.until_pingresp() == []
    other.send_raw(plain("nl/theirs", b"theirs", 5))
    assert other.until_pingresp() == []
    assert me.expect_publish() == Publish("nl/theirs", b"theirs")
    me.expect_nothing()


def test_a_single_subscriber_gets_its_subscription_identifier(roost: RoostThread, peers) -> None:
    """The only subscription, of a v5 client of the publisher's form, carries a Subscription Identifier:
    the publisher's bytes would not hold it, so the message is encoded again with it [MQTT-3.3.4-3]."""
    subscriber = peers(roost, "sub", 5)
    subscriber.subscribe("id/#", properties=Properties(subscription_identifiers=(42,)))
    publisher = peers(roost, "pub", 5)
    publisher.send_raw(plain("id/a", b"1", 5) + plain("id/b", b"2", 5))
    with_id = Properties(subscription_identifiers=(42,))
    assert publishes(subscriber, 2) == [
        Publish("id/a", b"1", properties=with_id), Publish("id/b", b"2", properties=with_id)
    ]


def test_a_subscriber_taking_topic_aliases_gets_its_own_encoding(roost: RoostThread, peers) -> None:
    """A v5 subscriber that accepts topic aliases gets the topic once, then the alias alone
    [MQTT-3.3.2-8 context], even though the publisher's bytes (same version, same tenant) carry the topic."""
    subscriber = peers(roost, "sub", 5, properties=Properties(topic_alias_maximum=4))
    subscriber.subscribe("alias/#")
    publisher = peers(roost, "pub", 5)
    publisher.send_raw(plain("alias/t", b"1", 5) + plain("alias/t", b"2", 5))
    first, second = publishes(subscriber, 2)
    assert (first.topic, first.payload, first.properties.topic_alias) == ("alias/t", b"1", 1)
    assert (second.topic, second.payload, second.properties.topic_alias) == ("", b"2", 1)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_plain_publish_over_the_subscribers_maximum_packet_size_is_skipped(roost: RoostThread, peers,
                                                                          version: int) -> None:
    """A v5 subscriber's Maximum Packet Size holds for the publisher's bytes forwarded as they are: the
    larger message is discarded [MQTT-3.1.2-25], the smaller ones around it arrive."""
    subscriber = peers(roost, "sub", 5, properties=Properties(maximum_packet_size=64))
    subscriber.subscribe("mps/#")
    publisher = peers(roost, "pub", version)
    publisher.send_raw(plain("mps/t", b"small-1", version) + plain("mps/t", b"L" * 200, version)
                       + plain("mps/t", b"small-2", version))
    assert publishes(subscriber, 2) == [Publish("mps/t", b"small-1"), Publish("mps/t", b"small-2")]
    assert publisher.until_pingresp() == []
    subscriber.expect_nothing()


# -- the rules every PUBLISH obeys -----------------------------------------------------------------------------

# The ACL under test: publish only below pub/, subscribe anywhere (a denied filter would make `#` refused).
ACL = {"publish": ["pub/#"], "subscribe": ["#"]}


@pytest.mark.parametrize("version", VERSIONS)
def test_the_publish_acl_applies_to_plain_publishes(make_roost, peers, version: int) -> None:
    """Plain QoS 0 packets to allowed and refused topics in one write: only the allowed ones are delivered,
    in order; the refused ones are dropped without a word (QoS 0 has no acknowledgement to carry 0x87), and
    the connection stays open. Topics starting with `$` are the broker's: no client publishes there."""
    roost = make_roost(anonymous=ACL)
    subscriber = peers(roost, "sub", 5)
    assert subscriber.subscribe("#").reason_codes == (0,)
    publisher = peers(roost, "pub", version)
    topics = ["pub/a", "nopub/a", "pub/b", "nopub/b/c", "pub/a", "$SYS/fake", "nopub/a", "pub/c"]
    sent = [(topic, f"{n}:{topic}".encode()) for n, topic in enumerate(topics * 20)]
    publisher.send_raw(b"".join(plain(topic, payload, version) for topic, payload in sent))
    assert publisher.until_pingresp() == []
    allowed = [Publish(topic, payload) for topic, payload in sent if topic in ("pub/a", "pub/b", "pub/c")]
    assert subscriber.until_pingresp() == allowed
    # Still connected, and still publishing.
    publisher.send_raw(plain("pub/a", b"after", version))
    assert subscriber.expect_publish() == Publish("pub/a", b"after")


class Quota(Hook):
    """Refuses messages to `over/...` with 0x97 Quota exceeded, and records every message it is shown."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes, int, bool]] = []

    def on_publish(self, client: ClientInfo, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        self.seen.append((topic, payload, qos, retain))
        return ReasonCode.QUOTA_EXCEEDED if topic.startswith("over/") else 0


@contextmanager
def hook_in_front(roost: RoostThread, hook: H) -> Iterator[H]:
    """Put `hook` in front of the running Roost's hooks (for connections opened afterwards)."""
    broker = roost.roost.broker  # type: ignore[union-attr]
    original = broker.hooks
    roost.call(lambda: setattr(broker, "hooks", HookChain([hook, *original.hooks])))
    try:
        yield hook
    finally:
        roost.call(lambda: setattr(broker, "hooks", original))


@pytest.fixture
def quota(roost: RoostThread) -> Iterator[Quota]:
    with hook_in_front(roost, Quota()) as hook:
        yield hook


@pytest.mark.parametrize("version", VERSIONS)
def test_an_on_publish_hook_refusal_drops_plain_publishes(roost: RoostThread, quota: Quota, peers,
                                                          version: int) -> None:
    """A hook answering 0x97 drops a plain QoS 0 message: QoS 0 has no acknowledgement to carry the reason,
    in either version, so the connection stays open and the messages around it are delivered. The hook is
    shown each message as the client named it: topic, payload, QoS 0, RETAIN 0."""
    subscriber = peers(roost, "sub", 5)
    subscriber.subscribe("#")
    publisher = peers(roost, "pub", version)
    sent = [(f"{'over' if n % 3 == 1 else 'ok'}/{n % 4}", bytes([n]) * n) for n in range(90)]
    publisher.send_raw(b"".join(plain(topic, payload, version) for topic, payload in sent))
    assert publisher.until_pingresp() == []
    assert subscriber.until_pingresp() == [Publish(t, p) for t, p in sent if t.startswith("ok/")]
    assert roost.call(lambda: list(quota.seen)) == [(t, p, 0, False) for t, p in sent]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_wildcard_topic_in_a_run_closes_the_connection_after_the_good_ones(roost: RoostThread, peers,
                                                                             version: int) -> None:
    """Ten good plain packets, one whose topic name holds a wildcard [MQTT-3.3.2-2], then more good ones, in
    one write: the ten are delivered, then the connection is closed, v5 with DISCONNECT 0x90 Topic Name
    invalid first [MQTT-4.13.1-1], 3.1.1 with nothing (it has no server DISCONNECT); nothing after the bad
    packet is routed."""
    subscriber = peers(roost, "sub", 5)
    subscriber.subscribe("good/#")
    publisher = peers(roost, "pub", version)
    before = [(f"good/{n}", f"before {n}".encode()) for n in range(10)]
    after = [(f"good/{n}", f"after {n}".encode()) for n in range(10)]
    publisher.send_raw(
        b"".join(plain(topic, payload, version) for topic, payload in before)
        + wildcard_publish(b"good/+", b"bad", version)
        + b"".join(plain(topic, payload, version) for topic, payload in after)
    )
    if version == 5:
        assert publisher.expect_disconnect() == Disconnect(ReasonCode.TOPIC_NAME_INVALID)
    else:
        assert packets_until_closed(publisher) == []
    assert subscriber.until_pingresp() == [Publish(topic, payload) for topic, payload in before]


class Moderator(Hook):
    """Acts while a message is routed, as a hook or a control-plane watcher may: a message to `kick/...`
    kicks its publisher (BrokerService.kick), one to `close-pub/...` narrows the publish ACL to refuse
    `pub/...` and invalidates the cached answers (as a changed ACL does)."""

    def __init__(self, broker: Any) -> None:
        self.service = BrokerService(broker)
        self.closed: set[str] = set()

    def authorize_publish(self, client: ClientInfo, topic: str) -> Decision:
        return Decision.DENY if any(topic.startswith(prefix) for prefix in self.closed) else Decision.DEFER

    def on_publish(self, client: ClientInfo, topic: str, payload: bytes, qos: int, retain: bool) -> int:
        if topic.startswith("kick/"):
            self.service.kick(client_id=client.client_id)
        elif topic.startswith("close-pub/"):
            self.closed.add("pub/")
            self.service.broker.hooks.invalidate()
        return 0


@pytest.fixture
def moderator(roost: RoostThread) -> Iterator[Moderator]:
    with hook_in_front(roost, Moderator(roost.roost.broker)) as hook:  # type: ignore[union-attr]
        yield hook


@pytest.mark.parametrize("version", VERSIONS)
def test_nothing_after_a_kick_in_the_middle_of_a_run_is_routed(roost: RoostThread, moderator: Moderator, peers,
                                                                version: int) -> None:
    """A hook kicks the publisher while its third plain packet of a run is routed: the two before it are
    delivered, the kick's own message too (it was being routed), and nothing the kicked client sent after it
    (as for any packet still unread when a connection is closed)."""
    subscriber = peers(roost, "sub", 5)
    subscriber.subscribe("#")
    publisher = peers(roost, "pub", version)
    publisher.send_raw(b"".join(plain(t, p, version) for t, p in [
        ("pub/a", b"1"), ("pub/a", b"2"), ("kick/now", b"3"), ("pub/a", b"4"), ("pub/a", b"5"),
    ]))
    if version == 5:
        assert publisher.expect_disconnect() == Disconnect(ReasonCode.ADMINISTRATIVE_ACTION)
    else:
        assert packets_until_closed(publisher) == []
    assert subscriber.until_pingresp() == [Publish("pub/a", b"1"), Publish("pub/a", b"2"), Publish("kick/now", b"3")]


@pytest.mark.parametrize("version", VERSIONS)
def test_access_narrowed_in_the_middle_of_a_run_applies_to_the_rest(roost: RoostThread, moderator: Moderator,
                                                                     peers, version: int) -> None:
    """Access changes while a plain packet of a run is routed: the packets after it in the same run are
    checked against the new rules (a narrowed ACL stops deliveries at once), not the answers cached before."""
    subscriber = peers(roost, "sub", 5)
    subscriber.subscribe("#")
    publisher = peers(roost, "pub", version)
    publisher.send_raw(b"".join(plain(t, p, version) for t, p in [
        ("pub/a", b"1"), ("close-pub/x", b"2"), ("pub/a", b"3"), ("other/a", b"4"),
    ]))
    assert publisher.until_pingresp() == []
    assert subscriber.until_pingresp() == [
        Publish("pub/a", b"1"), Publish("close-pub/x", b"2"), Publish("other/a", b"4")
    ]


# -- tenants ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pub_version", "sub_version"), PAIRS)
def test_a_tenant_plain_publish_stays_in_its_tenant(make_roost, peers, pub_version: int, sub_version: int) -> None:
    """A tenant's client publishes plain QoS 0 packets in one write: a subscriber of the same tenant receives
    them under the topic names the publisher used (the tenant's namespace is the broker's business), whether
    it gets the publisher's bytes or its own encoding; a subscriber of another tenant, with the same topic
    names and a `#` subscription, receives nothing."""
    roost = make_roost(allow_anonymous=False)
    alice, bob = make_tenant(roost, "alice"), make_tenant(roost, "bob")

    credentials = {"alice": alice.instance(), "bob": bob.instance()}  # one MQTT instance each (free plan)

    def login(tenant: str, client_id: str, version: int) -> RawPeer:
        username, password = credentials[tenant]
        return peers(roost, client_id, version, username=username, password=password.encode())

    own = login("alice", "sub", sub_version)
    own.subscribe("#")
    other = login("bob", "sub", sub_version)
    other.subscribe("#")
    publisher = login("alice", "pub", pub_version)
    sent = [(f"sensors/{n % 4}", f"reading {n}".encode()) for n in range(30)]  # within the free plan's quota
    publisher.send_raw(b"".join(plain(topic, payload, pub_version) for topic, payload in sent))
    assert publisher.until_pingresp() == []
    assert own.until_pingresp() == [Publish(topic, payload) for topic, payload in sent]
    assert other.until_pingresp() == []
