"""No loops (a two-way bridge between two Roosts), and TLS links (a CA, and a client certificate)."""

from __future__ import annotations

from pathlib import Path

import httpx
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


def _stats(instance: RoostThread) -> int:
    assert instance.roost is not None
    broker = instance.roost.broker
    return instance.call(lambda: broker.stats.dropped_loop)


def test_two_bridges_in_opposite_directions_do_not_loop(tmp_path: Path) -> None:
    """A bridges sensors/# to B and B bridges sensors/# to A: two sessions, so No Local cannot see it. Each
    forwarded message names the Roosts it passed through (user property roost-via), and the Roost it comes
    back to acknowledges it without routing it: each message arrives once on each side, and stops."""
    port_a, port_b = free_port(), free_port()
    to_b = bridge_table(port_b, name="to-b", client_id="a-to-b", forward=["sensors/#"], subscribe=[], remote_prefix="")
    to_a = bridge_table(port_a, name="to-a", client_id="b-to-a", forward=["sensors/#"], subscribe=[], remote_prefix="")
    with gateway(tmp_path / "a", to_b, port=port_a) as a, gateway(tmp_path / "b", to_a, port=port_b) as b:
        wait_connected(a, "to-b")
        wait_connected(b, "to-a")
        sub_a, sub_b = subscriber(port_a, "#", qos=1), subscriber(port_b, "#", qos=1)
        pub_a, pub_b = PahoClient(port_a).connect(), PahoClient(port_b).connect()
        pub_a.publish("sensors/a", b"from A", qos=1)
        pub_b.publish("sensors/b", b"from B", qos=1)
        assert sorted((m.topic, m.payload) for m in (sub_a.expect(), sub_a.expect())) == [
            ("sensors/a", b"from A"), ("sensors/b", b"from B")]
        assert sorted((m.topic, m.payload) for m in (sub_b.expect(), sub_b.expect())) == [
            ("sensors/a", b"from A"), ("sensors/b", b"from B")]
        # Each bridge forwarded both (its own side's, and the other's once more); the copy that came back
        # was acknowledged by the Roost it had passed through (0x10), which did not route it.
        for instance, name in ((a, "to-b"), (b, "to-a")):
            wait_for(lambda: bridge_status(instance, name)["counters"]["acknowledged"] == 2, what=f"{name} acks")
            counters = bridge_status(instance, name)["counters"]
            assert (counters["queued"], counters["rejected"], counters["looped"]) == (2, 0, 0)
        assert (_stats(a), _stats(b)) == (1, 1)
        # Both copies that came back were acknowledged, so nothing is on its way; markers outside the
        # bridged topics prove that nothing more reached either side.
        sync(pub_a, sub_a)
        sync(pub_b, sub_b)
        sub_a.expect_none()
        sub_b.expect_none()
        for client in (sub_a, sub_b, pub_a, pub_b):
            client.disconnect()


def test_a_command_that_passed_through_here_is_not_published_again(tmp_path: Path) -> None:
    """A forwards sensors/# to a second Roost with one bridge and brings sensors/# down with another: what A
    forwarded comes down again naming A in roost-via, and is acknowledged without being published."""
    cloud = RoostThread(roost_document(tmp_path / "cloud")).start()
    try:
        up = bridge_table(cloud.mqtt_port, name="up", client_id="gw-up", forward=["sensors/#"], subscribe=[],
                          remote_prefix="")
        down = bridge_table(cloud.mqtt_port, name="down", client_id="gw-down", forward=[],
                            subscribe=["sensors/#"], remote_prefix="")
        with gateway(tmp_path / "gw", up, down) as gw:
            wait_connected(gw, "up")
            wait_connected(gw, "down")
            wait_for(lambda: bridge_status(gw, "down")["subscribed"], what="SUBACK")
            local = subscriber(gw.mqtt_port, "#", qos=1)
            publisher = PahoClient(gw.mqtt_port).connect()
            publisher.publish("sensors/x", b"once", qos=1)
            assert (local.expect().topic) == "sensors/x"
            wait_for(lambda: bridge_status(gw, "down")["counters"]["looped"] == 1, what="the copy that came down")
            sync(publisher, local)
            local.expect_none()
            assert bridge_status(gw, "down")["counters"]["commands"] == 0
            metrics = httpx.get(f"http://127.0.0.1:{gw.http_port}/metrics").text
            assert 'roost_bridge_looped_total{bridge="down"} 1.0' in metrics
            local.disconnect()
            publisher.disconnect()
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


def test_the_node_id_is_made_once_and_kept(tmp_path: Path) -> None:
    """The ID in roost-via survives restarts (a message that loops back after one is still recognised)."""
    from bridge.manager import node_id

    first = node_id(tmp_path)
    assert len(first) == 16 and node_id(tmp_path) == first
    assert (tmp_path / "node-id").read_text().strip() == first
