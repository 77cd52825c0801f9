"""The composition root: builds Roost from a `Config` and runs it in one asyncio process.

Start-up goes bottom-up (storage -> live access -> broker -> MQTT listener -> HTTP), shutdown top-down, as
uvicorn's own server does: stop accepting, ask each connection to close, wait up to a grace period, abort
what is left, then write what is buffered (quota counts, message history) and close the database.
The HTTP side is uvicorn's `Server.serve()` running as a task on the broker's loop; its signal capture is
switched off because the process has one owner of SIGTERM and SIGINT: `run_until_signal` below. The HTTP
port is bound and accepting at start-up, but uvicorn, Starlette and the app are loaded at the first
request (control/http_front.py says why and how).

A listener that cannot bind stops start-up with a `StartupError` naming the address and the config key
(`mqtt.port`, `tls.port`, `http.port`). Once running, Roost checks each second that its database is still
the file in the data folder: a folder deleted or replaced under it turns `/health` unhealthy (503) and is
logged, since the next `roost` command would otherwise write a database this server never reads. With a
console (`roost serve`), start-up prints where the dashboard is and, while no user exists, the one-time
setup link (control/dashboard/setup.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TextIO

from bridge.manager import Bridges
from broker.core import Broker
from broker.hooks import AnonymousHook, HookChain
from broker.listeners import ServerState, TCPListener, listening_socket
from broker.service import BrokerService
from broker.settings import VERSION
from broker.history import run_history
from broker.sys_topics import run_sys_topics
from broker.tenants import TenantLimits
from broker.tls import TLSListener
from control import gc_policy
from control.config import Config
from control.data_dir_lock import DataDirLock
from control.errors import StartupError
from control.first_run import FirstRun
from control.http_front import HTTPFront
from control.local_control import LocalControl
from control.metrics import Metrics
from control.plans import DEFAULT_PLAN, DEFAULT_PLANS
from control.process_memory import limit_malloc_arenas, trim
from control.tls import TLSFiles
from storage.access import LiveAccess, PlanTerms, StorageAuthHook, tenant_mount
from storage.broker_state import BrokerStateStore, open_broker_state
from storage.database import DATABASE_FILE_NAME, read_only_reason
from storage.recorder import MessageRecorder
from storage.store import Store, open_store
from storage.usage import UsageMeter

if TYPE_CHECKING:
    from control.services import Services

__all__ = ["Roost"]

log = logging.getLogger("roost")

_BIND_REASONS = {
    errno.EADDRINUSE: "the address is already in use (another program, or another Roost, listens there)",
    errno.EACCES: "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
    errno.EADDRNOTAVAIL: "this machine has no such address",
}


async def _bind(key: str, host: str, port: int, start: Callable[[], Awaitable[Any]]) -> Any:
    """Run a listener's `start`, turning a failed bind into words that name the address and the key."""
    try:
        return await start()
    except OSError as exc:
        reason = _BIND_REASONS.get(exc.errno or 0, exc.strerror or str(exc))
        host_key = key.rsplit(".", 1)[0] + ".host"
        raise StartupError(
            f"cannot listen on {host}:{port} ({key}): {reason}; stop what holds it, or set another {key} "
            f"(or {host_key}) in the configuration"
        ) from None


class Roost:
    """One Roost process: storage, broker, listeners and HTTP app. `start()`, then `stop()`."""

    def __init__(self, config: Config, console: TextIO | None = None) -> None:
        self.config = config
        self.console = console  # where `roost serve` prints the dashboard URL and the setup link
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
        self.server_state = ServerState(self.broker)
        self.service = BrokerService(self.broker, self.server_state)
        self.mqtt_listener = TCPListener(self.server_state, mqtt.host, mqtt.port)
        self.tls = TLSFiles(config)
        self.tls_listener: TLSListener | None = None
        self.store: Store | None = None
        self.broker_state: BrokerStateStore | None = None
        self.metrics = Metrics(config.metrics) if config.metrics.enabled else None
        self._lock = DataDirLock(config.data_dir)
        self.access: LiveAccess | None = None
        self._services: Services | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.http_front: HTTPFront | None = None
        self._http_socket: socket.socket | None = None
        self.first_run = FirstRun()  # the setup link's token while no user exists (control/dashboard/setup.py)
        self.local_control: LocalControl | None = None
        self._database_identity: tuple[int, int] | None = None
        self.health_problem: str | None = None

    def _bridge_collector(self) -> Any:
        """The bridges' metrics, made with the metrics registry at the first scrape (control/metrics.py)."""
        from bridge.metrics import BridgeCollector

        return BridgeCollector(self.bridges)

    def _plan_terms(self, plan_name: str) -> PlanTerms:
        plans = self.config.plans
        plan = plans.get(plan_name) or plans.get(self.config.default_plan) or DEFAULT_PLANS[DEFAULT_PLAN]
        return PlanTerms(plan.messages_per_hour, plan.retention_days,
                         TenantLimits(plan.max_connections, plan.max_subscriptions))

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
        data_dir = self.config.data_dir
        if data_dir.is_dir() and (problem := read_only_reason(data_dir / DATABASE_FILE_NAME)) is not None:
            raise StartupError(problem)  # before the lock file, which cannot be made there either
        self._lock.acquire("serve")
        limit_malloc_arenas()  # before the databases' threads start
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
            self.metrics.watch(self.service, auth_hook=self.auth_hook, usage=usage, recorder=recorder)
            if self.bridges.bridges:
                self.metrics.register(self._bridge_collector)
            usage.on_flush = self.metrics.write_observer("quota")
            recorder.on_flush = self.metrics.write_observer("history")
        self.access = LiveAccess(store.db, self.auth_hook, self.service)
        await self.access.refresh()  # Credentials and ACLs are in memory before the first client arrives.
        await self._restore_broker_state()
        await self.bridges.start(self.broker, config.data_dir, self._bridge_user)  # before any client comes
        self._spawn(self.access.watch())
        self._spawn(usage.run())
        self._spawn(recorder.run())
        self._database_identity = self._identify_database()
        self._spawn(self._watch_data_dir())
        self.local_control = LocalControl(config.data_dir, self.access.refresh)
        await self.local_control.start()
        await _bind("mqtt.port", config.mqtt.host, config.mqtt.port, self.mqtt_listener.start)
        await self._start_tls()
        self._spawn(run_history(self.broker, self.server_state, self.service.history, self.service.tenant_history))
        if config.mqtt.broker.sys_interval:
            self._spawn(run_sys_topics(self.broker, config.mqtt.broker.sys_interval))
        await self._start_http()
        # Everything built so far lives as long as the process: collected, then frozen out of the collector's
        # sight, and so are the clients' objects as they pile up (control/gc_policy.py says how and why).
        self.gc_policy, watch_gc = gc_policy.start(self.metrics)
        self._spawn(watch_gc)
        trim()  # the free pages start-up's garbage left in the heap go back (control/process_memory.py)
        log.info(
            "Roost %s started: MQTT on %s:%d, HTTP on %s:%d, data in %s",
            VERSION, config.mqtt.host, self.mqtt_port, config.http.host, self.http_port, config.data_dir,
        )
        if not await store.users.count():
            token = self.first_run.open()
            if self.console is not None:
                self._print_first_run(token)
        elif self.console is not None:
            print(f"Dashboard: {self.dashboard_url}", file=self.console, flush=True)

    @property
    def dashboard_url(self) -> str:
        """The dashboard's address for people on the LAN: the public host when listening on every address."""
        http = self.config.http
        host = self.config.mqtt.public_host if http.host in ("0.0.0.0", "::") else http.host
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self.config.tls.https else "http"
        return f"{scheme}://{host}:{self.http_port}/"

    def _print_first_run(self, token: str) -> None:
        """Printed to the console only, never logged: the link makes its visitor an administrator."""
        print(
            f"Dashboard: {self.dashboard_url}\n"
            "No user exists yet. Create the first administrator in your browser (this link works once):\n"
            f"    {self.dashboard_url}setup?token={token}\n"
            "or on the command line: roost user add NAME --admin --password-stdin",
            file=self.console, flush=True,
        )

    def _identify_database(self) -> tuple[int, int] | None:
        try:
            info = os.stat(self.config.data_dir / DATABASE_FILE_NAME)
        except OSError:
            return None
        return (info.st_dev, info.st_ino)

    async def _watch_data_dir(self, interval: float = 1.0) -> None:
        """Each second, check that the database file is still the one this server has open."""
        while True:
            await asyncio.sleep(interval)
            identity = self._identify_database()
            if identity == self._database_identity:
                if self.health_problem is not None:
                    log.info("the database %s is back", self.config.data_dir / DATABASE_FILE_NAME)
                    self.health_problem = None
                continue
            if self.health_problem is None:
                what = "deleted" if identity is None else "replaced"
                self.health_problem = (
                    f"the database {self.config.data_dir / DATABASE_FILE_NAME} was {what} while Roost runs: "
                    "what changes now is not saved where the next start reads it; restore the data folder "
                    "and restart Roost"
                )
                log.error("%s", self.health_problem)

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
        # A record that cannot be restored is moved aside and skipped, never fatal (storage/state_quarantine.py).
        sessions, retained = await state.load()
        self.broker.restore(sessions, retained, state.broken)
        # Credentials revoked, ACLs narrowed and users deleted while Roost was down apply to what was restored,
        # before any will of it is published.
        assert self.access is not None
        self.access.enforce()
        self.access.prune_retained()
        self.broker.resume_timers(state.broken)
        await state.move_broken()

    async def _start_tls(self) -> None:
        tls = self.config.tls
        if not tls.port and not tls.https:
            # No certificate is made: the local CA is made when something first asks for it (a device
            # certificate, GET /api/v1/ca.pem), by `CertificateStore.authority()`.
            return
        self.tls.prepare()
        if tls.port:
            assert self.tls.mqtt_context is not None
            listener = self.tls_listener = TLSListener(
                self.server_state, tls.host, tls.port, self.tls.mqtt_context, tls.handshake_timeout
            )
            self.tls.on_reload.append(lambda: setattr(listener, "context", self.tls.mqtt_context))
            await _bind("tls.port", tls.host, tls.port, listener.start)
        if tls.watch_interval:
            self._spawn(self.tls.watch(tls.watch_interval))

    async def _start_http(self) -> None:
        # Bind the HTTP socket ourselves so the port is known (and accepting) from start-up on.
        http = self.config.http
        family = socket.AF_INET6 if ":" in http.host else socket.AF_INET

        async def listen() -> socket.socket:
            # Not IPv6-only: on "::" the dashboard answers IPv4 clients too.
            return listening_socket(family, http.host, http.port, v6only=False)

        sock: socket.socket = await _bind("http.port", http.host, http.port, listen)
        self._http_socket = sock
        context = self.tls.https_front_context() if self.config.tls.https else None
        self.http_front = HTTPFront(sock, context, self._make_app)
        await self.http_front.start()

    @property
    def services(self) -> Services | None:
        """The control plane's services (users, instances, devices...), None before start-up reached them.
        Made at their first use, the HTTP app's or the tests': a broker nobody manages does not hold them."""
        usage = self.auth_hook.usage
        if self._services is None and self.store is not None and self.access is not None and usage is not None:
            from control.services import Services

            config = self.config
            self._services = Services.build(
                self.store,
                config.plans,
                access=self.access,
                broker=self.service,
                usage=usage,
                public_host=config.mqtt.public_host,
                public_port=config.mqtt.public_port or config.mqtt.port,
                certificates=self.tls.store,
                default_plan=config.default_plan,
            )
        return self._services

    @property
    def app(self) -> Any:
        """The Starlette app, None until the first HTTP request loaded it."""
        return self.http_front.app if self.http_front is not None else None

    def _make_app(self, stack: Any) -> Any:
        """The control plane's Starlette app, made when the HTTP stack (control/http_stack.py) is loaded."""
        services = self.services
        assert services is not None
        app = stack.create_app(self.service, services, self.metrics, lambda: self.health_problem,
                               first_run=self.first_run)
        app.state.bridges = self.bridges  # GET /api/v1/bridges
        return app

    async def stop(self) -> None:
        """Stop accepting, close every client (v5: DISCONNECT 0x8B), stop HTTP, write what is buffered."""
        log.info("shutting down")
        if self.http_front is not None:
            self.http_front.begin_stop()  # uvicorn notices on its next tick, while the broker closes
        await self.mqtt_listener.close()
        if self.tls_listener is not None:
            await self.tls_listener.close()
        await self.server_state.shutdown()
        await self.bridges.stop()  # after the wills of the shutdown, which it may forward
        if self.http_front is not None:
            await self.http_front.stop()
        if self._http_socket is not None:
            self._http_socket.close()
        if self.local_control is not None:
            await self.local_control.close()
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
