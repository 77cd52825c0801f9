"""Durable state through real sockets: what a client sees across a restart of Roost on the same data dir.

A graceful stop followed by a new `RoostThread` with the same document is a restart: the broker's state
goes through `data_dir/broker-state.db` (storage/broker_state.py). Clients are `RawClient`s on Roost's own
codec, so that a test can withhold an acknowledgement and see packet identifiers and the DUP flag.

Numbering is MQTT 5.0's unless a test is about 3.1.1 behaviour, where it says "3.1.1".
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.codec import (
    EMPTY_PROPERTIES, Connack, Disconnect, Properties, Puback, Pubcomp, Publish, Pubrec, Pubrel, Suback, Subscribe,
    Subscription, Unsuback, Unsubscribe, Will, encode,
)
from broker.errors import ConfigError
from control.config import parse_config
from storage.broker_state import STATE_FILE_NAME
from storage.errors import StorageError
from storage.store import open_store
from tests.helpers import TIMEOUT, RawClient, RoostThread, roost_document
from tests.session_helpers import disconnect, persistent, ping, raw_connect, read_until_closed
from tests.tenant_helpers import Tenant, make_tenant

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


# -- a Roost that restarts on its data dir ----------------------------------------------------------------------


class Restartable:
    """One configuration and data dir; Roosts started on it one after another."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.roost: RoostThread | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.document["data_dir"])

    @property
    def state_file(self) -> Path:
        return self.data_dir / STATE_FILE_NAME

    @property
    def port(self) -> int:
        assert self.roost is not None
        return self.roost.mqtt_port

    def start(self) -> RoostThread:
        assert self.roost is None
        self.roost = RoostThread(self.document).start()
        return self.roost

    def stop(self) -> None:
        """A graceful stop: clients are closed, what is pending is written."""
        if self.roost is not None:
            self.roost.stop()
            self.roost = None

    def restart(self) -> RoostThread:
        self.stop()
        return self.start()


@pytest.fixture
def durable(tmp_path: Path) -> Iterator[Callable[..., Restartable]]:
    """`durable(durability=None, **mqtt)`: a Restartable on its own data dir; [storage] durability as given
    (None: the default, batched). Stopped after the test."""
    made: list[Restartable] = []

    def factory(durability: str | None = None, **mqtt: Any) -> Restartable:
        mqtt.setdefault("sys_interval", 0)
        document = roost_document(tmp_path / f"roost{len(made)}", **mqtt)
        if durability is not None:
            document["storage"] = {"durability": durability}
        made.append(Restartable(document))
        return made[-1]

    yield factory
    for restartable in made:
        restartable.stop()


# -- raw client steps ---------------------------------------------------------------------------------------------


def connect(port: int, client_id: str, version: int = 5, expiry: int = 3_600, **kwargs: Any) -> tuple[RawClient, Connack]:
    """A persistent session: 3.1.1 clean session 0, v5 clean start 0 with a Session Expiry Interval."""
    arguments = persistent(version, expiry)
    if version == 5 and kwargs.get("properties") is not None:
        arguments["properties"] = kwargs.pop("properties")
    arguments.update(kwargs)
    client, connack = raw_connect(port, client_id, version, **arguments)
    assert connack.reason_code == 0, connack
    return client, connack


def subscribe(client: RawClient, *subscriptions: Subscription, sub_id: int | None = None, packet_id: int = 1) -> None:
    properties = Properties(subscription_identifiers=(sub_id,)) if sub_id is not None else EMPTY_PROPERTIES
    client.send(Subscribe(packet_id, subscriptions, properties))
    suback = client.receive()
    assert isinstance(suback, Suback) and suback.reason_codes == tuple(s.qos for s in subscriptions), suback


def publish(client: RawClient, topic: str, payload: bytes, qos: int = 1, packet_id: int = 1, retain: bool = False,
            properties: Properties = EMPTY_PROPERTIES) -> None:
    """Publish and complete the exchange (PUBACK, or PUBREC / PUBREL / PUBCOMP)."""
    client.send(Publish(topic, payload, qos, retain, packet_id=packet_id if qos else None, properties=properties))
    if qos == 1:
        assert client.receive() == Puback(packet_id)
    elif qos == 2:
        assert client.receive() == Pubrec(packet_id)
        client.send(Pubrel(packet_id))
        assert client.receive() == Pubcomp(packet_id)


def expect_publish(client: RawClient) -> Publish:
    packet = client.receive()
    assert isinstance(packet, Publish), f"expected PUBLISH, got {packet!r}"
    return packet


def receive_all(client: RawClient, count: int) -> list[Publish]:
    """Receive `count` PUBLISH packets, acknowledging each in full (QoS 2: PUBREC, then PUBCOMP for the
    PUBREL), and return them in arrival order."""
    received: list[Publish] = []
    releasing: set[int] = set()
    while len(received) < count or releasing:
        packet = client.receive()
        if isinstance(packet, Publish):
            received.append(packet)
            if packet.qos == 1:
                client.send(Puback(packet.packet_id))  # type: ignore[arg-type]
            elif packet.qos == 2:
                client.send(Pubrec(packet.packet_id))  # type: ignore[arg-type]
                releasing.add(packet.packet_id)  # type: ignore[arg-type]
        elif isinstance(packet, Pubrel):
            client.send(Pubcomp(packet.packet_id))
            releasing.discard(packet.packet_id)
        else:
            raise AssertionError(f"unexpected {packet!r}")
    return received


def closed_by_shutdown(client: RawClient, version: int) -> list[Any]:
    """The broker stopped: v5 hears DISCONNECT 0x8B Server shutting down. Returns what came before it."""
    packets = read_until_closed(client)
    client.close()
    if version == 5:
        assert packets and packets[-1] == Disconnect(0x8B), packets
        return packets[:-1]
    return packets


def state_rows(restartable: Restartable, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """What the state file holds, as another process reads it."""
    connection = sqlite3.connect(restartable.state_file)
    try:
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def wait_for_clock(moment: float) -> None:
    """Wait for the wall clock to pass `moment` (an expiry or a will delay running out), bounded."""
    assert moment - time.time() < 15, "a test should not wait this long"
    while time.time() < moment:
        time.sleep(min(0.05, max(0.0, moment - time.time())))


# -- sessions and subscriptions survive -----------------------------------------------------------------------------


@pytest.mark.parametrize("connected_at_stop", [pytest.param(False, id="disconnected"), pytest.param(True, id="connected")])
@pytest.mark.parametrize("version", VERSIONS)
def test_a_persistent_session_survives_a_restart(durable, version: int, connected_at_stop: bool) -> None:
    """[MQTT-3.2.2-2]: a client resuming a persistent session gets Session Present 1, and its subscriptions
    [MQTT-3.1.2-5 / 3.1.1 MQTT-3.1.2-4] still route to it, across a restart of the broker: whether it had
    disconnected before the stop or was still connected when the broker stopped."""
    state = durable()
    state.start()
    client, connack = connect(state.port, "keeper", version)
    assert not connack.session_present
    subscribe(client, Subscription("keep/#", 1))
    if connected_at_stop:
        state.restart()
        closed_by_shutdown(client, version)
    else:
        disconnect(client)
        state.restart()

    client, connack = connect(state.port, "keeper", version)
    assert connack.session_present
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "keep/x", b"after the restart")
    message = expect_publish(client)
    assert (message.topic, message.payload, message.qos) == ("keep/x", b"after the restart", 1)


def test_subscription_options_shared_subscriptions_and_identifiers_survive_a_restart(durable) -> None:
    """[MQTT-3.8.3-1] the options of each subscription are part of the session: after a restart a shared
    subscription [MQTT-4.8.2-?] still receives, each delivery carries its subscription's identifier
    [MQTT-3.3.4-3], Retain As Published [MQTT-3.3.1-13] and No Local [MQTT-3.8.3-3] still hold."""
    state = durable()
    state.start()
    client, _ = connect(state.port, "worker")
    subscribe(client, Subscription("$share/crew/jobs/#", 1), sub_id=11, packet_id=1)
    subscribe(client, Subscription("alerts/+", 2, retain_as_published=True), sub_id=22, packet_id=2)
    subscribe(client, Subscription("own/#", 1, no_local=True), packet_id=3)
    disconnect(client)
    state.restart()

    client, connack = connect(state.port, "worker")
    assert connack.session_present
    boss, _ = raw_connect(state.port, "boss", 5)
    publish(boss, "jobs/1", b"job", qos=1)
    job = expect_publish(client)
    assert (job.topic, job.qos, job.properties.subscription_identifiers) == ("jobs/1", 1, (11,))
    client.send(Puback(job.packet_id))  # type: ignore[arg-type]
    publish(boss, "alerts/fire", b"fire", qos=2, retain=True)
    alert = expect_publish(client)
    assert (alert.topic, alert.qos, alert.retain, alert.properties.subscription_identifiers) == (
        "alerts/fire", 2, True, (22,)
    )
    client.send(Pubrec(alert.packet_id))  # type: ignore[arg-type]
    assert client.receive() == Pubrel(alert.packet_id)  # type: ignore[arg-type]
    client.send(Pubcomp(alert.packet_id))  # type: ignore[arg-type]
    # No Local: its own message does not come back; the next one on that filter is someone else's.
    client.send(Publish("own/mine", b"mine", 1, packet_id=100))
    assert client.receive() == Puback(100)
    publish(boss, "own/theirs", b"theirs")
    assert expect_publish(client).topic == "own/theirs"


@pytest.mark.parametrize("version", VERSIONS)
def test_queued_qos1_and_qos2_messages_are_delivered_after_a_restart_in_order(durable, version: int) -> None:
    """Messages queued for an offline persistent session [MQTT-3.1.2-5] outlive the broker and arrive in
    the order they were published [MQTT-4.6.0-6], at their QoS; once acknowledged they are gone for good."""
    state = durable()
    state.start()
    client, _ = connect(state.port, "offline", version)
    subscribe(client, Subscription("queue/#", 2))
    disconnect(client)
    publisher, _ = raw_connect(state.port, "publisher", 5)
    sent = [(f"queue/{i}", f"message {i}".encode(), 1 if i % 3 else 2) for i in range(12)]
    for packet_id, (topic, payload, qos) in enumerate(sent, start=1):
        publish(publisher, topic, payload, qos, packet_id)
    state.restart()

    client, connack = connect(state.port, "offline", version)
    assert connack.session_present
    received = receive_all(client, len(sent))
    assert [(m.topic, m.payload, m.qos) for m in received] == sent
    assert not any(m.dup for m in received)
    assert ping(client) == []
    disconnect(client)

    state.restart()
    client, connack = connect(state.port, "offline", version)
    assert connack.session_present
    assert ping(client) == []  # acknowledged before the restart: not delivered again


def test_messages_queued_before_and_after_a_restart_keep_their_order_through_another(durable) -> None:
    """[MQTT-4.6.0-6]: messages queued for an offline session keep their publication order, whether they were
    queued before a restart, after it, or some of each, and across a second restart."""
    state = durable()
    state.start()
    client, _ = connect(state.port, "offline")
    subscribe(client, Subscription("order/#", 1))
    disconnect(client)
    publisher, _ = raw_connect(state.port, "publisher", 5)
    for i in range(3):
        publish(publisher, "order/t", f"{i}".encode(), packet_id=i + 1)
    state.restart()
    publisher, _ = raw_connect(state.port, "publisher", 5)
    for i in range(3, 6):
        publish(publisher, "order/t", f"{i}".encode(), packet_id=i + 1)
    state.restart()

    client, connack = connect(state.port, "offline")
    assert connack.session_present
    assert [m.payload for m in receive_all(client, 6)] == [b"0", b"1", b"2", b"3", b"4", b"5"]
    assert ping(client) == []


def test_a_message_queued_for_three_durable_sessions_is_written_once(durable) -> None:
    """The state file holds a message once however many sessions it is queued for, one delivery row each."""
    state = durable()
    state.start()
    for name in ("a", "b", "c"):
        client, _ = connect(state.port, name)
        subscribe(client, Subscription("fan/#", 1))
        disconnect(client)
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "fan/out", b"x" * 1_000)
    wait_until(lambda: state_rows(state, "SELECT count(*) FROM deliveries") == [(3,)])
    assert state_rows(state, "SELECT topic, length(payload) FROM messages") == [("fan/out", 1_000)]


def test_unsubscribing_and_replacing_a_subscription_outlive_a_restart(durable) -> None:
    """[MQTT-3.10.4-1]: an UNSUBSCRIBE deletes the subscription, and [MQTT-3.8.4-3] a SUBSCRIBE with an existing
    filter replaces it (its new QoS applies): both are part of the session kept across a restart."""
    state = durable()
    state.start()
    client, _ = connect(state.port, "changing")
    subscribe(client, Subscription("kept/#", 1), Subscription("dropped/#", 1), Subscription("replaced/#", 0))
    subscribe(client, Subscription("replaced/#", 2), packet_id=2)
    client.send(Unsubscribe(3, ("dropped/#",)))
    assert client.receive() == Unsuback(3, (0,))
    disconnect(client)
    state.restart()

    client, connack = connect(state.port, "changing")
    assert connack.session_present
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "dropped/x", b"no", packet_id=1)
    publish(publisher, "replaced/x", b"at qos 2", qos=2, packet_id=2)
    publish(publisher, "kept/x", b"yes", packet_id=3)
    assert [(m.topic, m.qos) for m in receive_all(client, 2)] == [("replaced/x", 2), ("kept/x", 1)]
    assert ping(client) == []


def test_a_clean_start_after_a_restart_replaces_the_restored_session_for_good(durable) -> None:
    """[MQTT-3.1.2-4]: Clean Start 1 discards the existing session, here one restored from disk with its
    subscriptions and queued messages; the new session replaces it on disk too, so a further restart brings
    back the new one (Session Present 1) and nothing of the old."""
    state = durable()
    state.start()
    client, _ = connect(state.port, "phoenix")
    subscribe(client, Subscription("old/#", 1))
    disconnect(client)
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "old/queued", b"stale")
    state.restart()
    client, connack = connect(state.port, "phoenix", clean_start=True)
    assert not connack.session_present
    subscribe(client, Subscription("new/#", 1))
    disconnect(client)
    state.restart()

    client, connack = connect(state.port, "phoenix")
    assert connack.session_present
    assert ping(client) == []  # the old queued message went with the old session
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "old/x", b"old", packet_id=1)
    publish(publisher, "new/x", b"new", packet_id=2)
    assert expect_publish(client).topic == "new/x"


def test_a_kicked_session_does_not_come_back_after_a_restart(durable) -> None:
    """An administrator's kick ends the session (connected or not); it stays ended after a restart."""
    state = durable()
    roost = state.start()
    client, _ = connect(state.port, "kicked")
    subscribe(client, Subscription("k/#", 1))
    disconnect(client)
    assert roost.call(lambda: roost.roost.service.kick(client_id="kicked")) == 1  # type: ignore[union-attr]
    state.restart()

    assert not connect(state.port, "kicked")[1].session_present


def test_queued_messages_keep_their_properties_identifiers_and_retain_flag_across_a_restart(durable) -> None:
    """A queued message is delivered after a restart as it would have been before: with the publisher's
    properties [MQTT-3.3.2-17][MQTT-3.3.2-18] (user properties in order, content type, response topic,
    correlation data, payload format), its subscription identifier [MQTT-3.3.4-3], and RETAIN kept by a
    Retain As Published subscription [MQTT-3.3.1-12]."""
    state = durable()
    state.start()
    client, _ = connect(state.port, "offline")
    subscribe(client, Subscription("props/#", 1, retain_as_published=True), sub_id=42)
    disconnect(client)
    publisher, _ = raw_connect(state.port, "publisher", 5)
    properties = Properties(payload_format_indicator=1, content_type="application/json",
                            response_topic="props/reply", correlation_data=b"\x00id",
                            user_properties=(("b", "2"), ("a", "1"), ("b", "3")))
    publish(publisher, "props/x", b'{"v": 1}', retain=True, properties=properties)
    state.restart()

    client, _ = connect(state.port, "offline")
    message = expect_publish(client)
    assert (message.topic, message.payload, message.qos, message.retain) == ("props/x", b'{"v": 1}', 1, True)
    got = message.properties
    assert (got.payload_format_indicator, got.content_type, got.response_topic, got.correlation_data,
            got.user_properties, got.subscription_identifiers) == (
        1, "application/json", "props/reply", b"\x00id", (("b", "2"), ("a", "1"), ("b", "3")), (42,)
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_an_unacknowledged_qos1_message_is_resent_with_dup_and_its_packet_id(durable, version: int) -> None:
    """[MQTT-4.4.0-1]: on resuming a session, unacknowledged PUBLISH packets are resent with their original
    packet identifiers and DUP 1 [MQTT-3.3.1-1], across a restart too; the one that waited for a free
    in-flight slot then follows as a new PUBLISH."""
    state = durable(max_inflight=2)
    state.start()
    client, _ = connect(state.port, "slow", version)
    subscribe(client, Subscription("inflight/#", 1))
    publisher, _ = raw_connect(state.port, "publisher", 5)
    for packet_id, payload in enumerate((b"a", b"b", b"c"), start=1):
        publish(publisher, f"inflight/{payload.decode()}", payload, 1, packet_id)
    first, second = expect_publish(client), expect_publish(client)
    assert (first.payload, second.payload, first.dup, second.dup) == (b"a", b"b", False, False)
    state.restart()  # no PUBACK was sent
    assert closed_by_shutdown(client, version) == []

    client, connack = connect(state.port, "slow", version)
    assert connack.session_present
    again = [expect_publish(client), expect_publish(client)]
    assert [(m.payload, m.packet_id, m.dup, m.qos) for m in again] == [
        (b"a", first.packet_id, True, 1), (b"b", second.packet_id, True, 1),
    ]
    client.send(Puback(first.packet_id))  # type: ignore[arg-type]
    third = expect_publish(client)
    assert (third.payload, third.dup) == (b"c", False)
    assert third.packet_id != second.packet_id
    client.send(Puback(second.packet_id))  # type: ignore[arg-type]
    client.send(Puback(third.packet_id))  # type: ignore[arg-type]
    assert ping(client) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_a_qos2_delivery_is_resumed_where_it_stopped(durable, version: int) -> None:
    """[MQTT-4.4.0-1]: after a restart, a QoS 2 delivery whose PUBREC had arrived is resumed with PUBREL,
    never with the PUBLISH again [MQTT-4.3.3-5]; one without PUBREC is resent as PUBLISH with DUP 1."""
    state = durable()
    state.start()
    client, _ = connect(state.port, "exact", version)
    subscribe(client, Subscription("exact/#", 2))
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "exact/released", b"released", 2, 1)
    released = expect_publish(client)
    client.send(Pubrec(released.packet_id))  # type: ignore[arg-type]
    assert client.receive() == Pubrel(released.packet_id)  # type: ignore[arg-type]
    publish(publisher, "exact/unanswered", b"unanswered", 2, 2)
    unanswered = expect_publish(client)
    state.restart()  # no PUBCOMP, no PUBREC
    closed_by_shutdown(client, version)

    client, connack = connect(state.port, "exact", version)
    assert connack.session_present
    packets = ping(client)
    assert packets[0] == Pubrel(released.packet_id)  # type: ignore[arg-type]
    assert len(packets) == 2 and isinstance(packets[1], Publish)
    assert (packets[1].payload, packets[1].packet_id, packets[1].dup) == (b"unanswered", unanswered.packet_id, True)
    client.send(Pubcomp(released.packet_id))  # type: ignore[arg-type]
    client.send(Pubrec(unanswered.packet_id))  # type: ignore[arg-type]
    assert client.receive() == Pubrel(unanswered.packet_id)  # type: ignore[arg-type]
    client.send(Pubcomp(unanswered.packet_id))  # type: ignore[arg-type]
    assert ping(client) == []
    disconnect(client)

    state.restart()
    client, _ = connect(state.port, "exact", version)
    assert ping(client) == []  # both exchanges were complete before this restart


@pytest.mark.parametrize("version", VERSIONS)
def test_an_incoming_qos2_message_awaiting_pubrel_is_not_routed_twice(durable, version: int) -> None:
    """[MQTT-4.3.3-9]: until the PUBREL comes, a PUBLISH with the same packet identifier is acknowledged with
    PUBREC and not delivered onward again, even when the broker restarted in between and the client resends
    it with DUP 1 [MQTT-4.3.3-?]."""
    state = durable()
    state.start()
    watcher, _ = connect(state.port, "watcher", 5)
    subscribe(watcher, Subscription("once/#", 1))
    sender, _ = connect(state.port, "sender", version)
    sender.send(Publish("once/x", b"only once", 2, packet_id=7))
    assert sender.receive() == Pubrec(7)
    first = expect_publish(watcher)
    assert first.payload == b"only once"
    watcher.send(Puback(first.packet_id))  # type: ignore[arg-type]
    assert ping(watcher) == []
    state.restart()  # the sender never sent PUBREL
    closed_by_shutdown(sender, version)
    closed_by_shutdown(watcher, 5)

    watcher, _ = connect(state.port, "watcher", 5)
    sender, connack = connect(state.port, "sender", version)
    assert connack.session_present
    sender.send(Publish("once/x", b"only once", 2, dup=True, packet_id=7))
    assert sender.receive() == Pubrec(7)
    sender.send(Pubrel(7))
    assert sender.receive() == Pubcomp(7)
    publish(sender, "once/marker", b"marker", 1, 8)
    # Messages from one client arrive in order [MQTT-4.6.0-5]: a second copy would come before the marker.
    assert expect_publish(watcher).payload == b"marker"


# -- what does not survive ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "first_connect"),
    [
        pytest.param(4, {"clean_start": True}, id="v311-clean-session-1"),
        pytest.param(5, {"clean_start": False}, id="v5-expiry-absent"),
        pytest.param(5, {"clean_start": True, "properties": Properties(session_expiry_interval=0)}, id="v5-expiry-0"),
    ],
)
def test_sessions_that_end_with_their_connection_do_not_survive_a_restart(
    durable, version: int, first_connect: dict[str, Any]
) -> None:
    """3.1.1 [MQTT-3.1.2-6]: a clean session ends with its connection; v5 3.1.2.11.2: a Session Expiry
    Interval of 0 (or absent) ends the session when the connection closes. Neither is written, so after a
    restart the client resumes nothing: Session Present 0 [MQTT-3.2.2-3] and no subscription."""
    state = durable()
    state.start()
    client, _ = raw_connect(state.port, "fleeting", version, **first_connect)
    subscribe(client, Subscription("fleeting/#", 1))
    state.restart()
    closed_by_shutdown(client, version)

    client, connack = connect(state.port, "fleeting", version)
    assert not connack.session_present
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "fleeting/x", b"nobody")
    assert ping(client) == []


def test_a_session_whose_expiry_is_lowered_to_0_is_not_kept_any_more(durable) -> None:
    """v5 3.1.2.11.2: a client that resumes its session with Session Expiry Interval 0 ends it with this
    connection, and so does one that sets it to 0 in its DISCONNECT (3.14.2.2.2); the broker stopping must
    not bring either old session back."""
    state = durable()
    state.start()
    for name in ("shrinking", "leaving"):
        client, _ = connect(state.port, name)
        subscribe(client, Subscription(f"{name}/#", 1))
        if name == "leaving":
            disconnect(client, session_expiry_interval=0)
        else:
            disconnect(client)
    client, connack = raw_connect(state.port, "shrinking", 5, clean_start=False)  # expiry absent: 0
    assert connack.session_present
    state.restart()
    closed_by_shutdown(client, 5)

    assert not connect(state.port, "shrinking")[1].session_present
    assert not connect(state.port, "leaving")[1].session_present


def test_session_and_message_expiry_keep_counting_while_roost_is_down(durable) -> None:
    """[MQTT-3.1.2-23]: a session is deleted when its expiry interval has passed since its connection
    closed, time spent stopped included: the interval it connected with, one set again by a later CONNECT, or
    one changed at DISCONNECT (3.14.2.2.2). A session ending publishes its pending will, even if the will delay
    has not passed [MQTT-3.1.3-9]. Queued and retained messages whose Message Expiry Interval passed are not
    delivered [MQTT-3.3.2-5]; the others carry what is left of it [MQTT-3.3.2-6]. A session whose interval has
    not run out at the restart expires later, on a restored timer."""
    state = durable()
    state.start()
    watcher, _ = connect(state.port, "watcher", expiry=3_600)
    subscribe(watcher, Subscription("s/#", 1))
    disconnect(watcher)
    short, _ = connect(state.port, "short", expiry=2)
    subscribe(short, Subscription("s/#", 1))
    disconnect(short)
    shortened, _ = connect(state.port, "shortened", expiry=3_600)
    subscribe(shortened, Subscription("s/#", 1))
    disconnect(shortened, session_expiry_interval=2)
    reconnected, _ = connect(state.port, "reconnected", expiry=3_600)
    subscribe(reconnected, Subscription("s/#", 1))
    disconnect(reconnected)
    reconnected, _ = connect(state.port, "reconnected", expiry=2)
    disconnect(reconnected)
    for name in ("later-1", "later-2"):
        client, _ = connect(state.port, name, expiry=5)
        subscribe(client, Subscription("s/#", 1))
        disconnect(client)
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "s/expiring", b"gone", properties=Properties(message_expiry_interval=2))
    publish(publisher, "s/kept", b"kept", packet_id=2, properties=Properties(message_expiry_interval=3_600))
    publish(publisher, "r/expiring", b"gone", packet_id=3, retain=True, properties=Properties(message_expiry_interval=2))
    publish(publisher, "r/lasting", b"kept", packet_id=4, retain=True)
    # Connected at the stop: one's will is delayed beyond its session's end, the other's delay ends while
    # Roost is down (its session lives on).
    dying, _ = connect(state.port, "dying", expiry=2,
                       will=Will("s/will", b"dead", 1, False, Properties(will_delay_interval=100)))
    late, _ = connect(state.port, "late", expiry=3_600,
                      will=Will("s/late-will", b"late", 1, False, Properties(will_delay_interval=1)))
    stopped_at = time.time()
    state.stop()
    wait_for_clock(stopped_at + 2.5)
    state.start()

    # What expired went from the state file too, with the messages queued for it.
    gone = ("short", "shortened", "reconnected", "dying")
    wait_until(lambda: state_rows(
        state, f"SELECT count(*) FROM sessions WHERE key IN ({', '.join('?' * len(gone))})", gone) == [(0,)])
    assert state_rows(
        state, f"SELECT count(*) FROM deliveries WHERE session_key IN ({', '.join('?' * len(gone))})", gone
    ) == [(0,)]
    for name in gone:
        assert not connect(state.port, name, expiry=2)[1].session_present, name
    assert connect(state.port, "later-1", expiry=5)[1].session_present
    assert connect(state.port, "late")[1].session_present
    watcher, connack = connect(state.port, "watcher")
    assert connack.session_present
    received = receive_all(watcher, 3)
    assert (received[0].topic, received[0].payload) == ("s/kept", b"kept")
    assert 3_500 < received[0].properties.message_expiry_interval <= 3_598
    assert sorted((m.topic, m.payload) for m in received[1:]) == [("s/late-will", b"late"), ("s/will", b"dead")]
    assert ping(watcher) == []
    reader, _ = raw_connect(state.port, "reader", 5)
    reader.send(Subscribe(1, (Subscription("r/#", 1),)))
    packets = ping(reader)
    assert isinstance(packets[0], Suback)
    assert [(p.topic, p.payload) for p in packets[1:]] == [("r/lasting", b"kept")]

    wait_for_clock(stopped_at + 5.5)
    assert not connect(state.port, "later-2", expiry=5)[1].session_present


# -- retained messages --------------------------------------------------------------------------------------------


def test_retained_messages_survive_a_restart_and_an_emptied_topic_stays_empty(durable) -> None:
    """[MQTT-3.3.1-5]: a retained message is stored and sent to new subscribers, with its properties
    [MQTT-3.3.2-?]; a retained message with an empty payload removes it [MQTT-3.3.1-6], and that removal
    outlives the broker as well."""
    state = durable()
    state.start()
    publisher, _ = raw_connect(state.port, "publisher", 5)
    properties = Properties(content_type="text/plain", correlation_data=b"c0", user_properties=(("unit", "C"),),
                            message_expiry_interval=3_600)
    publish(publisher, "home/temp", b"21.5", qos=1, retain=True, properties=properties)
    publish(publisher, "home/door", b"open", qos=2, retain=True, packet_id=2)
    publish(publisher, "home/light", b"on", qos=0, retain=True)
    publish(publisher, "home/light", b"", qos=1, retain=True, packet_id=3)  # cleared
    state.restart()

    reader, _ = raw_connect(state.port, "reader", 5)
    reader.send(Subscribe(1, (Subscription("home/#", 2),)))
    packets = ping(reader)
    assert isinstance(packets[0], Suback)
    retained = {p.topic: p for p in packets[1:]}
    assert sorted(retained) == ["home/door", "home/temp"]
    temp = retained["home/temp"]
    assert (temp.payload, temp.qos, temp.retain) == (b"21.5", 1, True)
    assert (temp.properties.content_type, temp.properties.correlation_data, temp.properties.user_properties) == (
        "text/plain", b"c0", (("unit", "C"),)
    )
    # The expiry counts down from when it was published [MQTT-3.3.2-6].
    assert 3_500 < temp.properties.message_expiry_interval <= 3_600
    assert (retained["home/door"].payload, retained["home/door"].qos) == (b"open", 2)


def test_a_retained_message_cleared_before_a_restart_is_not_back_after_another(durable) -> None:
    """[MQTT-3.3.1-6]: clearing survives two restarts, and a topic set again after the clearing keeps the
    newer message."""
    state = durable()
    state.start()
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "flip", b"first", retain=True)
    publish(publisher, "flop", b"first", retain=True, packet_id=2)
    state.restart()
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "flip", b"", retain=True, packet_id=3)
    publish(publisher, "flop", b"second", retain=True, packet_id=4)
    state.restart()
    state.restart()

    reader, _ = raw_connect(state.port, "reader", 5)
    reader.send(Subscribe(1, (Subscription("+", 1),)))
    packets = ping(reader)
    assert [(p.topic, p.payload) for p in packets[1:]] == [("flop", b"second")]


# -- wills --------------------------------------------------------------------------------------------------------


def _will(delay: int) -> Will:
    return Will("status/dying", b"gone", 1, False, Properties(
        will_delay_interval=delay or None, content_type="text/plain", user_properties=(("why", "test"),),
    ))


def test_a_delayed_will_pending_at_shutdown_is_published_after_the_restart_when_its_delay_ends(durable) -> None:
    """[MQTT-3.1.3-9]: the will is published when the will delay interval has passed (or the session
    ends), not before, unless a new connection for the session comes first, which cancels it. The broker
    stopping ends the connection [MQTT-3.1.2-8] but not the session: the delay goes on across the restart."""
    delay = 3
    state = durable()
    state.start()
    watcher, _ = connect(state.port, "watcher")
    subscribe(watcher, Subscription("status/#", 1))
    dying, _ = connect(state.port, "dying", expiry=600, will=_will(delay))  # kept open until the stop
    returning, _ = connect(state.port, "returning", expiry=600,
                           will=Will("status/returning", b"gone", 1, False, Properties(will_delay_interval=delay)))
    stopped_at = time.time()
    state.restart()
    assert closed_by_shutdown(watcher, 5) == []  # no will at shutdown: its delay has not passed
    closed_by_shutdown(returning, 5)

    watcher, connack = connect(state.port, "watcher")
    assert connack.session_present
    returning, connack = connect(state.port, "returning", expiry=600)
    assert connack.session_present  # cancels its will
    assert ping(watcher) == []  # not yet

    will = expect_publish(watcher)
    arrived = time.time()
    assert (will.topic, will.payload) == ("status/dying", b"gone")
    assert (will.properties.content_type, will.properties.user_properties) == ("text/plain", (("why", "test"),))
    assert arrived >= stopped_at + delay - 0.05
    watcher.send(Puback(will.packet_id))  # type: ignore[arg-type]
    wait_for_clock(stopped_at + delay + 0.5)
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "status/marker", b"marker")
    assert expect_publish(watcher).topic == "status/marker"  # the cancelled will never came


def test_a_will_without_delay_is_published_once_at_shutdown_not_again_after_the_restart(durable) -> None:
    """[MQTT-3.1.2-8]: the server closing the connection publishes the will; [MQTT-3.1.2-10] a published
    will is removed from the session state, so a restart does not publish it a second time."""
    state = durable()
    state.start()
    watcher, _ = connect(state.port, "watcher")
    subscribe(watcher, Subscription("status/#", 1))
    dying, _ = connect(state.port, "dying", expiry=600, will=_will(0))  # kept open until the stop
    state.restart()
    before = closed_by_shutdown(watcher, 5)
    assert [(p.topic, p.payload) for p in before] == [("status/dying", b"gone")]

    watcher, _ = connect(state.port, "watcher")
    # The watcher had not acknowledged the will: that one delivery is resent with DUP 1 [MQTT-4.4.0-1] ...
    resent = expect_publish(watcher)
    assert (resent.topic, resent.packet_id, resent.dup) == ("status/dying", before[0].packet_id, True)
    watcher.send(Puback(resent.packet_id))  # type: ignore[arg-type]
    # ... and no second copy is published: the next message is the marker.
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "status/marker", b"marker")
    assert expect_publish(watcher).topic == "status/marker"


# -- a crash: what the state file held at that moment ----------------------------------------------------------


def crashed_copy(state: Restartable, durable: Callable[..., Restartable]) -> Restartable:
    """What a power cut would leave behind: the commits in the state file at this moment, copied with SQLite's
    backup API (a consistent snapshot) into a new data dir, on which a second Roost can start while the first
    one (and its clients) carries on, never stopped gracefully as far as the copy knows."""
    storage = state.document.get("storage", {})
    copy = durable(storage.get("durability"))
    copy.data_dir.mkdir(parents=True)
    source, target = sqlite3.connect(state.state_file), sqlite3.connect(copy.state_file)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return copy


def test_after_a_crash_connected_sessions_resume_and_their_wills_are_published(durable) -> None:
    """A crash ends every connection without DISCONNECT, so wills are published [MQTT-3.1.2-8] (with no delay
    at once, with a delay once it has passed since the restart [MQTT-3.1.3-9]); the sessions stay, with their
    in-flight deliveries resent with DUP 1 and the same packet identifier [MQTT-4.4.0-1]."""
    state = durable()
    state.start()
    watcher, _ = connect(state.port, "watcher")
    subscribe(watcher, Subscription("status/#", 1))
    crashing, _ = connect(state.port, "crashing", will=Will("status/crashing", b"lost", 1, False))
    delayed, _ = connect(state.port, "delayed", will=Will("status/delayed", b"lost later", 1, False,
                                                          Properties(will_delay_interval=2)))
    # Its will was discarded by a normal DISCONNECT [MQTT-3.1.2-10], and the next connection has none.
    reformed, _ = connect(state.port, "reformed", will=Will("status/reformed", b"lost", 1, False))
    disconnect(reformed)
    reformed, _ = connect(state.port, "reformed")
    slow, _ = connect(state.port, "slow")
    subscribe(slow, Subscription("data/#", 1))
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "data/1", b"unacknowledged")
    inflight = expect_publish(slow)
    # Batched mode: on disk within 100 ms.
    wait_until(lambda: state_rows(state, "SELECT count(*) FROM deliveries WHERE packet_id IS NOT NULL") == [(1,)]
               and state_rows(state, "SELECT count(*) FROM sessions WHERE will_topic IS NOT NULL") == [(2,)]
               and state_rows(state, "SELECT disconnected_at FROM sessions WHERE key = 'reformed'") == [(None,)])
    copy = crashed_copy(state, durable)
    started_at = time.time()
    copy.start()

    watcher, connack = connect(copy.port, "watcher")
    assert connack.session_present
    first = expect_publish(watcher)
    assert (first.topic, first.payload, first.dup) == ("status/crashing", b"lost", False)
    watcher.send(Puback(first.packet_id))  # type: ignore[arg-type]
    assert ping(watcher) == []  # the delayed one: not yet; the discarded one: never
    second = expect_publish(watcher)
    assert (second.topic, second.payload) == ("status/delayed", b"lost later")
    assert time.time() >= started_at + 2 - 0.05

    slow, connack = connect(copy.port, "slow")
    assert connack.session_present
    again = expect_publish(slow)
    assert (again.payload, again.packet_id, again.dup) == (b"unacknowledged", inflight.packet_id, True)
    assert connect(copy.port, "crashing")[1].session_present


def test_strict_mode_loses_nothing_it_acknowledged_in_a_crash(durable) -> None:
    """`durability = "strict"`: once a publisher holds the PUBACK or PUBREC, the message is on disk. A crash
    right after loses none of them, and a QoS 2 message whose PUBREL had not come is still known: the resent
    PUBLISH is not delivered twice [MQTT-4.3.3-9]."""
    state = durable("strict")
    state.start()
    subscriber, _ = connect(state.port, "subscriber")
    subscribe(subscriber, Subscription("crash/#", 2))
    disconnect(subscriber)
    publisher, _ = connect(state.port, "publisher")
    sent = [(f"crash/{i}", 1 if i % 2 else 2) for i in range(20)]
    for packet_id, (topic, qos) in enumerate(sent, start=1):
        publish(publisher, topic, topic.encode(), qos, packet_id)
    publisher.send(Publish("crash/exactly", b"once", 2, packet_id=99))
    assert publisher.receive() == Pubrec(99)
    copy = crashed_copy(state, durable)  # at once: no waiting for a commit window
    copy.start()

    publisher, connack = connect(copy.port, "publisher")
    assert connack.session_present
    publisher.send(Publish("crash/exactly", b"once", 2, dup=True, packet_id=99))
    assert publisher.receive() == Pubrec(99)
    publisher.send(Pubrel(99))
    assert publisher.receive() == Pubcomp(99)
    subscriber, connack = connect(copy.port, "subscriber")
    assert connack.session_present
    received = receive_all(subscriber, len(sent) + 1)
    assert [(m.topic, m.qos) for m in received] == [*sent, ("crash/exactly", 2)]
    assert ping(subscriber) == []


# -- durability modes ---------------------------------------------------------------------------------------------


def test_durability_off_keeps_nothing(durable) -> None:
    """`[storage] durability = "off"`: sessions and retained messages last as long as the process, and no
    state file is written."""
    state = durable("off")
    roost = state.start()
    assert _scrape(roost) == {}  # no roost_state_* series either
    client, _ = connect(state.port, "keeper")
    subscribe(client, Subscription("keep/#", 1))
    disconnect(client)
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "keep/retained", b"r", retain=True)
    state.restart()

    assert not state.state_file.exists()
    client, connack = connect(state.port, "keeper")
    assert not connack.session_present
    client.send(Subscribe(1, (Subscription("keep/#", 1),)))
    assert [type(p) for p in ping(client)] == [Suback]


def _scrape(roost: RoostThread) -> dict[str, float]:
    response = httpx.get(f"http://127.0.0.1:{roost.http_port}/metrics", timeout=TIMEOUT)
    assert response.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name.startswith("roost_state_")
    }


def test_strict_mode_delivers_everything_and_acknowledges_in_order(durable) -> None:
    """`durability = "strict"`: a QoS 1 PUBACK [MQTT-4.3.2-?] waits until what it acknowledges is on disk, and
    acknowledgements keep the order of the PUBLISH packets they answer [MQTT-4.6.0-2], whether or not the
    message changed recorded state. Once the publisher holds its PUBACK, the message is in the state file."""
    state = durable("strict")
    roost = state.start()
    subscriber, _ = connect(state.port, "durable-sub")
    subscribe(subscriber, Subscription("strict/#", 1))
    disconnect(subscriber)  # offline: everything is queued, so written
    publisher, _ = raw_connect(state.port, "publisher", 5)
    burst = bytearray()
    expected = []
    for packet_id in range(1, 61):
        # Every third to a topic nobody keeps (nothing to write), the others queued for the durable session.
        topic = f"nobody/{packet_id}" if packet_id % 3 == 0 else f"strict/{packet_id}"
        burst += _encode(Publish(topic, str(packet_id).encode(), 1, packet_id=packet_id))
        if packet_id % 3:
            expected.append(topic)
    publisher.send_raw(bytes(burst))
    acks = [publisher.receive() for _ in range(60)]
    assert acks == [Puback(packet_id) for packet_id in range(1, 61)]
    assert [row[0] for row in state_rows(
        state, "SELECT m.topic FROM deliveries d JOIN messages m ON m.id = d.message_id ORDER BY d.id"
    )] == expected
    # QoS 2 in strict mode: the PUBREC waits for the awaited release to be written.
    publish(publisher, "strict/exactly", b"once", qos=2, packet_id=61)

    metrics = _scrape(roost)
    assert metrics["roost_state_commits_total"] >= 1
    assert metrics["roost_state_rows_written_total"] >= len(expected)
    assert metrics["roost_state_commit_failures_total"] == 0
    assert metrics["roost_state_commit_seconds_total"] > 0
    assert "roost_state_pending_changes" in metrics

    state.restart()
    subscriber, connack = connect(state.port, "durable-sub")
    assert connack.session_present
    received = receive_all(subscriber, len(expected) + 1)
    assert [m.topic for m in received] == [*expected, "strict/exactly"]


def test_strict_mode_delivers_to_a_connected_subscriber_and_acknowledges_its_acks(durable) -> None:
    """Strict mode holds acknowledgements, not deliveries: a connected durable subscriber gets QoS 1 and 2
    messages at once and completes the exchanges; the PUBREL it is owed comes once `released` is written."""
    state = durable("strict")
    state.start()
    subscriber, _ = connect(state.port, "live-sub")
    subscribe(subscriber, Subscription("live/#", 2))
    publisher, _ = connect(state.port, "live-pub")
    for packet_id in range(1, 11):
        publish(publisher, f"live/{packet_id}", b"x", qos=1 if packet_id % 2 else 2, packet_id=packet_id)
    received = receive_all(subscriber, 10)
    assert [m.topic for m in received] == [f"live/{i}" for i in range(1, 11)]
    assert ping(subscriber) == []


def test_strict_mode_keeps_the_order_of_mixed_qos1_and_qos2_acknowledgements(durable) -> None:
    """[MQTT-4.6.0-2][MQTT-4.6.0-3][MQTT-4.6.0-4]: PUBACK, PUBREC and PUBCOMP go out in the order of the
    PUBLISH and PUBREL packets they answer, though some wait for a commit and some do not."""
    state = durable("strict")
    state.start()
    subscriber, _ = connect(state.port, "durable-sub")
    subscribe(subscriber, Subscription("kept/#", 2))
    disconnect(subscriber)
    publisher, _ = connect(state.port, "publisher")
    burst = bytearray()
    expected: list[Any] = []
    for packet_id in range(1, 41):
        topic = "kept/t" if packet_id % 4 else "nobody/t"
        qos = 2 if packet_id % 3 == 0 else 1
        burst += _encode(Publish(topic, str(packet_id).encode(), qos, packet_id=packet_id))
        expected.append(Pubrec(packet_id) if qos == 2 else Puback(packet_id))
    publisher.send_raw(bytes(burst))
    assert [publisher.receive() for _ in expected] == expected
    releases = [ack.packet_id for ack in expected if isinstance(ack, Pubrec)]
    burst = bytearray()
    expected = []
    for packet_id in releases:
        burst += _encode(Pubrel(packet_id)) + _encode(Publish("kept/t", b"x", 1, packet_id=100 + packet_id))
        expected += [Pubcomp(packet_id), Puback(100 + packet_id)]
    publisher.send_raw(bytes(burst))
    assert [publisher.receive() for _ in expected] == expected


def test_strict_mode_forgets_a_completed_incoming_qos2_packet_id_before_acknowledging(durable) -> None:
    """[MQTT-4.3.3-10]: after PUBCOMP the packet identifier is free, and a new PUBLISH reusing it is a new
    message. With strict durability the PUBCOMP comes once that is on disk: after a crash right after it,
    the new message is delivered, not swallowed as a duplicate."""
    state = durable("strict")
    state.start()
    subscriber, _ = connect(state.port, "subscriber")
    subscribe(subscriber, Subscription("reuse/#", 1))
    disconnect(subscriber)
    publisher, _ = connect(state.port, "publisher")
    publish(publisher, "reuse/t", b"first", qos=2, packet_id=5)
    copy = crashed_copy(state, durable)
    copy.start()

    publisher, _ = connect(copy.port, "publisher")
    publish(publisher, "reuse/t", b"second", qos=2, packet_id=5)
    subscriber, _ = connect(copy.port, "subscriber")
    assert [m.payload for m in receive_all(subscriber, 2)] == [b"first", b"second"]


def test_strict_mode_resumes_a_released_qos2_delivery_with_pubrel_after_a_crash(durable) -> None:
    """[MQTT-4.3.3-5]: once the broker has sent PUBREL it must not send that PUBLISH again. With strict
    durability the PUBREL leaves only once "released" is on disk, so a crash right after it resumes the
    exchange with PUBREL [MQTT-4.4.0-1], never with a second PUBLISH."""
    state = durable("strict")
    state.start()
    subscriber, _ = connect(state.port, "subscriber")
    subscribe(subscriber, Subscription("exact/#", 2))
    publisher, _ = raw_connect(state.port, "publisher", 5)
    publish(publisher, "exact/t", b"exactly once", qos=2)
    message = expect_publish(subscriber)
    subscriber.send(Pubrec(message.packet_id))  # type: ignore[arg-type]
    assert subscriber.receive() == Pubrel(message.packet_id)  # type: ignore[arg-type]
    copy = crashed_copy(state, durable)  # at once
    copy.start()

    subscriber, connack = connect(copy.port, "subscriber")
    assert connack.session_present
    assert ping(subscriber) == [Pubrel(message.packet_id)]  # type: ignore[arg-type]
    subscriber.send(Pubcomp(message.packet_id))  # type: ignore[arg-type]
    assert ping(subscriber) == []


def test_an_unknown_durability_mode_is_refused_naming_the_key() -> None:
    document = roost_document(Path("/nonexistent"))
    document["storage"] = {"durability": "eventually"}
    with pytest.raises(ConfigError, match="storage.durability"):
        parse_config(document)
    document["storage"] = {"durability": "Strict"}
    assert parse_config(document).storage.durability == "strict"


def _encode(packet: Any) -> bytes:
    return encode(packet, 5)


# -- refusing a damaged file ----------------------------------------------------------------------------------------


def _damage_page(path: Path) -> None:
    """Overwrite one page in the middle of a real database with noise."""
    data = path.read_bytes()
    page = 4096
    assert len(data) >= 4 * page, len(data)
    path.write_bytes(data[: 2 * page] + b"\xa5" * page + data[3 * page:])


def _written_state(state: Restartable) -> None:
    """Run Roost once with a few sessions and retained messages, so the state file has rows on many pages."""
    state.start()
    publisher, _ = raw_connect(state.port, "publisher", 5)
    for i in range(40):
        client, _ = connect(state.port, f"client-{i}")
        subscribe(client, Subscription(f"some/long/filter/{i}/" + "x" * 100 + "/#", 1))
        disconnect(client)
        publish(publisher, f"retained/{i}", bytes(300), retain=True, packet_id=i + 1)
    state.stop()


@pytest.mark.parametrize("damage", ["garbage", "damaged-page"])
def test_a_damaged_state_file_stops_the_start_with_a_clear_error_and_is_left_as_it_was(durable, damage: str) -> None:
    """A state file Roost cannot trust is refused, not repaired nor replaced: start fails with an error that
    names the file and says what to do, and the file keeps every byte; moved aside, Roost starts afresh."""
    state = durable()
    if damage == "garbage":
        state.data_dir.mkdir(parents=True)
        state.state_file.write_bytes(b"\x13\x37 definitely not SQLite " * 300)
    else:
        _written_state(state)
        _damage_page(state.state_file)
    before = state.state_file.read_bytes()

    with pytest.raises(StorageError, match="damaged") as refused:
        RoostThread(state.document).start()
    assert STATE_FILE_NAME in str(refused.value)
    assert "move it aside" in str(refused.value)
    assert state.state_file.read_bytes() == before

    state.state_file.rename(state.data_dir / "broker-state.db.damaged")
    state.start()
    client, connack = connect(state.port, "client-1")
    assert not connack.session_present


def test_a_state_file_with_an_unreadable_record_starts_without_that_record(durable) -> None:
    """A crash left a connected session behind (no disconnect time) beside a record Roost cannot read: the
    start goes on without that record (issue 14: it used to refuse the file, a restart loop under systemd),
    which is moved to the quarantine table; the connected session is restored."""
    state = durable()
    state.start()
    connected, _ = connect(state.port, "a-connected")
    reader, _ = connect(state.port, "b-damaged")
    disconnect(reader)
    wait_until(lambda: state_rows(state, "SELECT key, disconnected_at IS NULL FROM sessions ORDER BY key")
               == [("a-connected", 1), ("b-damaged", 0)])
    copy = crashed_copy(state, durable)
    connection = sqlite3.connect(copy.state_file)
    with connection:
        connection.execute("UPDATE sessions SET attributes = '{not json' WHERE key = 'b-damaged'")
    connection.close()

    copy.start()
    again, connack = connect(copy.port, "a-connected")
    assert connack.session_present
    disconnect(again)
    damaged, connack = connect(copy.port, "b-damaged")
    assert not connack.session_present
    disconnect(damaged)
    assert state_rows(copy, "SELECT kind, key FROM quarantine") == [("session", "b-damaged")]


def test_a_state_file_with_a_newer_schema_stops_the_start_naming_the_file(durable) -> None:
    """With roost.db and broker-state.db in one data dir, the refusal of a newer schema says which file it
    means, and leaves it as it was. (Failed before f164baa: the message named no file.)"""
    state = durable()
    state.start()
    client, _ = connect(state.port, "keeper")
    disconnect(client)
    state.stop()
    connection = sqlite3.connect(state.state_file)
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    before = state.state_file.read_bytes()

    with pytest.raises(StorageError, match="newer") as refused:
        RoostThread(state.document).start()
    assert state.state_file.read_bytes() == before
    assert STATE_FILE_NAME in str(refused.value)


# -- access changed while Roost was down ----------------------------------------------------------------------------


def test_a_credential_revoked_while_roost_was_down_loses_its_restored_session(durable) -> None:
    """Live access applies to restored sessions: a session whose credential was deleted while Roost was
    stopped is removed at start (from memory and from the state file); another tenant's session with the
    same client id is untouched and still receives."""
    state = durable(allow_anonymous=False)
    roost = state.start()
    alice, bob = make_tenant(roost, "alice"), make_tenant(roost, "bob")
    alice_credentials, bob_credentials = alice.instance(), bob.instance()
    for username, password in (alice_credentials, bob_credentials):
        client, _ = connect(state.port, "phone", username=username, password=password.encode())
        subscribe(client, Subscription("news/#", 1))
        disconnect(client)
    state.stop()
    assert len(state_rows(state, "SELECT key FROM sessions")) == 2

    asyncio.run(_delete_instance(state.data_dir, alice_credentials[0]))
    roost = state.start()

    alice_key = f"$u{alice.user.id}/\x00phone"
    wait_until(lambda: state_rows(state, "SELECT count(*) FROM sessions WHERE key = ?", (alice_key,)) == [(0,)])
    assert state_rows(state, "SELECT count(*) FROM subscriptions WHERE session_key = ?", (alice_key,)) == [(0,)]
    # A new credential of the same tenant, same client id: the session is gone.
    username, password = Tenant(roost, alice.user).instance()
    _, connack = connect(state.port, "phone", username=username, password=password.encode())
    assert not connack.session_present
    # Bob's is still there and still subscribed.
    bob_client, connack = connect(state.port, "phone", username=bob_credentials[0], password=bob_credentials[1].encode())
    assert connack.session_present
    bob_publisher, _ = raw_connect(state.port, "bob-pub", 5, username=bob_credentials[0],
                                   password=bob_credentials[1].encode())
    publish(bob_publisher, "news/today", b"hello")
    assert expect_publish(bob_client).payload == b"hello"


def test_the_will_of_a_credential_revoked_while_roost_was_down_is_not_published(durable) -> None:
    """A revoked client's session ends without its will, whether the revocation comes while Roost runs
    (close_for_admin: "no will is sent") or while it is stopped. (Failed before f164baa: restore published
    the wills that were due before the revoked sessions were removed.)"""
    state = durable(allow_anonymous=False)
    roost = state.start()
    alice = make_tenant(roost, "alice", plan="starter")  # two MQTT instances
    watching, revoked = alice.instance(), alice.instance()
    watcher, _ = connect(state.port, "watcher", username=watching[0], password=watching[1].encode())
    subscribe(watcher, Subscription("home/#", 1))
    disconnect(watcher)
    dying, _ = connect(state.port, "dying", username=revoked[0], password=revoked[1].encode(),
                       will=Will("home/dying", b"revoked", 1, False, Properties(will_delay_interval=1)))
    stopped_at = time.time()
    state.stop()
    asyncio.run(_delete_instance(state.data_dir, revoked[0]))
    wait_for_clock(stopped_at + 1.2)  # the will's delay runs out while Roost is down
    state.start()

    watcher, connack = connect(state.port, "watcher", username=watching[0], password=watching[1].encode())
    assert connack.session_present
    assert ping(watcher) == []


async def _delete_instance(data_dir: Path, username: str) -> None:
    """Revoke an MQTT instance the way another process would while Roost is stopped."""
    async with await open_store(data_dir) as store:
        instance = await store.instances.get_by_username(username)
        assert instance is not None
        assert await store.instances.delete(instance.public_id, user_id=None)


def test_retained_messages_of_a_credential_revoked_while_roost_was_down_are_gone(durable) -> None:
    """Deleting an MQTT instance removes the retained messages its clients published (control/services/
    instances.py). Retained messages now outlive a restart, so one revoked while Roost was down (a `roost
    restore` of an older database, another process) must not leave them behind either. (Failed before
    f164baa.)"""
    state = durable(allow_anonymous=False)
    roost = state.start()
    alice = make_tenant(roost, "alice")
    revoked = alice.instance()
    client, _ = raw_connect(state.port, "door", 5, username=revoked[0], password=revoked[1].encode())
    publish(client, "home/door", b"open", retain=True)
    state.stop()

    asyncio.run(_delete_instance(state.data_dir, revoked[0]))
    roost = state.start()

    username, password = Tenant(roost, alice.user).instance()
    reader, _ = raw_connect(state.port, "reader", 5, username=username, password=password.encode())
    reader.send(Subscribe(1, (Subscription("home/#", 1),)))
    assert [type(p) for p in ping(reader)] == [Suback]


def test_an_acl_narrowed_while_roost_was_down_removes_the_restored_subscription(durable) -> None:
    """A topic rule that no longer lets a device subscribe, changed while Roost was stopped, removes the
    device's restored subscription at start (from the state file too), with the message queued for it only by
    that subscription: nothing reaches it any more."""
    state = durable(allow_anonymous=False)
    roost = state.start()
    alice = make_tenant(roost, "alice")
    project = alice.project()
    topic_id = alice.topic(project, "sensors/#")
    device_id, secret = alice.device(project, "d1")
    owner = alice.instance()
    device, _ = connect(state.port, device_id, username=device_id, password=secret.encode())
    subscribe(device, Subscription("sensors/#", 1))
    disconnect(device)
    publisher, _ = raw_connect(state.port, "owner", 5, username=owner[0], password=owner[1].encode())
    publish(publisher, "sensors/queued", b"queued while it was allowed")
    state.stop()

    asyncio.run(_forbid_subscribe(state.data_dir, topic_id))
    state.start()

    key = f"$u{alice.user.id}/\x00{device_id}"
    wait_until(lambda: state_rows(state, "SELECT count(*) FROM subscriptions WHERE session_key = ?", (key,)) == [(0,)])
    device, connack = connect(state.port, device_id, username=device_id, password=secret.encode())
    assert connack.session_present
    publisher, _ = raw_connect(state.port, "owner", 5, username=owner[0], password=owner[1].encode())
    publish(publisher, "sensors/x", b"not for the device")
    assert ping(device) == []


async def _forbid_subscribe(data_dir: Path, topic_id: int) -> None:
    async with await open_store(data_dir) as store:
        assert await store.topics.update(topic_id, user_id=None, can_subscribe=False) is not None


def test_tenant_sessions_and_wills_come_back_in_their_own_namespace(durable) -> None:
    """Two tenants' sessions with the same client id are two sessions after a restart as before; a pending
    will is published into its tenant's namespace, seen on the topic its client named, by that tenant only."""
    state = durable(allow_anonymous=False)
    roost = state.start()
    credentials = {name: make_tenant(roost, name).instance() for name in ("alice", "bob")}

    def login(name: str) -> dict[str, Any]:
        username, password = credentials[name]
        return {"username": username, "password": password.encode()}

    for name in ("alice", "bob"):
        watcher, _ = connect(state.port, "watcher", **login(name))
        subscribe(watcher, Subscription("home/#", 1))
        disconnect(watcher)
    dying, _ = connect(state.port, "dying", will=Will("home/dying", b"alice's", 1, False,
                                                      Properties(will_delay_interval=1)), **login("alice"))
    state.restart()
    closed_by_shutdown(dying, 5)

    watchers = {}
    for name in ("alice", "bob"):
        watchers[name], connack = connect(state.port, "watcher", **login(name))
        assert connack.session_present, name
    will = expect_publish(watchers["alice"])
    assert (will.topic, will.payload) == ("home/dying", b"alice's")
    watchers["alice"].send(Puback(will.packet_id))  # type: ignore[arg-type]
    publisher, _ = raw_connect(state.port, "publisher", 5, **login("bob"))
    publish(publisher, "home/bob", b"bob's")
    assert expect_publish(watchers["bob"]).payload == b"bob's"
    assert ping(watchers["alice"]) == []
