"""The bridge's state where a user sees it: GET /api/v1/bridges (administrators) and /metrics; a bridged
`user` namespace; bad configuration that stops start-up naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.errors import ConfigError
from bench.nats_cluster import NatsCluster
from tests.bridge.nats_fixtures import nats_cluster  # noqa: F401 (a fixture)
from tests.bridge.test_nats_bridge import _connected_node
from tests.bridge.upstreams import (
    Mosquitto, bridge_status, bridge_table, free_port, gateway, gateway_document, subscriber, wait_connected,
    wait_for,
)
from tests.control.api_helpers import Rest, api_error, ok
from tests.helpers import PahoClient, RoostThread, roost_document
from tests.tenant_helpers import Tenant, make_tenant


def test_rest_and_metrics(tmp_path: Path, mosquitto: Mosquitto) -> None:
    table = bridge_table(mosquitto.port, url=f"mqtt://gw:secret@127.0.0.1:{mosquitto.port}")
    with gateway(tmp_path / "gw", table) as gw:
        wait_connected(gw)
        publisher = PahoClient(gw.mqtt_port).connect()
        publisher.publish("sensors/a", b"1", qos=1)
        wait_for(lambda: bridge_status(gw)["counters"]["acknowledged"] == 1, what="acknowledged")
        publisher.disconnect()
        rest = Rest(gw)
        try:
            _, admin = rest.tenant(is_admin=True)
            _, tenant = rest.tenant()
            body = ok(admin.get("/api/v1/bridges"))
            [bridge] = body["data"]
            assert bridge["name"] == "cloud" and bridge["connected"] and bridge["state"] == "connected"
            assert bridge["url"] == f"mqtt://127.0.0.1:{mosquitto.port}"  # no credentials shown
            assert (bridge["connected_to"], bridge["stream"]) == (f"127.0.0.1:{mosquitto.port}", None)
            assert bridge["via"] and bridge["counters"]["looped"] == 0
            assert bridge["backlog"]["messages"] == 0 and bridge["counters"]["acknowledged"] == 1
            assert bridge["limits"]["max_messages"] >= 100_000
            api_error(tenant.get("/api/v1/bridges"), 403, "Forbidden")
            api_error(rest.api(None).get("/api/v1/bridges"), 401)
        finally:
            rest.close()
        text = httpx.get(f"http://127.0.0.1:{gw.http_port}/metrics").text
        assert 'roost_bridge_connected{bridge="cloud"} 1.0' in text
        assert 'roost_bridge_messages_total{bridge="cloud",event="acknowledged"} 1.0' in text
        assert 'roost_bridge_state{bridge="cloud",state="connected"} 1.0' in text


def test_rest_shows_the_nats_stream_and_the_server_connected_to(tmp_path: Path, nats_cluster: NatsCluster) -> None:
    """Issue 17: a NATS bridge shows its stream and the cluster's server it is connected to now; when that
    server stops, the link is made to another, and REST says which."""
    table = {"name": "fleet", "url": nats_cluster.urls, "stream": "TELEMETRY", "replicas": 3, "qos": 1,
             "client_id": "gw-1", "forward": ["sensors/#"], "remote_prefix": "site1/", "reconnect_min": 0.05,
             "reconnect_max": 0.5, "ack_timeout": 5}
    with gateway(tmp_path / "gw", table) as gw:
        wait_connected(gw, "fleet")
        rest = Rest(gw)
        try:
            _, admin = rest.tenant(is_admin=True)

            def listed() -> dict[str, Any]:
                [bridge] = ok(admin.get("/api/v1/bridges"))["data"]
                return bridge

            first = listed()
            node = _connected_node(nats_cluster, "gw-1")
            assert (first["protocol"], first["stream"], first["connected_to"]) == ("nats", "TELEMETRY", node.url)
            node.stop()
            second = wait_for(lambda: (b := listed())["connects"] >= 2 and b["connected"] and b,
                              what="the link made to another server")
            assert second["connected_to"] in nats_cluster.urls.split(",") and second["connected_to"] != node.url
            assert _connected_node(nats_cluster, "gw-1").url == second["connected_to"]
        finally:
            rest.close()


def test_bridged_user_namespace(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """`user = "alice"`: alice's namespace is bridged (her devices' topics, without the mount point); an
    anonymous client's message on the same topic is not; commands come down into her namespace."""
    folder = tmp_path / "gw"
    first = RoostThread(roost_document(folder)).start()
    try:
        make_tenant(first, "alice")
    finally:
        first.stop()
    upstream = subscriber(mosquitto.port, "site1/#", qos=1)
    with gateway(folder, bridge_table(mosquitto.port, user="alice")) as gw:
        wait_connected(gw)
        wait_for(lambda: bridge_status(gw)["subscribed"], what="SUBACK")
        assert gw.roost is not None and gw.roost.store is not None
        user = gw.run(gw.roost.store.users.get_by_name("alice"))
        alice = Tenant(gw, user)
        device = alice.client(alice.instance(), client_id="sensor").connect()
        device.subscribe("cmd/#", 1)
        PahoClient(gw.mqtt_port).connect().publish("sensors/t", b"anonymous", qos=1)
        device.publish("sensors/t", b"alice", qos=1)
        message = upstream.expect()
        assert (message.topic, message.payload) == ("site1/sensors/t", b"alice")
        PahoClient(mosquitto.port).connect().publish("site1/cmd/x", b"for alice", qos=1)
        message = device.expect()
        assert (message.topic, message.payload) == ("cmd/x", b"for alice")
        device.disconnect()
    upstream.disconnect()


def test_unknown_user_stops_start_up(tmp_path: Path) -> None:
    instance = RoostThread(gateway_document(tmp_path, bridge_table(free_port(), user="nobody")))
    with pytest.raises(ConfigError, match=r"bridge\[0\]\.user: there is no user named 'nobody'"):
        instance.start()
    instance.stop()
