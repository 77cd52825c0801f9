"""bridge/ws_wire.py against a WebSocket server written here with wsproto, for what a real broker does not
do: accept without the "mqtt" subprotocol [MQTT-6.0.0-4], or send a text message [MQTT-6.0.0-1]. Both end
the link; the request carries the url's path and the subprotocol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

from bridge.ws_wire import WebSocketWire


class _Inner(asyncio.Protocol):
    """Stands in for the link's protocol: records what the wire gives it."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.data: asyncio.Queue[bytes] = asyncio.Queue()
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data.put_nowait(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


Answer = Callable[[Request], list[object]]


class _Server:
    """A WebSocket server on 127.0.0.1 that answers the handshake with `answer(request)` and echoes binary
    messages back with a prefix."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[Request] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        while data := await reader.read(65536):
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Request):
                    self.requests.append(event)
                    for reply in self.answer(event):
                        writer.write(ws.send(reply))  # type: ignore[arg-type]
                elif isinstance(event, BytesMessage):
                    writer.write(ws.send(BytesMessage(data=b"echo:" + bytes(event.data))))
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def open_wire() -> AsyncIterator[Callable[[Answer], Awaitable[tuple[WebSocketWire, _Inner, _Server]]]]:
    servers: list[_Server] = []

    async def open_(answer: Answer) -> tuple[WebSocketWire, _Inner, _Server]:
        server = _Server(answer)
        servers.append(server)
        port = await server.start()
        inner = _Inner()
        wire = WebSocketWire(inner, "127.0.0.1", port, "/mqtt?x=1", tls=False)
        await asyncio.get_running_loop().create_connection(lambda: wire, "127.0.0.1", port)
        return wire, inner, server

    yield open_
    for server in servers:
        await server.close()


async def test_binary_messages_carry_the_bytes_both_ways(open_wire: Any) -> None:
    wire, inner, server = await open_wire(lambda request: [AcceptConnection(subprotocol="mqtt")])
    await asyncio.wait_for(wire.opened, 5)
    [request] = server.requests
    assert (request.target, request.subprotocols) == ("/mqtt?x=1", ["mqtt"])
    assert request.host == f"127.0.0.1:{wire.transport.get_extra_info('peername')[1]}"  # type: ignore[union-attr]
    assert inner.transport is not None
    inner.transport.write(b"\x10\x00")  # type: ignore[attr-defined]
    assert await asyncio.wait_for(inner.data.get(), 5) == b"echo:\x10\x00"
    inner.transport.close()
    assert await asyncio.wait_for(inner.lost, 5) is None


async def test_an_accept_without_the_mqtt_subprotocol_is_refused(open_wire: Any) -> None:
    wire, inner, _ = await open_wire(lambda request: [AcceptConnection()])
    with pytest.raises(ConnectionError, match="without the 'mqtt' subprotocol"):
        await asyncio.wait_for(wire.opened, 5)
    assert inner.transport is None  # the link never got to write its CONNECT


async def test_a_text_message_ends_the_link(open_wire: Any) -> None:
    wire, inner, _ = await open_wire(lambda request: [AcceptConnection(subprotocol="mqtt"), TextMessage(data="hi")])
    await asyncio.wait_for(wire.opened, 5)
    exc = await asyncio.wait_for(inner.lost, 5)
    assert isinstance(exc, ConnectionError) and "text WebSocket message" in str(exc)
