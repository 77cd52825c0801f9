"""One loop timer for the deadlines of every open connection (the CONNECT timeout, the keep alive).

Each connection's shell used to keep an asyncio `TimerHandle` at its engine's next deadline: with uvloop
that is a handle, a libuv timer and a bound method, about 600 bytes per idle connection (docs/benchmarks.md,
"Memory (issue 20)"). Here the deadlines go into buckets `RESOLUTION` seconds wide, a set of connections
each, and the loop holds one timer, at the earliest bucket. A connection costs one set entry.

A bucket is due at its end, so a deadline is never reported early, at most `RESOLUTION` late: nothing in
MQTT needs finer (a keep alive is counted in whole seconds, and the broker allows it one and a half times
[MQTT-3.1.2-24]). An owner that is reported re-arms itself if its deadline moved later meanwhile (the
engine says when it is really due). A bucket emptied by a cancel is dropped at once, and its number
left in the heap is skipped when due; when such stale numbers outnumber the live buckets, the heap is
rebuilt, so the wheel's memory follows the connections open now, whatever keep alive they asked for.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
from typing import Protocol

__all__ = ["RESOLUTION", "DeadlineWheel", "Expiring"]

log = logging.getLogger("roost.broker")

# Seconds per bucket: how late a deadline may be reported, and how close two deadlines must be to share
# one wake-up of the loop.
RESOLUTION = 0.1


class Expiring(Protocol):
    """What the wheel calls when a deadline is due (the shell, `broker.connection.MQTTConnection`)."""

    def deadline_passed(self, bucket: int) -> None:
        """The deadline added in `bucket` is due (if the owner cancelled it since, it ignores this)."""
        ...


class DeadlineWheel:
    """The pending deadlines of one broker's connections, and the one loop timer that reports them."""

    __slots__ = ("_buckets", "_firing", "_heap", "_loop", "_next", "_timer")

    def __init__(self) -> None:
        self._buckets: dict[int, set[Expiring]] = {}
        self._heap: list[int] = []  # bucket numbers, some of them emptied by `cancel`
        self._loop: asyncio.AbstractEventLoop | None = None  # the running loop, found at the first `add`
        self._timer: asyncio.TimerHandle | None = None
        self._next: int | None = None  # the bucket `_timer` is set for
        self._firing = False

    def __len__(self) -> int:
        """How many deadlines are pending."""
        return sum(len(members) for members in self._buckets.values())

    @property
    def entries(self) -> int:
        """Bucket numbers held, live or stale: at most twice the live buckets plus 64 (see `cancel`)."""
        return len(self._heap)

    def add(self, owner: Expiring, deadline: float) -> int:
        """Report `deadline` (loop time) to `owner` once it passed; returns the bucket, for `cancel`."""
        bucket = math.ceil(deadline / RESOLUTION)
        members = self._buckets.get(bucket)
        if members is None:
            members = self._buckets[bucket] = set()
            heapq.heappush(self._heap, bucket)
            if not self._firing and (self._next is None or bucket < self._next):
                self._schedule(bucket)
        members.add(owner)
        return bucket

    def cancel(self, owner: Expiring, bucket: int) -> None:
        buckets = self._buckets
        members = buckets.get(bucket)
        if members is None:
            return
        members.discard(owner)
        if not members:
            del buckets[bucket]
            if len(self._heap) > 2 * len(buckets) + 64:
                self._heap = list(buckets)
                heapq.heapify(self._heap)

    def _schedule(self, bucket: int) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
        self._next = bucket
        self._timer = self._loop.call_at(bucket * RESOLUTION, self._fire)

    def _fire(self) -> None:
        """Report every due bucket; owners re-arming now go into new buckets, reported on a later call."""
        assert self._loop is not None
        self._timer = self._next = None
        due = math.floor(self._loop.time() / RESOLUTION)
        heap, buckets = self._heap, self._buckets
        owners: list[tuple[Expiring, int]] = []
        while heap and heap[0] <= due:
            bucket = heapq.heappop(heap)
            owners.extend((owner, bucket) for owner in buckets.pop(bucket, ()))
        self._firing = True
        try:
            for owner, bucket in owners:
                try:
                    owner.deadline_passed(bucket)
                except Exception:  # one connection's failure must not cost the others their deadlines
                    log.exception("handling the deadline of %r failed", owner)
        finally:
            self._firing = False
            heap = self._heap  # not the list taken above: a cancel during the callbacks may have rebuilt it
            if heap:
                self._schedule(heap[0])
