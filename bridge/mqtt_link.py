"""The MQTT upstream link: the asyncio shell around the sans-IO client in bridge/mqtt_client.py.

Like uvicorn's `h11_impl.py`, this is only where bytes meet a socket: `data_received -> receive_data ->
handle events`. It opens TCP or TLS (mqtt:// or mqtts://, the peer verified against `ca_file`, our
certificate presented for mutual TLS), or a WebSocket over either (ws:// or wss://, bridge/ws_wire.py:
subprotocol "mqtt", the url's path), sends CONNECT with a persistent session, subscribes the `subscribe`
filters under the remote prefix, and then carries what the bridge gives it.

A careful link:
- packet identifiers come from the outbox sequence number (`(seq - 1) % 65535 + 1`), so a message resent
  after a restart of Roost carries the identifier it had, and a QoS 2 upstream recognises it
  [MQTT-4.3.3-9]: nothing needs writing per send;
- keep alive: PINGREQ when we have been quiet for `keep_alive` seconds, and the link is dead when no
  answer comes within half a keep-alive more (a silent network does not look connected);
- an acknowledgement overdue by `ack_timeout` closes the link: MQTT resends only on a new connection
  [MQTT-4.4.0-1], so the bridge reconnects and resends with DUP set;
- the transport's write buffer is watched (`pause_writing`): QoS 0 messages are not written into a
  congested link (the bridge counts them as dropped) and the bridge sends no more outbox messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import replace

from bridge.config import BridgeConfig
from bridge.errors import LinkError, LinkRefused
from bridge.link import Command, LinkHandler
from bridge.mqtt_client import (
    DEAD, Acked, ClientConnection, ClientOptions, Connected, Incoming, Received, Refused, Released,
    ServerDisconnect, Subscribed,
)
from bridge.ws_wire import WebSocketWire
from broker.codec import Properties
from broker.errors import ProtocolError
from storage.outbox import OutboxEntry

__all__ = ["MQTTLink", "packet_id_for"]

log = logging.getLogger("roost.bridge")

_SUBSCRIBE_ID = 1  # our only SUBSCRIBE on a connection uses this identifier; outbox ids may reuse it later


def packet_id_for(seq: int) -> int:
    """The packet identifier of the outbox message `seq` (1..65535) [MQTT-2.2.1-3]."""
    return (seq - 1) % 65_535 + 1


class _Wire(asyncio.Protocol):
    """One TCP/TLS connection; forwards to the link, which ignores a wire it has moved on from."""

    def __init__(self, link: MQTTLink) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.link._wire is self:
            self.link._data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.link._wire is self:
            self.link._lost(f"connection lost ({exc})" if exc else "the upstream closed the connection")

    def pause_writing(self) -> None:
        if self.link._wire is self:
            self.link.congested = True

    def resume_writing(self) -> None:
        if self.link._wire is self:
            self.link.congested = False
            self.link.on_writable()


class MQTTLink:
    """An `UpstreamLink` (bridge/link.py) to an MQTT 3.1.1 or 5 broker."""

    def __init__(self, config: BridgeConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.window = config.inflight
        self.congested = False
        self.on_writable: Callable[[], None] = lambda: None
        self.subscribe_failures: tuple[str, ...] = ()
        self._clock = clock
        self._options = ClientOptions(
            client_id=config.client_id,
            version=config.protocol,
            keep_alive=config.keep_alive,
            username=config.username,
            password=config.password,
            session_expiry=config.session_expiry,
            try_private=config.try_private,
            receive_maximum=max(config.inflight, 16),
        )
        self._client: ClientConnection | None = None
        self._wire: _Wire | None = None
        self._handler: LinkHandler | None = None
        self._inflight: dict[int, tuple[OutboxEntry, float]] = {}
        self._ready: asyncio.Future[bool] | None = None
        self._gone: asyncio.Future[str] | None = None
        self._ticker: asyncio.TimerHandle | None = None
        self.subscribed = False  # subscribed at least once in this process (config may have changed)
        self.connected_to: str | None = None  # the upstream's address (IP:port) while the link is up
        self._max_qos = 2
        self._retain_available = True

    # -- UpstreamLink -------------------------------------------------------------------------------------------

    async def connect(self, handler: LinkHandler) -> bool:
        config = self.config
        loop = asyncio.get_running_loop()
        self._handler = handler
        self._client = ClientConnection(self._options)
        self._inflight.clear()
        self.congested = False
        self._ready = loop.create_future()
        self._gone = loop.create_future()
        wire = self._wire = _Wire(self)
        raw: asyncio.BaseTransport | None = None
        try:
            context = config.ssl_context() if config.tls else None
            websocket = WebSocketWire(wire, config.host, config.port, config.path, context is not None) \
                if config.websocket else None
            raw, _ = await asyncio.wait_for(
                loop.create_connection(
                    lambda: websocket or wire, config.host, config.port, ssl=context,
                    server_hostname=config.host if context is not None else None,
                ),
                config.connect_timeout,
            )
            self.connected_to = _address(raw.get_extra_info("peername"))
            if websocket is not None:
                await asyncio.wait_for(asyncio.shield(websocket.opened), config.connect_timeout)
            self._write(self._client.connect(self._clock()))
            connected = await asyncio.wait_for(asyncio.shield(self._ready), config.connect_timeout)
        except LinkError:
            self._drop()
            _abort(raw)
            raise
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ProtocolError) as exc:
            self._drop()
            _abort(raw)
            what = "timed out" if isinstance(exc, asyncio.TimeoutError) else str(exc) or type(exc).__name__
            raise LinkError(f"cannot connect to {config.safe_url}: {what}") from exc
        self.window = max(1, min(config.inflight, connected.receive_maximum))
        self._max_qos = connected.maximum_qos
        self._retain_available = connected.retain_available
        self._schedule_tick()
        if config.subscribe and (not connected.session_present or not self.subscribed):
            prefix = config.remote_prefix
            filters = tuple(prefix + f for f in config.subscribe)
            self._write(self._client.subscribe(_SUBSCRIBE_ID, filters, config.qos, self._clock()))
        return connected.session_present

    def send(self, entry: OutboxEntry) -> None:
        client = self._client
        if client is None or self._wire is None:
            return
        packet_id = packet_id_for(entry.seq)
        held = self._inflight.get(packet_id)
        if held is not None and held[0] is not entry:
            self.close(f"packet identifier {packet_id} is still in flight (an acknowledgement never came)")
            return
        now = self._clock()
        self._inflight[packet_id] = (entry, now)
        if entry.released:
            self._write(client.release(packet_id, now))
            return
        qos = min(entry.qos, self._max_qos, self.config.qos)
        retain = entry.retain and self._retain_available
        properties = entry.properties
        if entry.expires_at is not None and self.config.protocol == 5:
            # What is left of the Message Expiry Interval goes with it [MQTT-3.3.2-6].
            left = max(1, int(entry.expires_at - time.time() + 0.999))
            properties = replace(properties, message_expiry_interval=left)
        if qos == 0:
            # The upstream takes no QoS 1 (Maximum QoS 0 in its CONNACK [MQTT-3.2.2-11]): sent as QoS 0,
            # which is all it promises, and done.
            del self._inflight[packet_id]
            self._write(client.publish(self.config.remote_prefix + entry.topic, entry.payload, 0, retain, None,
                                       False, properties, now))
            assert self._handler is not None
            self._handler.acked(entry, 0)
            return
        self._write(client.publish(self.config.remote_prefix + entry.topic, entry.payload, qos, retain, packet_id,
                                   entry.dup, properties, now))

    def send_qos0(self, topic: str, payload: bytes, retain: bool, properties: Properties) -> bool:
        client = self._client
        if client is None or self._wire is None or self.congested or not client.connected:
            return False
        self._write(client.publish(self.config.remote_prefix + topic, payload, 0, retain and self._retain_available,
                                   None, False, properties, self._clock()))
        return True

    def release(self, entry: OutboxEntry) -> None:
        packet_id = packet_id_for(entry.seq)
        if self._client is None or self._inflight.get(packet_id, (None,))[0] is not entry:
            return  # the link was lost meanwhile: the reconnect resends the PUBREL
        now = self._clock()
        self._inflight[packet_id] = (entry, now)
        self._write(self._client.release(packet_id, now))

    def close(self, reason: str) -> None:
        wire, client = self._wire, self._client
        if wire is not None and wire.transport is not None and client is not None and client.connected:
            with contextlib.suppress(Exception):
                wire.transport.write(client.disconnect())
        self._lost(reason, polite=True)

    async def closed(self) -> str:
        assert self._gone is not None
        return await asyncio.shield(self._gone)

    @property
    def up(self) -> bool:
        return self._wire is not None and self._client is not None and self._client.connected

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    # -- from the wire ------------------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        wire = self._wire
        if wire is not None and wire.transport is not None:
            wire.transport.write(data)

    def _data_received(self, data: bytes) -> None:
        client = self._client
        assert client is not None
        try:
            events = client.receive_data(data, self._clock())
        except ProtocolError as exc:
            self._lost(f"protocol error from the upstream: {exc}")
            return
        for event in events:
            if self._wire is None:
                return  # an event before this one closed the link
            self._handle(event)

    def _handle(self, event: object) -> None:
        handler, client = self._handler, self._client
        assert handler is not None and client is not None
        kind = type(event)
        if kind is Acked:
            held = self._inflight.pop(event.packet_id, None)  # type: ignore[attr-defined]
            if held is not None:
                code = event.reason_code  # type: ignore[attr-defined]
                handler.acked(held[0], code if code >= 0x80 else 0)
        elif kind is Received:
            held = self._inflight.get(event.packet_id)  # type: ignore[attr-defined]
            if held is not None:
                self._inflight[event.packet_id] = (held[0], self._clock())  # type: ignore[attr-defined]
                handler.received(held[0])
        elif kind is Incoming:
            self._incoming(event)  # type: ignore[arg-type]
        elif kind is Released:
            packet_id = event.packet_id  # type: ignore[attr-defined]
            handler.command_done(packet_id)
            self._write(client.pubcomp(packet_id, self._clock()))
        elif kind is Subscribed:
            self.subscribed = True
            refused = [f for f, code in zip(self.config.subscribe, event.reason_codes) if code >= 0x80]  # type: ignore[attr-defined]
            self.subscribe_failures = tuple(refused)
            if refused:
                log.warning("bridge %s: the upstream refused the subscriptions %s", self.config.name, refused)
        elif kind is Connected:
            assert self._ready is not None
            if not self._ready.done():
                self._ready.set_result(event)  # type: ignore[arg-type]
        elif kind is Refused:
            code = event.reason_code  # type: ignore[attr-defined]
            error = LinkRefused(f"the upstream refused CONNECT (0x{code:02X}{': ' + event.reason if event.reason else ''})", code)  # type: ignore[attr-defined]
            assert self._ready is not None
            if not self._ready.done():
                self._ready.set_exception(error)
                self._ready.exception()  # connect() may not be awaiting it any more: no "never retrieved"
            self._lost(str(error))
        elif kind is ServerDisconnect:
            reason = event.reason  # type: ignore[attr-defined]
            self._lost(f"the upstream sent DISCONNECT 0x{event.reason_code:02X}{': ' + reason if reason else ''}")  # type: ignore[attr-defined]

    def _incoming(self, event: Incoming) -> None:
        publish = event.publish
        client, handler = self._client, self._handler
        assert client is not None and handler is not None
        prefix = self.config.remote_prefix
        packet_id = publish.packet_id
        topic = publish.topic
        if not topic.startswith(prefix) or len(topic) == len(prefix):
            # Not ours to bring down (an upstream that matched more than we asked): acknowledged, not published.
            log.debug("bridge %s: %r is outside the remote prefix; ignored", self.config.name, topic)
            if publish.qos == 1:
                self._write(client.puback(packet_id, self._clock()))  # type: ignore[arg-type]
            elif publish.qos == 2:
                self._write(client.pubrec(packet_id, self._clock()))  # type: ignore[arg-type]
            return
        wire = self._wire

        def done() -> None:
            if self._wire is not wire or self._client is not client:
                return  # that connection is gone; the upstream resends to the next one
            if publish.qos == 1:
                self._write(client.puback(packet_id, self._clock()))  # type: ignore[arg-type]
            elif publish.qos == 2:
                self._write(client.pubrec(packet_id, self._clock()))  # type: ignore[arg-type]

        command = Command(topic[len(prefix):], publish.payload, publish.qos, publish.retain, publish.properties,
                          packet_id if publish.qos == 2 else None)
        if event.duplicate:
            done()  # delivered on this connection already: PUBREC again, not published again [MQTT-4.3.3-9]
        elif not handler.command(command, done) and publish.qos:
            # Refused (e.g. an invalid topic locally): acknowledged so the upstream does not resend it forever.
            done()

    # -- clocks and closing ---------------------------------------------------------------------------------

    def _schedule_tick(self) -> None:
        interval = min(1.0, max(0.05, self.config.keep_alive / 4, 0.05), self.config.ack_timeout / 4)
        self._ticker = asyncio.get_running_loop().call_later(interval, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        client = self._client
        if client is None or self._wire is None:
            return
        now = self._clock()
        action = client.tick(now)
        if action is DEAD:
            self._lost(f"no answer to PINGREQ within {max(1.0, client.keep_alive / 2):.0f} s: the link is dead")
            return
        if action is not None:
            self._write(action)  # type: ignore[arg-type]
        if self._inflight:
            oldest = min(sent for _, sent in self._inflight.values())
            if now - oldest >= self.config.ack_timeout:
                self._lost(f"no acknowledgement within {self.config.ack_timeout:g} s")
                return
        self._schedule_tick()

    def _lost(self, reason: str, polite: bool = False) -> None:
        if self._wire is None:
            return
        self._fail_ready(reason)
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(reason)
        self._drop(polite)

    def _fail_ready(self, reason: str) -> None:
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_exception(LinkError(reason))
            ready.exception()  # marked retrieved: connect() may have stopped waiting (its timeout)

    def _drop(self, polite: bool = False) -> None:
        wire, self._wire = self._wire, None
        self.connected_to = None
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        self._inflight.clear()
        if wire is not None and wire.transport is not None:
            if polite:
                wire.transport.close()
            else:
                wire.transport.abort()
        self._fail_ready("closed")
        if self._gone is not None and not self._gone.done():
            self._gone.set_result("closed")


def _abort(transport: asyncio.BaseTransport | None) -> None:
    """Close a socket the link gave up on before its protocol had it (a WebSocket handshake unfinished)."""
    if transport is not None and not transport.is_closing():
        transport.abort()  # type: ignore[attr-defined]


def _address(peername: object) -> str | None:
    """"IP:port" ("[IPv6]:port") of the socket's peer, for REST and the dashboard."""
    if not isinstance(peername, tuple) or len(peername) < 2:
        return None
    host, port = peername[0], peername[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
