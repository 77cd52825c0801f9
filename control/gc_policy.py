"""What the garbage collector scans, and when: collection pauses that do not grow with the clients connected.

A full collection (generation 2) scans every object the collector tracks and has not been told to ignore;
an idle connection is about 14 of them (shell, engine, reader, encoder, admission, session, client info,
uvloop's transport and what it holds). With CPython 3.11's defaults a full collection runs each time the
old generation grew by a quarter, so with 10,000 clients connecting it ran 4 times, 49-602 ms each, and
collected nothing (docs/benchmarks.md, "Garbage collection with many clients (issue 20)"). The policy:

- **Start-up** (`settle`): collect everything, then `gc.freeze()` what lives (modules, config, the access
  snapshot) into the permanent generation, which no collection scans. Collecting first matters: garbage
  frozen now would never be freed.
- **Survivors are frozen** (`on_collection`, a `gc.callbacks` hook): when a full collection ends with more
  than `YOUNG_LIMIT` objects in the old generation, those survivors (they have just been scanned and
  found reachable: connections, sessions, subscriptions) are frozen too. For a full collection to come
  that early, the policy sets the third threshold to 1 (`gc.set_threshold(700, 10, 1)`, restored at
  shutdown): CPython's default (10) lets 10 x 10 x 700 = 70,000 objects pile up in the old generation
  before a full collection may run, 5,000 clients' worth, 22 ms to scan. CPython's own rule still holds:
  a full collection only runs once the old generation grew by a quarter since the last one. A full
  collection so never scans more than about `YOUNG_LIMIT` objects plus what one generation-1 collection
  promotes, whatever the number of clients.
- **Backstop** (`tick`, once a second from `run`): a frozen object is still freed by reference counting,
  but one that later ends in a reference cycle is not, until it is unfrozen. Every `FULL_INTERVAL` seconds
  a full collection is due: `gc.unfreeze()`, `gc.collect()`, `gc.freeze()`. Its pause is a scan of the
  whole heap, so it waits for a quiet moment: the process used under `QUIET_CPU` of a core over the last
  `QUIET_SECONDS` (idle clients' PINGREQs cost well under 1%). Under load that never ends it runs anyway
  once `FULL_OVERDUE` seconds passed since the last one: frozen cyclic garbage is bounded by what one
  hour can make. A closed connection makes none (tests/control/test_gc_policy.py checks it for the ways a
  TCP, TLS or WebSocket connection ends); what a backstop frees is counted
  (`roost_gc_backstop_collected_objects`) and logged, as it means a cycle somewhere that should be broken.
  The backstop's pause is 70-76 ms at 10,000 idle clients and 260-420 ms at 20,000 (docs/benchmarks.md).

Sizes and counts go to `/metrics` (`GCPolicyCollector`): the frozen objects (a gauge that grows with the
clients), the survivors frozen, the backstops run and what they freed, the longest full collection.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["FULL_INTERVAL", "FULL_OVERDUE", "QUIET_CPU", "QUIET_SECONDS", "YOUNG_LIMIT", "GCPolicy"]

log = logging.getLogger("roost.gc")

# Survivors of a full collection above this many are frozen: a full collection then scans at most about
# this many objects plus one generation-1 promotion (about 0.2-0.3 us each here: 2-6 ms at most).
YOUNG_LIMIT = 10_000
# A backstop full collection (frozen objects included) is due this often, at a quiet moment...
FULL_INTERVAL = 600.0
# ...and runs whatever the load once this long has passed since the last one.
FULL_OVERDUE = 3600.0
# Quiet: the process used less than this fraction of one core over the last QUIET_SECONDS.
QUIET_CPU = 0.05
QUIET_SECONDS = 5

# The policies running in this process, and the thresholds from before the first of them.
_running: list[GCPolicy] = []
_saved: list[int] = []


class GCPolicy:
    """The process's collector policy; one per Roost (several in one test process are harmless: freezing
    twice is freezing). `settle()` at the end of start-up, then `run()` as a task until shutdown."""

    def __init__(
        self,
        young_limit: int = YOUNG_LIMIT,
        full_interval: float = FULL_INTERVAL,
        full_overdue: float = FULL_OVERDUE,
        quiet_cpu: float = QUIET_CPU,
        quiet_seconds: int = QUIET_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.young_limit = young_limit
        self.full_interval = full_interval
        self.full_overdue = full_overdue
        self.quiet_cpu = quiet_cpu
        self.quiet_seconds = quiet_seconds
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._last_full = clock()
        self._samples: list[tuple[float, float]] = []  # (wall, cpu), the last quiet_seconds + 1 ticks
        self._in_backstop = False
        self._began = 0.0
        # What /metrics reports.
        self.survivors_frozen = 0  # times the survivors of a full collection were frozen
        self.backstops = 0
        self.backstop_collected = 0  # objects the backstops freed: frozen cyclic garbage (should stay 0)
        self.longest_full = 0.0  # seconds, the longest full collection the collector ran by itself
        self.last_backstop_pause = 0.0

    # -- start-up -------------------------------------------------------------------------------------------

    def settle(self) -> None:
        """Collect everything, freeze what lives. The second, empty collection resets CPython's count of the
        old generation (`long_lived_total`), so that the next full collections come at small sizes, where
        `on_collection` decides, rather than after the heap grew by a quarter of all it held."""
        gc.collect()
        gc.freeze()
        gc.collect()
        self._last_full = self._clock()

    # -- the collector's hook -------------------------------------------------------------------------------

    def on_collection(self, phase: str, info: dict[str, Any]) -> None:
        """`gc.callbacks`: after a full collection, freeze its survivors when they are many. Runs in the thread
        that allocated; gc.freeze() only moves the collector's lists, and generations 0 and 1 are empty at
        the end of a full collection, so only what was just scanned and found reachable is frozen."""
        if info["generation"] != 2 or self._in_backstop:
            return
        if phase == "start":
            self._began = time.perf_counter()
            return
        took = time.perf_counter() - self._began
        if took > self.longest_full:
            self.longest_full = took
        if len(gc.get_objects(2)) > self.young_limit:
            gc.freeze()
            self.survivors_frozen += 1

    # -- the backstop ---------------------------------------------------------------------------------------

    def quiet(self) -> bool:
        """Whether the process used under `quiet_cpu` of a core over the last `quiet_seconds` ticks."""
        if len(self._samples) <= self.quiet_seconds:
            return False
        (wall0, cpu0), (wall1, cpu1) = self._samples[0], self._samples[-1]
        return wall1 > wall0 and (cpu1 - cpu0) / (wall1 - wall0) < self.quiet_cpu

    def tick(self) -> bool:
        """Once a second: run the backstop if it is due and the process is quiet, or overdue. True if it ran."""
        now = self._clock()
        self._samples.append((now, self._cpu_clock()))
        del self._samples[: -(self.quiet_seconds + 1)]
        since = now - self._last_full
        if since >= self.full_overdue or (since >= self.full_interval and self.quiet()):
            self.backstop()
            return True
        return False

    def backstop(self) -> int:
        """Unfreeze, collect everything, freeze again: what frozen objects left in cycles is freed. The
        number of objects freed."""
        began = time.perf_counter()
        self._in_backstop = True
        try:
            gc.unfreeze()
            collected = gc.collect()
            gc.freeze()
            gc.collect()  # empty: resets CPython's old-generation count, as in `settle`
        finally:
            self._in_backstop = False
        self.last_backstop_pause = time.perf_counter() - began
        self._last_full = self._clock()
        self._samples.clear()
        self.backstops += 1
        self.backstop_collected += collected
        level = logging.WARNING if collected else logging.DEBUG
        log.log(level, "full collection of the frozen heap: %d objects freed in %.1f ms, %d frozen", collected,
                self.last_backstop_pause * 1000, gc.get_freeze_count())
        return collected

    async def run(self, interval: float = 1.0) -> None:
        """Hook into the collector and tick until cancelled (shutdown); the hook goes with the task."""
        if not _running:  # the first of the process's policies (tests run several Roosts) sets the threshold
            _saved[:] = gc.get_threshold()
            gc.set_threshold(_saved[0], _saved[1], 1)
        _running.append(self)
        gc.callbacks.append(self.on_collection)
        try:
            while True:
                await asyncio.sleep(interval)
                self.tick()
        finally:
            gc.callbacks.remove(self.on_collection)
            _running.remove(self)
            if not _running:  # ...and the last restores it
                gc.set_threshold(*_saved)

    def collector(self) -> Any:
        """A prometheus-client collector of the figures above (made at the first scrape: control/metrics.py)."""
        return GCPolicyCollector(self)


class GCPolicyCollector:
    """`/metrics` for the policy; prometheus-client is imported only when a registry is made."""

    def __init__(self, policy: GCPolicy) -> None:
        self.policy = policy

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        policy = self.policy
        yield GaugeMetricFamily("roost_gc_frozen_objects", "Objects in the permanent generation, which no "
                                "collection scans (grows with the clients connected)", value=gc.get_freeze_count())
        yield CounterMetricFamily("roost_gc_survivors_frozen", "Times the survivors of a full collection were "
                                  "frozen", value=policy.survivors_frozen)
        yield CounterMetricFamily("roost_gc_backstops", "Full collections of the frozen heap (unfreeze, collect, "
                                  "freeze)", value=policy.backstops)
        yield CounterMetricFamily("roost_gc_backstop_collected_objects", "Objects those backstops freed: frozen "
                                  "objects that ended in reference cycles", value=policy.backstop_collected)
        yield GaugeMetricFamily("roost_gc_longest_full_collection_seconds", "The longest full collection since "
                                "start-up, backstops apart", value=policy.longest_full)
        yield GaugeMetricFamily("roost_gc_last_backstop_seconds", "How long the last backstop held the process",
                                value=policy.last_backstop_pause)


def start(metrics: Any = None) -> tuple[GCPolicy, Any]:
    """At the end of start-up: settle the heap and report to `metrics` (a `control.metrics.Metrics`, or None);
    the policy and the coroutine to run as a task until shutdown."""
    policy = GCPolicy()
    policy.settle()
    if metrics is not None:
        metrics.register(policy.collector)
    return policy, policy.run()
