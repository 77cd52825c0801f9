"""The NATS link against a real three-node JetStream cluster, driven by a recording handler (the bridge's
side is tested with Roost in tests/bridge/test_nats_bridge.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import StreamConfig

from bridge.link import Command
from bridge.nats_config import NatsSettings
from bridge.nats_headers import MSG_ID
from bridge.nats_link import NATSLink
from broker.codec import Properties
from storage.outbox import OutboxEntry
from bench.nats_cluster import NatsCluster, NatsServer
from tests.bridge.nats_fixtures import nats_cluster  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(90)


@dataclass
class LinkConfig:
    """The shared bridge keys a link reads (bridge.config.BridgeConfig has them all)."""

    name: str = "fleet"
    client_id: str = "gw-1"
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    forward: tuple[str, ...] = ("sensors/#",)
    subscribe: tuple[str, ...] = ("cmd/#",)
    remote_prefix: str = "site1/"
    qos: int = 1
    keep_alive: int = 5
    inflight: int = 64
    ack_timeout: float = 20.0  # a loaded 2-core machine running three servers can be slow to PubAck
    connect_timeout: float = 5.0
    qos0_queue: int = 1000


@dataclass
class Recorder:
    acked: list[tuple[int, int]] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    hold: bool = False  # do not call done() (the command stays unacknowledged upstream)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def acked_entry(self, entry: OutboxEntry, refused: int) -> None:
        self.acked.append((entry.seq, refused))
        self.event.set()

    def received(self, entry: OutboxEntry) -> None:
        raise AssertionError("JetStream has no PUBREC")

    def command(self, command: Command, done: Callable[[], None]) -> bool:
        self.commands.append(command)
        if not self.hold:
            done()
        self.event.set()
        return True

    def command_done(self, ref: int) -> None:
        raise AssertionError("no QoS 2 refs on NATS")

    async def wait(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out: acked={len(self.acked)} commands={len(self.commands)}"
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), remaining)
            except asyncio.TimeoutError:
                pass


class Handler:
    def __init__(self, recorder: Recorder) -> None:
        self.acked = recorder.acked_entry
        self.received = recorder.received
        self.command = recorder.command
        self.command_done = recorder.command_done


def entry(seq: int, topic: str = "sensors/t", payload: bytes = b"x", qos: int = 1,
          properties: Properties = Properties(), retain: bool = False) -> OutboxEntry:
    return OutboxEntry(seq, topic, payload, qos, retain, properties, None, 1_700_000_000.0 + seq)


async def stream_ids(urls: str, stream: str = "TELEMETRY", subject: str = "site1.>") -> dict[str, int]:
    """Every message id in the stream and how many times it is there (an ordered consumer reads all)."""
    client = await nats.connect(urls.split(","))
    try:
        js = client.jetstream()
        info = await js.stream_info(stream)
        counts: dict[str, int] = {}
        if info.state.messages == 0:
            return counts
        sub = await js.subscribe(subject, ordered_consumer=True, stream=stream)
        for _ in range(info.state.messages):
            msg = await sub.next_msg(timeout=10)
            msg_id = (msg.headers or {}).get(MSG_ID, "")
            counts[msg_id] = counts.get(msg_id, 0) + 1
        await sub.unsubscribe()
        return counts
    finally:
        await client.close()


def settings(cluster: NatsCluster, **overrides: Any) -> NatsSettings:
    values: dict[str, Any] = {"servers": tuple(cluster.urls.split(",")), "tls": False, "stream": "TELEMETRY",
                              "replicas": 3, "duplicate_window": 600.0, "consumer": "roost-fleet"}
    values.update(overrides)
    return NatsSettings(**values)


async def test_forward_creates_the_r3_stream_and_every_message_is_stored_once(nats_cluster: NatsCluster) -> None:
    recorder = Recorder()
    link = NATSLink(LinkConfig(), settings(nats_cluster))
    await link.connect(Handler(recorder))  # type: ignore[arg-type]
    assert link.stream_created
    entries = [entry(seq, properties=Properties(content_type="text/plain", user_properties=(("unit", "C"),)))
               for seq in range(1, 201)]
    for item in entries:
        link.send(item)
    await recorder.wait(lambda: len(recorder.acked) == 200)
    assert all(refused == 0 for _, refused in recorder.acked)
    # The same entries again, as after a lost PubAck: the stream's duplicate window drops every copy.
    recorder.acked.clear()
    for item in entries:
        item.dup = True
        link.send(item)
    await recorder.wait(lambda: len(recorder.acked) == 200)
    link.close("test over")
    assert await link.closed() == "test over"
    counts = await stream_ids(nats_cluster.urls)
    assert len(counts) == 200 and set(counts.values()) == {1}
    client = await nats.connect(nats_cluster.urls.split(","))
    info = await client.jetstream().stream_info("TELEMETRY")
    msg = await client.jetstream().get_msg("TELEMETRY", 1)
    await client.close()
    assert info.config.num_replicas == 3 and info.config.subjects == ["site1.>"]
    assert msg.subject == "site1.sensors.t"
    assert msg.headers is not None and msg.headers["Content-Type"] == "text/plain" and msg.headers["unit"] == "C"


async def test_commands_come_down_from_a_durable_consumer_and_wait_while_offline(nats_cluster: NatsCluster) -> None:
    recorder = Recorder()
    link = NATSLink(LinkConfig(subscribe=("cmd/#",), ack_timeout=5.0), settings(nats_cluster))  # ack_wait 5 s
    assert await link.connect(Handler(recorder)) is False  # type: ignore[arg-type]  (a new consumer)
    client = await nats.connect(nats_cluster.urls.split(","))
    js = client.jetstream()
    await js.publish("site1.cmd.light", b"on", headers={"Content-Type": "text/plain", "who": "cloud"})
    await js.publish("site1.cmd", b"all")  # cmd/# matches cmd too [MQTT-4.7.1-2]
    await js.publish("site1.sensors.t", b"not a command")
    await recorder.wait(lambda: len(recorder.commands) == 2)
    assert [(c.topic, c.payload) for c in recorder.commands] == [("cmd/light", b"on"), ("cmd", b"all")]
    assert recorder.commands[0].properties.content_type == "text/plain"
    assert recorder.commands[0].properties.user_properties == (("who", "cloud"),)
    link.close("going offline")
    await link.closed()
    # While the gateway is away, commands wait in the stream for its durable consumer.
    for index in range(5):
        await js.publish(f"site1.cmd.n{index}", str(index).encode())
    recorder.commands.clear()
    wanted = {f"cmd/n{i}" for i in range(5)}
    assert await link.connect(Handler(recorder)) is True  # type: ignore[arg-type]  (the consumer was kept)
    # A command the consumer's leader handed to a pull request of the closed connection comes again after
    # ack_wait (ack_timeout, 5 s here): a wait of several ack_waits.
    try:
        await recorder.wait(lambda: wanted <= {c.topic for c in recorder.commands}, timeout=45)
    except AssertionError as exc:  # the consumer's view, for the evidence (seen once, under load)
        info = await js.consumer_info("TELEMETRY", "roost-fleet")
        raise AssertionError(
            f"{exc}; consumer: ack pending {info.num_ack_pending}, redelivered {info.num_redelivered}, pending "
            f"{info.num_pending}, delivered {info.delivered}, ack floor {info.ack_floor}; link up {link.up}; "
            f"came down {[c.topic for c in recorder.commands]}"
        ) from exc
    # Every one, but not necessarily in order: a pull request of the closed connection may still have
    # been open on the consumer's leader, which then redelivers that message after ack_wait. Delivery is
    # at least once: a command of the first phase whose ack was still on the way when the link closed may
    # come again (seen under load), but nothing that was never published.
    topics = [c.topic for c in recorder.commands]
    assert wanted <= set(topics) and set(topics) <= wanted | {"cmd/light", "cmd"}, topics
    link.close("done")
    await client.close()


async def test_a_forwarded_message_that_matches_subscribe_does_not_come_back(nats_cluster: NatsCluster) -> None:
    recorder = Recorder()
    link = NATSLink(LinkConfig(forward=("#",), subscribe=("cmd/#",)), settings(nats_cluster))
    await link.connect(Handler(recorder))  # type: ignore[arg-type]
    link.send(entry(1, topic="cmd/echo"))
    await recorder.wait(lambda: len(recorder.acked) == 1)
    client = await nats.connect(nats_cluster.urls.split(","))
    await client.jetstream().publish("site1.cmd.real", b"from the cloud")
    await recorder.wait(lambda: len(recorder.commands) == 1)
    assert recorder.commands[0].topic == "cmd/real"  # cmd/echo (ours) was acknowledged, not brought down
    info = await client.jetstream().consumer_info("TELEMETRY", "roost-fleet")
    await client.close()
    link.close("done")
    assert info.num_ack_pending <= 1


async def test_a_topic_with_no_subject_is_refused_not_retried(nats_cluster: NatsCluster) -> None:
    recorder = Recorder()
    link = NATSLink(LinkConfig(subscribe=()), settings(nats_cluster))
    await link.connect(Handler(recorder))  # type: ignore[arg-type]
    link.send(entry(1, topic="sensors/a b"))
    await recorder.wait(lambda: len(recorder.acked) == 1)
    assert recorder.acked == [(1, 0x90)]
    link.close("done")


async def test_no_stream_for_the_subject_closes_the_link(nats_cluster: NatsCluster) -> None:
    client = await nats.connect(nats_cluster.urls.split(","))
    await client.jetstream().add_stream(StreamConfig(name="OTHER", subjects=["elsewhere.>"], num_replicas=1))
    await client.close()
    recorder = Recorder()
    link = NATSLink(LinkConfig(subscribe=()), settings(nats_cluster, stream="OTHER"))
    await link.connect(Handler(recorder))  # type: ignore[arg-type]
    link.send(entry(1))
    reason = await asyncio.wait_for(link.closed(), 20)
    assert "no JetStream stream answered" in reason and recorder.acked == []


async def test_cannot_connect_names_every_server(tmp_path: Path) -> None:
    link = NATSLink(LinkConfig(connect_timeout=1.0), NatsSettings(
        servers=("nats://127.0.0.1:1", "nats://127.0.0.1:2"), tls=False, stream="S"))
    with pytest.raises(Exception, match="127.0.0.1:1.*127.0.0.1:2|127.0.0.1:2.*127.0.0.1:1"):
        await link.connect(Handler(Recorder()))  # type: ignore[arg-type]


async def test_qos0_goes_as_core_nats_and_comes_down_from_core_subscriptions(nats_cluster: NatsCluster) -> None:
    recorder = Recorder()
    link = NATSLink(LinkConfig(qos=0, subscribe=("cmd/+",)), settings(nats_cluster))
    assert await link.connect(Handler(recorder)) is False  # type: ignore[arg-type]  (nothing kept while away)
    assert link.send_qos0("sensors/q0", b"zero", False, Properties(content_type="text/plain"))
    assert link.send_qos0("sensors/a b", b"no subject", False, Properties())  # taken and dropped
    client = await nats.connect(nats_cluster.urls.split(","))
    js = client.jetstream()
    await client.publish("site1.cmd.light", b"on")  # core NATS, no stream acknowledgement
    await recorder.wait(lambda: len(recorder.commands) == 1)
    assert (recorder.commands[0].topic, recorder.commands[0].qos) == ("cmd/light", 0)
    # The stream stores a QoS 0 message too (its subject is under the stream's), without a message id.
    deadline = time.monotonic() + 10
    while (await js.stream_info("TELEMETRY")).state.messages < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # core publishes have no acknowledgement to wait on
    # Which of the two the stream stored first is not ours to say: they came over two connections.
    stored = [await js.get_msg("TELEMETRY", seq) for seq in (1, 2)]
    [first] = [m for m in stored if m.subject == "site1.sensors.q0"]
    assert first.data == b"zero"
    assert first.headers is not None and MSG_ID not in first.headers
    link.close("done")
    await client.close()
