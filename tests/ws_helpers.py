"""A raw WebSocket client for MQTT over WebSocket (`/mqtt`): wsproto over a blocking socket, so a test cuts
binary messages and frames wherever it likes, down to the start of a frame that never ends."""

from __future__ import annotations

import socket
import struct
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension

from broker.codec import NEED_DATA, PacketReader, Pingreq, encode
from tests.helpers import TIMEOUT
from tests.session_helpers import until_pingresp

__all__ = ["RawWebSocket", "frame_header", "ws_ping"]

BINARY = 0x2
CONTINUATION = 0x0


def frame_header(opcode: int, length: int, fin: bool = True) -> bytes:
    """The header of a client frame (RFC 6455 section 5.2) announcing `length` payload bytes, masked with
    the key 0 (so the payload goes as it is): what a hostile client sends before the body it never finishes."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        head = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, length)
    return head + b"\x00\x00\x00\x00"


class RawWebSocket:
    """A blocking WebSocket client speaking MQTT in binary messages cut wherever the test likes."""

    def __init__(self, port: int, subprotocols: list[str] | None = None,
                 extensions: list[Extension] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.reader = PacketReader(5)
        self.closed_with: int | None = None
        # Answer the server's Close frame (the closing handshake). A client that sent raw frame bytes
        # (`send_raw`) leaves the server mid-frame, where an answer would only be more payload.
        self.echo_close = True
        self.sock.sendall(self.ws.send(Request(host="localhost", target="/mqtt",
                                               subprotocols=["mqtt"] if subprotocols is None else subprotocols,
                                               extensions=extensions or [])))
        self.accepted: AcceptConnection | RejectConnection | None = None
        while self.accepted is None:
            self._pump()

    def _pump(self) -> None:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        self.ws.receive_data(data or None)
        for event in self.ws.events():
            if isinstance(event, (AcceptConnection, RejectConnection)):
                self.accepted = event
            elif isinstance(event, BytesMessage):
                self.reader.receive_data(bytes(event.data))
            elif isinstance(event, CloseConnection):
                self.closed_with = event.code
                if data and self.echo_close:
                    self.sock.sendall(self.ws.send(event.response()))
            elif isinstance(event, RejectData):
                pass
        if not data and self.closed_with is None:
            self.closed_with = 1006

    def send_frames(self, *chunks: bytes) -> None:
        """Each chunk as one whole binary message."""
        for chunk in chunks:
            self.sock.sendall(self.ws.send(BytesMessage(data=chunk)))

    def send_raw(self, data: bytes) -> None:
        """Bytes as they are: frame headers and payloads made with `frame_header`."""
        self.echo_close = False
        self.sock.sendall(data)

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))

    def receive(self) -> Any:
        while True:
            packet = self.reader.next_packet()
            if packet is not NEED_DATA:
                return packet
            assert self.closed_with is None, f"closed with {self.closed_with}"
            self._pump()

    def wait_closed(self) -> int:
        """The close code the server sent (1006: the TCP connection ended without one)."""
        while self.closed_with is None:
            self._pump()
        return self.closed_with

    def closed_within_timeout(self) -> bool:
        """Whether the server closed the WebSocket within TIMEOUT; False if it kept it open."""
        try:
            self.wait_closed()
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


def ws_ping(client: RawWebSocket) -> list[Any]:
    """The PINGREQ barrier over WebSocket: the packets that came before the PINGRESP [MQTT-3.12.4-1]."""
    client.send_frames(encode(Pingreq(), 5))
    return until_pingresp(client.receive)
