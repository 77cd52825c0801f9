"""The asyncio shell around the sans-IO protocol engine, shared by TCP, TLS and WebSocket.

As uvicorn's `h11_impl.py` is to h11: `data_received` hands the bytes and the loop's time to
`broker.engine.Connection`, and the shell does only what needs the loop: write what the engine queued,
once per loop iteration (coalesced writes), keep one timer at or before the engine's next deadline, pause
reading while the transport's buffer is above its high-water mark (the engine is then `congested`), and
close, lingering after a server DISCONNECT. Until its CONNECT is handled, it reports what the engine
buffers to the pre-authentication budget that all listeners share (`ServerState.preauth`, broker/limits.py).

A lingering close: the write side is shut (TCP's FIN, after the DISCONNECT), and what the client still sends
is read and discarded for at most `LINGER_SECONDS`, then the socket closes. Closing at once while the
client is still sending would answer its next bytes with a reset, and a reset may destroy the DISCONNECT
before the client has read its reason code. Transports that cannot shut their write side (TLS, WebSocket)
keep the connection open, discarding input, for the same bounded time.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import cast

from broker.engine import CLOSE, LINGER, Connection
from broker.registry import ServerState

__all__ = ["LINGER_SECONDS", "MQTTConnection"]

log = logging.getLogger("roost.connection")

# The longest a lingering close waits for the client to stop sending after a server DISCONNECT.
LINGER_SECONDS = 1.0
# A read at least this large means the client has a backlog: yield to the loop after handling it.
_YIELD_AFTER_BYTES = 16_384


class MQTTConnection(asyncio.Protocol):
    """One network connection: the asyncio side of a `broker.engine.Connection`."""

    def __init__(self, server: ServerState, listener: str = "tcp") -> None:
        self.server = server
        self.listener = listener
        self._loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.engine = Connection(server.broker, listener, now=self._loop.time())
        self._flush_scheduled = False
        # While the engine handles a read, output only marks `_flush_wanted`: `data_received` then flushes
        # on the loop's next turn (coalesced with what routing adds meanwhile), or at once if the read ended
        # in a close (a DISCONNECT), as nothing can be added to a closing connection's output.
        self._receiving = False
        self._flush_wanted = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when `_timer` fires (the engine's deadline it was armed for)
        self._closing = False
        self._reading_paused = False
        self._yielding = False
        # Admitted to the pre-authentication budget and not released yet: each read is reported to it, with
        # what the engine held at the last report (`_held`).
        self._pending = False
        self._held = 0
        # `closed`, made when first asked for (shutdown asks): most connections never need one.
        self._closed: asyncio.Future[None] | None = None
        self._lost = False

    @property
    def closed(self) -> asyncio.Future[None]:
        """Resolved when the network connection is gone; shutdown awaits these."""
        future = self._closed
        if future is None:
            future = self._closed = self._loop.create_future()
            if self._lost:
                future.set_result(None)
        return future

    # -- asyncio.Protocol -----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        engine = self.engine
        peer = self.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            engine.remote_address = f"{peer[0]}:{peer[1]}"
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            engine.tls = True
            engine.certificate = _peer_certificate(ssl_object)
        engine.on_output = self._schedule_flush
        broker = self.server.broker
        high = broker.settings.write_buffer_high
        self.transport.set_write_buffer_limits(high, high // 4)  # positional: cheaper into uvloop's Cython
        broker.stats.connections_opened += 1
        server = self.server
        if not server.opened(self):
            if server.closing:
                # Accepted while the broker shuts down (the listener was closing): not served.
                self._closing = True
                self.transport.close()
                return
            # Too many connections are still in CONNECT, or they hold too much: closed at once, counted.
            log.info("refused a connection from %s: %d connections already await their CONNECT",
                     engine.remote_address, len(server.preauth))
            engine.refuse_pending()
            self._close(CLOSE)
            return
        self._pending = True
        self._arm()

    def data_received(self, data: bytes) -> None:
        engine = self.engine
        self._receiving = True
        try:
            engine.receive_data(data, self._loop.time())
        finally:
            self._receiving = False
        if self._flush_wanted:
            self._flush_wanted = False
            if engine.close_requested:
                self._flush()
            else:
                self._schedule_flush()
        if self._pending:
            self._hold_pending()
            if self._closing:
                return
        if engine.rearm:
            # The CONNECT set the keep alive. The timer armed at the connect timeout stays if it fires first:
            # the engine then finds the client connected and the timer is armed at its next deadline (one
            # timer per connection, not two, for the many clients that stay less than the connect timeout).
            engine.rearm = False
            deadline = engine.next_deadline()
            if self._timer is None or (deadline is not None and deadline < self._timer_at):
                self._arm()
        if len(data) >= _YIELD_AFTER_BYTES and not self._yielding and not self._reading_paused and not self._closing:
            # A flooding client: stop reading it until the loop's next turn. libuv would otherwise read the
            # same socket up to 32 times per wake-up, and every other client (subscribers' writes,
            # PINGREQs) would wait behind megabytes of one publisher's backlog.
            self._yielding = True
            self.transport.pause_reading()  # type: ignore[union-attr]
            self._loop.call_soon(self._end_yield)

    def _hold_pending(self) -> None:
        """Report what the engine buffers before its CONNECT is handled; once it is (accepted or refused),
        leave the budget. A connection that takes the pending ones over `max_pending_bytes` is closed."""
        held = self.engine.pending_bytes
        preauth = self.server.preauth
        if held is None:
            self._pending = False
            preauth.release(self._held)
        elif held == self._held:
            return
        elif preauth.hold(self._held, held):
            self._held = held
        else:
            self._pending = False
            log.info("closed %s: connections awaiting CONNECT hold more than max_pending_bytes",
                     self.engine.remote_address)
            self.engine.refuse_pending()
            self._close(CLOSE)

    def _end_yield(self) -> None:
        self._yielding = False
        if not self._reading_paused and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # Close the transport; connection_lost follows.

    def pause_writing(self) -> None:
        self.engine.pause_writing()
        if not self._reading_paused and self.transport is not None and not self._closing:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._reading_paused and self.transport is not None and not self._closing:
            self._reading_paused = False
            if not self._yielding:  # else _end_yield resumes it on the loop's next turn
                self.transport.resume_reading()
        self.engine.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            self._pending = False
            self.server.preauth.release(self._held)
        self.server.closed(self)
        self._lost = True
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self.engine.connection_lost(str(exc) if exc is not None else "")

    # -- what the engine asks for ---------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if self._receiving:
            self._flush_wanted = True
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write everything the engine queued in this loop iteration with one call; then close if asked."""
        self._flush_scheduled = False
        transport = self.transport
        if transport is None:
            return
        data = self.engine.data_to_send()
        if data and not transport.is_closing():
            transport.write(data)
        if self.engine.close_requested and not self._closing:
            self._close(self.engine.close_requested)

    def _close(self, action: int) -> None:
        self._closing = True
        transport = self.transport
        assert transport is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if action != LINGER:
            transport.close()
            return
        # Lingering: keep reading (the engine discards it) so the client's bytes meet no reset.
        if self._reading_paused or self._yielding:
            self._reading_paused = self._yielding = False
            transport.resume_reading()
        if transport.can_write_eof():
            try:
                transport.write_eof()
            except OSError:
                transport.close()
                return
        self._timer = self._loop.call_later(LINGER_SECONDS, transport.close)

    def _arm(self) -> None:
        """One timer, at the engine's next deadline."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.engine.next_deadline()
        if deadline is not None and not self._closing:
            loop = self._loop
            # call_later, not call_at: uvloop's call_at is call_later(when - time()) through a Python-level
            # call with keywords, twice the cost.
            self._timer = loop.call_later(deadline - loop.time(), self._on_timer)
            self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        self.engine.handle_timeout(self._loop.time())
        if not self._closing:
            self._arm()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _peer_certificate(ssl_object: ssl.SSLObject) -> tuple[str | None, str | None]:
    """The subject CN and serial (upper-case hex, no leading zeros) of the client certificate that the TLS
    handshake verified; (None, None) when the client presented none."""
    certificate = ssl_object.getpeercert()  # Only a verified certificate is reported.
    if not certificate or "serialNumber" not in certificate:
        return None, None
    common_name = next(
        (value for rdn in certificate.get("subject", ()) for key, value in rdn if key == "commonName"), None
    )
    return common_name, format(int(certificate["serialNumber"], 16), "X")
