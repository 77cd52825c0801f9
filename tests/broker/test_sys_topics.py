"""`$SYS/broker/...`: the broker describing itself as retained messages, read like any topic.

Topics starting with `$` are not matched by a filter starting with a wildcard [MQTT-4.7.2-1], and clients cannot
publish to `$SYS` (v5 PUBACK 0x87). The broker runs with `sys_interval=1`, so a test that waits for a fresh
value lets at most about a second of real time pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broker.codec import Puback, Publish
from broker.settings import VERSION
from tests.helpers import PahoClient, RawClient, Received, RoostThread, sync

TOPICS = (
    "version",
    "uptime",
    "clients/connected",
    "messages/received",
    "messages/sent",
    "bytes/received",
    "bytes/sent",
)
COUNTERS = ("clients/connected", "messages/received", "messages/sent", "bytes/received", "bytes/sent")


@pytest.fixture
def sys_roost(make_roost: Callable[..., RoostThread]) -> RoostThread:
    # The ACL is spelled out so the test does not depend on the default anonymous ACL.
    return make_roost(sys_interval=1, anonymous={"publish": ["#"], "subscribe": ["#", "$SYS/#"]})


@pytest.fixture
def clients(sys_roost: RoostThread) -> Iterator[Callable[..., PahoClient]]:
    made: list[PahoClient] = []

    def factory(client_id: str, version: int = 5, **kwargs: Any) -> PahoClient:
        client = PahoClient(sys_roost.mqtt_port, client_id=client_id, version=version, **kwargs)
        made.append(client)
        return client.connect()

    yield factory
    for client in made:
        client.client.disconnect()
        client.client.loop_stop()


def collect(client: PahoClient, until: Callable[[dict[str, Received]], bool], timeout: float = 4.0) -> dict[str, Received]:
    """Latest message per $SYS/broker/ name, read until `until(latest)` holds; AssertionError on timeout."""
    latest: dict[str, Received] = {}
    deadline = time.monotonic() + timeout
    while not until(latest):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out; got {sorted(latest)}"
        message = client.expect(timeout=remaining)
        if message.topic.startswith("$SYS/broker/"):
            latest[message.topic.removeprefix("$SYS/broker/")] = message
    return latest


@pytest.mark.parametrize("version", [4, 5])
def test_sys_topics_are_published_and_retained(clients, version: int) -> None:
    """A new subscriber gets every value at once, as retained messages (RETAIN 1 [MQTT-3.3.1-8])."""
    sub = clients("sys-reader", version=version)
    sub.subscribe("$SYS/broker/#", qos=0)
    latest = collect(sub, lambda got: all(name in got for name in TOPICS))
    for name in TOPICS:
        assert latest[name].retain, name
    assert latest["version"].payload.decode() == f"roost {VERSION}"
    seconds, unit = latest["uptime"].payload.decode().split()
    assert int(seconds) >= 0 and unit == "seconds"
    for name in COUNTERS:
        assert int(latest[name].payload) >= 0, name


def test_sys_values_follow_the_broker(clients) -> None:
    """clients/connected counts connected clients; messages and bytes counters grow with traffic."""
    sub = clients("sys-reader")
    sub.subscribe("$SYS/broker/#", qos=0)
    first = collect(sub, lambda got: all(name in got for name in TOPICS))
    others = [clients(f"extra-{i}", version=4) for i in range(2)]
    for i in range(5):
        others[0].publish("traffic/a", b"x" * 100, qos=1)
    before = {name: int(first[name].payload) for name in COUNTERS}

    def updated(got: dict[str, Received]) -> bool:
        return all(name in got for name in COUNTERS) and int(got["clients/connected"].payload) == 3 and int(
            got["messages/received"].payload
        ) >= before["messages/received"] + 5

    fresh = collect(sub, updated)  # the next periodic update, about a second later
    assert not fresh["clients/connected"].retain  # a live delivery, not one sent because of a new subscription
    assert int(fresh["bytes/received"].payload) > before["bytes/received"] + 500
    assert int(fresh["bytes/sent"].payload) > before["bytes/sent"]
    assert int(fresh["messages/sent"].payload) > before["messages/sent"]


def test_sys_not_matched_by_leading_wildcards(clients) -> None:
    """`#` and `+/...` do not match `$SYS/...` [MQTT-4.7.2-1]: neither retained nor live $SYS messages
    reach such subscriptions."""
    wild = clients("wild")
    wild.subscribe("#", qos=0)
    wild.subscribe("+/broker/#", qos=0)
    wild.subscribe("+/+/uptime", qos=0)
    watcher = clients("watcher")
    watcher.subscribe("$SYS/broker/uptime", qos=0)
    assert watcher.expect().retain  # the retained value, on subscribing
    live = watcher.expect(timeout=3)  # a live update: routed to every matching subscription at the same time
    assert live.topic == "$SYS/broker/uptime" and not live.retain
    pub = clients("pub")
    sync(pub, wild)
    seen = list(wild.messages.queue)
    assert all(not m.topic.startswith("$") for m in seen), seen


def test_v5_client_cannot_publish_to_sys(sys_roost: RoostThread, clients) -> None:
    """Clients cannot publish to $SYS: v5 PUBACK 0x87 Not authorized; the message reaches nobody and the
    retained value stays the broker's."""
    sub = clients("sys-reader")
    sub.subscribe("$SYS/#", qos=1)
    raw = RawClient(sys_roost.mqtt_port, 5)
    assert raw.connect("intruder").reason_code == 0
    raw.send(Publish("$SYS/broker/version", b"forged", qos=1, packet_id=1, retain=True))
    ack = raw.receive()
    assert isinstance(ack, Puback) and ack.reason_code == 0x87
    raw.send(Publish("$SYS/custom", b"forged", qos=0))
    _assert_forgery_invisible(sys_roost, sub, clients)
    raw.close()


def test_v311_client_cannot_publish_to_sys(sys_roost: RoostThread, clients) -> None:
    """3.1.1 gets a positive PUBACK, but the message is not delivered [MQTT-3.3.5-2]."""
    sub = clients("sys-reader")
    sub.subscribe("$SYS/#", qos=1)
    raw = RawClient(sys_roost.mqtt_port, 4)
    assert raw.connect("intruder").reason_code == 0
    raw.send(Publish("$SYS/broker/version", b"forged", qos=1, packet_id=1, retain=True))
    ack = raw.receive()
    assert isinstance(ack, Puback) and ack.reason_code == 0
    _assert_forgery_invisible(sys_roost, sub, clients)
    raw.close()


def _assert_forgery_invisible(roost: RoostThread, sub: PahoClient, clients) -> None:
    sub.subscribe("sync/marker", qos=1)
    sync(clients("pub"), sub)
    seen = list(sub.messages.queue)
    assert all(m.payload != b"forged" for m in seen), seen
    # A new subscriber gets the broker's own retained value.
    late = clients("late")
    late.subscribe("$SYS/broker/version", qos=0)
    assert late.expect().payload.decode() == f"roost {VERSION}"


def test_sys_disabled_with_interval_0(make_roost: Callable[..., RoostThread]) -> None:
    """sys_interval = 0 disables $SYS: nothing is retained there."""
    roost = make_roost(sys_interval=0, anonymous={"publish": ["#"], "subscribe": ["#", "$SYS/#"]})
    sub = PahoClient(roost.mqtt_port, client_id="sys-reader").connect()
    pub = PahoClient(roost.mqtt_port, client_id="pub").connect()
    try:
        sub.subscribe("$SYS/#", qos=0)
        sub.subscribe("sync/marker", qos=1)
        sync(pub, sub)
        sub.expect_none()
    finally:
        for client in (sub, pub):
            client.client.disconnect()
            client.client.loop_stop()
