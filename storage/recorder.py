"""Message history: what devices publish on their project's topics, written to SQLite in batches.

The broker hands each message to `MessageRecorder.add`, which only appends to a list; a background task
writes the list in one transaction every second (or sooner when it grows), so recording never slows the
hot path and costs one commit per batch. The buffer is bounded: when the disk cannot keep up, the oldest
unwritten messages are dropped and counted rather than growing memory. Expired records are purged
periodically.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from storage.messages import MessageRepository
from storage.records import NewMessage

__all__ = ["MessageRecorder"]

log = logging.getLogger("roost.recorder")


class MessageRecorder:
    def __init__(
        self,
        repository: MessageRepository,
        *,
        interval: float = 1.0,
        batch_size: int = 1_000,
        max_buffered: int = 50_000,
        purge_every: float = 300.0,
    ) -> None:
        self._repository = repository
        self._interval = interval
        self._batch_size = batch_size
        self._max_buffered = max_buffered
        self._purge_every = purge_every
        self._buffer: list[NewMessage] = []
        self._wake = asyncio.Event()
        self.dropped = 0
        self.written = 0
        # Told (seconds, rows) after each batch is written: the metrics' SQLite write latency and batch size.
        self.on_flush: Callable[[float, int], None] | None = None

    def add(self, message: NewMessage) -> None:
        buffer = self._buffer
        if len(buffer) >= self._max_buffered:
            del buffer[0]
            self.dropped += 1
        buffer.append(message)
        if len(buffer) >= self._batch_size:
            self._wake.set()

    async def flush(self) -> int:
        batch, self._buffer = self._buffer, []
        if not batch:
            return 0
        started = time.perf_counter()
        try:
            written = await self._repository.insert_many(batch)
        except Exception:
            self._buffer[:0] = batch[-self._max_buffered :]
            raise
        if self.on_flush is not None:
            self.on_flush(time.perf_counter() - started, len(batch))
        self.written += written
        return written

    async def run(self) -> None:
        """Write batches until cancelled (then flush once more); purge expired records now and then."""
        loop = asyncio.get_running_loop()
        next_purge = loop.time() + self._purge_every
        try:
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), self._interval)
                except TimeoutError:
                    pass
                self._wake.clear()
                try:
                    await self.flush()
                    if loop.time() >= next_purge:
                        next_purge = loop.time() + self._purge_every
                        await self._repository.purge_expired()
                except Exception:
                    log.exception("could not write message history; will retry")
        finally:
            await self.flush()
