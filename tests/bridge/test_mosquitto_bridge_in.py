"""Debian's mosquitto bridging *into* Roost with `try_private true` (the bridge bit, protocol level 0x84):
Roost accepts it and treats the client as a bridge, as Mosquitto does (docs/architecture.md): no echo of
its own messages back to it (No Local), retained flags as published (Retain As Published)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.bridge.upstreams import Mosquitto, subscriber, wait_for
from tests.helpers import PahoClient, RoostThread, roost_document, sync


def _bridge_session(roost: RoostThread, client_id: str) -> dict[str, Any] | None:
    """The subscriptions Roost holds for `client_id`'s session, by filter: (no local, retain as published)."""
    assert roost.roost is not None
    broker = roost.roost.broker

    def read() -> dict[str, Any] | None:
        session = next((s for key, s in broker.sessions.items() if key.endswith(client_id)), None)
        if session is None or client_id not in {c.client.client_id for c in broker.connections.values()
                                                if getattr(c, "client", None) is not None}:
            return None
        return {f: (r.no_local, r.retain_as_published) for f, r in session.subscriptions.items()}

    return roost.call(read)


def test_mosquitto_bridge_with_try_private_into_roost(tmp_path: Path) -> None:
    roost = RoostThread(roost_document(tmp_path / "roost")).start()
    edge = Mosquitto(tmp_path / "edge", extra="\n".join([
        "connection roost",
        f"address 127.0.0.1:{roost.mqtt_port}",
        "remote_clientid edge-bridge",
        "bridge_protocol_version mqttv311",
        "try_private true",
        "cleansession false",
        "notifications false",
        "restart_timeout 1",
        "topic sensors/# both 1",
    ]) + "\n").start()
    try:
        # Connected with the bridge bit: its subscription has No Local and Retain As Published. (Refused with
        # return code 1, Mosquitto would have connected again without the bit, and both would be False.)
        subscriptions = wait_for(lambda: _bridge_session(roost, "edge-bridge"), what="the bridge's SUBSCRIBE")
        assert subscriptions == {"sensors/#": (True, True)}
        at_roost = subscriber(roost.mqtt_port, "sensors/#", qos=1)
        at_edge = subscriber(edge.port, "sensors/#", qos=1, version=4)
        edge_pub = PahoClient(edge.port, version=4).connect()
        roost_pub = PahoClient(roost.mqtt_port).connect()

        edge_pub.publish("sensors/edge", b"from the edge", qos=1)
        message = at_roost.expect()
        assert (message.topic, message.payload) == ("sensors/edge", b"from the edge")
        # A marker published at Roost after that reaches the edge behind any echo Roost would have sent.
        sync(roost_pub, at_edge, "sensors/marker")
        assert [m.topic for m in _drain(at_edge)] == ["sensors/edge"]  # once: not echoed back by Roost

        # Retain as published: a retained message from Roost stays retained at the edge (a plain 3.1.1
        # subscription would get it with RETAIN 0 [MQTT-3.3.1-9], and Mosquitto would not keep it).
        roost_pub.publish("sensors/config", b"v2", qos=1, retain=True)
        sync(roost_pub, at_edge, "sensors/marker")
        late = subscriber(edge.port, "sensors/config", qos=1, version=4)
        retained = late.expect()
        assert (retained.payload, retained.retain) == (b"v2", True)
        for client in (at_roost, at_edge, edge_pub, roost_pub, late):
            client.disconnect()
    finally:
        edge.kill()
        roost.stop()


def _drain(client: PahoClient) -> list[Any]:
    """What `sync` left queued (it consumed the marker): everything that arrived before the marker."""
    messages = []
    while not client.messages.empty():
        messages.append(client.messages.get_nowait())
    return messages
