"""Bridges into Roost. The bridge bit (protocol level 0x84 / 0x83, Mosquitto's `try_private`): not in the spec, which defines
levels 4 and 3 only [MQTT-3.1.2-2]; Roost accepts it as Mosquitto does (docs/architecture.md): such a
client is a bridge, whose subscriptions get No Local and Retain As Published. And the loop check: a
message naming this Roost in roost-via is not routed again."""

from __future__ import annotations

import pytest

from broker.codec import Connect, PacketReader, Properties, Puback, Publish, Pubrec, Subscribe, Subscription, Suback, encode
from broker.engine.admission import VIA
from broker.errors import UnsupportedProtocolVersion
from tests.broker.engine.helpers import World


@pytest.mark.parametrize(("version", "name", "level"), [(4, "MQTT", 0x84), (3, "MQIsdp", 0x83)])
def test_the_codec_reads_and_writes_the_bridge_bit(version: int, name: str, level: int) -> None:
    data = encode(Connect("b", version, bridge=True), version)
    assert data[2 + 2 + len(name)] == level  # fixed header (2), name length (2), name, then the level
    reader = PacketReader(None)
    reader.receive_data(data)
    packet = reader.next_packet()
    assert packet == Connect("b", version, protocol_name=name, bridge=True)
    assert (reader.version, reader.bridge) == (version, True)


def test_the_bridge_bit_on_other_levels_is_still_refused() -> None:
    data = bytearray(encode(Connect("b", 5), 5))
    data[2 + 2 + 4] = 0x85  # MQTT 5 bridges use No Local: there is no level 0x85
    reader = PacketReader(None)
    reader.receive_data(bytes(data))
    with pytest.raises(UnsupportedProtocolVersion):
        reader.next_packet()
    with pytest.raises(ValueError):
        Connect("b", 5, bridge=True)


@pytest.mark.parametrize("version", [3, 4])
def test_a_bridge_does_not_hear_its_own_messages_and_retain_is_as_published(version: int) -> None:
    world = World()
    bridge, plain, other = world.peer(version), world.peer(version), world.peer(version)
    assert bridge.connect("mosquitto-bridge", bridge=True, clean_start=False).reason_code == 0
    assert plain.connect("plain").reason_code == 0
    assert other.connect("other").reason_code == 0
    for peer in (bridge, plain):
        peer.send(Subscribe(1, (Subscription("sensors/#", 0),)))
        assert peer.receive() == Suback(1, (0,))
    bridge.send(Publish("sensors/from-bridge", b"up"))
    other.send(Publish("sensors/retained", b"kept", retain=True))
    # The bridge's own message is not sent back to it (No Local); the plain client hears both.
    assert [(p.topic, p.retain) for p in bridge.ping()] == [("sensors/retained", True)]  # as published
    # A live message reaches a plain 3.1.1 subscriber with RETAIN 0 [MQTT-3.3.1-9].
    assert [(p.topic, p.retain) for p in plain.ping()] == [("sensors/from-bridge", False), ("sensors/retained", False)]


def test_a_message_that_passed_through_this_roost_is_acknowledged_and_not_routed() -> None:
    """Bridges name the Roosts a message passed through in the user property roost-via (bridge/bridge.py);
    one carrying our own ID looped back: PUBACK / PUBREC 0x10 (a success), not routed, counted."""
    world = World()
    world.broker.via = "a1"
    sub, pub = world.peer(5), world.peer(5)
    assert sub.connect("sub").reason_code == 0
    assert pub.connect("pub").reason_code == 0
    sub.send(Subscribe(1, (Subscription("sensors/#", 1),)))
    assert sub.receive() == Suback(1, (1,))
    looped = Properties(user_properties=((VIA, "b2"), (VIA, "a1")))
    elsewhere = Properties(user_properties=((VIA, "b2"),))
    pub.send(Publish("sensors/x", b"back", qos=1, packet_id=1, properties=looped),
             Publish("sensors/x", b"back", qos=2, packet_id=2, properties=looped),
             Publish("sensors/x", b"back", properties=looped),
             Publish("sensors/y", b"new here", qos=1, packet_id=3, properties=elsewhere))
    assert pub.received() == [Puback(1, 0x10), Pubrec(2, 0x10), Puback(3)]
    [delivered] = sub.ping()
    assert (delivered.topic, delivered.properties.user_properties) == ("sensors/y", ((VIA, "b2"),))
    assert world.broker.stats.dropped_loop == 3
