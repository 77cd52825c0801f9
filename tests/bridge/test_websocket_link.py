"""ws:// and wss:// upstreams: MQTT over WebSocket (subprotocol "mqtt", the url's path) to a second Roost's
WebSocket listener (/mqtt on its HTTP port, and over HTTPS), and to Debian's mosquitto with a websockets
listener when its build can open one (skipped otherwise)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.bridge.upstreams import Mosquitto, bridge_status, bridge_table, free_port, gateway, subscriber, wait_connected, wait_for
from tests.helpers import TIMEOUT, PahoClient, RoostThread, roost_document


def _forward_and_command(gw: RoostThread, upstream_port: int) -> None:
    """One QoS 1 message up (prefixed), one command down (unprefixed), through the WebSocket link."""
    cloud = subscriber(upstream_port, "site1/#", qos=1)
    device = subscriber(gw.mqtt_port, "cmd/#", qos=1)
    wait_for(lambda: bridge_status(gw)["subscribed"], what="SUBACK over the WebSocket")
    publisher = PahoClient(gw.mqtt_port).connect()
    publisher.publish("sensors/ws", b"over a websocket", qos=1)
    message = cloud.expect()
    assert (message.topic, message.payload, message.qos) == ("site1/sensors/ws", b"over a websocket", 1)
    PahoClient(upstream_port).connect().publish("site1/cmd/lamp", b"on", qos=1)
    command = device.expect()
    assert (command.topic, command.payload) == ("cmd/lamp", b"on")
    wait_for(lambda: bridge_status(gw)["counters"]["acknowledged"] == 1, what="PUBACK over the WebSocket")
    for client in (cloud, device, publisher):
        client.disconnect()


def test_ws_to_a_second_roost(tmp_path: Path) -> None:
    cloud = RoostThread(roost_document(tmp_path / "cloud")).start()
    try:
        table = bridge_table(cloud.http_port, url=f"ws://127.0.0.1:{cloud.http_port}/mqtt")
        with gateway(tmp_path / "gw", table) as gw:
            status = wait_connected(gw)
            assert status["url"] == f"ws://127.0.0.1:{cloud.http_port}/mqtt"
            _forward_and_command(gw, cloud.mqtt_port)
    finally:
        cloud.stop()


def test_wss_to_a_second_roost_verifies_its_certificate(tmp_path: Path) -> None:
    document = roost_document(tmp_path / "cloud")
    document["tls"] = {"port": 0, "https": True}
    cloud = RoostThread(document).start()
    try:
        ca = cloud.config.data_dir / "certs" / "ca.pem"
        table = bridge_table(cloud.http_port, url=f"wss://127.0.0.1:{cloud.http_port}/mqtt", ca_file=str(ca))
        with gateway(tmp_path / "gw", table) as gw:
            wait_connected(gw)
            _forward_and_command(gw, cloud.mqtt_port)
    finally:
        cloud.stop()


def test_a_path_without_the_listener_is_refused_and_reported(tmp_path: Path) -> None:
    """The path is the url's: Roost's listener is at /mqtt, so "/" gets an HTTP refusal, shown as the error."""
    cloud = RoostThread(roost_document(tmp_path / "cloud")).start()
    try:
        with gateway(tmp_path / "gw", bridge_table(cloud.http_port, url=f"ws://127.0.0.1:{cloud.http_port}")) as gw:
            error = wait_for(lambda: bridge_status(gw)["last_error"], what="a refused handshake")
            assert "refused the WebSocket handshake (HTTP 4" in error, error
            assert bridge_status(gw)["connects"] == 0
    finally:
        cloud.stop()


def _mosquitto_with_websockets(folder: Path) -> tuple[Mosquitto, int]:
    """Mosquitto with a plain listener and a websockets one; skipped when this build cannot open the latter
    (Debian's 2.0.11 here exits with "Unable to start any listening sockets")."""
    ws_port = free_port()
    upstream = Mosquitto(folder, extra=f"listener {ws_port} 127.0.0.1\nprotocol websockets\n")
    upstream.process = subprocess.Popen(["mosquitto", "-c", str(upstream.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + TIMEOUT
    while True:
        if upstream.process.poll() is not None:
            log = (folder / "mosquitto.log").read_text(errors="replace") if (folder / "mosquitto.log").exists() else ""
            pytest.skip(f"this mosquitto cannot open a websockets listener: {log.strip().splitlines()[-1:]}")
        try:
            with socket.create_connection(("127.0.0.1", ws_port), timeout=0.5):
                return upstream, ws_port
        except OSError:
            if time.monotonic() > deadline:
                upstream.kill()
                pytest.skip("mosquitto's websockets listener never answered")
            time.sleep(0.02)  # the process is still starting: look again


def test_ws_to_mosquitto(tmp_path: Path) -> None:
    upstream, ws_port = _mosquitto_with_websockets(tmp_path / "mosquitto")
    try:
        with gateway(tmp_path / "gw", bridge_table(ws_port, url=f"ws://127.0.0.1:{ws_port}/mqtt")) as gw:
            wait_connected(gw)
            _forward_and_command(gw, upstream.port)
    finally:
        upstream.kill()
