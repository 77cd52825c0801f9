"""MQTT over WebSocket: an asyncio transport made of two callables, so the same `MQTTConnection` shell runs
over any WebSocket server.

The HTTP side (Starlette on uvicorn) accepts the WebSocket and hands `run()` a `receive()` that returns
the bytes of the next binary message (None once the peer has gone), a `send(bytes)` and a `close(code)`.
The broker never imports the web framework. Binary messages carry MQTT bytes, split or coalesced however
the client likes [MQTT-6.0.0-2]: they are fed to the connection's `PacketReader` as a TCP stream would be.
A text message is a protocol violation and closes the connection [MQTT-6.0.0-1].

A server may push instead (Roost's does, control/ws_protocol.py): it calls `feed(piece)` with each piece of
a binary message as it parses it, in the loop turn of the socket read, and is told through `reading(bool)`
when to stop and go on reading; `receive()` then only reports the end or a text message. Pushed, bytes
meet the connection's reader and the pre-authentication budget (broker/limits.py) as soon as a TCP read
would: a piece waiting for a task to take it is memory no limit sees, once per connection.

Flow control is the TCP listener's: `write()` queues, one writer task sends what queued (coalesced into
one message), and past the high-water mark the protocol hears `pause_writing()`; `pause_reading()` stops
asking for the next message, which (uvicorn reads one message ahead at most) stops reading the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["TextFrame", "WebSocketTransport"]

log = logging.getLogger("roost.listeners")

NORMAL_CLOSURE = 1000
PROTOCOL_ERROR = 1002
UNSUPPORTED_DATA = 1003


class TextFrame(Exception):
    """`receive()` raises this for a text message: MQTT travels in binary messages only."""


class WebSocketTransport(asyncio.Transport):
    """One WebSocket connection seen as an `asyncio.Transport` by its `asyncio.Protocol`."""

    def __init__(
        self,
        send: Callable[[bytes], Awaitable[None]],
        close: Callable[[int], Awaitable[None]],
        extra: dict[str, Any] | None = None,
        reading: Callable[[bool], None] | None = None,
    ) -> None:
        super().__init__(extra)
        self._send = send
        self._close_socket = close
        self._reading = reading  # a pushing server's switch (see `feed`)
        self._early: list[bytes] = []  # pieces pushed before `run` gave us the protocol
        self._protocol: asyncio.Protocol | None = None
        self._buffer: list[bytes] = []
        self._size = 0  # queued and being sent
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._writing_paused = False
        self._wakeup = asyncio.Event()
        self._readable = asyncio.Event()
        self._readable.set()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None

    # -- driving it ------------------------------------------------------------------------------------------

    async def run(self, protocol: asyncio.Protocol, receive: Callable[[], Awaitable[bytes | None]]) -> None:
        """Serve `protocol` until either side ends the connection; `connection_lost` is called once."""
        self._protocol = protocol
        protocol.connection_made(self)
        early, self._early = self._early, []
        for piece in early:
            self.feed(piece)
        writer = self._writer = asyncio.create_task(self._write_loop())
        reader = asyncio.create_task(self._read_loop(receive))
        error: Exception | None = None
        try:
            await asyncio.wait((writer, reader), return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and not reader.cancelled():
                error = reader.exception()  # type: ignore[assignment]
            if reader.done():
                # The peer went (or misbehaved): stop sending, and close our side if it is still open.
                self._closing = True
                self._buffer.clear()
                self._wakeup.set()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(writer), 1.0)
        finally:
            for task in (reader, writer):
                task.cancel()
            # Through gather, which returns their errors instead of raising them here: raised, an error would
            # hold this frame in its traceback while this frame holds it (a cycle, control/gc_policy.py).
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(reader, writer, return_exceptions=True)
            self._closing = True
            protocol.connection_lost(error)
            # Nothing of a closed connection waits for the garbage collector (control/gc_policy.py): the
            # protocol refers to us, so we let go of it, as uvloop's transports do.
            self._protocol = None

    async def _read_loop(self, receive: Callable[[], Awaitable[bytes | None]]) -> None:
        protocol = self._protocol
        assert protocol is not None
        while not self._closing:
            if not self._readable.is_set():
                await self._readable.wait()
                continue
            try:
                data = await receive()
            except TextFrame:
                log.info("text message over MQTT WebSocket from %s; closing", self.get_extra_info("peername"))
                self._buffer.clear()
                await self._close_socket(UNSUPPORTED_DATA)
                raise ConnectionError("text message on an MQTT WebSocket") from None
            if data is None:
                return
            if data and not self._closing:
                protocol.data_received(data)

    async def _write_loop(self) -> None:
        while True:
            while not self._buffer:
                if self._closing:
                    with contextlib.suppress(Exception):
                        await self._close_socket(NORMAL_CLOSURE)
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
            self._buffer.clear()
            try:
                await self._send(data)
            except Exception:
                self._closing = True  # the peer is gone; the reader sees it too
                return
            self._size -= len(data)
            if self._writing_paused and self._size <= self._low:
                self._writing_paused = False
                if self._protocol is not None:
                    self._protocol.resume_writing()

    def feed(self, data: bytes) -> None:
        """A piece of a binary message pushed by the server as it is parsed: to the protocol at once."""
        if self._closing or not data:
            return
        if self._protocol is None:
            self._early.append(data)
            return
        self._protocol.data_received(data)

    # -- asyncio.Transport -----------------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        self._buffer.append(bytes(data))
        self._size += len(data)
        self._wakeup.set()
        if not self._writing_paused and self._size > self._high:
            self._writing_paused = True
            if self._protocol is not None:
                self._protocol.pause_writing()

    def close(self) -> None:
        """Send what is queued, then close the WebSocket (code 1000)."""
        self._closing = True
        self._readable.set()
        self._wakeup.set()

    def abort(self) -> None:
        """Close at once, dropping what is queued (even a send stuck on a peer that does not read)."""
        self._buffer.clear()
        self.close()
        if self._writer is not None:
            self._writer.cancel()

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        self._readable.clear()
        if self._reading is not None:
            self._reading(False)

    def resume_reading(self) -> None:
        self._readable.set()
        if self._reading is not None:
            self._reading(True)

    def is_reading(self) -> bool:
        return self._readable.is_set()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = 64 * 1024 if high is None else high
        self._low = self._high // 4 if low is None else low

    def get_write_buffer_size(self) -> int:
        return self._size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    def can_write_eof(self) -> bool:
        return False
