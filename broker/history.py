"""The last hour of the broker's figures, kept by the server so that a chart drawn after a reload still has
its history: every `interval` seconds a sample of the counters goes into a bounded ring.

A sample is the counters as they are (messages in and out, drops: totals since start; connections: now);
the rates are the differences between neighbouring samples, worked out when read, so a missed tick
costs nothing but resolution. `run_history` is the task that samples; the composition root starts it.

`TenantHistory` keeps the same hour per tenant namespace (messages its clients published and were sent,
its connections; drops are not counted per tenant), for at most `max_tenants` namespaces at once: a
namespace is taken in when it has connected clients and there is room, and let go after a whole span
with nothing connected and nothing sent or received. A user's Charts page reads their own.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from typing import TYPE_CHECKING

from broker.stats import Stats

if TYPE_CHECKING:
    from broker.core import Broker
    from broker.registry import ServerState

__all__ = ["DEFAULT_INTERVAL", "DEFAULT_SPAN", "DEFAULT_TENANTS", "MetricsHistory", "Point", "TenantHistory",
           "run_history"]

DEFAULT_INTERVAL = 10.0  # seconds between samples
DEFAULT_SPAN = 3600.0  # seconds kept: 361 samples of five numbers (~40 KB)
DEFAULT_TENANTS = 100  # namespaces with a history of their own at once (~30 KB each when full)


@dataclass(frozen=True, slots=True)
class Point:
    """One interval of the chart: rates per second over it, connections at its end."""

    time: float
    messages_in: float
    messages_out: float
    dropped: float | None  # None: not counted (a tenant's history)
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
        return _points(list(self._samples))


def _points(samples: list[tuple[float, int, int, int, int]], dropped: bool = True) -> list[Point]:
    """Rates between neighbouring samples (a counter that went down counts from zero)."""
    result = []
    for before, after in zip(samples, samples[1:]):
        seconds = after[0] - before[0]
        if seconds <= 0:  # the wall clock went back: no rate over that step
            continue
        rates = [(a - b if a >= b else a) / seconds for a, b in zip(after[1:4], before[1:4])]
        result.append(Point(after[0], rates[0], rates[1], rates[2] if dropped else None, after[4]))
    return result


class TenantHistory:
    """`MetricsHistory` per tenant namespace, for at most `max_tenants` of them at once."""

    __slots__ = ("interval", "span", "max_tenants", "_rings", "_idle_since")

    def __init__(self, interval: float = DEFAULT_INTERVAL, span: float = DEFAULT_SPAN,
                 max_tenants: int = DEFAULT_TENANTS) -> None:
        self.interval = interval
        self.span = span
        self.max_tenants = max_tenants
        self._rings: dict[str, deque[tuple[float, int, int, int, int]]] = {}
        self._idle_since: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._rings)

    def sample(self, totals: dict[str, tuple[int, int, int]], now: float | None = None) -> None:
        """`totals`: mount -> (messages received, messages sent, connections now), since the start."""
        now = time.time() if now is None else now
        for mount, (received, sent, connections) in totals.items():
            ring = self._rings.get(mount)
            if ring is None:
                if not connections or len(self._rings) >= self.max_tenants:
                    continue
                ring = self._rings[mount] = deque(maxlen=int(self.span // self.interval) + 1)
            last = ring[-1] if ring else None
            if connections or last is None or (last[1], last[2]) != (received, sent):
                self._idle_since.pop(mount, None)
            else:
                self._idle_since.setdefault(mount, now)
            ring.append((now, received, sent, 0, connections))
        for mount, since in list(self._idle_since.items()):
            if now - since >= self.span:
                del self._idle_since[mount]
                self._rings.pop(mount, None)

    def points(self, mount: str) -> list[Point]:
        return _points(list(self._rings.get(mount, ())), dropped=False)


def tenant_totals(server: ServerState) -> dict[str, tuple[int, int, int]]:
    """mount -> (PUBLISH packets received from, sent to its clients since the start, connected now): one
    pass over the open network connections (the control plane's watchers are none), plus what clients
    that left had counted (`ServerState.closed`)."""
    received: dict[str, int] = dict(server.received_by_closed_mount)
    sent: dict[str, int] = dict(server.sent_by_closed_mount)
    connected: dict[str, int] = {}
    for connection in list(server.connections):
        engine = connection.engine
        mount = engine.mount
        received[mount] = received.get(mount, 0) + engine.messages_received
        sent[mount] = sent.get(mount, 0) + engine.messages_sent
        if engine.session is not None:  # let in, not yet gone (nor taken over)
            connected[mount] = connected.get(mount, 0) + 1
    return {mount: (received.get(mount, 0), sent.get(mount, 0), connected.get(mount, 0))
            for mount in received.keys() | sent.keys() | connected.keys() if mount}


async def run_history(broker: Broker, server: ServerState, history: MetricsHistory,
                      tenants: TenantHistory | None = None) -> None:
    """Sample every `history.interval` seconds until cancelled, on the broker's clock."""
    while True:
        now = broker.clock.time()
        history.sample(broker.stats, now)
        if tenants is not None:
            tenants.sample(tenant_totals(server), now)
        await asyncio.sleep(history.interval)
