"""The HTTP port's listener: it accepts at once and loads the HTTP stack when the first request arrives.

Why: uvicorn, Starlette and the control plane's routes are about 11 MB of resident memory and most of
the start-up time on a Raspberry Pi, and a gateway that only brokers MQTT may never be visited. So Roost
binds and listens on the HTTP port at start-up as before (the port accepts TCP connections from the first
moment, and a bind failure still stops start-up), but imports control/http_stack.py only when a
connection sends its first bytes. A connection that only opens and closes (a port check) loads nothing.

While the stack loads (in a thread, so the broker's loop keeps serving MQTT between the import's steps;
a fraction of a second here, about a second on a Pi), each connection that has sent bytes waits with its
reading paused, holding at most one read. Once loaded, each connection is handed over (`EmbeddedUvicorn.
adopt`) with what it sent; from then on a connection is handed over at its first bytes, at the cost of
one small protocol object. HTTPS: the front's server does the TLS handshake with the same context uvicorn
had, and uvicorn sees a TLS transport (its requests' scheme is `https`).

If the stack fails to load, the error is logged, the waiting connections are closed, and the next
request tries again. Limit: at most `MAX_WAITING` connections wait for the load (default 1,024, the
listen backlog); more are closed at once. `HTTPFront.waiting` is how many wait now; it is not in
/metrics, which the stack itself serves: once /metrics can answer, the number is zero for good.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from control.process_memory import trim

__all__ = ["MAX_WAITING", "HTTPFront"]

log = logging.getLogger("roost.http")

MAX_WAITING = 1024
STACK_MODULE = "control.http_stack"


class _Arriving(asyncio.Protocol):
    """A connection accepted by the front, until its first bytes hand it over to uvicorn."""

    __slots__ = ("front", "transport", "data", "eof")

    def __init__(self, front: HTTPFront) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.data = b""
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.front.arrived(self)

    def eof_received(self) -> bool:
        self.eof = True
        if not self.data:
            return False  # closed before asking anything: nothing to hand over
        self.front.arrived(self)
        return True  # keep the transport open for uvicorn, which answers and then closes

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.left(self)


def _import_in_thread(loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
    """Import the HTTP stack in a thread of its own; the future gets the module. A thread, not the loop's
    default executor, so no idle worker is left behind once it is done."""
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        try:
            module = importlib.import_module(STACK_MODULE)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop, which logs it
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, module, None)

    threading.Thread(target=work, name="roost-http-load", daemon=True).start()
    return future


class HTTPFront:
    """Accepts on the HTTP socket and hands each connection to uvicorn, loading it at the first request.

    `make_app(stack)` builds the Starlette app from the loaded module (control/http_stack.py); it runs on
    the loop, once."""

    def __init__(self, sock: socket.socket, ssl_context: ssl.SSLContext | None,
                 make_app: Callable[[Any], Any]) -> None:
        self.sock = sock
        self.ssl_context = ssl_context
        self.make_app = make_app
        self.app: Any = None
        self.uvicorn: Any = None  # control.http_stack.EmbeddedUvicorn, once loaded
        self._server: asyncio.AbstractServer | None = None
        self._waiting: dict[_Arriving, None] = {}  # insertion-ordered: handed over in arrival order
        self._loading: asyncio.Task[None] | None = None
        self._serving: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def loaded(self) -> bool:
        return self.uvicorn is not None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Arriving(self), sock=self.sock, ssl=self.ssl_context,
                                                backlog=MAX_WAITING)

    def arrived(self, connection: _Arriving) -> None:
        """A connection sent its first bytes (or its first bytes and an end)."""
        transport = connection.transport
        if transport is None or transport.is_closing():
            return
        if self._closing:
            transport.abort()  # Roost is stopping: uvicorn no longer takes connections
            return
        if self.uvicorn is not None:
            self._hand_over(connection)
            return
        if connection in self._waiting:
            return  # more bytes while its reading was being paused: they are in `data`
        if len(self._waiting) >= MAX_WAITING:
            transport.abort()
            return
        transport.pause_reading()
        self._waiting[connection] = None
        if self._loading is None:
            self._loading = asyncio.create_task(self._load())

    def left(self, connection: _Arriving) -> None:
        self._waiting.pop(connection, None)

    def _hand_over(self, connection: _Arriving) -> None:
        transport = connection.transport
        assert transport is not None and self.uvicorn is not None
        data, connection.data = connection.data, b""
        try:
            self.uvicorn.adopt(transport, data, connection.eof)
        except Exception:
            log.exception("could not hand an HTTP connection to uvicorn")
            transport.abort()

    async def _load(self) -> None:
        try:
            stack = await _import_in_thread(asyncio.get_running_loop())
            app = self.make_app(stack)
            server = stack.build_server(app)
            serving = asyncio.create_task(server.serve(sockets=[]))
            ready = asyncio.create_task(server.ready.wait())
            await asyncio.wait({serving, ready}, return_when=asyncio.FIRST_COMPLETED)
            if not server.ready.is_set():
                ready.cancel()
                serving.result()  # raises what stopped it
                raise RuntimeError("uvicorn stopped before it was ready")
        except asyncio.CancelledError:
            self._close_waiting()
            raise
        except Exception:
            log.exception("could not load the HTTP stack; closing the requests that waited for it")
            self._close_waiting()
            self._loading = None  # the next request tries again
            return
        log.info("HTTP stack loaded")
        # The import's garbage (Starlette's and the dataclasses' throw-away classes) is young: a collection of
        # the young generations frees it without a full one's pause, then the freed pages go back.
        gc.collect(1)
        trim()
        self.app, self.uvicorn, self._serving = app, server, serving
        waiting, self._waiting = list(self._waiting), {}
        for connection in waiting:
            transport = connection.transport
            if transport is not None and not transport.is_closing():
                self._hand_over(connection)

    def _close_waiting(self) -> None:
        waiting, self._waiting = list(self._waiting), {}
        for connection in waiting:
            if connection.transport is not None:
                connection.transport.abort()

    def begin_stop(self) -> None:
        """Stop accepting; uvicorn (if loaded) starts closing its connections on its next tick."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True

    async def stop(self) -> None:
        """Stop accepting, close what waits, and wait for uvicorn's own shutdown (its connections)."""
        self.begin_stop()
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
            await asyncio.gather(self._loading, return_exceptions=True)
        self._close_waiting()
        if self.uvicorn is not None:
            self.uvicorn.should_exit = True
        if self._serving is not None:
            await self._serving

