"""The composition root: builds Roost from a `Config` and runs it in one asyncio process.

Start-up goes bottom-up (storage -> live access -> broker -> MQTT listener -> HTTP), shutdown top-down, as
uvicorn's own server does: stop accepting, ask each connection to close, wait up to a grace period, abort
what is left, then write what is buffered (quota counts, message history) and close the database.
The HTTP side is uvicorn's `Server.serve()` running as a task on the broker's loop; its signal capture is
switched off because the process has one owner of SIGTERM and SIGINT: `run_until_signal` below.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
from collections.abc import Coroutine, Iterator
from typing import Any

import uvicorn

from bridge.manager import Bridges
from bridge.metrics import BridgeCollector
from broker.core import Broker
from broker.hooks import AnonymousHook, HookChain
from broker.listeners import TCPListener
from broker.service import BrokerService
from broker.settings import VERSION
from broker.sys_topics import run_sys_topics
from broker.tls import TLSListener
from control.app import create_app
from control.config import Config
from control.metrics import Metrics
from control.ops import DataDirLock
from control.plans import DEFAULT_PLANS
from control.services import Services
from control.tls import TLSFiles
from storage.access import LiveAccess, PlanTerms, StorageAuthHook, tenant_mount
from storage.broker_state import BrokerStateStore, open_broker_state
from storage.recorder import MessageRecorder
from storage.store import Store, open_store
from storage.usage import UsageMeter

__all__ = ["Roost"]

log = logging.getLogger("roost")


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn's server without its own signal handling: Roost decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Roost:
    """One Roost process: storage, broker, listeners and HTTP app. `start()`, then `stop()`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        mqtt = config.mqtt
        # Credentials from the database first; anonymous access (when allowed) for clients with no user name.
        self.auth_hook = StorageAuthHook(plan_terms=self._plan_terms)
        self.bridges = Bridges(config.bridges)
        hooks = HookChain(
            [
                self.auth_hook,
                AnonymousHook(mqtt.allow_anonymous, mqtt.anonymous.publish, mqtt.anonymous.subscribe, mqtt.anonymous.deny),
                *self.bridges.hooks(),
            ]
        )
        self.broker = Broker(mqtt.broker, hooks)
        self.service = BrokerService(self.broker)
        self.mqtt_listener = TCPListener(self.broker, mqtt.host, mqtt.port)
        self.tls = TLSFiles(config)
        self.tls_listener: TLSListener | None = None
        self.store: Store | None = None
        self.broker_state: BrokerStateStore | None = None
        self.metrics = Metrics(config.metrics) if config.metrics.enabled else None
        self._lock = DataDirLock(config.data_dir)
        self.access: LiveAccess | None = None
        self.services: Services | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._http: _EmbeddedUvicorn | None = None
        self._http_task: asyncio.Task[None] | None = None
        self._http_socket: socket.socket | None = None

    def _plan_terms(self, plan_name: str) -> PlanTerms:
        plan = self.config.plans.get(plan_name) or DEFAULT_PLANS["free"]
        return PlanTerms(plan.messages_per_hour, plan.retention_days)

    @property
    def mqtt_port(self) -> int:
        return self.mqtt_listener.port

    @property
    def tls_port(self) -> int | None:
        return self.tls_listener.port if self.tls_listener is not None else None

    def reload_certificates(self) -> bool:
        """Reload the certificate files now (SIGHUP does this): new connections get the new certificate."""
        return self.tls.reload(force=True)

    @property
    def http_port(self) -> int:
        assert self._http_socket is not None
        return int(self._http_socket.getsockname()[1])

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(coroutine))

    async def start(self) -> None:
        """Open everything; when this returns, both ports accept connections. The data directory is locked
        (`data_dir/roost.lock`) from here to `stop()`: `roost restore` refuses while it is held."""
        self._lock.acquire("serve")
        try:
            await self._start()
        except BaseException:
            # Undo what did start (the database's thread, background tasks, listeners, the lock): a
            # failed start must leave nothing behind that keeps the process alive.
            with contextlib.suppress(Exception):
                await self.stop()
            self._lock.release()
            raise

    async def _start(self) -> None:
        config = self.config
        store = self.store = await open_store(config.data_dir)
        usage = UsageMeter(store.quota)
        await usage.load()
        recorder = MessageRecorder(store.messages)
        self.auth_hook.usage = usage
        self.auth_hook.recorder = recorder
        if self.metrics is not None:
            self.metrics.watch(self.broker, auth_hook=self.auth_hook, usage=usage, recorder=recorder)
            self.metrics.registry.register(BridgeCollector(self.bridges))
            usage.on_flush = self.metrics.write_observer("quota")
            recorder.on_flush = self.metrics.write_observer("history")
        self.access = LiveAccess(store.db, self.auth_hook, self.service)
        await self.access.refresh()  # Credentials and ACLs are in memory before the first client arrives.
        await self._restore_broker_state()
        await self.bridges.start(self.broker, config.data_dir, self._bridge_user)  # before any client comes
        self.services = Services.build(
            store,
            config.plans,
            access=self.access,
            broker=self.service,
            usage=usage,
            public_host=config.mqtt.public_host,
            public_port=config.mqtt.public_port or config.mqtt.port,
            certificates=self.tls.store,
        )
        self._spawn(self.access.watch())
        self._spawn(usage.run())
        self._spawn(recorder.run())
        await self.mqtt_listener.start()
        await self._start_tls()
        if config.mqtt.broker.sys_interval:
            self._spawn(run_sys_topics(self.broker, config.mqtt.broker.sys_interval))
        await self._start_http()
        # Everything built so far (modules, config, the access snapshot) lives as long as the process: move
        # it out of the garbage collector's sight, so full collections under load only scan what the
        # traffic allocates.
        gc.freeze()
        log.info(
            "Roost %s started: MQTT on %s:%d, HTTP on %s:%d, data in %s",
            VERSION, config.mqtt.host, self.mqtt_port, config.http.host, self.http_port, config.data_dir,
        )

    async def _bridge_user(self, name: str) -> tuple[str, str] | None:
        """A bridge's `user`: the mount point of that user's namespace, and the name."""
        assert self.store is not None
        user = await self.store.users.get_by_name(name)
        return None if user is None else (tenant_mount(user.id), user.name)

    async def _restore_broker_state(self) -> None:
        """Durable sessions and retained messages from the last run are back before the listeners open."""
        state = self.broker_state = await open_broker_state(self.config.data_dir, self.config.storage.durability)
        if state is None:
            return
        self.broker.persistence = state
        # The state's commits run in the database's thread and need Python's GIL for moments at a time; on
        # a busy event loop each such moment waited up to the interpreter's switch interval (5 ms), which
        # stretched a commit of a few thousand rows past the 100 ms window. 1 ms halved the longest gap
        # between commits under load in bench.durability, at no measurable cost per message.
        sys.setswitchinterval(0.001)
        sessions, retained = await state.load()
        self.broker.restore(sessions, retained)
        # Credentials revoked, ACLs narrowed and users deleted while Roost was down apply to what was restored,
        # before any will of it is published.
        assert self.access is not None
        self.access.enforce()
        self.access.prune_retained()
        self.broker.resume_timers()

    async def _start_tls(self) -> None:
        tls = self.config.tls
        if not tls.port and not tls.https:
            self.tls.store.authority()  # the local CA still issues device certificates
            return
        self.tls.prepare()
        if tls.port:
            assert self.tls.mqtt_context is not None
            listener = self.tls_listener = TLSListener(
                self.broker, tls.host, tls.port, self.tls.mqtt_context, tls.handshake_timeout
            )
            self.tls.on_reload.append(lambda: setattr(listener, "context", self.tls.mqtt_context))
            await listener.start()
        if tls.watch_interval:
            self._spawn(self.tls.watch(tls.watch_interval))

    def _app(self) -> Any:
        app = create_app(self.service, self.services, self.metrics)  # type: ignore[arg-type]
        app.state.bridges = self.bridges  # GET /api/v1/bridges
        return app

    async def _start_http(self) -> None:
        # Bind the HTTP socket ourselves so the port is known (and accepting) before uvicorn's task runs.
        http = self.config.http
        family = socket.AF_INET6 if ":" in http.host else socket.AF_INET
        # proto IPPROTO_TCP, not 0: asyncio's own loop sets TCP_NODELAY on accepted sockets only then.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((http.host, http.port))
        sock.listen(1024)
        sock.setblocking(False)
        self._http_socket = sock
        assert self.services is not None
        uv_config = uvicorn.Config(
            self._app(),
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            ws="wsproto",
            ssl_context_factory=(lambda *_: self.tls.https_front_context()) if self.config.tls.https else None,
        )
        self._http = _EmbeddedUvicorn(uv_config)
        self._http_task = asyncio.create_task(self._http.serve(sockets=[sock]))

    async def stop(self) -> None:
        """Stop accepting, close every client (v5: DISCONNECT 0x8B), stop HTTP, write what is buffered."""
        log.info("shutting down")
        if self._http is not None:
            self._http.should_exit = True  # uvicorn notices on its next tick, while the broker closes
        await self.mqtt_listener.close()
        if self.tls_listener is not None:
            await self.tls_listener.close()
        await self.broker.shutdown()
        await self.bridges.stop()  # after the wills of the shutdown, which it may forward
        if self._http_task is not None:
            await self._http_task
        if self._http_socket is not None:
            self._http_socket.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # Each background writer flushes once more as it is cancelled.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.broker_state is not None:
            try:
                await self.broker_state.close()  # the last batch: what the shutdown itself changed included
            except Exception:
                log.exception("could not write the broker's state at shutdown")
        if self.store is not None:
            await self.store.close()
        self._lock.release()
        log.info("stopped")

    async def run_until_signal(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_certificates)
        try:
            await self.start()
        except BaseException:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            raise
        try:
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.stop()
