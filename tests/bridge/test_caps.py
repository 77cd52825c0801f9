"""Caps while the upstream is unreachable: drop the oldest (counted), or refuse new QoS 1/2 with 0x97;
QoS 0 waits in a bounded queue in memory."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.bridge.upstreams import Mosquitto, Proxy, bridge_status, bridge_table, gateway, subscriber, wait_connected, wait_for
from tests.helpers import TIMEOUT, PahoClient


def test_refuse_when_full_answers_0x97(tmp_path: Path) -> None:
    from tests.bridge.upstreams import free_port

    table = bridge_table(free_port(), max_messages=5, policy="refuse")
    with gateway(tmp_path / "gw", table) as gw:
        codes: dict[int, int] = {}
        done = threading.Event()

        def on_publish(client: object, userdata: object, mid: int, reason: object, properties: object) -> None:
            codes[mid] = int(reason.value)  # type: ignore[attr-defined]
            if len(codes) == 7:
                done.set()

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="sensor", protocol=paho.MQTTv5)
        client.on_publish = on_publish
        client.connect("127.0.0.1", gw.mqtt_port)
        client.loop_start()
        try:
            mids = [client.publish(f"sensors/{i}", b"x", qos=1).mid for i in range(7)]
            assert done.wait(TIMEOUT)
            assert [codes[mid] for mid in mids] == [0] * 5 + [0x97, 0x97]  # Quota exceeded: back off
            # Outside the forwarded filters nothing is refused.
            assert client.publish("elsewhere", b"x", qos=1).wait_for_publish(TIMEOUT) is None
        finally:
            client.disconnect()
            client.loop_stop()
        status = bridge_status(gw)
        assert (status["backlog"]["messages"], status["counters"]["refused"]) == (5, 2)


def test_drop_oldest_and_the_qos0_queue(tmp_path: Path, mosquitto: Mosquitto) -> None:
    proxy = Proxy(mosquitto.port)
    proxy.refuse()
    try:
        cloud = subscriber(mosquitto.port, "site1/#", qos=1)
        table = bridge_table(proxy.port, max_messages=5, qos0_queue=3)
        with gateway(tmp_path / "gw", table) as gw:
            publisher = PahoClient(gw.mqtt_port).connect()
            for i in range(8):
                publisher.publish("sensors/q1", f"m{i}".encode(), qos=1)
            for i in range(5):
                publisher.publish("sensors/q0", f"z{i}".encode(), qos=0)
            wait_for(lambda: bridge_status(gw)["counters"]["dropped"] == 3, what="the oldest dropped")
            wait_for(lambda: bridge_status(gw)["counters"]["qos0_dropped"] == 2, what="QoS 0 beyond the queue dropped")
            proxy.resume()
            wait_connected(gw)
            got = {cloud.expect().payload for _ in range(8)}
            assert got == {f"m{i}".encode() for i in range(3, 8)} | {f"z{i}".encode() for i in range(2, 5)}
            publisher.disconnect()
        cloud.disconnect()
    finally:
        proxy.close()
