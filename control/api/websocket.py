"""MQTT over WebSocket at `/mqtt` on the HTTP port (and over HTTPS when `[tls] https = true`).

Browser clients (MQTT.js, the dashboard) connect here with the WebSocket subprotocol `mqtt` (or the older
`mqttv3.1`) [MQTT-6.0.0-3]. The route only accepts the socket; the MQTT connection behind it is the same
`MQTTConnection` the TCP listeners use, on the same broker, with the same hooks, ACLs and limits, over
`broker.ws_transport.WebSocketTransport`, handed over through `BrokerService.accept`.
"""

from __future__ import annotations

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from broker.service import BrokerService
from broker.ws_transport import TextFrame, WebSocketTransport
from control.ws_protocol import STREAM_EXTENSION

__all__ = ["SUBPROTOCOLS", "routes"]

SUBPROTOCOLS = ("mqtt", "mqttv3.1")


async def mqtt_over_websocket(websocket: WebSocket) -> None:
    offered = websocket.scope.get("subprotocols") or []
    subprotocol = next((name for name in offered if name in SUBPROTOCOLS), None)
    if subprotocol is None:
        await websocket.close(code=1002)  # before accepting: the handshake is refused (HTTP 403)
        return
    broker: BrokerService = websocket.app.state.broker
    # Roost's own server pushes each piece of a binary message as it is parsed (control/ws_protocol.py);
    # another ASGI server hands whole messages to receive().
    stream = websocket.scope.get("extensions", {}).get(STREAM_EXTENSION)

    async def receive() -> bytes | None:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        data = message.get("bytes")
        if data is None:
            raise TextFrame()
        return data  # type: ignore[no-any-return]

    async def close(code: int) -> None:
        await websocket.close(code)

    extra = {"peername": tuple(websocket.client) if websocket.client else None, "subprotocol": subprotocol}
    transport = WebSocketTransport(websocket.send_bytes, close, extra,
                                   reading=stream.set_reading if stream is not None else None)
    if stream is not None:
        stream.attach(transport.feed)  # before the handshake is answered: no piece comes earlier
    try:
        await websocket.accept(subprotocol=subprotocol)
        await transport.run(broker.accept("ws"), receive)
    finally:
        if stream is not None:
            stream.detach()


routes = [WebSocketRoute("/mqtt", mqtt_over_websocket)]
