"""Will messages through real sockets: when they are published (abnormal close, DISCONNECT 0x04,
protocol error, takeover, shutdown) and when not (normal DISCONNECT, reconnect within the will delay),
and what they carry (retain, QoS, v5 properties, will delay and session expiry).

The client with the will is a RawClient, so closing its socket is an immediate abnormal close; watchers
are paho clients subscribed to the will topic. Numbering is MQTT 5.0's unless the test says "3.1.1".
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time

import pytest

from broker.codec import Connect, Disconnect, Publish, Subscribe, Subscription
from tests.helpers import TIMEOUT, sync
from tests.session_helpers import disconnect, persistent, raw_connect, read_until_closed, will

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


@pytest.fixture
def watcher(client_factory):
    """A v5 paho client subscribed (QoS 2) to `will/#` and to the sync topic."""
    client = client_factory("watcher", version=5)
    client.subscribe("will/#", qos=2)
    client.subscribe("sync/marker", qos=1)
    return client


@pytest.fixture
def publisher(client_factory):
    return client_factory("publisher", version=5)


# -- when a will is published -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_will_is_published_when_the_client_closes_without_disconnect(roost, watcher, version: int) -> None:
    """[MQTT-3.1.2-8]: the client closes the network connection without DISCONNECT -> its will is
    published; Will Retain 0 -> published as a non-retained message [MQTT-3.1.2-14]."""
    client, _ = raw_connect(roost.mqtt_port, "dies", version, will=will("will/dies", b"lost", 1))
    client.close()
    message = watcher.expect()
    assert (message.topic, message.payload, message.qos, message.retain) == ("will/dies", b"lost", 1, False)


@pytest.mark.parametrize("version", VERSIONS)
def test_will_is_not_published_after_normal_disconnect(roost, watcher, publisher, version: int) -> None:
    """[MQTT-3.1.2-10]: a DISCONNECT (v5: reason 0x00) removes the will without publishing it."""
    client, _ = raw_connect(roost.mqtt_port, "polite", version, will=will("will/polite", b"never", 1))
    disconnect(client)  # returns once the broker has closed the connection
    sync(publisher, watcher)
    watcher.expect_none()


def test_v5_disconnect_with_will_message_publishes_it(roost, watcher) -> None:
    """3.14.2.1: DISCONNECT with reason 0x04 (Disconnect with Will Message) -> the will is published."""
    client, _ = raw_connect(roost.mqtt_port, "asks", 5, will=will("will/asks", b"as asked", 1))
    disconnect(client, 0x04)
    message = watcher.expect()
    assert (message.topic, message.payload) == ("will/asks", b"as asked")


@pytest.mark.parametrize("version", VERSIONS)
def test_will_is_published_when_the_server_closes_on_a_protocol_error(roost, watcher, version: int) -> None:
    """[MQTT-3.1.2-8]: the server closes the connection (here: a second CONNECT [MQTT-3.1.0-2]) without a
    DISCONNECT 0x00 from the client -> the will is published."""
    client, _ = raw_connect(roost.mqtt_port, "rude", version, will=will("will/rude", b"protocol error", 1))
    client.send(Connect("rude", version))
    read_until_closed(client)
    assert watcher.expect().payload == b"protocol error"


@pytest.mark.parametrize("version", VERSIONS)
def test_takeover_publishes_the_old_connections_will(roost, watcher, version: int) -> None:
    """[MQTT-3.1.4-3] with [MQTT-3.1.2-8]: a takeover closes the old connection without its DISCONNECT,
    so its will (delay 0) is published; the new connection has none."""
    old, _ = raw_connect(roost.mqtt_port, "twin", version, will=will("will/twin", b"old one", 1))
    new, connack = raw_connect(roost.mqtt_port, "twin", version)
    assert connack.reason_code == 0
    read_until_closed(old)
    assert watcher.expect().payload == b"old one"
    new.close()


# -- what a will carries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("retain", [True, False])
def test_will_retain_flag_is_honoured(roost, watcher, client_factory, version: int, retain: bool) -> None:
    """[MQTT-3.1.2-15] / [MQTT-3.1.2-14] (3.1.1: [MQTT-3.1.2-17] / [MQTT-3.1.2-16]): Will Retain 1 ->
    published as a retained message (a later subscriber gets it, RETAIN 1); 0 -> not retained."""
    client, _ = raw_connect(roost.mqtt_port, "retainer", version, will=will("will/retained", b"last", 1, retain))
    client.close()
    live = watcher.expect()
    assert live.payload == b"last" and live.retain is False  # existing subscription [MQTT-3.3.1-12]
    late = client_factory("late", version=version)
    late.subscribe("will/retained", qos=1)
    if retain:
        message = late.expect()
        assert (message.payload, message.retain) == (b"last", True)
    else:
        late.subscribe("sync/marker", qos=1)
        sync(client_factory("late-pub", version=version), late)
        late.expect_none()


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_will_qos_is_used_for_the_will(roost, watcher, version: int, qos: int) -> None:
    """3.1.2.6 [MQTT-3.1.2-12]: the will is published at its Will QoS (the watcher's subscription is QoS 2)."""
    client, _ = raw_connect(roost.mqtt_port, f"qos{qos}", version, will=will(f"will/qos{qos}", b"q", qos))
    client.close()
    message = watcher.expect()
    assert (message.topic, message.qos) == (f"will/qos{qos}", qos)


def test_v5_will_properties_are_forwarded(roost) -> None:
    """3.1.3.2: Payload Format Indicator, Message Expiry Interval, Content Type, Response Topic,
    Correlation Data and User Properties of the will reach subscribers; the Will Delay Interval is not a
    PUBLISH property and is not forwarded [MQTT-3.3.2-? (PUBLISH property table)]."""
    watcher, _ = raw_connect(roost.mqtt_port, "raw-watcher", 5)
    watcher.send(Subscribe(1, (Subscription("will/#", 1),)))
    watcher.receive()
    properties = {
        "payload_format_indicator": 1,
        "message_expiry_interval": 60,
        "content_type": "text/plain",
        "response_topic": "reply/here",
        "correlation_data": b"\x01\x02",
        "user_properties": (("origin", "sensor"), ("origin", "again"), ("zone", "north")),
        "will_delay_interval": 0,
    }
    client, _ = raw_connect(roost.mqtt_port, "rich", 5, will=will("will/rich", b"text", 1, **properties))
    client.close()
    message = watcher.receive()
    assert isinstance(message, Publish) and message.payload == b"text"
    got = message.properties
    assert got.payload_format_indicator == 1
    assert got.message_expiry_interval is not None and 58 <= got.message_expiry_interval <= 60
    assert got.content_type == "text/plain"
    assert got.response_topic == "reply/here"
    assert got.correlation_data == b"\x01\x02"
    assert got.user_properties == properties["user_properties"]  # order kept [MQTT-3.3.2-18]
    assert got.will_delay_interval is None
    watcher.close()


def test_v5_will_properties_as_paho_sees_them(roost, watcher) -> None:
    """The same forwarding, as a paho v5 subscriber reads it."""
    user = (("k", "v"), ("k2", "v2"))
    client, _ = raw_connect(
        roost.mqtt_port, "rich-paho", 5, will=will("will/paho", b"{}", 1, content_type="application/json", user_properties=user)
    )
    client.close()
    message = watcher.expect()
    assert message.properties.ContentType == "application/json"
    assert [tuple(p) for p in message.properties.UserProperty] == list(user)


# -- v5 will delay ------------------------------------------------------------------------------------------


def test_v5_will_delay_interval_delays_the_will(roost, watcher) -> None:
    """3.1.3.2.2: with Will Delay Interval 1 s (session expiry 10 s) the will is published about 1 s after
    the connection closes, not at once."""
    client, _ = raw_connect(
        roost.mqtt_port, "delayed", 5, will=will("will/delayed", b"late", 1, will_delay_interval=1), **persistent(5, 10)
    )
    client.close()
    closed = time.monotonic()
    message = watcher.expect(timeout=4)
    elapsed = time.monotonic() - closed
    assert message.payload == b"late"
    assert 0.8 <= elapsed < 3.0, elapsed


def test_v5_reconnect_within_will_delay_cancels_the_will(roost, watcher) -> None:
    """[MQTT-3.1.3-9]: a new network connection for the session before the Will Delay Interval has passed
    -> the will is never sent (waited 1.5 s past a 1 s delay)."""
    client, _ = raw_connect(
        roost.mqtt_port, "comeback", 5, will=will("will/comeback", b"no", 1, will_delay_interval=1), **persistent(5, 10)
    )
    client.close()
    again, connack = raw_connect(roost.mqtt_port, "comeback", 5, **persistent(5, 10))
    assert connack.session_present
    with pytest.raises(queue.Empty):
        watcher.messages.get(timeout=1.5)  # a timer test: real time must pass
    again.close()


def test_v5_reconnect_with_clean_start_within_will_delay_publishes_the_will(roost, watcher) -> None:
    """3.1.2.5 / [MQTT-3.1.3-9]: clean start 1 ends the old session, and a will is published at the latest
    when its session ends: so it goes at once, long before its 30 s delay."""
    client, _ = raw_connect(
        roost.mqtt_port, "fresh", 5, will=will("will/fresh", b"session ended", 1, will_delay_interval=30), **persistent(5, 60)
    )
    client.close()
    again, connack = raw_connect(roost.mqtt_port, "fresh", 5, clean_start=True)
    assert not connack.session_present
    assert watcher.expect(timeout=3).payload == b"session ended"
    again.close()


def test_v5_will_delay_longer_than_session_expiry_is_sent_at_session_expiry(roost, watcher) -> None:
    """3.1.3.2.2: the will is published when the delay passes or the session ends, whichever comes first:
    delay 30 s, session expiry 1 s -> published after about 1 s."""
    client, _ = raw_connect(
        roost.mqtt_port, "expiring", 5, will=will("will/expiring", b"expired", 1, will_delay_interval=30), **persistent(5, 1)
    )
    client.close()
    closed = time.monotonic()
    message = watcher.expect(timeout=4)
    elapsed = time.monotonic() - closed
    assert message.payload == b"expired"
    assert 0.8 <= elapsed < 3.0, elapsed


def test_v5_will_delay_with_session_expiry_0_is_sent_at_once(roost, watcher) -> None:
    """3.1.3.2.2: session expiry 0 -> the session ends with the connection, so a delayed will goes at once."""
    client, _ = raw_connect(roost.mqtt_port, "brief", 5, will=will("will/brief", b"now", 1, will_delay_interval=30))
    client.close()
    assert watcher.expect(timeout=3).payload == b"now"


def test_v5_takeover_with_clean_start_0_does_not_publish_a_delayed_will(roost, watcher, publisher) -> None:
    """[MQTT-3.1.3-9]: a takeover is a new network connection for the session before the delay passed, so
    a will with a delay is not published (clean start 0 keeps the session)."""
    old, _ = raw_connect(
        roost.mqtt_port, "twin-delay", 5, will=will("will/twin-delay", b"no", 1, will_delay_interval=30), **persistent(5, 60)
    )
    new, connack = raw_connect(roost.mqtt_port, "twin-delay", 5, **persistent(5, 60))
    assert connack.session_present
    read_until_closed(old)
    sync(publisher, watcher)
    watcher.expect_none()
    new.close()


# -- shutdown -----------------------------------------------------------------------------------------------


def test_wills_of_clients_connected_at_shutdown_are_published(make_roost) -> None:
    """[MQTT-3.1.2-8]: the server closing the connection without the client's DISCONNECT is an abnormal
    close, shutdown included. A subscriber connected at that moment receives the will before its own
    DISCONNECT 0x8B (the broker publishes wills first, then closes everyone).
    """
    roost = make_roost()
    watcher, _ = raw_connect(roost.mqtt_port, "shutdown-watcher", 5)
    watcher.send(Subscribe(1, (Subscription("will/#", 1),)))
    watcher.receive()
    dying, _ = raw_connect(roost.mqtt_port, "shutdown-dying", 4, will=will("will/shutdown", b"bye", 1))
    roost.stop()
    packets = read_until_closed(watcher)
    assert [type(p) for p in packets] == [Publish, Disconnect]
    assert packets[0].payload == b"bye" and packets[1].reason_code == 0x8B
    dying.close()


@pytest.mark.parametrize("protocol", ["mqttv311", "mqttv5"])
def test_will_of_a_killed_mosquitto_sub_is_published(roost, watcher, mosquitto_clients, protocol: str) -> None:
    """[MQTT-3.1.2-8] with a third-party client: mosquitto_sub killed (SIGKILL, no DISCONNECT) -> its will."""
    process = subprocess.Popen(
        ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(roost.mqtt_port), "-V", protocol, "-d",
         "-i", f"mosq-{protocol}", "-t", "mosq/nothing",
         "--will-topic", f"will/mosq/{protocol}", "--will-payload", "killed", "--will-qos", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put("")  # EOF

    threading.Thread(target=pump, daemon=True).start()
    try:
        while True:  # -d prints "Client ... received SUBACK" once it is connected and subscribed
            line = lines.get(timeout=TIMEOUT)
            assert line, "mosquitto_sub exited before subscribing"
            if "SUBACK" in line:
                break
        process.kill()
        process.wait(TIMEOUT)
        message = watcher.expect()
        assert (message.topic, message.payload, message.qos) == (f"will/mosq/{protocol}", b"killed", 1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)
