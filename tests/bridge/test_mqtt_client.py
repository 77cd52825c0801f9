"""The bridge's sans-IO MQTT client with plain bytes and an explicit clock (no sockets, no loop): the
server side is Roost's own codec, as h11's tests pair a client and a server through memory."""

from __future__ import annotations

import pytest

from bridge.mqtt_client import (
    DEAD, Acked, ClientConnection, ClientOptions, Connected, Incoming, Received, Refused, Released,
)
from broker.codec import (
    NEED_DATA, Connack, Connect, PacketReader, Pingreq, Properties, Puback, Pubcomp, Publish, Pubrec, Pubrel,
    Subscribe, encode,
)
from broker.errors import ProtocolError


def server_reads(data: bytes, version: int | None = None) -> list[object]:
    """What a server's reader makes of the client's bytes (None: expecting CONNECT; else after it)."""
    reader = PacketReader(version)
    reader.receive_data(data)
    packets = []
    while (packet := reader.next_packet()) is not NEED_DATA:
        packets.append(packet)
    return packets


def connected(version: int = 5, **options: object) -> ClientConnection:
    client = ClientConnection(ClientOptions("gw-1", version=version, keep_alive=10, **options))  # type: ignore[arg-type]
    client.connect(0.0)
    events = client.receive_data(encode(Connack(True, 0, Properties(receive_maximum=5)), version), 0.0)
    assert events == [Connected(True, 5, 2, True, 268_435_455, 10)]
    return client


def test_connect_asks_for_a_persistent_session() -> None:
    client = ClientConnection(ClientOptions("gw-1", session_expiry=3600, username="u", password="p"))
    [packet] = server_reads(client.connect(0.0))
    assert isinstance(packet, Connect)
    assert (packet.client_id, packet.clean_start, packet.username, packet.password) == ("gw-1", False, "u", b"p")
    assert packet.properties.session_expiry_interval == 3600  # [MQTT-3.1.2-4]: kept while we are away


def test_bridge_bit_for_3_1_1() -> None:
    client = ClientConnection(ClientOptions("gw-1", version=4, try_private=True))
    data = client.connect(0.0)
    assert data[8] == 0x84  # protocol level with the bridge bit (fixed header, length, "MQTT", level)
    assert not ClientConnection(ClientOptions("gw-1", version=4)).connect(0.0)[8] & 0x80


def test_first_packet_must_be_connack() -> None:
    client = ClientConnection(ClientOptions("gw-1"))
    client.connect(0.0)
    with pytest.raises(ProtocolError, match=r"MQTT-3.2.0-1"):
        client.receive_data(encode(Puback(1), 5), 0.0)


def test_refused() -> None:
    client = ClientConnection(ClientOptions("gw-1"))
    client.connect(0.0)
    assert client.receive_data(encode(Connack(False, 0x86), 5), 0.0) == [Refused(0x86, None)]
    assert not client.connected


def test_qos1_and_qos2_flows() -> None:
    client = connected()
    [publish] = server_reads(client.publish("a", b"x", 1, False, 7, True, Properties(), 1.0), 5)
    assert isinstance(publish, Publish) and (publish.packet_id, publish.dup, publish.qos) == (7, True, 1)
    assert client.receive_data(encode(Puback(7), 5), 1.0) == [Acked(7, 0)]
    assert client.receive_data(encode(Puback(8, 0x87), 5), 1.0) == [Acked(8, 0x87)]  # refused
    assert client.receive_data(encode(Pubrec(9), 5), 1.0) == [Received(9)]
    assert isinstance(server_reads(client.release(9, 1.0), 5)[0], Pubrel)
    assert client.receive_data(encode(Pubcomp(9), 5), 1.0) == [Acked(9, 0)]
    assert client.receive_data(encode(Pubrec(10, 0x97), 5), 1.0) == [Acked(10, 0x97)]  # the flow ends


def test_incoming_qos2_duplicate_until_pubrel() -> None:
    client = connected()
    publish = Publish("site1/cmd", b"go", 2, packet_id=3)
    [first] = client.receive_data(encode(publish, 5), 1.0)
    assert first == Incoming(publish, duplicate=False)
    [again] = client.receive_data(encode(Publish("site1/cmd", b"go", 2, dup=True, packet_id=3), 5), 1.0)
    assert isinstance(again, Incoming) and again.duplicate  # [MQTT-4.3.3-9]: PUBREC only, not delivered again
    assert client.receive_data(encode(Pubrel(3), 5), 1.0) == [Released(3)]
    [after] = client.receive_data(encode(publish, 5), 1.0)
    assert isinstance(after, Incoming) and not after.duplicate


def test_subscribe_with_no_local_and_retain_as_published() -> None:
    client = connected()
    [subscribe] = server_reads(client.subscribe(1, ("site1/cmd/#",), 2, 1.0), 5)
    assert isinstance(subscribe, Subscribe)
    [option] = subscribe.subscriptions
    assert (option.no_local, option.retain_as_published, option.retain_handling, option.qos) == (True, True, 1, 2)


def test_keep_alive_and_dead_link() -> None:
    client = connected()  # keep alive 10 s
    assert client.tick(5.0) is None
    ping = client.tick(10.0)
    assert isinstance(ping, bytes) and isinstance(server_reads(ping, 5)[0], Pingreq)  # [MQTT-3.1.2-23]
    assert client.tick(14.0) is None
    assert client.tick(15.0) is DEAD  # no answer within half a keep alive: the network went silent
    alive = connected()
    alive.tick(10.0)
    alive.receive_data(b"\xd0\x00", 11.0)  # PINGRESP
    assert alive.tick(15.0) is None


def test_server_keep_alive_wins() -> None:
    client = ClientConnection(ClientOptions("gw-1", keep_alive=60))
    client.connect(0.0)
    [event] = client.receive_data(encode(Connack(False, 0, Properties(server_keep_alive=4)), 5), 0.0)
    assert isinstance(event, Connected) and event.keep_alive == 4  # [MQTT-3.1.2-21]
    assert client.tick(4.0) is not None
