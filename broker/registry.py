"""The open network connections of a running broker, and the order in which they are shut down.

Beside the listeners, as uvicorn keeps its `ServerState`: the router (`broker/core.py`) knows only the
receivers of deliveries by session key; which sockets are open (clients still in CONNECT included), what
they sent before they closed, and how they are closed at shutdown live here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from broker.core import Broker
from broker.engine import Connection

__all__ = ["OpenConnection", "ServerState"]

log = logging.getLogger("roost.broker")


class OpenConnection(Protocol):
    """What the registry needs of a network connection (`broker.connection.OpenConnection` is one)."""

    engine: Connection
    closed: asyncio.Future[None]

    def abort(self) -> None: ...


class ServerState:
    """Every open MQTT connection of one broker, from every listener (TCP, TLS, WebSocket)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.connections: set[OpenConnection] = set()
        # Set by `shutdown`: connections accepted from then on are closed as soon as they are made.
        self.closing = False
        # PUBLISH packets sent to clients that have since disconnected, by tenant namespace.
        self.sent_by_closed_mount: dict[str, int] = {}

    def opened(self, connection: OpenConnection) -> None:
        self.connections.add(connection)

    def closed(self, connection: OpenConnection, mount: str, messages_sent: int) -> None:
        self.connections.discard(connection)
        if messages_sent:
            self.sent_by_closed_mount[mount] = self.sent_by_closed_mount.get(mount, 0) + messages_sent

    def messages_sent(self, mount: str) -> int:
        """PUBLISH packets sent so far to the clients of one tenant namespace, connected or gone."""
        live = sum(c.engine.messages_sent for c in self.connections if c.engine.mount == mount)
        return live + self.sent_by_closed_mount.get(mount, 0)

    async def shutdown(self) -> None:
        """Close every connection, as uvicorn does: stop accepting, ask each to close (v5 clients hear
        DISCONNECT 0x8B), give queued bytes `shutdown_grace` seconds to leave, then abort what is left.

        The server closing a connection is not the client's DISCONNECT: wills go out [MQTT-3.1.2-8], and
        they go first, while every subscriber is still connected to receive them. A will delay cannot
        outlive the process, so delayed wills are published now too, except those of durable sessions,
        kept pending (their delay goes on after a restart)."""
        self.closing = True
        connections = list(self.connections)
        broker = self.broker
        for connection in connections:
            will = connection.engine.will_at_shutdown()
            if will is not None:
                broker.publish_will(will, connection.engine.client)
        for connection in connections:
            connection.engine.close_for_shutdown()
        if connections:
            await asyncio.wait([c.closed for c in connections], timeout=broker.settings.shutdown_grace)
            for connection in connections:
                if not connection.closed.done():
                    connection.abort()
        log.info("closed %d connections", len(connections))
