"""Helpers for connection-lifecycle tests (CONNECT, sessions, wills, keep alive, shutdown).

They build on `tests.helpers.RawClient`: raw CONNECT bytes for protocol names and levels that the codec's
`Connect` cannot express, round-trips that prove the broker has handled everything sent before them, and
a free-port finder for tests that run `roost serve` as a subprocess.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes

from broker.codec import EMPTY_PROPERTIES, Connack, Disconnect, Pingreq, Pingresp, Properties, Will
from tests.helpers import PahoClient, RawClient, Received, RoostThread, paho_properties

__all__ = [
    "collect_until_synced", "connect_bytes", "disconnect", "free_port", "paho_on", "persistent", "ping", "raw_connect",
    "read_until_closed", "receive_raw_until_closed", "session_properties", "will",
]


def raw_connect(port: int, client_id: str = "raw", version: int = 5, **kwargs: Any) -> tuple[RawClient, Connack]:
    """A RawClient that has sent CONNECT and received the CONNACK (whatever its reason code)."""
    client = RawClient(port, version)
    connack = client.connect(client_id, **kwargs)
    assert isinstance(connack, Connack), f"expected CONNACK, got {connack!r}"
    return client, connack


def persistent(version: int, expiry: int = 60) -> dict[str, Any]:
    """CONNECT arguments that ask for a session outliving the connection: 3.1.1 clean session 0,
    v5 clean start 0 with a Session Expiry Interval [MQTT-3.1.2-5]."""
    if version == 5:
        return {"clean_start": False, "properties": Properties(session_expiry_interval=expiry)}
    return {"clean_start": False}


def ping(client: RawClient) -> list[Any]:
    """Send PINGREQ and wait for the PINGRESP [MQTT-3.12.4-1]; return the packets that came before it.

    The broker handles one connection's packets in order, so once PINGRESP arrives everything sent before
    the PINGREQ has been handled, and everything the broker sent in response is in the returned list.
    """
    client.send(Pingreq())
    return until_pingresp(client.receive)


def until_pingresp(receive: Callable[[], Any]) -> list[Any]:
    """The packets `receive` gives before a PINGRESP (the barrier's second half, for any transport)."""
    before = []
    while True:
        packet = receive()
        if isinstance(packet, Pingresp):
            return before
        before.append(packet)


def read_until_closed(client: RawClient) -> list[Any]:
    """Every packet the broker sends until it closes the connection (AssertionError on a timeout)."""
    packets: list[Any] = []
    try:
        while True:
            packets.append(client.receive())
    except AssertionError as exc:
        if "closed" not in str(exc):
            raise
    except (ConnectionResetError, BrokenPipeError):
        pass
    except TimeoutError:
        raise AssertionError(f"the broker did not close the connection; received {packets!r}") from None
    return packets


def receive_raw_until_closed(client: RawClient) -> bytes:
    """Every byte the broker sends until it closes the connection, undecoded."""
    chunks = []
    try:
        while True:
            data = client.sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the broker did not close the connection; received {b''.join(chunks)!r}") from None
    return b"".join(chunks)


def connect_bytes(protocol_name: str, level: int, client_id: str = "raw", flags: int = 0x02, keep_alive: int = 60) -> bytes:
    """A CONNECT packet for any protocol name and level, e.g. ones the codec refuses to build.

    Level 5 gets an empty property list so that the rest parses as a v5 CONNECT would.
    """
    def string(value: str) -> bytes:
        data = value.encode()
        return len(data).to_bytes(2, "big") + data

    body = string(protocol_name) + bytes((level, flags)) + keep_alive.to_bytes(2, "big")
    if level == 5:
        body += b"\x00"
    body += string(client_id)
    assert len(body) < 128
    return bytes((0x10, len(body))) + body


def collect_until_synced(publisher: PahoClient, subscriber: PahoClient, topic: str = "sync/marker") -> list[Received]:
    """Round-trip a marker like `tests.helpers.sync`, and return everything that arrived before it, in
    arrival order (`sync` itself re-queues earlier messages behind the marker, which rotates their order).
    The subscriber must be subscribed to `topic`."""
    marker = f"marker-{id(object())}".encode()
    publisher.publish(topic, marker, qos=1)
    before = []
    while True:
        message = subscriber.expect()
        if message.payload == marker:
            return before
        before.append(message)


def free_port() -> int:
    """A TCP port that was free a moment ago (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def will(topic: str, payload: bytes = b"gone", qos: int = 0, retain: bool = False, **properties: Any) -> Will:
    """A Will for a RawClient CONNECT; keyword arguments are v5 will properties (will_delay_interval=...)."""
    return Will(topic, payload, qos, retain, Properties(**properties) if properties else EMPTY_PROPERTIES)


def disconnect(client: RawClient, reason_code: int = 0, **properties: Any) -> None:
    """Send DISCONNECT and wait for the broker to close the connection."""
    client.send(Disconnect(reason_code, Properties(**properties) if properties else EMPTY_PROPERTIES))
    assert client.closed_by_broker()
    client.close()


@pytest.fixture
def paho_on() -> Iterator[Callable[..., PahoClient]]:
    """Like conftest's `client_factory`, for any Roost (e.g. one from `make_roost`): `paho_on(roost, id, ...)`."""
    clients: list[PahoClient] = []

    def factory(roost: RoostThread, client_id: str = "", version: int = 5, connect: bool = True, **kwargs: Any) -> PahoClient:
        client = PahoClient(roost.mqtt_port, client_id=client_id, version=version, **kwargs)
        clients.append(client)
        return client.connect() if connect else client

    yield factory
    for client in clients:
        client.client.disconnect()
        client.client.loop_stop()


def session_properties(version: int, expiry: int = 60) -> dict[str, Any]:
    """PahoClient arguments for a persistent session: clean=False and, for v5, a Session Expiry Interval."""
    if version == 5:
        return {"clean": False, "properties": paho_properties(PacketTypes.CONNECT, SessionExpiryInterval=expiry)}
    return {"clean": False}
