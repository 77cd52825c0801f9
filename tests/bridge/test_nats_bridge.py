"""A Roost gateway (a real `roost serve` process) bridged into a real three-node JetStream cluster, R3 stream.

Faults while a publisher streams QoS 1 messages into the gateway: a NATS node stopped (one the gateway is
not connected to), the node it is connected to stopped, and `kill -9` of the gateway itself. After each,
every message the gateway acknowledged (PUBACK) is in the stream exactly once: counted by message id
(`Nats-Msg-Id`) and by payload, read back with nats-py. Then: commands published to the stream while the
gateway is down reach a local subscriber after it restarts. And the MQTT bridge (issue 16) into
nats-server's own MQTT listener, with the names on both sides as nats-server maps them.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import pytest

from bridge.nats_headers import MSG_ID
from bench.jetstream import stream_messages
from bench.nats_cluster import NatsCluster, NatsServer
from tests.bridge.nats_fixtures import nats_cluster, nats_mqtt  # noqa: F401 (fixtures)
from tests.bridge.test_faults import _gateway_process
from tests.bridge.upstreams import bridge_status, bridge_table, gateway, subscriber, wait_connected, wait_for
from tests.durability.process import ROOST, RoostProcess
from tests.helpers import PahoClient

pytestmark = pytest.mark.timeout(180)

STREAM = "TELEMETRY"
COUNT = 2000
CONNECTED = 'roost_bridge_connected{bridge="fleet"}'
BACKLOG = 'roost_bridge_backlog_messages{bridge="fleet"}'


def _nats_gateway(folder: Path, cluster: NatsCluster, **overrides: Any) -> RoostProcess:
    values: dict[str, Any] = {"name": "fleet", "url": cluster.urls, "stream": STREAM, "replicas": 3, "qos": 1,
                              "ack_timeout": 5, "duplicate_window": 600}
    values.update(overrides)
    return _gateway_process(folder, 0, **values)


async def _stream_contents(urls: str) -> list[tuple[str, bytes, str]]:
    """(subject, payload, message id) of every message in the stream, in order."""
    client = await nats.connect(urls.split(","))
    try:
        js = client.jetstream()
        total = (await js.stream_info(STREAM)).state.messages
        out: list[tuple[str, bytes, str]] = []
        if total:
            sub = await js.subscribe("site1.>", ordered_consumer=True, stream=STREAM)
            for _ in range(total):
                msg = await sub.next_msg(timeout=10)
                out.append((msg.subject, msg.data, (msg.headers or {}).get(MSG_ID, "")))
            await sub.unsubscribe()
        return out
    finally:
        await client.close()


def _stream_count(urls: str) -> int:
    return asyncio.run(stream_messages(urls, STREAM))


def _connected_node(cluster: NatsCluster, client_name: str) -> NatsServer:
    """The node whose /connz lists the gateway's connection (by the client name the link gives NATS)."""
    def find() -> NatsServer | None:
        for node in cluster.nodes:
            if not node.running:
                continue
            with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/connz", timeout=5) as response:
                connz = json.load(response)
            if any(c.get("name") == client_name for c in connz.get("connections") or ()):
                return node
        return None
    return wait_for(find, what=f"the node {client_name} is connected to")


class Publisher:
    """Publishes COUNT QoS 1 messages from a thread; `acknowledged` are those the gateway PUBACKed."""

    def __init__(self, port: int, client_id: str, start: int, count: int) -> None:
        self.client = PahoClient(port, client_id=client_id).connect()
        self.payloads = [f"m{i}".encode() for i in range(start, start + count)]
        self.acknowledged: list[bytes] = []
        self.gone = threading.Event()  # the gateway was killed: stop waiting for acknowledgements
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        infos = [(payload, self.client.publish("sensors/load", payload, qos=1, wait=False)) for payload in self.payloads]
        for payload, info in infos:
            while not info.is_published() and not self.gone.is_set():
                try:
                    info.wait_for_publish(0.2)  # paho's own wait, in slices so a kill is noticed
                except (RuntimeError, ValueError):
                    break  # not queued: the connection went
            if info.is_published():
                self.acknowledged.append(payload)

    def start(self) -> Publisher:
        self.thread.start()
        return self

    def join(self) -> list[bytes]:
        self.thread.join(timeout=120)
        assert not self.thread.is_alive(), "the publisher did not finish"
        self.client.close()
        return self.acknowledged


def _check_exactly_once(urls: str, acknowledged: list[bytes]) -> list[tuple[str, bytes, str]]:
    contents = asyncio.run(_stream_contents(urls))
    by_id = Counter(msg_id for _, _, msg_id in contents)
    by_payload = Counter(payload for _, payload, _ in contents)
    assert all(by_id.values()) and set(by_id.values()) == {1}, "a message id is in the stream twice"
    assert "" not in by_id, "a message without Nats-Msg-Id"
    missing = [p for p in acknowledged if by_payload[p] == 0]
    assert not missing, f"{len(missing)} acknowledged messages are not in the stream, e.g. {missing[:3]}"
    twice = [p for p, n in by_payload.items() if n > 1]
    assert not twice, f"{len(twice)} payloads stored twice, e.g. {twice[:3]}"
    assert {subject for subject, _, _ in contents} == {"site1.sensors.load"}
    return contents


@pytest.mark.parametrize("fault", ["stop_other_node", "stop_connected_node", "kill_9_roost"])
def test_every_acknowledged_message_is_in_the_stream_once(tmp_path: Path, nats_cluster: NatsCluster,
                                                          fault: str) -> None:
    gw = _nats_gateway(tmp_path / "gw", nats_cluster)
    try:
        gw.start()
        gw.wait_metric(CONNECTED, lambda v: v == 1, timeout=30)
        publisher = Publisher(gw.mqtt_port, "pub-a", 0, COUNT).start()
        # Mid-stream: part of it is in the stream, part is not.
        wait_for(lambda: _stream_count(nats_cluster.urls) >= COUNT // 4, timeout=60, what="a quarter in the stream")
        if fault == "kill_9_roost":
            gw.kill()
            publisher.gone.set()
            at_kill = _stream_count(nats_cluster.urls)
            acknowledged = publisher.join()
            gw.start()
            acknowledged += Publisher(gw.mqtt_port, "pub-b", COUNT, 200).start().join()  # and after the restart
        else:
            connected = _connected_node(nats_cluster, "gw-1")
            victim = connected if fault == "stop_connected_node" else next(
                node for node in nats_cluster.nodes if node is not connected)
            victim.stop()
            at_kill = _stream_count(nats_cluster.urls)
            acknowledged = publisher.join()
            if fault == "stop_connected_node":  # the link was lost and made again, to another node
                gw.wait_metric('roost_bridge_connects_total{bridge="fleet"}', lambda v: v >= 2)
        # Mid-stream: the fault came while messages acknowledged after it were still to be forwarded (or,
        # for the kill, while the publisher had not finished).
        assert at_kill < (COUNT if fault == "kill_9_roost" else len(acknowledged)), "the fault was not mid-stream"
        gw.wait_metric(BACKLOG, lambda v: v == 0, timeout=90)
        contents = _check_exactly_once(nats_cluster.urls, acknowledged)
        resent = gw.metrics()['roost_bridge_messages_total{bridge="fleet",event="resent"}']
        print(f"{fault}: {len(acknowledged)} acknowledged, {len(contents)} in the stream, {int(resent)} resent, "
              f"{at_kill} stored when the fault came")  # shown with -s
    finally:
        gw.kill()


def test_commands_sent_while_roost_is_down_arrive_after_it_restarts(tmp_path: Path, nats_cluster: NatsCluster) -> None:
    gw = _nats_gateway(tmp_path / "gw", nats_cluster, subscribe=["cmd/#"])
    try:
        gw.start()
        gw.wait_metric(CONNECTED, lambda v: v == 1, timeout=30)
        # A persistent session (3.1.1 clean session 0) holds what comes down while the app is away.
        app = subscriber(gw.mqtt_port, "cmd/#", qos=1, version=4, client_id="app", clean=False)
        app.close()
        gw.wait_committed()  # the app's session and subscription are on disk before the kill
        gw.kill()

        async def send() -> None:
            client = await nats.connect(nats_cluster.urls.split(","))
            js = client.jetstream()
            for index in range(20):
                await js.publish(f"site1.cmd.light{index}", f"on {index}".encode(), headers={"Content-Type": "text/plain"})
            await client.close()

        asyncio.run(send())
        gw.start()
        app = PahoClient(gw.mqtt_port, client_id="app", version=4, clean=False).connect()
        received = sorted((app.expect(timeout=30).topic for _ in range(20)), key=lambda t: int(t[len("cmd/light"):]))
        assert received == [f"cmd/light{index}" for index in range(20)]
        app.close()
        gw.wait_metric('roost_bridge_commands_total{bridge="fleet"}', lambda v: v >= 20)
    finally:
        gw.kill()


def test_a_bad_nats_key_stops_start_up_naming_it(tmp_path: Path, nats_cluster: NatsCluster) -> None:
    gw = _nats_gateway(tmp_path / "gw", nats_cluster, replicas=7)
    run = subprocess.run([ROOST, "serve", "--config", str(gw.config)], capture_output=True, timeout=60)
    assert run.returncode != 0
    assert b"bridge[0].replicas: expected an integer from 1 to 5, got 7" in run.stderr


def test_mqtt_bridge_into_nats_servers_own_mqtt_listener(tmp_path: Path, nats_mqtt: NatsServer) -> None:
    """Interop: the MQTT link (3.1.1, which is what nats-server speaks) into nats-server's MQTT listener.
    A NATS client sees the forwarded topic under the subject nats-server maps it to, and what a NATS
    client publishes comes down as a command."""
    table = bridge_table(nats_mqtt.mqtt_port, protocol="3.1.1", try_private=False, qos=1,
                         forward=["sensors/#"], subscribe=["cmd/#"])

    async def main() -> None:
        client = await nats.connect(nats_mqtt.url)
        got: asyncio.Queue[nats.aio.msg.Msg] = asyncio.Queue()
        await client.subscribe("site1.sensors.>", cb=got.put)
        await client.flush()
        with gateway(tmp_path / "gw", table) as gw:
            await asyncio.to_thread(wait_connected, gw)
            local = await asyncio.to_thread(subscriber, gw.mqtt_port, "cmd/#", 1)
            publisher = await asyncio.to_thread(lambda: PahoClient(gw.mqtt_port, client_id="dev").connect())
            await asyncio.to_thread(publisher.publish, "sensors/room.1/t", b"21.5", 1)
            msg = await asyncio.wait_for(got.get(), 20)
            assert (msg.subject, msg.data) == ("site1.sensors.room//1.t", b"21.5")  # '.' escaped as nats-server does
            # The other way: wait until nats-server has the bridge's subscription (its SUBACK came).
            await asyncio.to_thread(wait_for, lambda: bridge_status(gw)["subscribed"], 20.0, "the bridge subscribed")
            await client.publish("site1.cmd.light", b"on")
            await client.flush()
            received = await asyncio.to_thread(local.expect, 20)
            assert (received.topic, received.payload) == ("cmd/light", b"on")
            local.close()
            publisher.close()
        await client.close()

    asyncio.run(main())
