"""The asyncio shell around the sans-IO protocol engine, shared by TCP, TLS and WebSocket.

As uvicorn's `h11_impl.py` is to h11: `data_received` hands the bytes and the loop's time to
`broker.engine.Connection`, and the shell does only what needs the loop: write what the engine queued,
once per loop iteration (coalesced writes), put the engine's next deadline on the broker's one deadline
wheel (`broker/deadlines.py`: no timer per connection), pause reading while the transport's buffer is
above its high-water mark (the engine is then `congested`), and close, lingering after a server DISCONNECT.
Until its CONNECT is handled, it reports what the engine buffers to the pre-authentication budget that
all listeners share (`ServerState.preauth`, broker/limits.py).

A lingering close: the write side is shut (TCP's FIN, after the DISCONNECT), and what the client still sends
is read and discarded for at most `LINGER_SECONDS`, then the socket closes. Closing at once while the
client is still sending would answer its next bytes with a reset, and a reset may destroy the DISCONNECT
before the client has read its reason code. Transports that cannot shut their write side (TLS, WebSocket)
keep the connection open, discarding input, for the same bounded time.

Fairness: no client's input holds the loop for long. A flooding publisher's read (uvloop reads up to 256 KB
at a time) is not handled in the loop's I/O phase where it arrives but at the loop's next turn, in slices,
until its share of `TURN_BUDGET` is spent (`TURN_BUDGET_SERVING` while other clients are being served); the
rest waits in the shell, with reading paused, for the turn after, and the clients with such a backlog
share one budget, so a turn lasts about as long with four floods as with one. Every other client is served in
between: its PINGREQ answered, its acknowledgements written. Handled whole, one read of 64-byte PUBLISH
packets to 100 subscribers held the loop 0.3-0.5 s, and nothing was written to anyone meanwhile
(docs/benchmarks.md, "Tail latency (issue 20)"). While a flood lasts, output made of PUBLISH packets is
written every `FLUSH_INTERVAL`, or once `FLUSH_PACKETS` wait, rather than at every (short) turn, so that a
hundred subscribers do not cost a hundred small writes a millisecond; output with no PUBLISH in it
(acknowledgements, PINGRESP) is written as soon as the read that made it is handled, ahead of the flood's
next slices (docs/benchmarks.md, "Overload PINGREQ and fan-out silences, second round").
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

from broker.engine import CLOSE, LINGER, Connection
from broker.registry import ServerState

__all__ = ["FLUSH_INTERVAL", "FLUSH_PACKETS", "LINGER_SECONDS", "MQTTConnection", "SERVING_WINDOW", "TURN_BUDGET",
           "TURN_BUDGET_SERVING"]

log = logging.getLogger("roost.connection")

# The longest a lingering close waits for the client to stop sending after a server DISCONNECT.
LINGER_SECONDS = 1.0
# A read at least this large means the client has a backlog: yield to the loop after handling it.
_YIELD_AFTER_BYTES = 16_384
# The longest the input of the clients that have a backlog (a flood) holds the loop per turn, all of them
# together: each gets an equal share, and what is left of its read waits in `_backlog` for the next turn.
TURN_BUDGET = 0.001
# ... or this, while other clients are being served (one sent a little within `SERVING_WINDOW` s): then a
# turn is what they may wait before they are read. Not always: shorter turns cost each flood's bytes more
# (fan-in's CPU per message rose by about a tenth at 0.5 ms), and a flood alone has no one to wait for it.
TURN_BUDGET_SERVING = 0.0005
SERVING_WINDOW = 0.1
# While any client has a backlog, a connection that is being sent PUBLISH packets is written at most this
# long after its first one queued, not at every turn: coalesced writes, flushed at a bound.
FLUSH_INTERVAL = 0.005
# ... or once this many PUBLISH packets wait (what one turn adds may go over it: a turn is short).
FLUSH_PACKETS = 256
# The engine gets a backlog in slices, whose size adapts so that one takes at most half of a share of the
# budget: the cost of a byte differs a hundredfold between a PUBLISH to one subscriber and to a hundred.
_SLICE_MIN, _SLICE_MAX = 256, 65_536
_clock = time.perf_counter


class MQTTConnection(asyncio.Protocol):
    """One network connection: the asyncio side of a `broker.engine.Connection`."""

    # Slots, and no future until shutdown asks for one (`closed`): what an idle connection holds is
    # measured in docs/benchmarks.md, "Memory (issue 20)".
    __slots__ = ("_backlog", "_bucket", "_closed", "_closing", "_flush_scheduled", "_flush_wanted", "_lost",
                 "_loop", "_offset", "_held", "_pending", "_queued_at", "_reading_paused", "_receiving", "_sent_at_flush",
                 "_slice", "_timer", "_yielding", "engine", "listener", "server", "transport")

    def __init__(self, server: ServerState, listener: str = "tcp") -> None:
        self.server = server
        self.listener = listener
        self._loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.engine = Connection(server.broker, listener, now=self._loop.time())
        self._flush_scheduled = False
        # While the engine handles a read, output only marks `_flush_wanted`: `_work` then flushes on the
        # loop's next turn (coalesced with what routing adds meanwhile), or at once if the read ended in a
        # close (a DISCONNECT), as nothing can be added to a closing connection's output.
        self._receiving = False
        self._flush_wanted = False
        self._queued_at = 0.0
        self._sent_at_flush = 0
        # The engine's next deadline, as its bucket on `server.deadlines` (None: none pending).
        self._bucket: int | None = None
        # Only while a lingering close waits (rare: one loop timer for it).
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._reading_paused = False
        self._yielding = False
        # Input read but not handed to the engine yet (this turn's share of the budget was spent), from
        # `_offset`; at most one read of the transport, since reading is paused while it waits.
        self._backlog = b""
        self._offset = 0
        self._slice = _SLICE_MIN  # what a byte costs is not known yet: the first slices double from the least
        # Admitted to the pre-authentication budget and not released yet: each read is reported to it, with
        # what the connection held at the last report (`_held`).
        self._pending = False
        self._held = 0
        self._lost = False  # the network connection is gone
        self._closed: asyncio.Future[None] | None = None

    @property
    def closed(self) -> asyncio.Future[None]:
        """Resolved when the network connection is gone; shutdown awaits these. Made when first asked."""
        if self._closed is None:
            self._closed = self._loop.create_future()
            if self._lost:
                self._closed.set_result(None)
        return self._closed

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
            engine.certificate = _peer_certificate(self.transport.get_extra_info("peercert"))
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
            log.info("refused a connection from %s: %s", engine.remote_address, server.preauth.why_full())
            engine.refuse_pending()
            self._close(CLOSE)
            return
        self._pending = True
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._offset < len(self._backlog):  # read while a backlog waited (uvloop hands over what it had)
            self._backlog = self._backlog[self._offset:] + data
        elif len(data) <= _SLICE_MIN and not self._closing and not self.engine.congested:
            # A small read (a CONNECT, a PINGREQ, a few acknowledgements) is handled whole, as the smallest
            # slice would be: no slicing, no timing (a connect storm's reads are all of this kind).
            engine = self.engine
            self._receiving = True
            self.server.served_at = now = self._loop.time()
            try:
                engine.receive_data(data, now)
            finally:
                self._receiving = False
            self._input_handled(engine)
            return
        else:
            self._backlog = data
        self._offset = 0
        if len(data) >= _YIELD_AFTER_BYTES and not self._pending and not self._closing:
            # A large read (a flood's) is not handled here, in the loop's I/O phase, but at the loop's next
            # turn, with the other backlogs: the reads of every other client in this phase (a PINGREQ) are
            # then handled, and answered, without waiting behind the flood's share of the budget.
            self._next_turn(True)
            return
        self._work(len(data) >= _YIELD_AFTER_BYTES)

    def _input_handled(self, engine: Connection) -> bool:
        """After the engine took input: write (at once if it ended in a close), report what is held before
        CONNECT, move the deadline if the engine asks. False if the connection is closing."""
        if self._flush_wanted:
            self._flush_wanted = False
            if engine.close_requested or (self.server.backlogged and engine.messages_sent == self._sent_at_flush):
                # A close, or (while a flood lasts, so the next turn starts with its slices) output with no
                # PUBLISH in it (a PINGRESP, acknowledgements): written now.
                self._flush()
            else:
                self._schedule_flush()
        if self._pending:
            self._hold_pending()
            if self._closing:
                return False
        if engine.rearm:
            engine.rearm = False
            self._arm()
        return True

    def _work(self, busy: bool = False) -> None:
        """Hand the engine the backlog, slice by slice, until it is all handled or this connection's share of
        `TURN_BUDGET` is spent; then, if any is left or the read was large (`busy`), stop reading until the
        loop's next turn. libuv would otherwise read the same socket up to 32 times per wake-up, and every
        other client (subscribers' writes, PINGREQs) would wait behind megabytes of one publisher's input."""
        engine = self.engine
        data, offset, size = self._backlog, self._offset, self._slice
        now = self._loop.time()
        server = self.server
        began = _clock()
        budget = (TURN_BUDGET_SERVING if now - server.served_at < SERVING_WINDOW else TURN_BUDGET) / (
            server.backlogged + 1)
        self._receiving = True
        try:
            while offset < len(data) and not self._closing and not engine.congested:
                chunk = data if offset == 0 and len(data) <= size else data[offset:offset + size]
                start = _clock()
                engine.receive_data(chunk, now)
                offset += len(chunk)
                end = _clock()
                if end - start > budget / 2:
                    size = max(_SLICE_MIN, size // 2)
                elif end - start < budget / 8:
                    size = min(_SLICE_MAX, size * 2)
                if end - began >= budget:
                    break
        finally:
            self._receiving = False
        if engine.closing or self._closing:
            offset = len(data)  # a close was asked for: the rest is discarded (the engine would), not kept
        self._slice = size
        self._offset = offset
        left = offset < len(data)
        if not left:
            self._backlog, self._offset = b"", 0
        if not self._input_handled(engine):
            return
        if (left or busy) and not self._closing:
            self._next_turn(left)

    def _next_turn(self, left: bool) -> None:
        """Stop reading until the loop's next turn; then go on with the backlog, if `left`."""
        if not self._yielding:
            self._yielding = True
            if left:
                self.server.backlogged += 1
            self.transport.pause_reading()  # type: ignore[union-attr]
            self._loop.call_soon(self._end_yield, left)

    def _hold_pending(self) -> None:
        """Report what the engine buffers before its CONNECT is handled; once it is (accepted or refused),
        leave the budget. A connection that takes the pending ones over `max_pending_bytes` is closed."""
        held = self.engine.pending_bytes
        preauth = self.server.preauth
        if held is None:
            self._pending = False
            preauth.release(self._held)
            return
        held += len(self._backlog) - self._offset  # read, not handed to the engine yet (`_work`)
        if held == self._held:
            return
        if preauth.hold(self._held, held):
            self._held = held
        else:
            self._pending = False
            log.info("closed %s: connections awaiting CONNECT hold more than max_pending_bytes",
                     self.engine.remote_address)
            self.engine.refuse_pending()
            self._close(CLOSE)

    def _end_yield(self, counted: bool) -> None:
        self._yielding = False
        if counted:
            self.server.backlogged -= 1
        if self._closing or self.transport is None or self.transport.is_closing():
            return
        if self._offset < len(self._backlog):
            if self.engine.congested:
                return  # resume_writing goes on with it
            self._work()
            if self._yielding or self._closing:
                return  # more is left for the next turn
        if not self._reading_paused:
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # Close the transport; connection_lost follows.

    def pause_writing(self) -> None:
        self.engine.pause_writing()
        if not self._reading_paused and self.transport is not None and not self._closing:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        left = self._offset < len(self._backlog)
        if self._reading_paused and self.transport is not None and not self._closing:
            self._reading_paused = False
            if not self._yielding and not left:  # else _end_yield resumes it on the loop's next turn
                self.transport.resume_reading()
        self.engine.resume_writing()  # the engine handles what it held back while congested...
        if not self._closing and not self._input_handled(self.engine):  # ...so do what follows input
            return
        if left and not self._closing and not self.engine.congested:
            self._next_turn(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._stop_timers()
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
            self._queued_at = self._loop.time()
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write everything the engine queued with one call (coalesced: within this turn, or while a flood
        lasts up to `FLUSH_INTERVAL` or `FLUSH_PACKETS` when it holds PUBLISH packets); then close if asked."""
        if self._may_wait():
            waiting = self.server.coalescing
            waiting.append(self)
            if len(waiting) == 1:
                self._loop.call_soon(_write_waiting, self.server, self._loop)
            return
        self._flush_scheduled = False
        transport = self.transport
        if transport is None:
            return
        engine = self.engine
        self._sent_at_flush = engine.messages_sent
        data = engine.data_to_send()
        if data and not transport.is_closing():
            transport.write(data)
        if engine.close_requested and not self._closing:
            self._close(engine.close_requested)

    def _may_wait(self) -> bool:
        """Whether the output may wait for a later turn, to leave in fewer, larger writes: while a flood
        lasts, when it holds PUBLISH packets, fewer than `FLUSH_PACKETS` of them, for `FLUSH_INTERVAL`."""
        engine = self.engine
        return (
            self.server.backlogged > 0
            and 0 < engine.messages_sent - self._sent_at_flush < FLUSH_PACKETS
            and not engine.close_requested
            and self.transport is not None
            and self._loop.time() - self._queued_at < FLUSH_INTERVAL
        )

    def _close(self, action: int) -> None:
        self._closing = True
        transport = self.transport
        assert transport is not None
        self._stop_timers()
        if action != LINGER:
            transport.close()
            return
        # Lingering: keep reading (the engine discards it) so the client's bytes meet no reset.
        self._backlog, self._offset = b"", 0
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
        """Put the engine's next deadline on the wheel, in place of the one before."""
        self._disarm()
        deadline = self.engine.next_deadline()
        if deadline is not None and not self._closing:
            self._bucket = self.server.deadlines.add(self, deadline)

    def _stop_timers(self) -> None:
        """Closing: the deadline leaves the wheel, and a lingering close's timer (if any) is cancelled."""
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _disarm(self) -> None:
        if self._bucket is not None:
            self.server.deadlines.cancel(self, self._bucket)
            self._bucket = None

    def deadline_passed(self, bucket: int) -> None:
        """Called by the wheel; a deadline replaced since (another bucket) is ignored."""
        if bucket != self._bucket:
            return
        self._bucket = None
        self.engine.handle_timeout(self._loop.time())
        if not self._closing:
            self._arm()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _write_waiting(server: ServerState, loop: asyncio.AbstractEventLoop) -> None:
    """Once a turn while outputs wait to be coalesced: write those that may wait no longer. One callback
    for them all, not one each: a hundred subscribers of a flood wait at every turn."""
    waiting = cast("list[MQTTConnection]", server.coalescing)
    keep: list[MQTTConnection] = []
    done: list[MQTTConnection] = []
    for connection in waiting:
        (keep if connection._may_wait() else done).append(connection)
    if done:
        waiting[:] = keep
        for connection in done:
            connection._flush()
    if waiting:
        loop.call_soon(_write_waiting, server, loop)


def _peer_certificate(certificate: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """The subject CN and serial (upper-case hex, no leading zeros) of the client certificate that the TLS
    handshake verified; (None, None) when the client presented none. `certificate` is the TLS transport's
    "peercert" (`getpeercert()`, which reports only a verified certificate), decoded once by the transport
    when the handshake completed: not decoded again here."""
    if not certificate or "serialNumber" not in certificate:
        return None, None
    common_name = next(
        (value for rdn in certificate.get("subject", ()) for key, value in rdn if key == "commonName"), None
    )
    return common_name, format(int(certificate["serialNumber"], 16), "X")
