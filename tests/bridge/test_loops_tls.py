"""No loops (a two-way bridge between two Roosts), and TLS links (a CA, and a client certificate)."""

from __future__ import annotations

from pathlib import Path

import pytest

from certs.authority import issue_client, issue_server, new_authority
from tests.bridge.upstreams import Mosquitto, free_port, wait_port, bridge_status, bridge_table, gateway, subscriber, wait_connected, wait_for
from tests.helpers import PahoClient, RoostThread, roost_document, sync


def test_two_way_bridge_between_roosts_does_not_loop(tmp_path: Path) -> None:
    """One bridge forwards and subscribes the same topics: what goes up does not come back down (v5 No
    Local upstream), what comes down does not go back up (No Local on the bridge's local subscription)."""
    cloud = RoostThread(roost_document(tmp_path / "cloud")).start()
    try:
        table = bridge_table(cloud.mqtt_port, forward=["x/#"], subscribe=["x/#"], remote_prefix="")
        with gateway(tmp_path / "gw", table) as gw:
            wait_connected(gw)
            wait_for(lambda: bridge_status(gw)["subscribed"], what="SUBACK")
            local_sub = subscriber(gw.mqtt_port, "#", qos=1)
            cloud_sub = subscriber(cloud.mqtt_port, "#", qos=1)
            local_pub = PahoClient(gw.mqtt_port).connect()
            cloud_pub = PahoClient(cloud.mqtt_port).connect()
            local_pub.publish("x/up", b"from the gateway", qos=1)
            cloud_pub.publish("x/down", b"from the cloud", qos=1)
            assert {local_sub.expect().topic for _ in range(2)} == {"x/up", "x/down"}
            assert {cloud_sub.expect().topic for _ in range(2)} == {"x/up", "x/down"}
            # Markers outside the bridged topics prove that nothing more was on its way.
            sync(local_pub, local_sub)
            sync(cloud_pub, cloud_sub)
            local_sub.expect_none()
            cloud_sub.expect_none()
            counters = bridge_status(gw)["counters"]
            assert (counters["queued"], counters["commands"]) == (1, 1)
            for client in (local_sub, cloud_sub, local_pub, cloud_pub):
                client.disconnect()
    finally:
        cloud.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    authority = new_authority("bridge test CA")
    server = issue_server(authority, ["127.0.0.1", "localhost"])
    client = issue_client(authority, "gw-1")
    files = {
        "ca": authority.certificate, "cert": server.certificate, "key": server.key,
        "client_cert": client.certificate, "client_key": client.key,
    }
    paths = {}
    for name, data in files.items():
        path = folder / f"{name}.pem"
        path.write_bytes(data)
        paths[name] = path
    return paths


@pytest.mark.parametrize("mutual", [False, True], ids=["ca", "client-certificate"])
def test_tls_to_mosquitto(tmp_path: Path, pki: dict[str, Path], mutual: bool) -> None:
    tls = {"ca": pki["ca"], "cert": pki["cert"], "key": pki["key"]}
    if mutual:
        tls["require_certificate"] = pki["ca"]
    plain = free_port()  # a second, plain listener for the test's own subscriber
    upstream = Mosquitto(tmp_path / "mosquitto", tls=tls, extra=f"listener {plain} 127.0.0.1\n").start()
    try:
        wait_port(plain)
        cloud = subscriber(plain, "site1/#", qos=1)
        table = bridge_table(upstream.port, scheme="mqtts", ca_file=str(pki["ca"]))
        if mutual:
            table.update(cert_file=str(pki["client_cert"]), key_file=str(pki["client_key"]))
        with gateway(tmp_path / "gw", table) as gw:
            wait_connected(gw)
            publisher = PahoClient(gw.mqtt_port).connect()
            publisher.publish("sensors/secure", b"over tls", qos=1)
            message = cloud.expect()
            assert (message.topic, message.payload) == ("site1/sensors/secure", b"over tls")
            publisher.disconnect()
        cloud.disconnect()
    finally:
        upstream.kill()


def test_tls_refuses_an_unknown_ca(tmp_path: Path, pki: dict[str, Path]) -> None:
    """The upstream's certificate is verified: another CA's certificate is refused, and the reason shown."""
    other = new_authority("another CA")
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(other.certificate)
    upstream = Mosquitto(tmp_path / "mosquitto", tls={"ca": pki["ca"], "cert": pki["cert"], "key": pki["key"]}).start()
    try:
        with gateway(tmp_path / "gw", bridge_table(upstream.port, scheme="mqtts", ca_file=str(other_ca))) as gw:
            error = wait_for(lambda: bridge_status(gw)["last_error"], what="a TLS failure")
            assert "CERTIFICATE_VERIFY_FAILED" in error or "certificate verify failed" in error
            assert not bridge_status(gw)["connected"]
    finally:
        upstream.kill()


def test_tls_without_the_required_client_certificate_fails(tmp_path: Path, pki: dict[str, Path]) -> None:
    tls = {"ca": pki["ca"], "cert": pki["cert"], "key": pki["key"], "require_certificate": pki["ca"]}
    upstream = Mosquitto(tmp_path / "mosquitto", tls=tls).start()
    try:
        with gateway(tmp_path / "gw", bridge_table(upstream.port, scheme="mqtts", ca_file=str(pki["ca"]))) as gw:
            wait_for(lambda: bridge_status(gw)["last_error"], what="a refused handshake")
            assert bridge_status(gw)["connects"] == 0
    finally:
        upstream.kill()
