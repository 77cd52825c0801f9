"""Helpers for the publish/subscribe tests: a raw client with the few exchanges those tests repeat, and
small conversions of what paho hands back.

`RawPeer` adds to `RawClient` a connect that asserts success, SUBSCRIBE/UNSUBSCRIBE that return their
acknowledgement, and `until_pingresp()`, which proves that nothing else is on its way: the broker routes a
PUBLISH synchronously when it receives it, so once the publisher holds its PUBACK, anything routed to this
client was queued on its connection before the PINGRESP we then ask for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest

from broker.codec import (
    Connack,
    Disconnect,
    Pingreq,
    Pingresp,
    Properties,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
)
from tests.helpers import RawClient, RoostThread


class RawPeer(RawClient):
    """A RawClient with the exchanges the publish/subscribe tests repeat."""

    def __init__(self, port: int, version: int = 5) -> None:
        super().__init__(port, version)
        self._next_id = 0
        self.connack: Connack | None = None

    def next_packet_id(self) -> int:
        self._next_id = self._next_id % 0xFFFF + 1
        return self._next_id

    def open(self, client_id: str, **connect: Any) -> Connack:
        """CONNECT and assert a successful CONNACK."""
        connack = self.connect(client_id, **connect)
        assert isinstance(connack, Connack), connack
        assert connack.reason_code == 0, connack
        self.connack = connack
        return connack

    def subscribe(self, *subscriptions: Subscription | str, properties: Properties | None = None) -> Suback:
        """SUBSCRIBE (a str is a QoS 0 subscription) and return the SUBACK, which must come first."""
        subs = tuple(Subscription(s) if isinstance(s, str) else s for s in subscriptions)
        packet_id = self.next_packet_id()
        kwargs = {"properties": properties} if properties is not None else {}
        self.send(Subscribe(packet_id, subs, **kwargs))
        suback = self.receive()
        assert isinstance(suback, Suback), suback
        assert suback.packet_id == packet_id  # [MQTT-3.8.4-2]
        return suback

    def unsubscribe(self, *topic_filters: str) -> Unsuback:
        packet_id = self.next_packet_id()
        self.send(Unsubscribe(packet_id, topic_filters))
        unsuback = self.receive()
        assert isinstance(unsuback, Unsuback), unsuback
        assert unsuback.packet_id == packet_id  # [MQTT-3.10.4-5]
        return unsuback

    def expect_publish(self) -> Publish:
        packet = self.receive()
        assert isinstance(packet, Publish), packet
        return packet

    def until_pingresp(self) -> list[Any]:
        """Send PINGREQ and return every packet that arrives before the PINGRESP."""
        self.send(Pingreq())
        packets = []
        while True:
            packet = self.receive()
            if isinstance(packet, Pingresp):
                return packets
            packets.append(packet)

    def expect_nothing(self) -> None:
        packets = self.until_pingresp()
        assert packets == [], f"unexpected packets: {packets}"

    def expect_disconnect(self) -> Disconnect:
        """The broker's DISCONNECT (skipping nothing), then the connection must close."""
        packet = self.receive()
        assert isinstance(packet, Disconnect), packet
        assert self.closed_by_broker()
        return packet


@contextmanager
def raw_peers() -> Iterator[Callable[..., RawPeer]]:
    """`open(roost, client_id, version=5, **connect)` connects a `RawPeer` to that Roost; every one is
    closed at the end."""
    opened: list[RawPeer] = []

    def open_peer(roost: RoostThread, client_id: str, version: int = 5, **connect: Any) -> RawPeer:
        peer = RawPeer(roost.mqtt_port, version)
        opened.append(peer)
        peer.open(client_id, **connect)
        return peer

    try:
        yield open_peer
    finally:
        for peer in opened:
            peer.close()


@pytest.fixture
def raw_factory(roost: RoostThread) -> Iterator[Any]:
    """Make `RawPeer`s against `roost`; `raw_factory(client_id, version, **connect)` connects them."""
    with raw_peers() as open_peer:
        yield partial(open_peer, roost)


def codes(reason_codes: Any) -> list[int]:
    """paho's reason codes (ReasonCode objects or ints) as plain ints."""
    return [int(getattr(code, "value", code)) for code in reason_codes]


def drain(client: Any) -> list[Any]:
    """Everything queued on a PahoClient (call after `sync()`)."""
    messages = []
    while not client.messages.empty():
        messages.append(client.messages.get_nowait())
    return messages


def sync_all(publisher: Any, subscribers: Any, topic: str = "sync/marker") -> None:
    """`sync()` for several subscribers with one QoS 2 marker; each must be subscribed to `topic` at QoS 2.
    The marker is removed from every queue; other messages stay queued in order.

    Why QoS 2: paho hands a QoS 2 message to on_message only when its PUBREL arrives, so a QoS 1 marker can
    overtake a QoS 2 message delivered before it. A QoS 2 marker's PUBREL comes after theirs."""
    marker = f"marker-{id(object())}".encode()
    publisher.publish(topic, marker, qos=2)
    for subscriber in subscribers:
        kept = []
        while True:
            message = subscriber.expect()
            if message.payload == marker:
                break
            kept.append(message)
        rest = drain(subscriber)
        for message in kept + rest:
            subscriber.messages.put(message)
