"""uvicorn's wsproto WebSocket protocol, streaming: each piece of a binary message reaches the app as it
is parsed, in the loop turn of the socket read, never a whole message gathered first.

uvicorn gathers a WebSocket message whole (up to `ws_max_size`, 16 MiB) before the ASGI app hears of it.
Behind `/mqtt` that was memory no limit of the broker could see: 300 WebSockets that each sent the start
of a 1 MB message held 300 MB before any of them had sent a CONNECT. For MQTT a message is only a piece of
a byte stream [MQTT-6.0.0-2], so the MQTT connection is handed each payload piece as wsproto parses it.
Its reader and the pre-authentication budget (broker/limits.py) then judge WebSocket bytes as they judge
TCP ones: a CONNECT over `max_connect_size` is refused from its fixed header, the bytes of an unfinished
message count against `max_pending_bytes`, and a logged-in client's packets are bounded by
`max_packet_size`, not by a message size of the HTTP layer.

Pieces are pushed, not queued: the route (control/api/websocket.py) finds this protocol in the scope's
extensions (`STREAM_EXTENSION`) and `attach`es `WebSocketTransport.feed` (broker/ws_transport.py). Queued
for the app's task, every connection's last read (up to 256 KiB) waited for the next loop turn, so 300
hostile WebSockets held 300 reads at once (+72 MB) where 300 TCP connections hold none (+0.5 MB).
Back-pressure is the MQTT connection's: `set_reading(False)` pauses the socket. A route that does not
attach gets each piece as one `websocket.receive`, reading paused until its task has taken them.

Two more settings keep a WebSocket's cost what its bytes are (control/server.py passes them):
- permessage-deflate is off: wsproto inflates each read whole, with no bound, so 64 KiB of compressed zeros
  would become 64 MB before any limit saw them. MQTT clients work without it (it is only offered).
- After the server's Close frame the client has `CLOSE_TIMEOUT` seconds to answer before the TCP connection
  closes (uvicorn waits 10 s): a connection the budget refused is gone at once, as over TCP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from wsproto import events

__all__ = ["CLOSE_TIMEOUT", "STREAM_EXTENSION", "StreamingWSProtocol"]

# Seconds the server waits for the client's answer to its Close frame (the broker's LINGER_SECONDS).
CLOSE_TIMEOUT = 1.0
# The key of this protocol in a WebSocket scope's "extensions" (ASGI lets a server announce its own).
STREAM_EXTENSION = "roost.websocket.stream"


class StreamingWSProtocol(WSProtocol):
    """uvicorn's wsproto protocol, handing each piece of a binary message on instead of gathering it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_timeout = CLOSE_TIMEOUT
        self._receiver: Callable[[bytes], None] | None = None
        self._app_paused = False

    def handle_connect(self, event: events.Request) -> None:
        super().handle_connect(event)  # builds self.scope; the app's task has not run yet
        self.scope["extensions"][STREAM_EXTENSION] = self  # type: ignore[index]

    def attach(self, receiver: Callable[[bytes], None]) -> None:
        """From now on, each piece of a binary message goes to `receiver` as soon as it is parsed. Attach
        before accepting the WebSocket: no piece is parsed before the handshake is answered."""
        self._receiver = receiver

    def detach(self) -> None:
        """The route is done: no more pushing, and the scope no longer refers to us (a reference cycle
        otherwise, left for the garbage collector with everything the connection held)."""
        self._receiver = None
        self.scope["extensions"].pop(STREAM_EXTENSION, None)  # type: ignore[union-attr]

    def set_reading(self, reading: bool) -> None:
        """The attached receiver's flow control: stop (False) or go on (True) reading the socket."""
        if reading == (not self._app_paused):
            return
        self._app_paused = not reading
        if self.transport.is_closing():
            return
        if not reading:
            self.transport.pause_reading()
        elif not self.read_paused:  # else uvicorn resumes once its task has taken its queue
            self.transport.resume_reading()

    def handle_message(self, event: events.TextMessage | events.BytesMessage) -> None:
        if isinstance(event, events.BytesMessage):
            if not event.data:
                return  # an empty frame carries nothing for the stream
            if self._receiver is not None:
                self._receiver(bytes(event.data))
                return
            message: dict[str, Any] = {"type": "websocket.receive", "bytes": bytes(event.data)}
        else:
            # MQTT travels in binary messages only: the route closes on the first text piece [MQTT-6.0.0-1].
            message = {"type": "websocket.receive", "text": event.data}
        self.queue.put_nowait(message)  # type: ignore[arg-type]
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
