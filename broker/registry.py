"""The open network connections of a running broker, and the order in which they are shut down.

Beside the listeners, as uvicorn keeps its `ServerState`: the router (`broker/core.py`) knows only the
receivers of deliveries by session key; which sockets are open (clients still in CONNECT included), what
the ones still in CONNECT hold together (the pre-authentication budget, broker/limits.py), what they sent
before they closed, and how they are closed at shutdown live here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from broker.core import Broker, will_delay
from broker.deadlines import DeadlineWheel
from broker.engine import Connection
from broker.limits import PreAuthBudget

__all__ = ["OpenConnection", "ServerState"]

log = logging.getLogger("roost.broker")


class OpenConnection(Protocol):
    """What the registry needs of a network connection (`broker.connection.OpenConnection` is one)."""

    engine: Connection

    @property
    def closed(self) -> asyncio.Future[None]: ...

    def abort(self) -> None: ...


class ServerState:
    """Every open MQTT connection of one broker, from every listener (TCP, TLS, WebSocket)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.connections: set[OpenConnection] = set()
        # Their engines' next deadlines (CONNECT timeout, keep alive), on one loop timer.
        self.deadlines = DeadlineWheel()
        # Set by `shutdown`: connections accepted from then on are closed as soon as they are made.
        self.closing = False
        # PUBLISH packets sent to and received from clients that have since disconnected, by tenant
        # namespace (a tenant's messages out and in: `messages_sent`, the console's charts).
        self.sent_by_closed_mount: dict[str, int] = {}
        self.received_by_closed_mount: dict[str, int] = {}
        # The connections of every listener that have not finished CONNECT, and the bytes their engines
        # buffer: each one is admitted in `opened`, and its shell reports its `pending_bytes` after each read
        # and releases it when its CONNECT is handled or it closes. Refusals count in `Stats.pending_refused`.
        settings = broker.settings
        self.preauth = PreAuthBudget(settings.max_pending_connections, settings.max_pending_bytes,
                                     broker.stats.pending_refused)
        # Connections whose input waits for the loop's next turn (a flood): they share the turn's budget
        # (broker/connection.py, `TURN_BUDGET`), so the loop's turn stays as short with four as with one.
        self.backlogged = 0
        # When (loop time) a client last sent a little (a read handled whole: a PINGREQ, acknowledgements):
        # while that is recent, the backlogs get the smaller `TURN_BUDGET_SERVING`, so the turns those
        # clients wait through are shorter.
        self.served_at = float("-inf")
        # Connections whose output waits a few turns to leave in one write while a flood lasts (written by
        # one callback per turn, broker/connection.py `_write_waiting`); at most every open connection.
        self.coalescing: list[object] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the connections run on, looked up once: on Python 3.11 `asyncio.get_running_loop()`
        makes a getpid() system call, once per accepted connection if the shell asked it."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def opened(self, connection: OpenConnection) -> bool:
        """Register a new connection. True if it may wait for its CONNECT: it is then admitted to the
        pre-authentication budget (`preauth`), and releases it itself once. False if it must be closed at
        once: the broker is shutting down (`closing`) or the budget refused it (counted)."""
        self.connections.add(connection)
        return not self.closing and self.preauth.admit()

    def closed(self, connection: OpenConnection) -> None:
        """The network connection is gone: what its client sent and was sent is kept, by namespace."""
        self.connections.discard(connection)
        engine = connection.engine
        mount = engine.mount
        if engine.messages_sent:
            self.sent_by_closed_mount[mount] = self.sent_by_closed_mount.get(mount, 0) + engine.messages_sent
        if engine.messages_received:
            received = self.received_by_closed_mount
            received[mount] = received.get(mount, 0) + engine.messages_received

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
            engine = connection.engine
            session = engine.session
            if session is not None and session.durable and engine.will is not None and will_delay(engine.will) > 0:
                continue  # kept pending in the durable session: its delay goes on after a restart
            will = engine.take_will()
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
