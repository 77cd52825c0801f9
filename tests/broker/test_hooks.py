"""`broker/hooks.py`: the HookChain's allow / deny / defer rule, and the anonymous ACL as clients see it.

The chain is unit-tested directly (it is a small pure object); the ACL is tested end to end through
`make_roost(anonymous={...})` with raw and paho clients: v5 clients hear 0x87, 3.1.1 clients get a positive
acknowledgement for a refused PUBLISH [MQTT-3.3.5-2] and 0x80 for a refused subscription [MQTT-3.9.3-1].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broker.codec import Connect, Disconnect, Puback, Publish, Suback, Subscribe, Subscription, Will
from broker.hooks import (
    AnonymousHook,
    AuthResult,
    ClientInfo,
    ConnectRequest,
    Decision,
    Hook,
    HookChain,
)
from tests.helpers import PahoClient, RawClient, RoostThread, sync

# -- HookChain ------------------------------------------------------------------------------------------------


def _request(username: str | None = None, password: bytes | None = None) -> ConnectRequest:
    return ConnectRequest("c1", username, password, 5, "127.0.0.1:1")


CLIENT = ClientInfo("c1", None, 5)


class Fixed(Hook):
    """Answers every question with one decision, and records that it was asked."""

    def __init__(self, decision: Decision, reason_code: int = 0x87) -> None:
        self.decision = decision
        self.reason_code = reason_code
        self.asked: list[str] = []
        self.events: list[tuple[str, str]] = []

    def authenticate(self, request: ConnectRequest) -> AuthResult:
        self.asked.append("authenticate")
        return AuthResult(self.decision, self.reason_code)

    def authorize_publish(self, client: ClientInfo, topic: str) -> Decision:
        self.asked.append("publish")
        return self.decision

    def authorize_subscribe(self, client: ClientInfo, topic_filter: str) -> Decision:
        self.asked.append("subscribe")
        return self.decision

    def connection_opened(self, client: ClientInfo) -> None:
        self.events.append(("opened", client.client_id))

    def connection_closed(self, client: ClientInfo) -> None:
        self.events.append(("closed", client.client_id))


def _ask(chain: HookChain) -> tuple[Decision, bool, bool]:
    result = chain.authenticate(_request())
    return result.decision, chain.authorize_publish(CLIENT, "a/b"), chain.authorize_subscribe(CLIENT, "a/#")


def test_first_non_defer_answer_wins() -> None:
    """Mosquitto's plugin rule: the chain stops at the first answer that is not DEFER."""
    defer, allow, deny = Fixed(Decision.DEFER), Fixed(Decision.ALLOW), Fixed(Decision.DENY)
    assert _ask(HookChain([defer, allow, deny])) == (Decision.ALLOW, True, True)
    assert defer.asked == allow.asked == ["authenticate", "publish", "subscribe"]
    assert deny.asked == []  # never reached

    defer, allow, deny = Fixed(Decision.DEFER), Fixed(Decision.ALLOW), Fixed(Decision.DENY)
    assert _ask(HookChain([deny, allow])) == (Decision.DENY, False, False)
    assert allow.asked == []


def test_deny_carries_its_reason_code() -> None:
    result = HookChain([Fixed(Decision.DENY, 0x8A)]).authenticate(_request())
    assert (result.decision, result.reason_code) == (Decision.DENY, 0x8A)


def test_all_defer_means_deny() -> None:
    """Secure by default: nobody vouches, nobody gets in."""
    chain = HookChain([Fixed(Decision.DEFER), Hook()])
    assert _ask(chain) == (Decision.DENY, False, False)
    assert _ask(HookChain([])) == (Decision.DENY, False, False)


def test_all_defer_reason_code_depends_on_credentials() -> None:
    """0x86 (bad user name or password) when a user name was sent, else 0x87 (not authorized)."""
    chain = HookChain([Hook()])
    assert chain.authenticate(_request("alice", b"pw")).reason_code == 0x86
    assert chain.authenticate(_request()).reason_code == 0x87


def test_connection_events_reach_every_hook() -> None:
    first, second = Fixed(Decision.ALLOW), Fixed(Decision.DENY)
    chain = HookChain([first, second])
    chain.connection_opened(CLIENT)
    chain.connection_closed(CLIENT)
    assert first.events == second.events == [("opened", "c1"), ("closed", "c1")]


def test_anonymous_hook_defers_clients_with_credentials() -> None:
    hook = AnonymousHook(True)
    assert hook.authenticate(_request("alice")).decision is Decision.DEFER
    assert hook.authenticate(_request(None, b"pw")).decision is Decision.DEFER
    result = hook.authenticate(_request())
    assert result.decision is Decision.ALLOW and result.client is not None and result.client.anonymous
    assert AnonymousHook(False).authenticate(_request()).decision is Decision.DEFER


def test_anonymous_hook_defers_acl_for_named_clients() -> None:
    hook = AnonymousHook(True, publish=(), subscribe=(), deny=("#",))
    named = ClientInfo("c1", "alice", 5)
    assert hook.authorize_publish(named, "a") is Decision.DEFER
    assert hook.authorize_subscribe(named, "a") is Decision.DEFER


# -- through a client -----------------------------------------------------------------------------------------


class Exploding(Hook):
    def authenticate(self, request: ConnectRequest) -> AuthResult:
        raise RuntimeError("the user database is down")


@pytest.mark.parametrize(("version", "code"), [(5, 0x88), (4, 3)])
def test_failing_auth_hook_refuses_with_server_unavailable(roost: RoostThread, version: int, code: int) -> None:
    """An exception in an auth hook refuses the client with 0x88 Server unavailable (3.1.1: return code 3),
    and the broker keeps serving [MQTT-3.2.2-6]."""
    broker = roost.roost.broker  # type: ignore[union-attr]
    original = broker.hooks
    roost.call(lambda: setattr(broker, "hooks", HookChain([Exploding()])))
    raw = RawClient(roost.mqtt_port, version)
    try:
        connack = raw.connect("boom")
        assert connack.reason_code == code
        assert not connack.session_present
        assert raw.closed_by_broker()
    finally:
        raw.close()
        roost.call(lambda: setattr(broker, "hooks", original))
    other = RawClient(roost.mqtt_port, version)
    assert other.connect("after").reason_code == 0
    other.close()


@pytest.mark.parametrize(("version", "code"), [(5, 0x86), (4, 4)])
def test_username_without_an_auth_hook_is_refused(roost: RoostThread, version: int, code: int) -> None:
    """Only the anonymous hook is configured: a client sending a user name is deferred by it, and the
    all-DEFER chain refuses it as bad user name or password [MQTT-3.1.4-2 context]."""
    raw = RawClient(roost.mqtt_port, version)
    connack = raw.connect("named", username="alice", password=b"secret")
    assert connack.reason_code == code
    assert raw.closed_by_broker()
    raw.close()


@pytest.mark.parametrize(("version", "code"), [(5, 0x87), (4, 5)])
def test_anonymous_refused_when_not_allowed(make_roost: Callable[..., RoostThread], version: int, code: int) -> None:
    roost = make_roost(allow_anonymous=False)
    raw = RawClient(roost.mqtt_port, version)
    assert raw.connect("anon").reason_code == code
    assert raw.closed_by_broker()
    raw.close()


# The ACL under test: publish only below pub/ (and the sync marker), subscribe anywhere but $SYS, deny wins.
ACL = {"publish": ["pub/#", "sync/#"], "subscribe": ["#"], "deny": ["secret/#", "pub/hidden"]}


@pytest.fixture
def acl_roost(make_roost: Callable[..., RoostThread]) -> RoostThread:
    return make_roost(anonymous=ACL)


@pytest.fixture
def acl_clients(acl_roost: RoostThread) -> Iterator[Callable[..., PahoClient]]:
    clients: list[PahoClient] = []

    def factory(client_id: str, version: int = 5, **kwargs: Any) -> PahoClient:
        client = PahoClient(acl_roost.mqtt_port, client_id=client_id, version=version, **kwargs)
        clients.append(client)
        return client.connect()

    yield factory
    for client in clients:
        client.client.disconnect()
        client.client.loop_stop()


def _raw(roost: RoostThread, version: int, client_id: str) -> RawClient:
    raw = RawClient(roost.mqtt_port, version)
    assert raw.connect(client_id).reason_code == 0
    return raw


def _publish_ack(raw: RawClient, topic: str, packet_id: int = 1) -> int:
    raw.send(Publish(topic, b"payload", qos=1, packet_id=packet_id))
    ack = raw.receive()
    assert isinstance(ack, Puback) and ack.packet_id == packet_id
    return ack.reason_code


def _suback(raw: RawClient, *filters: str, packet_id: int = 1) -> tuple[int, ...]:
    raw.send(Subscribe(packet_id, tuple(Subscription(f, qos=1) for f in filters)))
    ack = raw.receive()
    assert isinstance(ack, Suback) and ack.packet_id == packet_id
    return ack.reason_codes


def test_allowed_publish_is_acknowledged_and_delivered(acl_roost: RoostThread, acl_clients) -> None:
    sub = acl_clients("sub")
    sub.subscribe("pub/a", qos=1)
    raw = _raw(acl_roost, 5, "publisher")
    assert _publish_ack(raw, "pub/a") in (0x00, 0x10)
    assert sub.expect().payload == b"payload"
    raw.close()


def test_v5_publish_outside_the_acl_gets_0x87_and_is_not_delivered(acl_roost: RoostThread, acl_clients) -> None:
    """[MQTT-3.4.2-1 context] PUBACK reason 0x87 Not authorized; the message is not routed."""
    sub = acl_clients("sub")
    assert sub.subscribe("nopub/a", qos=1) == [1]
    sub.subscribe("sync/marker", qos=1)
    pub = acl_clients("pub")
    raw = _raw(acl_roost, 5, "publisher")
    assert _publish_ack(raw, "nopub/a") == 0x87
    sync(pub, sub)
    sub.expect_none()
    # The connection stays usable after a refused PUBLISH.
    assert _publish_ack(raw, "pub/ok", packet_id=2) in (0x00, 0x10)
    raw.close()


def test_v311_publish_outside_the_acl_is_acknowledged_but_not_delivered(acl_roost: RoostThread, acl_clients) -> None:
    """3.1.1 cannot say no to a PUBLISH: a positive acknowledgement, and no delivery [MQTT-3.3.5-2]."""
    sub = acl_clients("sub")
    sub.subscribe("nopub/a", qos=1)
    sub.subscribe("sync/marker", qos=1)
    pub = acl_clients("pub")
    raw = _raw(acl_roost, 4, "publisher")
    assert _publish_ack(raw, "nopub/a") == 0
    sync(pub, sub)
    sub.expect_none()
    raw.close()


@pytest.mark.parametrize("version", [4, 5])
def test_deny_wins_over_an_allowed_publish(acl_roost: RoostThread, version: int) -> None:
    """pub/hidden is matched by the allowed pub/# and by the denied pub/hidden: deny wins."""
    raw = _raw(acl_roost, version, "publisher")
    assert _publish_ack(raw, "pub/hidden") == (0x87 if version == 5 else 0)
    assert _publish_ack(raw, "secret/x", packet_id=2) == (0x87 if version == 5 else 0)
    raw.close()


@pytest.mark.parametrize(("version", "refused"), [(5, 0x87), (4, 0x80)])
def test_subscriptions_refused_by_the_acl(acl_roost: RoostThread, version: int, refused: int) -> None:
    """Per-filter SUBACK codes in one SUBACK [MQTT-3.9.3-1]: v5 0x87 Not authorized, 3.1.1 0x80 Failure.
    Mosquitto's model: a filter is refused when a denied filter covers it (a SUBSCRIBE to exactly a denied
    topic), or when no allowed filter overlaps it; one that merely overlaps a denied filter is granted, and
    what it may not read is filtered out at delivery (see the next test)."""
    raw = _raw(acl_roost, version, "subscriber")
    codes = _suback(
        raw,
        "nopub/a",  # allowed: covered by '#', overlaps no denied filter
        "secret/a",  # denied: covered by the denied secret/#
        "+/a",  # overlaps the denied secret/# (secret/a): granted, filtered at delivery
        "pub/+",  # overlaps the denied pub/hidden: granted, filtered
        "#",  # overlaps everything denied: granted, filtered
        "$SYS/#",  # no allowed filter overlaps it ('#' does not match $ topics [MQTT-4.7.2-1])
        "pub/visible",  # allowed
        "$share/g/nopub/#",  # a shared subscription is judged by its filter: allowed
        "$share/g/secret/#",  # denied
        "pub/hidden",  # exactly a denied topic
    )
    assert codes == (1, refused, 1, 1, 1, refused, 1, 1, refused, refused)
    raw.close()


@pytest.mark.parametrize("version", [4, 5])
def test_a_wildcard_over_a_denied_topic_gets_everything_else(acl_roost: RoostThread, acl_clients,
                                                             version: int) -> None:
    """`#` is granted although secret/# and pub/hidden are denied: each message is checked against the
    reader's ACL at delivery, so the denied topics never arrive, retained or live, and the rest does."""
    service = acl_roost.roost.service  # type: ignore[union-attr]
    acl_roost.call(lambda: service.publish("secret/kept", b"hidden", qos=1, retain=True))
    acl_roost.call(lambda: service.publish("nopub/kept", b"shown", qos=1, retain=True))
    sub = acl_clients("sub", version=version)
    assert sub.subscribe("#", qos=1) == [1]
    pub = acl_clients("pub")
    for topic in ("secret/a", "pub/hidden", "pub/shown"):
        pub.publish(topic, b"live", qos=1)
    sync(pub, sub)
    received = []
    while not sub.messages.empty():
        received.append(sub.expect().topic)
    assert received == ["nopub/kept", "pub/shown"]


def test_refused_subscription_receives_nothing(acl_roost: RoostThread, acl_clients) -> None:
    """A refused filter is not subscribed: nothing published to it reaches the client. The broker itself
    (the control plane's publish) is not subject to the ACL, so it can publish to the denied topic."""
    sub = acl_clients("sub", version=4)
    assert sub.subscribe("secret/a", qos=1) == [128]
    sub.subscribe("sync/marker", qos=1)
    pub = acl_clients("pub")
    broker = acl_roost.roost.service  # type: ignore[union-attr]
    assert acl_roost.call(lambda: broker.publish("secret/a", b"hidden", qos=1)) == 0
    sync(pub, sub)
    sub.expect_none()


def test_subscribe_list_limits_filters(make_roost: Callable[..., RoostThread]) -> None:
    """A subscription is granted when an allowed filter overlaps it (sensors/# and +/+/temp overlap
    sensors/+/temp; they then get only what sensors/+/temp matches), refused when none does."""
    roost = make_roost(anonymous={"publish": ["#"], "subscribe": ["sensors/+/temp"]})
    raw = _raw(roost, 5, "subscriber")
    assert _suback(raw, "sensors/a/temp", "sensors/+/temp", "sensors/#", "sensors/a/hum", "+/+/temp") == (
        1, 1, 1, 0x87, 1,
    )
    raw.close()


def test_will_to_a_denied_topic_is_not_published(acl_roost: RoostThread, acl_clients) -> None:
    """A will is published only where its client may publish [MQTT-3.1.2-8 context]."""
    sub = acl_clients("sub")
    sub.subscribe("nopub/will", qos=1)
    sub.subscribe("pub/will", qos=1)
    sub.subscribe("sync/marker", qos=1)
    pub = acl_clients("pub")

    for topic in ("nopub/will", "pub/will"):
        raw = RawClient(acl_roost.mqtt_port, 5)
        raw.send(Connect(client_id=f"w-{topic}", protocol_version=5, will=Will(topic, b"gone", 1)))
        assert raw.receive().reason_code == 0
        raw.send(Disconnect(0x04))  # disconnect with will message
        assert raw.closed_by_broker()
        raw.close()
    assert sub.expect().topic == "pub/will"
    sync(pub, sub)
    sub.expect_none()
