"""MQTT over WebSocket for the bridge's upstream link (ws:// and wss:// urls), through wsproto.

`WebSocketWire` sits between the TCP (or TLS) transport and the link's own protocol (`mqtt_link._Wire`),
so the link is the same over every transport: its protocol is given a `transport` whose `write(bytes)`
sends one binary WebSocket message, and it receives the MQTT bytes the binary messages carry, split or
coalesced however the upstream likes, as a stream [MQTT-6.0.0-2]. What the spec asks of a client:

- the opening handshake names the subprotocol "mqtt" [MQTT-6.0.0-3], and an upstream that accepts without
  choosing it is refused (it would not be speaking MQTT to us) [MQTT-6.0.0-4];
- MQTT travels in binary messages only: a text message is a protocol violation, and the link is closed
  [MQTT-6.0.0-1];
- a client masks its frames (RFC 6455 section 5.3; wsproto does it).

The request's path is the url's path ("/" when it has none; Roost's own listener and Mosquitto's
conventional one are at "/mqtt", so name it in the url: `ws://host:8080/mqtt`), with its query when it has
one. Pings are answered; a close from the upstream is answered and ends the link. Flow control is the TCP
transport's: `pause_writing` / `resume_writing` reach the link unchanged, and nothing here buffers beyond
wsproto's handshake and the frame being parsed (bounded by the upstream's frame sizes, as TCP reads are).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection, BytesMessage, CloseConnection, Ping, RejectConnection, RejectData, Request, TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

__all__ = ["SUBPROTOCOL", "WebSocketWire"]

log = logging.getLogger("roost.bridge")

SUBPROTOCOL = "mqtt"
_PROTOCOL_ERROR = 1002  # RFC 6455 section 7.4.1
_UNSUPPORTED_DATA = 1003


class _MessageTransport(asyncio.Transport):
    """What the link's protocol writes to: each `write()` is one binary WebSocket message."""

    def __init__(self, wire: WebSocketWire) -> None:
        super().__init__()
        self._wire = wire

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._wire.send_message(bytes(data))

    def close(self) -> None:
        self._wire.close_politely()

    def abort(self) -> None:
        self._wire.abort()

    def is_closing(self) -> bool:
        transport = self._wire.transport
        return transport is None or transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        transport = self._wire.transport
        return transport.get_extra_info(name, default) if transport is not None else default


class WebSocketWire(asyncio.Protocol):
    """The client side of one WebSocket connection carrying MQTT, around the link's protocol `inner`.

    `opened` resolves once the upstream accepted the handshake with the "mqtt" subprotocol (and fails with
    ConnectionError when it refused, or the connection ended first); only then is `inner` told
    `connection_made`, so the link writes its CONNECT into an open WebSocket."""

    def __init__(self, inner: asyncio.Protocol, host: str, port: int, target: str, tls: bool) -> None:
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self._ws = WSConnection(ConnectionType.CLIENT)
        named = f"[{host}]" if ":" in host else host  # an IPv6 address in brackets (RFC 7230 section 5.4)
        self._host = named if port == (443 if tls else 80) else f"{named}:{port}"
        self._target = target or "/"
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._open = False
        self._lost = False
        self._reason: str | None = None  # why we closed it (the link shows it as the reason the link was lost)

    # -- asyncio.Protocol, from the TCP/TLS transport ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._write(self._ws.send(Request(host=self._host, target=self._target, subprotocols=[SUBPROTOCOL])))

    def data_received(self, data: bytes) -> None:
        try:
            self._ws.receive_data(data)
            for event in self._ws.events():
                if self._handle(event):
                    return
        except (RemoteProtocolError, LocalProtocolError) as exc:
            self._fail(f"WebSocket protocol error from the upstream: {exc}", _PROTOCOL_ERROR)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"the connection ended during the WebSocket handshake ({exc})"
                                                      if exc else "the connection ended during the WebSocket handshake"))
            self.opened.exception()  # retrieved: the link may have stopped waiting (its timeout)
        if self._open:
            self.inner.connection_lost(exc or (ConnectionError(self._reason) if self._reason else None))

    def pause_writing(self) -> None:
        if self._open:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._open:
            self.inner.resume_writing()

    # -- events ---------------------------------------------------------------------------------------

    def _handle(self, event: object) -> bool:
        """Handle one wsproto event; True when the connection is over (stop reading events)."""
        if isinstance(event, BytesMessage):
            if self._open and event.data:
                self.inner.data_received(bytes(event.data))
        elif isinstance(event, AcceptConnection):
            if event.subprotocol != SUBPROTOCOL:
                # [MQTT-6.0.0-4]: without the mqtt subprotocol the upstream is not speaking MQTT to us.
                self._refuse(f"the upstream accepted the WebSocket without the {SUBPROTOCOL!r} subprotocol")
                return True
            self._open = True
            self.inner.connection_made(_MessageTransport(self))
            if not self.opened.done():
                self.opened.set_result(None)
        elif isinstance(event, RejectConnection):
            self._refuse(f"the upstream refused the WebSocket handshake (HTTP {event.status_code})")
            return True
        elif isinstance(event, RejectData):
            pass  # the body of a refusal: its status is what matters
        elif isinstance(event, TextMessage):
            self._fail("the upstream sent a text WebSocket message (MQTT is binary only) [MQTT-6.0.0-1]",
                       _UNSUPPORTED_DATA)
            return True
        elif isinstance(event, Ping):
            self._write(self._ws.send(event.response()))
        elif isinstance(event, CloseConnection):
            self._reason = f"the upstream closed the WebSocket ({event.code}{': ' + event.reason if event.reason else ''})"
            self._write(self._ws.send(event.response()))
            if self.transport is not None:
                self.transport.close()  # connection_lost follows, and tells the link
            return True
        return False

    # -- from the link --------------------------------------------------------------------------------

    def send_message(self, data: bytes) -> None:
        if self._open and self.transport is not None and not self.transport.is_closing():
            self._write(self._ws.send(BytesMessage(data=data)))

    def close_politely(self) -> None:
        """A close frame (1000), then the TCP connection closes once written."""
        if self.transport is None or self.transport.is_closing():
            return
        try:
            self._write(self._ws.send(CloseConnection(code=1000)))
        except LocalProtocolError:
            pass  # not open (the handshake had not finished): just close
        self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None:
            self.transport.write(data)

    def _refuse(self, reason: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(reason))
            self.opened.exception()
        log.debug("%s", reason)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, reason: str, code: int) -> None:
        """The upstream broke the WebSocket protocol: close frame with `code`, then the link is lost."""
        self._reason = reason
        if not self._open:
            self._refuse(reason)
            return
        try:
            self._write(self._ws.send(CloseConnection(code=code, reason=reason[:100])))
        except LocalProtocolError:
            pass
        if self.transport is not None:
            self.transport.close()
