"""Fairness in the asyncio shell (broker/connection.py): a flood is handled over several turns of the loop,
and every other client is served in between.

The shell runs on a real asyncio loop with in-memory transports (no socket): a test hands a connection its
bytes with `data_received`, as the loop would, and steps the loop with `asyncio.sleep(0)`, one turn at a
time. `TURN_BUDGET` (and `TURN_BUDGET_SERVING`) is set to 0, so that a connection with a backlog hands the engine one slice per turn:
what happens in which turn is then decided by the code, not by the machine's speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import broker.connection as shell
from broker.codec import (
    NEED_DATA, Connack, Connect, PacketReader, Pingreq, Pingresp, Publish, Suback, Subscribe, Subscription, encode,
)
from broker.core import Broker
from broker.hooks import AnonymousHook, HookChain
from broker.registry import ServerState
from broker.settings import BrokerSettings

V = 4


class MemoryTransport:
    """What `MQTTConnection` needs of a transport, in memory; records writes and whether it is read."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.reading = True
        self.closing = False
        self.reader = PacketReader(V)
        self.written = asyncio.get_running_loop().create_future()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", int(self.peer)) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def expect_write(self) -> None:
        """`written` resolves at the next write from now."""
        self.written = asyncio.get_running_loop().create_future()

    def write(self, data: bytes) -> None:
        self.reader.receive_data(data)
        if not self.written.done():
            self.written.set_result(None)

    def packets(self) -> list[Any]:
        found = []
        while (packet := self.reader.next_packet()) is not NEED_DATA:
            found.append(packet)
        return found

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def can_write_eof(self) -> bool:
        return False


@pytest.fixture
def no_budget(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(shell, "TURN_BUDGET", 0.0)
    monkeypatch.setattr(shell, "TURN_BUDGET_SERVING", 0.0)
    yield


async def _client(server: ServerState, client_id: str, port: int) -> tuple[shell.MQTTConnection, MemoryTransport]:
    connection = shell.MQTTConnection(server)
    transport = MemoryTransport(str(port))
    connection.connection_made(transport)  # type: ignore[arg-type]
    connection.data_received(encode(Connect(client_id=client_id, protocol_version=V), V))
    await asyncio.sleep(0)
    assert isinstance(transport.packets()[0], Connack)
    transport.expect_write()
    return connection, transport


async def _turns_until(condition: Any, limit: int = 10_000) -> int:
    """Step the loop until `condition()` holds; the number of turns it took (bounded)."""
    for turn in range(limit):
        if condition():
            return turn
        await asyncio.sleep(0)
    raise AssertionError(f"not done within {limit} turns of the loop")


def _server() -> ServerState:
    return ServerState(Broker(BrokerSettings(), HookChain([AnonymousHook(True)])))


async def _setup(server: ServerState) -> tuple[Any, Any, Any, Any, Any]:
    publisher, pub_t = await _client(server, "publisher", 1)
    subscriber, sub_t = await _client(server, "subscriber", 2)
    pinger, ping_t = await _client(server, "pinger", 3)
    subscriber.data_received(encode(Subscribe(1, (Subscription("flood/t", 0),)), V))
    await asyncio.sleep(0)
    assert isinstance(sub_t.packets()[0], Suback)
    sub_t.expect_write()
    return publisher, pub_t, sub_t, pinger, ping_t


def test_a_flood_is_handled_over_turns_and_a_pingreq_is_answered_meanwhile(no_budget: None) -> None:
    """1,000 PUBLISH packets in one read are not handled in one call: reading the publisher pauses, a PINGREQ
    from another client is answered while most of them still wait, and then every one is delivered, in
    order, and reading resumes."""

    async def scenario() -> None:
        server = _server()
        publisher, pub_t, sub_t, pinger, ping_t = await _setup(server)
        flood = b"".join(encode(Publish("flood/t", i.to_bytes(4, "big") + bytes(60), 0), V) for i in range(1000))
        publisher.data_received(flood)
        assert not pub_t.reading  # a backlog waits for the next turn
        assert server.backlogged == 1
        pinger.data_received(encode(Pingreq(), V))
        await _turns_until(lambda: ping_t.written.done())
        assert isinstance(ping_t.packets()[0], Pingresp)
        early = len(sub_t.packets())
        assert early < 1000
        got: list[Any] = []

        def all_in() -> bool:
            got.extend(sub_t.packets())
            return early + len(got) == 1000 and pub_t.reading

        turns = await _turns_until(all_in)
        assert turns > 1
        assert [int.from_bytes(p.payload[:4], "big") for p in got] == list(range(early, 1000))
        assert server.backlogged == 0

    asyncio.run(scenario())


def test_publish_output_is_coalesced_while_a_flood_lasts_and_acks_are_not(
    no_budget: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a client has a backlog, a subscriber's PUBLISH packets wait (up to FLUSH_INTERVAL, or
    FLUSH_PACKETS of them) to leave in one write; a PINGRESP is written at the next turn all the same, and
    once the flood is over the subscriber's packets go too."""
    monkeypatch.setattr(shell, "FLUSH_INTERVAL", 3600.0)
    monkeypatch.setattr(shell, "FLUSH_PACKETS", 1_000_000)

    async def scenario() -> None:
        server = _server()
        publisher, pub_t, sub_t, pinger, ping_t = await _setup(server)
        flood = b"".join(encode(Publish("flood/t", bytes(64), 0), V) for _ in range(1000))
        publisher.data_received(flood)
        pinger.data_received(encode(Pingreq(), V))
        await _turns_until(lambda: ping_t.written.done())
        await _turns_until(lambda: server.backlogged == 0 and pub_t.reading)
        assert not sub_t.written.done()  # every delivery waited for one write while the flood lasted
        await _turns_until(lambda: sub_t.written.done())
        assert len(sub_t.packets()) == 1000

    asyncio.run(scenario())


def test_coalesced_output_is_written_once_flush_packets_wait(no_budget: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bound on coalescing: once FLUSH_PACKETS PUBLISH packets wait, they are written while the flood
    still goes on."""
    monkeypatch.setattr(shell, "FLUSH_INTERVAL", 3600.0)
    monkeypatch.setattr(shell, "FLUSH_PACKETS", 50)

    async def scenario() -> None:
        server = _server()
        publisher, pub_t, sub_t, pinger, ping_t = await _setup(server)
        publisher.data_received(b"".join(encode(Publish("flood/t", bytes(64), 0), V) for _ in range(1000)))
        await _turns_until(lambda: sub_t.written.done())
        assert server.backlogged == 1  # the flood is not over
        assert 50 <= len(sub_t.packets()) < 1000

    asyncio.run(scenario())


def test_a_backlog_before_connect_counts_against_the_pre_authentication_budget(no_budget: None) -> None:
    """Bytes read before the CONNECT is handled and left for a later turn are still reported to the
    pre-authentication budget (broker/limits.py): a client cannot hold more by sending it all at once."""

    async def scenario() -> None:
        server = _server()
        connection = shell.MQTTConnection(server)
        transport = MemoryTransport("9")
        connection.connection_made(transport)  # type: ignore[arg-type]
        # A CONNECT cut short: the engine holds a part, the shell keeps the rest.
        packet = encode(Connect(client_id="x" * 60_000, protocol_version=V), V)
        connection.data_received(packet[:-1])
        assert not transport.reading  # most of it waits for a later turn
        assert server.preauth.bytes == len(packet) - 1
        await _turns_until(lambda: transport.reading)
        assert server.preauth.bytes == len(packet) - 1  # all in the engine now, still pending

    asyncio.run(scenario())



def test_a_large_read_waits_for_the_next_turn_and_a_pingreq_read_meanwhile_is_answered_at_once(
    no_budget: None,
) -> None:
    """A flood's read is not handled in the loop's I/O phase where it arrives: nothing of it is delivered
    before the loop's next turn. A PINGREQ read in the same phase is answered there and then (a flood is
    waiting, so the next turn starts with its slices), and the flood is then delivered whole, in order."""

    async def scenario() -> None:
        server = _server()
        publisher, pub_t, sub_t, pinger, ping_t = await _setup(server)
        flood = b"".join(encode(Publish("flood/t", i.to_bytes(4, "big") + bytes(60), 0), V) for i in range(300))
        publisher.data_received(flood)
        assert not pub_t.reading and server.backlogged == 1
        pinger.data_received(encode(Pingreq(), V))
        assert ping_t.written.done()  # no turn of the loop went by
        assert isinstance(ping_t.packets()[0], Pingresp)
        assert sub_t.packets() == []  # the flood still waits, all of it
        got: list[Any] = []

        def all_in() -> bool:
            got.extend(sub_t.packets())
            return len(got) == 300 and pub_t.reading

        await _turns_until(all_in)
        assert [int.from_bytes(p.payload[:4], "big") for p in got] == list(range(300))

    asyncio.run(scenario())


def test_without_a_flood_a_pingresp_leaves_at_the_next_turn() -> None:
    """With no backlog anywhere, output still waits for the end of the turn (coalesced with what routing
    adds meanwhile): one write per connection per turn."""

    async def scenario() -> None:
        server = _server()
        _, _, _, pinger, ping_t = await _setup(server)
        pinger.data_received(encode(Pingreq(), V) * 2)
        assert not ping_t.written.done()
        await _turns_until(lambda: ping_t.written.done())
        assert ping_t.packets() == [Pingresp(), Pingresp()]

    asyncio.run(scenario())
