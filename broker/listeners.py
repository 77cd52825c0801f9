"""Network listeners: the only place where the broker opens sockets.

A listener binds a port and makes one `MQTTConnection` (the asyncio shell of the protocol engine) per
accepted connection, registered in the `ServerState` it shares with every other listener (TLS, and the
WebSocket route through `BrokerService.accept`); `ServerState.shutdown` closes them all. The TLS listener
(`broker/tls.py`) is a `TCPListener` that accepts with its own protocol and upgrades each connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from broker.connection import MQTTConnection
from broker.registry import ServerState

__all__ = ["ServerState", "TCPListener"]

log = logging.getLogger("roost.listeners")


class TCPListener:
    """MQTT over plain TCP."""

    def __init__(self, server: ServerState, host: str, port: int, name: str = "tcp") -> None:
        self.server = server
        self.host = host
        self.requested_port = port
        self.name = name
        self._server: asyncio.AbstractServer | None = None

    def _protocol(self) -> asyncio.Protocol:
        """The protocol for one accepted connection (the TLS listener accepts with its own)."""
        return MQTTConnection(self.server, self.name)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            self.host,
            self.requested_port,
            reuse_address=True,
            backlog=1024,
        )
        for sock in self._server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.info("MQTT listener %s on %s:%d", self.name, self.host, self.port)

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop accepting new connections; existing ones are closed by `ServerState.shutdown`."""
        if self._server is not None:
            self._server.close()
            self._server = None
