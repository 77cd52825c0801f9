"""The last hour of the broker's figures, kept by the server so that a chart drawn after a reload still has
its history: every `interval` seconds a sample of the counters goes into a bounded ring.

A sample is the counters as they are (messages in and out, drops: totals since start; connections: now);
the rates are the differences between neighbouring samples, worked out when read, so a missed tick
costs nothing but resolution. `run_history` is the task that samples; the composition root starts it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from broker.stats import Stats

__all__ = ["DEFAULT_INTERVAL", "DEFAULT_SPAN", "MetricsHistory", "Point", "run_history"]

DEFAULT_INTERVAL = 10.0  # seconds between samples
DEFAULT_SPAN = 3600.0  # seconds kept: 360 samples of five numbers (~40 KB)


@dataclass(frozen=True, slots=True)
class Point:
    """One interval of the chart: rates per second over it, connections at its end."""

    time: float
    messages_in: float
    messages_out: float
    dropped: float
    connections: int


class MetricsHistory:
    """A ring of (time, received, sent, dropped, connected) samples, oldest first."""

    __slots__ = ("interval", "span", "_samples")

    def __init__(self, interval: float = DEFAULT_INTERVAL, span: float = DEFAULT_SPAN) -> None:
        if interval <= 0 or span < interval:
            raise ValueError("the history needs an interval above 0 and a span of at least one interval")
        self.interval = interval
        self.span = span
        self._samples: deque[tuple[float, int, int, int, int]] = deque(maxlen=int(span // interval) + 1)

    def __len__(self) -> int:
        return len(self._samples)

    def sample(self, stats: Stats, now: float | None = None) -> None:
        self._samples.append((time.time() if now is None else now, stats.messages_received, stats.messages_sent,
                              stats.messages_dropped, stats.clients_connected))

    def points(self) -> list[Point]:
        """Rates between neighbouring samples (a counter that went down, after a restart of the broker
        object in tests, counts from zero)."""
        result = []
        samples = list(self._samples)
        for before, after in zip(samples, samples[1:]):
            seconds = after[0] - before[0]
            if seconds <= 0:  # the wall clock went back: no rate over that step
                continue
            rates = [(a - b if a >= b else a) / seconds for a, b in zip(after[1:4], before[1:4])]
            result.append(Point(after[0], rates[0], rates[1], rates[2], after[4]))
        return result


async def run_history(stats: Stats, history: MetricsHistory) -> None:
    """Sample every `history.interval` seconds until cancelled."""
    while True:
        history.sample(stats)
        await asyncio.sleep(history.interval)
