"""`WebSocketTransport` without a web server: the two ways bytes reach its protocol. Pulled, `receive()`
returns binary messages; pushed (Roost's own server, control/ws_protocol.py), `feed()` hands each piece on
in the same call, pieces fed before `run` go first, and pausing the protocol's reading reaches the server."""

from __future__ import annotations

import asyncio

from broker.ws_transport import WebSocketTransport


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.made = asyncio.Event()
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.set()

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


async def _nothing_to_send(data: bytes) -> None:
    return None


async def _close(code: int) -> None:
    return None


def test_pulled_messages_reach_the_protocol_in_order() -> None:
    async def scenario() -> list[bytes]:
        messages: asyncio.Queue[bytes | None] = asyncio.Queue()
        for item in (b"ab", b"c", None):
            messages.put_nowait(item)
        protocol = Recorder()
        await WebSocketTransport(_nothing_to_send, _close).run(protocol, messages.get)
        assert protocol.lost.is_set()
        return protocol.data

    assert asyncio.run(scenario()) == [b"ab", b"c"]


def test_pushed_pieces_reach_the_protocol_at_once_and_reading_is_switched() -> None:
    async def scenario() -> None:
        switched: list[bool] = []
        gone = asyncio.Event()

        async def receive() -> bytes | None:
            await gone.wait()  # pushed: receive() only reports the end
            return None

        transport = WebSocketTransport(_nothing_to_send, _close, reading=switched.append)
        transport.feed(b"early")  # before run: kept, and handed over first
        protocol = Recorder()
        task = asyncio.create_task(transport.run(protocol, receive))
        await protocol.made.wait()
        assert protocol.data == [b"early"]
        transport.feed(b"now")
        assert protocol.data == [b"early", b"now"]  # in the same call, no loop turn in between
        transport.pause_reading()
        transport.resume_reading()
        assert switched == [False, True]
        gone.set()
        await task
        transport.feed(b"late")  # after the end: dropped
        assert protocol.data == [b"early", b"now"]

    asyncio.run(scenario())
