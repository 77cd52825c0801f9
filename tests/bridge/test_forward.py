"""The bridge against real upstreams on 127.0.0.1: Debian's mosquitto and a second Roost.

Forward (QoS 1 and 2, retained), commands down into the local namespace without the prefix, and the
acknowledgement rule: the local publisher's PUBACK comes only once the message is in the outbox on disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bridge.upstreams import Mosquitto, bridge_status, bridge_table, gateway, subscriber, wait_connected, wait_for
from tests.helpers import PahoClient, RoostThread, roost_document


def _forward_and_check(local_port: int, upstream: PahoClient, qos: int, count: int = 50) -> None:
    publisher = PahoClient(local_port, client_id="sensor-1").connect()
    try:
        infos = [publisher.publish(f"sensors/t/{i}", f"m{i}".encode(), qos=qos, wait=False) for i in range(count)]
        for info in infos:
            info.wait_for_publish(5)
            assert info.is_published()
        got = [upstream.expect() for _ in range(count)]
    finally:
        publisher.disconnect()
    assert [m.topic for m in got] == [f"site1/sensors/t/{i}" for i in range(count)]  # in order, prefixed
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(count)]
    assert {m.qos for m in got} == {qos}


@pytest.mark.parametrize("qos", [1, 2])
def test_forward_to_mosquitto(tmp_path: Path, mosquitto: Mosquitto, qos: int) -> None:
    upstream = subscriber(mosquitto.port, "site1/#")
    with gateway(tmp_path / "gw", bridge_table(mosquitto.port)) as gw:
        wait_connected(gw)
        _forward_and_check(gw.mqtt_port, upstream, qos)
        status = wait_for(lambda: (s := bridge_status(gw))["backlog"]["messages"] == 0 and s, what="outbox empty")
        assert status["counters"]["acknowledged"] == 50
        assert status["counters"]["resent"] == 0
    upstream.disconnect()


def test_forward_qos0_and_unmatched(tmp_path: Path, mosquitto: Mosquitto) -> None:
    upstream = subscriber(mosquitto.port, "#")
    with gateway(tmp_path / "gw", bridge_table(mosquitto.port)) as gw:
        wait_connected(gw)
        publisher = PahoClient(gw.mqtt_port).connect()
        publisher.publish("elsewhere/x", b"not forwarded", qos=1)
        publisher.publish("sensors/a", b"zero", qos=0)
        publisher.publish("sensors/b", b"one", qos=1)  # QoS 1 after QoS 0 on another path: wait for both
        got = {upstream.expect().topic for _ in range(2)}
        assert got == {"site1/sensors/a", "site1/sensors/b"}
        upstream.expect_none()
        publisher.disconnect()
    upstream.disconnect()


def test_retained_forwarded_and_down(tmp_path: Path, mosquitto: Mosquitto) -> None:
    with gateway(tmp_path / "gw", bridge_table(mosquitto.port)) as gw:
        wait_connected(gw)
        local = PahoClient(gw.mqtt_port).connect()
        local.publish("sensors/state", b"on", qos=1, retain=True)
        wait_for(lambda: bridge_status(gw)["counters"]["acknowledged"] == 1, what="acknowledged upstream")
        # A new upstream subscriber gets it as a retained message.
        late = subscriber(mosquitto.port, "site1/sensors/state")
        message = late.expect()
        assert (message.payload, message.retain) == (b"on", True)
        late.disconnect()
        # A retained command upstream comes down retained, without the prefix.
        cloud = PahoClient(mosquitto.port).connect()
        cloud.publish("site1/cmd/mode", b"eco", qos=1, retain=True)
        wait_for(lambda: bridge_status(gw)["counters"]["commands"] == 1, what="command down")
        local_late = subscriber(gw.mqtt_port, "cmd/#")
        message = local_late.expect()
        assert (message.topic, message.payload, message.retain) == ("cmd/mode", b"eco", True)
        for client in (local, local_late, cloud):
            client.disconnect()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_commands_down(tmp_path: Path, mosquitto: Mosquitto, qos: int) -> None:
    with gateway(tmp_path / "gw", bridge_table(mosquitto.port)) as gw:
        wait_connected(gw)
        device = subscriber(gw.mqtt_port, "cmd/#")
        cloud = PahoClient(mosquitto.port).connect()
        cloud.publish("site1/cmd/valve", b"open", qos=qos)
        message = device.expect()
        assert (message.topic, message.payload, message.qos) == ("cmd/valve", b"open", qos)
        # Nothing that came down goes back up, though cmd/# is not forwarded here anyway: see test_loops.
        device.disconnect()
        cloud.disconnect()


def test_commands_sent_while_offline_arrive(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """The upstream session is persistent: what was sent to `subscribe` filters while the gateway was
    down arrives once it is back (and waits in the device's own persistent session for the device)."""
    folder = tmp_path / "gw"
    with gateway(folder, bridge_table(mosquitto.port)) as gw:
        wait_connected(gw)
        wait_for(lambda: bridge_status(gw)["subscribed"], what="SUBACK")
        subscriber(gw.mqtt_port, "cmd/#", qos=1, version=4, client_id="device", clean=False).disconnect()
    cloud = PahoClient(mosquitto.port).connect()
    for i in range(5):
        cloud.publish(f"site1/cmd/{i}", f"c{i}".encode(), qos=1)
    cloud.disconnect()
    with gateway(folder, bridge_table(mosquitto.port)) as gw:
        status = wait_connected(gw)
        assert status["session_present"]
        wait_for(lambda: bridge_status(gw)["counters"]["commands"] == 5, what="commands down")
        device = PahoClient(gw.mqtt_port, client_id="device", version=4, clean=False).connect()
        got = [device.expect() for _ in range(5)]
        assert [(m.topic, m.payload) for m in got] == [(f"cmd/{i}", f"c{i}".encode()) for i in range(5)]
        device.disconnect()


def test_forward_to_a_second_roost(tmp_path: Path) -> None:
    cloud = RoostThread(roost_document(tmp_path / "cloud")).start()
    try:
        upstream = subscriber(cloud.mqtt_port, "site1/#")
        with gateway(tmp_path / "gw", bridge_table(cloud.mqtt_port)) as gw:
            wait_connected(gw)
            _forward_and_check(gw.mqtt_port, upstream, 2, count=20)
            _forward_and_check(gw.mqtt_port, upstream, 1, count=20)
            device = subscriber(gw.mqtt_port, "cmd/#")
            cloud_client = PahoClient(cloud.mqtt_port).connect()
            cloud_client.publish("site1/cmd/go", b"now", qos=2)
            message = device.expect()
            assert (message.topic, message.payload, message.qos) == ("cmd/go", b"now", 2)
            device.disconnect()
            cloud_client.disconnect()
        upstream.disconnect()
    finally:
        cloud.stop()


def test_puback_only_once_on_disk(tmp_path: Path) -> None:
    """With no upstream reachable, a QoS 1/2 message acknowledged to its publisher is in the outbox file:
    another reader of the SQLite file sees it the moment the PUBACK/PUBCOMP arrives."""
    import sqlite3

    from tests.bridge.upstreams import free_port

    folder = tmp_path / "gw"
    with gateway(folder, bridge_table(free_port())) as gw:
        wait_for(lambda: bridge_status(gw)["last_error"], what="a failed connect")
        publisher = PahoClient(gw.mqtt_port).connect()
        for i, qos in enumerate((1, 2, 1)):
            publisher.publish(f"sensors/{i}", f"p{i}".encode(), qos=qos)  # waits for PUBACK / PUBCOMP
            with sqlite3.connect(folder / "data" / "bridge-cloud.db") as db:
                rows = db.execute("SELECT topic, payload, qos FROM messages ORDER BY seq").fetchall()
            assert rows[-1] == (f"sensors/{i}", f"p{i}".encode(), qos)
        status = bridge_status(gw)
        assert status["backlog"]["messages"] == 3 and not status["connected"]
        assert status["state"] in ("connecting", "backoff")
        publisher.disconnect()


def test_strict_durability_and_the_outbox_hold_together(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """With `[storage] durability = "strict"` a PUBACK waits for both commits (the broker state's, for a
    persistent subscriber, and the outbox's); acknowledgements keep their order [MQTT-4.6.0-2]."""
    from tests.bridge.upstreams import gateway_document

    upstream = subscriber(mosquitto.port, "site1/#")
    document = gateway_document(tmp_path / "gw", bridge_table(mosquitto.port))
    document["storage"] = {"durability": "strict"}
    gw = RoostThread(document).start()
    try:
        wait_connected(gw)
        local = subscriber(gw.mqtt_port, "sensors/#", qos=1, version=4, client_id="keeper", clean=False)
        _forward_and_check(gw.mqtt_port, upstream, 1, count=30)
        _forward_and_check(gw.mqtt_port, upstream, 2, count=30)
        assert [local.expect().payload for _ in range(60)] == [f"m{i}".encode() for i in range(30)] * 2
        local.disconnect()
    finally:
        gw.stop()
    upstream.disconnect()
