"""uvicorn's wsproto WebSocket protocol, streaming: each piece of a binary message reaches the app as it
arrives, never a whole message gathered first.

uvicorn gathers a WebSocket message whole (up to `ws_max_size`, 16 MiB) before the ASGI app hears of it.
Behind `/mqtt` that was memory no limit of the broker could see: 300 WebSockets that each sent the start
of a 1 MB message held 300 MB, before any of them had sent a CONNECT. For MQTT a message is only a piece of
a byte stream [MQTT-6.0.0-2], so the MQTT connection (broker/ws_transport.py) is handed each payload piece
as wsproto parses it, one `websocket.receive` per piece. Its reader and the pre-authentication budget
(broker/limits.py) then judge WebSocket bytes as they judge TCP ones: a CONNECT over `max_connect_size` is
refused from its fixed header, the bytes of an unfinished message count against `max_pending_bytes`, and a
logged-in client's packets are bounded by `max_packet_size`, not by a message size of the HTTP layer.

Back-pressure stays uvicorn's: reading pauses once a piece is queued and resumes when the app has taken
the queue, so at most one read of the socket is queued per connection.

Two more settings keep a WebSocket's cost what its bytes are (control/server.py passes them):
- permessage-deflate is off: wsproto inflates each read whole, with no bound, so 64 KiB of compressed zeros
  would become 64 MB before any limit saw them. MQTT clients work without it (it is only offered).
- After the server's Close frame the client has `CLOSE_TIMEOUT` seconds to answer before the TCP connection
  closes (uvicorn waits 10 s): a connection the budget refused is gone at once, as over TCP.

Every WebSocket route of this server receives its messages in pieces; Roost has one, `/mqtt`, which reads
them as a stream. A route that needs whole messages would need uvicorn's own protocol back.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from wsproto import events

__all__ = ["CLOSE_TIMEOUT", "StreamingWSProtocol"]

# Seconds the server waits for the client's answer to its Close frame (the broker's LINGER_SECONDS).
CLOSE_TIMEOUT = 1.0


class StreamingWSProtocol(WSProtocol):
    """`uvicorn`'s wsproto protocol, with `handle_message` queueing each piece instead of gathering."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_timeout = CLOSE_TIMEOUT

    def handle_message(self, event: events.TextMessage | events.BytesMessage) -> None:
        if isinstance(event, events.BytesMessage):
            if not event.data:
                return  # an empty frame carries nothing for the stream
            message: dict[str, Any] = {"type": "websocket.receive", "bytes": bytes(event.data)}
        else:
            # MQTT travels in binary messages only: the route closes on the first text piece [MQTT-6.0.0-1].
            message = {"type": "websocket.receive", "text": event.data}
        self.queue.put_nowait(message)  # type: ignore[arg-type]
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()
