"""Prometheus metrics at `GET /metrics`, with the `prometheus-client` library.

Nothing on the MQTT hot path calls Prometheus. The broker counts in plain integers (`broker/stats.py`) and
`BrokerCollector` reads them when Prometheus scrapes, so `$SYS`, the dashboard's chart and `/metrics`
report the very same counters. Gauges that are sizes (sessions, queued messages) are computed at scrape
time too. What is not per message is observed directly: HTTP requests (`HTTPMetricsMiddleware`, labelled
by route template, never the raw path, so cardinality is bounded by the routes) and SQLite batch writes
(`Metrics.observe_write`, called by the history recorder and the quota meter after each flush).

Per-tenant series are off by default (`[metrics] per_tenant`); when on, the `max_tenants` busiest tenants
get their own series and the rest are summed under `tenant="other"`.

Each `Roost` has its own `CollectorRegistry`, so several in one process (the tests) do not collide. It and
prometheus-client are made when first needed (`Metrics.instruments`: the first scrape or HTTP request), in
control/collectors.py: a broker nobody scrapes or visits does not hold them. SQLite batch writes do not
make them: their figures wait (at most `PENDING_WRITES` batches per writer) for the instruments, because
importing prometheus-client held the loop 12-25 ms, and the first batch write comes about a second into a
broker's first traffic, when it silenced every subscriber of a fan-out (docs/benchmarks.md, "Overload
PINGREQ and fan-out silences, second round").
Starlette is imported only by what runs inside the HTTP app (control/http_front.py says why).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from broker.service import BrokerService
from control.config import MetricsConfig

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from control.collectors import Instruments
    from storage.access import StorageAuthHook
    from storage.recorder import MessageRecorder
    from storage.usage import UsageMeter

__all__ = ["HTTPMetricsMiddleware", "Metrics", "PENDING_WRITES"]

# SQLite batches observed before the instruments exist, kept per writer for them: past this many (more than
# an hour of the quota meter's one batch a second), the instruments are made at the next batch.
PENDING_WRITES = 4096

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The metrics of one Roost; their registry and instruments are made at first use."""

    def __init__(self, config: MetricsConfig | None = None) -> None:
        self.config = config or MetricsConfig()
        # What makes each collector (an object with `collect()`), called when the registry is made.
        self._collectors: list[Callable[[], Any]] = []
        self._instruments: Instruments | None = None
        # Called once the instruments are made: each writer's batches that waited for them.
        self._on_made: list[Callable[[Instruments], None]] = []

    @property
    def instruments(self) -> Instruments:
        if self._instruments is None:
            from control.collectors import Instruments

            self._instruments = instruments = Instruments(make() for make in self._collectors)
            for replay in self._on_made:
                replay(instruments)
            self._on_made.clear()
        return self._instruments

    @property
    def registry(self) -> CollectorRegistry:
        return self.instruments.registry

    def register(self, make: Callable[[], Any]) -> None:
        """Report the collector `make()` returns; it is made with the registry (at once if that exists)."""
        if self._instruments is None:
            self._collectors.append(make)
        else:
            self._instruments.registry.register(make())

    def watch(
        self,
        broker: BrokerService,
        *,
        auth_hook: StorageAuthHook | None = None,
        usage: UsageMeter | None = None,
        recorder: MessageRecorder | None = None,
    ) -> None:
        """Report the broker's counters (and storage's) from now on."""

        def make() -> Any:
            from control.collectors import BrokerCollector

            return BrokerCollector(broker, auth_hook=auth_hook, usage=usage, recorder=recorder, config=self.config)

        self.register(make)

    def write_observer(self, writer: str) -> Any:
        """A callback `(seconds, rows)` for one SQLite writer (`history`, `quota`). Until the instruments
        exist, batches wait for them in `pending` (see `PENDING_WRITES`)."""
        labelled: list[Any] = []  # (latency, rows), found once the instruments exist
        pending: list[tuple[float, int]] = []

        def replay(instruments: Instruments) -> None:
            labelled.extend((instruments.sqlite_write.labels(writer), instruments.sqlite_batch.labels(writer)))
            for seconds, count in pending:
                labelled[0].observe(seconds)
                labelled[1].observe(count)
            pending.clear()

        if self._instruments is None:
            self._on_made.append(replay)
        else:
            replay(self._instruments)

        def observe(seconds: float, count: int) -> None:
            if not labelled:
                if len(pending) < PENDING_WRITES:
                    pending.append((seconds, count))
                    return
                self.instruments  # noqa: B018 - makes them, and `replay` with them
            labelled[0].observe(seconds)
            labelled[1].observe(count)

        return observe

    async def endpoint(self, request: Request) -> Response:
        """`GET /metrics`: the text format, or OpenMetrics when the scraper asks for it."""
        from starlette.responses import Response

        from control.collectors import choose_encoder

        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(self.registry), media_type=content_type)


class HTTPMetricsMiddleware:
    """Counts HTTP requests and times them to the start of the response, labelled by the route template
    that answered (`/api/v1/devices/{id}`), `<unmatched>` when none did. WebSocket and lifespan pass by."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"] if scope["method"] in _METHODS else "other"
        status = 0

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.instruments.http_latency.labels(method, _route(scope)).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except BaseException:
            if not status:  # Starlette's outermost middleware answers 500
                status = 500
                self.metrics.instruments.http_latency.labels(method, _route(scope)).observe(time.perf_counter() - started)
            raise
        finally:
            self.metrics.instruments.http_requests.labels(method, _route(scope), str(status or 500)).inc()


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "<unmatched>"
