"""Sessions through real sockets: takeover, persistence across connections, the offline queue, resending
unacknowledged deliveries, clean start, and v5 session expiry.

Numbering is MQTT 5.0's unless a test is about 3.1.1 behaviour, where it says "3.1.1".
"""

from __future__ import annotations

import time

import pytest

from broker.codec import (
    Disconnect, Properties, Puback, Pubcomp, Publish, Pubrec, Pubrel, Suback, Subscribe, Subscription,
)
from tests.helpers import RawClient, sync
from tests.session_helpers import (  # noqa: F401  (paho_on is a fixture)
    collect_until_synced,
    disconnect,
    paho_on,
    persistent,
    ping,
    raw_connect,
    read_until_closed,
    session_properties,
    will,
)

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


def _subscribe(client: RawClient, topic_filter: str, qos: int, packet_id: int = 1) -> None:
    client.send(Subscribe(packet_id, (Subscription(topic_filter, qos),)))
    suback = client.receive()
    assert isinstance(suback, Suback) and suback.reason_codes == (qos,)


# -- takeover -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_second_connection_with_same_client_id_takes_over(roost, version: int) -> None:
    """[MQTT-3.1.4-3]: the existing connection is closed (v5: DISCONNECT 0x8E Session taken over first);
    the new one works."""
    old, _ = raw_connect(roost.mqtt_port, "taken", version)
    new, connack = raw_connect(roost.mqtt_port, "taken", version)
    assert connack.reason_code == 0
    packets = read_until_closed(old)
    if version == 5:
        assert [(type(p), p.reason_code) for p in packets] == [(Disconnect, 0x8E)]
    else:
        assert packets == []
    assert ping(new) == []
    new.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_takeover_with_clean_start_0_resumes_the_session(roost, client_factory, version: int) -> None:
    """[MQTT-3.1.4-3][MQTT-3.2.2-3]: taking over a persistent session with clean start 0 keeps it: Session
    Present 1 and the old connection's subscription delivers to the new connection."""
    old, _ = raw_connect(roost.mqtt_port, "taken-keep", version, **persistent(version))
    _subscribe(old, "keep/t", 1)
    new, connack = raw_connect(roost.mqtt_port, "taken-keep", version, **persistent(version))
    assert (connack.reason_code, connack.session_present) == (0, True)
    read_until_closed(old)
    client_factory("pub-keep", version=version).publish("keep/t", b"to the new one", qos=1)
    message = new.receive()
    assert isinstance(message, Publish) and message.payload == b"to the new one"
    new.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_takeover_of_a_non_persistent_session_does_not_resume_it(roost, client_factory, version: int) -> None:
    """3.1.1 [MQTT-3.1.2-6] / v5 3.1.2.11.2: a session with clean session 1 (v5: Session Expiry Interval 0)
    ends when its network connection closes, and a takeover closes it: a new connection with clean start
    0 must find no session (Session Present 0) and none of the old subscriptions."""
    old, _ = raw_connect(roost.mqtt_port, "taken-clean", version, clean_start=True)
    _subscribe(old, "gone/t", 1)
    new, connack = raw_connect(roost.mqtt_port, "taken-clean", version, clean_start=False)
    read_until_closed(old)
    assert (connack.reason_code, connack.session_present) == (0, False)
    pub = client_factory("pub-clean", version=version)
    pub.publish("gone/t", b"old subscription", qos=1)
    assert ping(new) == []
    new.close()


# -- persistent sessions ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_keeps_subscriptions_and_queues_qos1_qos2_in_order(client_factory, version: int) -> None:
    """[MQTT-3.1.2-5] (3.1.1: [MQTT-3.1.2-4]) and section 4.1: a resumed session keeps its subscriptions,
    and QoS 1/2 messages published while the client was away are delivered on reconnect, in the order
    they were published [MQTT-4.6.0-6]."""
    sub = client_factory("keeper", version=version, **session_properties(version))
    sub.subscribe("queue/#", qos=2)
    sub.disconnect()
    pub = client_factory("pub-queue", version=version)
    sent = [(f"queue/{i % 2}", f"m{i}".encode(), 1 + i % 2) for i in range(8)]
    for topic, payload, qos in sent:
        pub.publish(topic, payload, qos=qos)
    back = client_factory("keeper", version=version, **session_properties(version))
    assert back.session_present
    received = [(m.topic, m.payload, m.qos) for m in (back.expect() for _ in sent)]
    # Order is promised per topic and QoS [MQTT-4.6.0-6]; paho hands QoS 2 over only at PUBREL, so
    # messages of different QoS may interleave differently.
    for topic in ("queue/0", "queue/1"):
        assert [m for m in received if m[0] == topic] == [m for m in sent if m[0] == topic]
    sync(pub, back, topic="queue/sync")  # the kept subscription still routes live messages
    back.expect_none()


@pytest.mark.parametrize("version", VERSIONS)
def test_qos0_is_not_queued_while_offline(client_factory, version: int) -> None:
    """Section 4.1 / 3.1.2.4: the server MAY queue QoS 0 for an offline session; Roost does not. A QoS 0
    publish, and a QoS 1 publish to a QoS 0 subscription, are dropped; a QoS 1 message after them is kept."""
    sub = client_factory("no-qos0", version=version, **session_properties(version))
    sub.subscribe("zero/q1", qos=1)
    sub.subscribe("zero/q0", qos=0)
    sub.disconnect()
    pub = client_factory("pub-qos0", version=version)
    pub.publish("zero/q1", b"qos0 publish", qos=0)
    pub.publish("zero/q0", b"qos0 subscription", qos=1)
    pub.publish("zero/q1", b"kept", qos=1)
    back = client_factory("no-qos0", version=version, **session_properties(version))
    assert back.session_present
    assert back.expect().payload == b"kept"
    sync(pub, back, topic="zero/q1")
    back.expect_none()


@pytest.mark.parametrize("version", VERSIONS)
def test_clean_start_discards_the_old_session(client_factory, version: int) -> None:
    """[MQTT-3.1.2-4] (3.1.1: [MQTT-3.1.2-6]): clean start 1 discards the session: Session Present 0,
    no queued messages, no old subscriptions."""
    sub = client_factory("discarded", version=version, **session_properties(version))
    sub.subscribe("old/#", qos=1)
    sub.disconnect()
    pub = client_factory("pub-discard", version=version)
    pub.publish("old/queued", b"queued while away", qos=1)
    fresh = client_factory("discarded", version=version, clean=True)
    assert not fresh.session_present
    fresh.subscribe("fresh/sync", qos=1)
    pub.publish("old/live", b"old subscription", qos=1)
    sync(pub, fresh, topic="fresh/sync")
    fresh.expect_none()


@pytest.mark.parametrize("version", VERSIONS)
def test_offline_queue_is_bounded(make_roost, paho_on, version: int) -> None:
    """`max_queued_messages = 5`: of 20 QoS 1 messages published while the client is away, at most 5 are
    delivered on reconnect, and those in publishing order."""
    roost = make_roost(max_queued_messages=5)
    sub = paho_on(roost, "bounded", version, **session_properties(version))
    sub.subscribe("bound/#", qos=1)
    sub.disconnect()
    pub = paho_on(roost, "pub-bound", version)
    for i in range(20):
        pub.publish("bound/t", f"{i:02d}".encode(), qos=1)
    back = paho_on(roost, "bounded", version, **session_properties(version))
    assert back.session_present
    received = [m.payload for m in collect_until_synced(pub, back, topic="bound/sync")]
    assert 1 <= len(received) <= 5, received
    assert received == sorted(received)


# -- resending unacknowledged deliveries --------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [1, 2])
def test_unacknowledged_publish_is_resent_with_dup_on_reconnect(roost, client_factory, version: int, qos: int) -> None:
    """[MQTT-4.4.0-1]: QoS 1/2 PUBLISH packets the client did not acknowledge are resent on reconnect with
    their original packet identifiers and DUP = 1 [MQTT-3.3.1-1], in order."""
    sub, _ = raw_connect(roost.mqtt_port, "no-acks", version, **persistent(version))
    _subscribe(sub, "unacked/t", qos)
    pub = client_factory("pub-unacked", version=version)
    for i in range(3):
        pub.publish("unacked/t", f"u{i}".encode(), qos=qos)
    first = [sub.receive() for _ in range(3)]
    assert [(type(p), p.dup, p.qos) for p in first] == [(Publish, False, qos)] * 3
    sub.close()  # no acknowledgements, no DISCONNECT
    again, connack = raw_connect(roost.mqtt_port, "no-acks", version, **persistent(version))
    assert (connack.reason_code, connack.session_present) == (0, True)
    resent = [again.receive() for _ in range(3)]
    assert [(type(p), p.packet_id, p.payload, p.dup) for p in resent] == [
        (Publish, p.packet_id, p.payload, True) for p in first
    ]
    for p in resent:
        if qos == 1:
            again.send(Puback(p.packet_id))
        else:
            again.send(Pubrec(p.packet_id))
            assert again.receive() == Pubrel(p.packet_id)
            again.send(Pubcomp(p.packet_id))
    assert ping(again) == []
    again.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_released_qos2_delivery_resumes_with_pubrel(roost, client_factory, version: int) -> None:
    """[MQTT-4.4.0-1]: a QoS 2 delivery whose PUBREC arrived (PUBREL sent) but whose PUBCOMP did not is
    resumed on reconnect with the PUBREL, not with the PUBLISH again."""
    sub, _ = raw_connect(roost.mqtt_port, "half-done", version, **persistent(version))
    _subscribe(sub, "half/t", 2)
    client_factory("pub-half", version=version).publish("half/t", b"exactly once", qos=2)
    publish = sub.receive()
    assert isinstance(publish, Publish) and publish.qos == 2
    sub.send(Pubrec(publish.packet_id))
    assert sub.receive() == Pubrel(publish.packet_id)
    sub.close()  # no PUBCOMP
    again, connack = raw_connect(roost.mqtt_port, "half-done", version, **persistent(version))
    assert (connack.reason_code, connack.session_present) == (0, True)
    assert again.receive() == Pubrel(publish.packet_id)
    again.send(Pubcomp(publish.packet_id))
    assert ping(again) == []  # the PUBLISH is not sent again
    again.close()


# -- session expiry (v5) and its 3.1.1 counterpart ----------------------------------------------------------


def test_v5_session_expires_after_its_interval(roost) -> None:
    """3.1.2.11.2: the session is kept for Session Expiry Interval seconds after the connection closes
    (here 1 s): Session Present 1 before, 0 after [MQTT-3.2.2-3]."""
    client, _ = raw_connect(roost.mqtt_port, "expires", 5, **persistent(5, expiry=1))
    _subscribe(client, "expiring/t", 1)
    disconnect(client)
    client, connack = raw_connect(roost.mqtt_port, "expires", 5, **persistent(5, expiry=1))
    assert connack.session_present
    disconnect(client)
    time.sleep(1.5)  # an expiry test: real time must pass
    client, connack = raw_connect(roost.mqtt_port, "expires", 5, **persistent(5, expiry=1))
    assert (connack.reason_code, connack.session_present) == (0, False)
    client.close()


def test_v311_persistent_session_expires_at_max_session_expiry(make_roost) -> None:
    """`max_session_expiry` also bounds 3.1.1 persistent sessions (3.1.1 section 3.1.2.4 lets the server
    discard session state on administrator policy)."""
    roost = make_roost(max_session_expiry=1)
    client, _ = raw_connect(roost.mqtt_port, "v311-expires", 4, clean_start=False)
    disconnect(client)
    time.sleep(1.5)  # an expiry test: real time must pass
    client, connack = raw_connect(roost.mqtt_port, "v311-expires", 4, clean_start=False)
    assert (connack.reason_code, connack.session_present) == (0, False)
    client.close()


@pytest.mark.parametrize("ending", ["disconnect", "socket-close"])
def test_v5_session_expiry_0_ends_the_session_with_the_connection(roost, client_factory, ending: str) -> None:
    """3.1.2.11.2: Session Expiry Interval absent (0) -> the session ends when the connection closes, even
    with clean start 0."""
    watcher = client_factory("watcher", version=5)
    watcher.subscribe("short/will", qos=1)
    client, connack = raw_connect(roost.mqtt_port, "short-lived", 5, clean_start=False, will=will("short/will"))
    assert (connack.reason_code, connack.session_present) == (0, False)
    _subscribe(client, "short/t", 1)
    if ending == "disconnect":
        disconnect(client)
    else:
        client.close()
        assert watcher.expect().topic == "short/will"  # the broker has seen the connection go
    client, connack = raw_connect(roost.mqtt_port, "short-lived", 5, clean_start=False)
    assert (connack.reason_code, connack.session_present) == (0, False)
    client.close()


def test_v5_disconnect_may_not_raise_session_expiry_from_0(roost) -> None:
    """[MQTT-3.14.2-2]: a DISCONNECT setting a non-zero Session Expiry Interval when CONNECT had 0 is a
    Protocol Error: the server answers DISCONNECT 0x82 and the session still ends."""
    client, _ = raw_connect(roost.mqtt_port, "raiser", 5, clean_start=False)
    client.send(Disconnect(0, Properties(session_expiry_interval=60)))
    assert [(type(p), p.reason_code) for p in read_until_closed(client)] == [(Disconnect, 0x82)]
    client, connack = raw_connect(roost.mqtt_port, "raiser", 5, clean_start=False)
    assert (connack.reason_code, connack.session_present) == (0, False)
    client.close()


@pytest.mark.parametrize(("at_connect", "at_disconnect", "present"), [(60, 0, False), (10, 60, True)])
def test_v5_disconnect_changes_session_expiry(roost, at_connect: int, at_disconnect: int, present: bool) -> None:
    """3.14.2.2.2: the DISCONNECT's Session Expiry Interval replaces the CONNECT's (0 ends the session now;
    raising a non-zero value is allowed)."""
    client, _ = raw_connect(roost.mqtt_port, "changer", 5, **persistent(5, expiry=at_connect))
    disconnect(client, session_expiry_interval=at_disconnect)
    client, connack = raw_connect(roost.mqtt_port, "changer", 5, **persistent(5, expiry=at_connect))
    assert (connack.reason_code, connack.session_present) == (0, present)
    client.close()


def test_a_full_queue_makes_room_by_dropping_its_oldest_qos0_delivery_only() -> None:
    """`Session.make_room`: the oldest queued QoS 0 delivery goes for the new one; with none queued, the new
    one is refused, and keeps being refused (without a scan) until a QoS 0 delivery is queued again."""
    from broker.codec import EMPTY_PROPERTIES
    from broker.session import Delivery, Message, Session

    def delivery(qos: int, payload: bytes) -> Delivery:
        return Delivery(Message("t", payload, qos, False, EMPTY_PROPERTIES, None, "s", None), qos, False)

    session = Session("client")
    for i in range(3):
        session.enqueue(delivery(1, b"%d" % i))
    assert not session.make_room(delivery(1, b"x"))
    assert not session.make_room(delivery(1, b"y"))
    session.enqueue(delivery(0, b"zero"))
    session.enqueue(delivery(0, b"zero2"))
    assert session.make_room(delivery(1, b"new"))
    assert [d.message.payload for d in session.queue] == [b"0", b"1", b"2", b"zero2", b"new"]
    assert session.make_room(delivery(1, b"newer"))
    assert not session.make_room(delivery(1, b"refused"))
    assert [d.message.payload for d in session.queue] == [b"0", b"1", b"2", b"new", b"newer"]
