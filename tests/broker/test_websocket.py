"""MQTT over WebSocket at /mqtt on the HTTP port: paho-mqtt with `transport="websockets"`, a raw WebSocket
client (wsproto over a socket) for split and coalesced frames, the same auth and tenants as TCP, and WSS
when the HTTP side is given TLS."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from wsproto.events import AcceptConnection, RejectConnection

from broker.codec import Connack, Connect, Publish, Suback, Subscribe, Subscription, encode
from tests.helpers import TIMEOUT, PahoClient, RoostThread, roost_document
from tests.tenant_helpers import make_tenant
from tests.ws_helpers import RawWebSocket


def ws_client(roost: RoostThread, client_id: str, **kwargs: Any) -> PahoClient:
    return PahoClient(roost.http_port, client_id=client_id, transport="websockets", **kwargs)


def test_paho_over_websocket_talks_to_tcp_clients(roost, client_factory) -> None:
    browser = ws_client(roost, "browser").connect()
    tcp = client_factory("tcp-side")
    browser.subscribe("room/#", qos=1)
    tcp.subscribe("room/#", qos=1)
    tcp.publish("room/1", b"from tcp", qos=1)
    assert browser.expect().payload == b"from tcp"
    assert tcp.expect().payload == b"from tcp"
    browser.publish("room/2", b"from ws" * 10_000, qos=2)
    assert tcp.expect().payload == b"from ws" * 10_000
    assert browser.expect().payload == b"from ws" * 10_000
    listeners = roost.call(lambda: sorted(c.listener for c in roost.roost.service.clients()))  # type: ignore[union-attr]
    assert listeners.count("ws") == 1 and listeners.count("tcp") >= 1
    browser.disconnect()


def test_paho_websocket_mqtt_3_1_1(roost, client_factory) -> None:
    browser = ws_client(roost, "old-browser", version=4).connect()
    browser.subscribe("v4/#", qos=1)
    browser.publish("v4/a", b"x", qos=1)
    assert browser.expect().payload == b"x"
    browser.disconnect()


def test_split_and_coalesced_frames(roost) -> None:
    raw = RawWebSocket(roost.http_port)
    try:
        assert isinstance(raw.accepted, AcceptConnection) and raw.accepted.subprotocol == "mqtt"
        connect = encode(Connect(client_id="raw-ws", protocol_version=5), 5)
        raw.send_frames(connect[:1], connect[1:3], connect[3:])  # one packet in three messages
        assert isinstance(raw.receive(), Connack)
        subscribe = encode(Subscribe(1, (Subscription("raw/#", 1),)), 5)
        publish = encode(Publish("raw/t", b"hello", qos=0), 5)
        both = subscribe + publish
        raw.send_frames(both[:-3], both[-3:] + publish)  # packets straddling messages, two in one
        assert isinstance(raw.receive(), Suback)
        for _ in range(2):
            message = raw.receive()
            assert isinstance(message, Publish) and message.payload == b"hello"
    finally:
        raw.close()


def test_a_websocket_without_the_mqtt_subprotocol_is_refused(roost) -> None:
    raw = RawWebSocket(roost.http_port, subprotocols=[])
    try:
        assert isinstance(raw.accepted, RejectConnection) and raw.accepted.status_code == 403
    finally:
        raw.close()


def test_a_text_message_closes_the_connection(roost) -> None:
    raw = RawWebSocket(roost.http_port)
    try:
        raw.send_frames(encode(Connect(client_id="texty", protocol_version=5), 5))
        assert isinstance(raw.receive(), Connack)
        raw.send_text("hello")
        assert raw.wait_closed() == 1003
    finally:
        raw.close()


def test_same_auth_and_tenants_as_tcp(make_roost) -> None:
    secure = make_roost(allow_anonymous=False)
    alice = make_tenant(secure, "alice")
    username, password = alice.instance()
    refused = ws_client(secure, "w1", username=username, password="wrong")
    refused.connect(expect_success=False)
    assert refused.connack is not None and refused.connack[1].value == 0x86
    refused.client.loop_stop()
    anonymous = ws_client(secure, "w2")
    anonymous.connect(expect_success=False)
    assert anonymous.connack is not None and anonymous.connack[1].is_failure
    anonymous.client.loop_stop()
    browser = ws_client(secure, "w3", username=username, password=password).connect()
    tcp = alice.client((username, password), "t3").connect()
    tcp.subscribe("home/#", qos=1)
    browser.publish("home/lamp", b"on", qos=1)
    assert tcp.expect().topic == "home/lamp"  # inside alice's namespace, without its prefix
    # Revoking the credentials closes the WebSocket client too.
    view = secure.run(alice.services.instances.list(alice.user))
    secure.run(alice.services.instances.delete(alice.user, view.items[0].instance.public_id))
    assert browser.disconnected.wait(TIMEOUT)
    browser.client.loop_stop()
    tcp.client.loop_stop()


def test_websocket_over_https(tmp_path: Path) -> None:
    document = roost_document(tmp_path)
    document["tls"] = {"port": 0, "https": True}
    roost = RoostThread(document).start()
    try:
        client = ws_client(roost, "wss-client")
        client.client.tls_set(ca_certs=str(roost.config.data_dir / "certs" / "ca.pem"))
        client.connect()
        client.subscribe("s/#", qos=1)
        client.publish("s/1", b"secure", qos=1)
        assert client.expect().payload == b"secure"
        client.disconnect()
        # Plain HTTP on the HTTPS port is not served.
        with socket.create_connection(("127.0.0.1", roost.http_port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert not sock.recv(4096).startswith(b"HTTP/1.1 200")
        context = ssl.create_default_context(cafile=str(roost.config.data_dir / "certs" / "ca.pem"))
        with context.wrap_socket(socket.create_connection(("127.0.0.1", roost.http_port)), server_hostname="localhost") as s:
            s.sendall(b"GET /api/v1/ca.pem HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            body = b""
            while chunk := s.recv(65536):
                body += chunk
            assert body.startswith(b"HTTP/1.1 200") and b"BEGIN CERTIFICATE" in body
    finally:
        roost.stop()

