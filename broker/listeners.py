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

__all__ = ["ServerState", "TCPListener", "listening_socket"]

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
        sock = _bound_socket(self.host, self.requested_port)
        if sock is not None:
            self._server = await loop.create_server(self._protocol, sock=sock, backlog=1024)
        else:
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


def _bound_socket(host: str, port: int) -> socket.socket | None:
    """A listening socket for an address literal (`0.0.0.0`, `127.0.0.1`, `::`), bound as `create_server`
    binds (SO_REUSEADDR; an IPv6 socket IPv6-only); None for a name, which `create_server` resolves.

    Why not always `create_server(host, port)`: it resolves even a literal through libuv's thread pool
    (four threads that then stay) and the idna codec (its modules and Unicode tables), 0.2 MB of an idle
    Roost for nothing to look up."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        break
    else:
        return None
    return listening_socket(family, host, port, v6only=True)


def listening_socket(family: int, host: str, port: int, *, v6only: bool) -> socket.socket:
    """A non-blocking TCP socket bound to `(host, port)` and listening (backlog 1024), with SO_REUSEADDR;
    an IPv6 socket accepts IPv6 only when `v6only`. Closed again if the bind fails, which raises.

    proto IPPROTO_TCP, not 0: asyncio's own loop sets TCP_NODELAY on accepted sockets only then."""
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if v6only and family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
