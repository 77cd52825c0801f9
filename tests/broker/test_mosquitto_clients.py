"""Debian's mosquitto_pub and mosquitto_sub (MQTT 3.1, 3.1.1 and 5) against a running Roost.

mosquitto_sub runs as a subprocess whose lines are read on a thread. Every run is bounded twice: `-C n`
makes it exit after n messages and `-W` after a few seconds whatever happens, and the test waits for it
with a timeout. Readiness is awaited, never slept for: before a mosquitto_sub starts, a retained marker is
published on a topic of its own; the subscriber also subscribes to it, and once it prints the marker its
subscriptions are active (one SUBSCRIBE carries all its filters, and retained messages follow the SUBACK).
"""

from __future__ import annotations

import itertools
import queue
import subprocess
import threading

import pytest

from tests.helpers import TIMEOUT, paho_properties

VERSIONS = ["31", "311", "5"]
FORMAT = "%t|%q|%r|%p"  # topic | QoS | RETAIN | payload
_markers = itertools.count()

pytestmark = pytest.mark.usefixtures("mosquitto_clients")


class MosquittoSub:
    """A running mosquitto_sub whose output lines can be awaited."""

    def __init__(self, port: int, version: str, topics: list[str], *options: str) -> None:
        args = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-V", version, "-W", "10"]
        for topic in topics:
            args += ["-t", topic]
        self.proc = subprocess.Popen([*args, *options], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self) -> str:
        try:
            line = self.lines.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError("mosquitto_sub printed nothing in time") from None
        if line is None:
            raise AssertionError(f"mosquitto_sub exited: {self.finish()}")
        return line

    def finish(self) -> tuple[int, list[str], str]:
        """Wait for the exit; return the exit code, the lines not yet read and stderr."""
        try:
            self.proc.wait(TIMEOUT * 2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(TIMEOUT)
        rest = []
        while not self.lines.empty():
            line = self.lines.get_nowait()
            if line is not None:
                rest.append(line)
        stderr = self.proc.stderr.read() if self.proc.stderr is not None else ""
        return self.proc.returncode, rest, stderr

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def mosquitto_sub(roost):
    """Start mosquitto_sub processes against `roost`; all are stopped after the test."""
    started: list[MosquittoSub] = []

    def start(version: str, topics: list[str], *options: str) -> MosquittoSub:
        sub = MosquittoSub(roost.mqtt_port, version, topics, *options)
        started.append(sub)
        return sub

    yield start
    for sub in started:
        sub.stop()


def mosquitto_pub(port: int, version: str, topic: str, *options: str, payload: str | None = "") -> None:
    args = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-V", version, "-t", topic, *options]
    args += ["-n"] if payload is None else ["-m", payload]
    done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT * 2)
    assert done.returncode == 0, done.stderr


def ready_subscriber(client_factory, mosquitto_sub, version: str, topics: list[str], *options: str) -> MosquittoSub:
    """A mosquitto_sub (format FORMAT) whose subscriptions are active: it has printed its retained marker.
    `-C` counts the marker as one message. A `#` among `topics` covers the marker's topic already."""
    topic = f"ready/{next(_markers)}"
    client_factory(f"marker-{topic}", version=5).publish(topic, b"ready", qos=1, retain=True)
    marker_filter = [] if "#" in topics else [topic]
    sub = mosquitto_sub(version, [*marker_filter, *topics], "-F", FORMAT, *options)
    name, _qos, retain, payload = sub.line().split("|")
    assert (name, retain, payload) == (topic, "1", "ready")
    return sub


@pytest.mark.parametrize("version", VERSIONS)
def test_mosquitto_pub_to_mosquitto_sub_at_each_qos(roost, client_factory, mosquitto_sub, version: str) -> None:
    """mosquitto_pub at QoS 0/1/2 to mosquitto_sub subscribed at QoS 2 and at QoS 0: each message arrives
    once, at min(published, granted) QoS [MQTT-3.8.4-8], with RETAIN 0; `-C` ends each subscriber."""
    high = ready_subscriber(client_factory, mosquitto_sub, version, ["mq/#"], "-q", "2", "-C", "4")
    low = ready_subscriber(client_factory, mosquitto_sub, version, ["mq/#"], "-q", "0", "-C", "4")
    for qos in (0, 1, 2):
        mosquitto_pub(roost.mqtt_port, version, f"mq/{qos}", "-q", str(qos), payload=f"at qos {qos}")
    for sub, granted in ((high, 2), (low, 0)):
        rc, lines, stderr = sub.finish()
        assert rc == 0, stderr
        assert sorted(lines) == [f"mq/{q}|{min(q, granted)}|0|at qos {q}" for q in (0, 1, 2)]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_with_mosquitto_clients(roost, client_factory, mosquitto_sub, version: str) -> None:
    """`mosquitto_pub -r` stores a retained message that a later mosquitto_sub gets with RETAIN 1 at its
    QoS [MQTT-3.3.1-5]; `mosquitto_pub -r -n` (empty payload) deletes it [MQTT-3.3.1-6]."""
    port = roost.mqtt_port
    mosquitto_pub(port, version, "mret/t", "-r", "-q", "1", payload="kept")
    sub = mosquitto_sub(version, ["mret/t"], "-q", "2", "-C", "1", "-F", FORMAT)
    rc, lines, stderr = sub.finish()
    assert (rc, lines) == (0, ["mret/t|1|1|kept"]), stderr

    mosquitto_pub(port, version, "mret/t", "-r", "-q", "1", payload=None)
    mosquitto_pub(port, version, "mret/after", "-r", "-q", "1", payload="after")
    # Retained messages are sent filter by filter in SUBSCRIBE order: had mret/t kept one, it would come first.
    sub = mosquitto_sub(version, ["mret/t", "mret/after"], "-q", "1", "-C", "1", "-F", FORMAT)
    rc, lines, stderr = sub.finish()
    assert (rc, lines) == (0, ["mret/after|1|1|after"]), stderr


@pytest.mark.parametrize("version", VERSIONS)
def test_sys_broker_version_readable(mosquitto_sub, version: str) -> None:
    """`mosquitto_sub -t '$SYS/broker/version' -C 1` reads the broker's retained version (verbose: topic,
    space, payload)."""
    sub = mosquitto_sub(version, ["$SYS/broker/version"], "-C", "1", "-v")
    rc, lines, stderr = sub.finish()
    assert rc == 0, stderr
    assert len(lines) == 1 and lines[0].startswith("$SYS/broker/version roost "), lines


@pytest.mark.parametrize("version", ["311", "5"])
def test_hash_subscriber_sees_no_sys_topics(client_factory, mosquitto_sub, version: str) -> None:
    """mosquitto_sub -t '#' gets the ordinary retained marker and a later message, but none of the broker's
    retained $SYS topics in between [MQTT-4.7.2-1]."""
    sub = ready_subscriber(client_factory, mosquitto_sub, version, ["#"], "-C", "2")
    client_factory("pub", version=5).publish("after/all", b"end", qos=1)
    rc, lines, stderr = sub.finish()
    assert (rc, lines) == (0, ["after/all|0|0|end"]), stderr


def test_paho_to_mosquitto_sub_v5_and_mosquitto_pub_properties_to_paho(roost, client_factory, mosquitto_sub) -> None:
    """Across client libraries in v5: paho's QoS 2 message reaches mosquitto_sub; mosquitto_pub's
    user property and content type (`-D publish ...`) reach paho unaltered [MQTT-3.3.2-17][MQTT-3.3.2-20]."""
    sub = ready_subscriber(client_factory, mosquitto_sub, "5", ["mix/#"], "-q", "2", "-C", "2")
    client_factory("pub", version=5).publish(
        "mix/from-paho", b"hello", qos=2, properties=paho_properties(UserProperty=[("k", "v")])
    )
    rc, lines, stderr = sub.finish()
    assert (rc, lines) == (0, ["mix/from-paho|2|0|hello"]), stderr

    paho_sub = client_factory("paho-sub", version=5)
    paho_sub.subscribe("mix/#", qos=2)
    mosquitto_pub(
        roost.mqtt_port, "5", "mix/from-mosquitto", "-q", "2",
        "-D", "publish", "user-property", "key", "value",
        "-D", "publish", "content-type", "text/plain",
        payload="hi",
    )
    message = paho_sub.expect()
    assert (message.topic, message.payload, message.qos) == ("mix/from-mosquitto", b"hi", 2)
    assert message.properties.UserProperty == [("key", "value")]
    assert message.properties.ContentType == "text/plain"


def test_mosquitto_pub_v311_to_paho_v5_and_back(roost, client_factory, mosquitto_sub) -> None:
    """A 3.1.1 mosquitto_pub reaches a v5 paho subscriber, and a v5 paho publisher a 3.1 mosquitto_sub."""
    paho_sub = client_factory("paho-sub", version=5)
    paho_sub.subscribe("x/#", qos=1)
    mosquitto_pub(roost.mqtt_port, "311", "x/one", "-q", "1", payload="311")
    message = paho_sub.expect()
    assert (message.topic, message.payload, message.qos) == ("x/one", b"311", 1)

    sub = ready_subscriber(client_factory, mosquitto_sub, "31", ["x/#"], "-q", "1", "-C", "2")
    client_factory("pub", version=5).publish("x/two", b"v5", qos=1)
    rc, lines, stderr = sub.finish()
    assert (rc, lines) == (0, ["x/two|1|0|v5"]), stderr
