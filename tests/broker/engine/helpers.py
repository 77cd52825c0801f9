"""In-memory client/broker pairs for the sans-IO protocol engine, as h11's `tests/helpers.py` pairs a client
and a server `Connection`: bytes go from a `Peer` (a client speaking through Roost's codec) straight into
an engine `Connection`, and what the engine queues comes straight back, on a `ManualClock`. No socket, no
event loop, no thread: time moves only when a test says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from broker.clock import ManualClock
from broker.codec import NEED_DATA, Connack, Connect, Packet, PacketReader, Pingreq, Pingresp, encode
from broker.core import Broker
from broker.engine import Connection
from broker.hooks import AnonymousHook, Hook, HookChain
from broker.settings import BrokerSettings

__all__ = ["Peer", "World"]


class World:
    """One broker on a manual clock, and the peers connected to it."""

    def __init__(self, hooks: Sequence[Hook] | None = None, **settings: Any) -> None:
        self.clock = ManualClock()
        chain = HookChain(list(hooks) if hooks is not None else [AnonymousHook(True)])
        self.broker = Broker(BrokerSettings(**settings), chain, clock=self.clock)
        self.peers: list[Peer] = []

    def peer(self, version: int = 5) -> Peer:
        peer = Peer(self, version)
        self.peers.append(peer)
        return peer

    def advance(self, seconds: float) -> None:
        """Move time on: broker timers run, then every engine whose deadline passed is told."""
        self.clock.advance(seconds)
        now = self.clock.monotonic()
        for peer in self.peers:
            deadline = peer.engine.next_deadline()
            if deadline is not None and deadline <= now:
                peer.engine.handle_timeout(now)


class Peer:
    """A client on the far side of one engine `Connection`, decoding what the engine sends."""

    def __init__(self, world: World, version: int) -> None:
        self.world = world
        self.version = version
        self.engine = Connection(world.broker, remote_address=f"memory:{len(world.peers)}",
                                 now=world.clock.monotonic())
        self.reader = PacketReader(version)
        self.lost = False
        self._pending: list[Packet] = []  # what came behind a CONNACK, for the next `received()`

    def send(self, *packets: Packet) -> None:
        self.send_bytes(b"".join(encode(packet, self.version) for packet in packets))

    def send_bytes(self, data: bytes) -> None:
        self.engine.receive_data(data, self.world.clock.monotonic())

    def received(self) -> list[Packet]:
        """Every packet the engine queued for this client since the last call."""
        self.reader.receive_data(self.engine.data_to_send())
        packets, self._pending = self._pending, []
        while (packet := self.reader.next_packet()) is not NEED_DATA:
            packets.append(packet)  # type: ignore[arg-type]
        return packets

    def receive(self) -> Packet:
        """The one packet queued for this client (AssertionError if there are none, or more)."""
        packets = self.received()
        assert len(packets) == 1, packets
        return packets[0]

    def connect(self, client_id: str = "c", **fields: Any) -> Connack:
        if self.version == 3:
            fields.setdefault("protocol_name", "MQIsdp")
        self.send(Connect(client_id=client_id, protocol_version=self.version, **fields))
        connack, *self._pending = self.received()
        assert isinstance(connack, Connack), connack
        return connack

    def ping(self) -> list[Packet]:
        """What arrived before a PINGRESP: the barrier proving nothing else is queued."""
        self.send(Pingreq())
        packets = self.received()
        assert packets and isinstance(packets[-1], Pingresp), packets
        return packets[:-1]

    def drop(self) -> None:
        """The network connection ends (no DISCONNECT)."""
        self.engine.connection_lost()
        self.lost = True

    @property
    def closed(self) -> int:
        """What the engine asked of its shell: 0 (stay open), CLOSE or LINGER."""
        return self.engine.close_requested
