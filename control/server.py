"""The composition root: builds Roost from a `Config` and runs it in one asyncio process.

Start-up goes bottom-up (storage -> live access -> broker -> MQTT listener -> HTTP), shutdown top-down, as uvicorn's own
server does: stop accepting, ask each connection to close, wait up to a grace period, abort what is left.
The HTTP side is uvicorn's `Server.serve()` running as a task on the broker's loop; its signal capture is
switched off because the process has one owner of SIGTERM and SIGINT: `run_until_signal` below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn

from broker.core import Broker
from broker.hooks import AnonymousHook, HookChain
from broker.listeners import TCPListener
from broker.service import BrokerService
from broker.settings import VERSION
from broker.sys_topics import run_sys_topics
from control.app import create_app
from control.config import Config
from storage.access import LiveAccess, StorageAuthHook
from storage.database import Database, open_database

__all__ = ["Roost"]

log = logging.getLogger("roost")


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn's server without its own signal handling: Roost decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Roost:
    """One Roost process: broker, listeners and HTTP app. `start()`, then `stop()`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        mqtt = config.mqtt
        # Credentials from the database first; anonymous access (when allowed) for clients with no user name.
        self.auth_hook = StorageAuthHook()
        hooks = HookChain(
            [
                self.auth_hook,
                AnonymousHook(mqtt.allow_anonymous, mqtt.anonymous.publish, mqtt.anonymous.subscribe, mqtt.anonymous.deny),
            ]
        )
        self.broker = Broker(mqtt.broker, hooks)
        self.service = BrokerService(self.broker)
        self.database: Database | None = None
        self.access: LiveAccess | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.mqtt_listener = TCPListener(self.broker, mqtt.host, mqtt.port)
        self._http: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._http_socket: socket.socket | None = None
        self._sys_task: asyncio.Task[None] | None = None

    @property
    def mqtt_port(self) -> int:
        return self.mqtt_listener.port

    @property
    def http_port(self) -> int:
        assert self._http_socket is not None
        return int(self._http_socket.getsockname()[1])

    async def start(self) -> None:
        """Open everything; when this returns, both ports accept connections."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.database = await open_database(self.config.data_dir / "roost.db")
        self.access = LiveAccess(self.database, self.auth_hook, self.service)
        await self.access.refresh()  # Credentials and ACLs are in memory before the first client arrives.
        self._watch_task = asyncio.create_task(self.access.watch())
        await self.mqtt_listener.start()
        if self.config.mqtt.broker.sys_interval:
            self._sys_task = asyncio.create_task(run_sys_topics(self.broker, self.config.mqtt.broker.sys_interval))
        # Bind the HTTP socket ourselves so the port is known (and accepting) before uvicorn's task runs.
        http = self.config.http
        family = socket.AF_INET6 if ":" in http.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((http.host, http.port))
        sock.listen(1024)
        sock.setblocking(False)
        self._http_socket = sock
        uv_config = uvicorn.Config(
            create_app(self.service),
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        self._http = _EmbeddedUvicorn(uv_config)
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]))
        log.info(
            "Roost %s started: MQTT on %s:%d, HTTP on %s:%d, data in %s",
            VERSION, self.config.mqtt.host, self.mqtt_port, http.host, self.http_port, self.config.data_dir,
        )

    async def stop(self) -> None:
        """Stop accepting, close every client (v5: DISCONNECT 0x8B), then stop HTTP."""
        log.info("shutting down")
        await self.mqtt_listener.close()
        for task in (self._sys_task, self._watch_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.broker.shutdown()
        if self._http is not None and self._http_task is not None:
            self._http.should_exit = True
            await self._http_task
        if self._http_socket is not None:
            self._http_socket.close()
        if self.database is not None:
            await self.database.close()
        log.info("stopped")

    async def run_until_signal(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await self.stop()
