"""The Starlette application served on the HTTP port.

Routes stay thin: they read the request, call a service, and shape the response. `/health` for load
balancers and systemd (503 with the reason when `health_problem()` names one, e.g. the data folder was
deleted under the running server); `/v1/mqtt` and `/api/v1` for the two REST APIs (with
`/api/v1/openapi.json`, and Swagger UI on it at `/docs`); `/metrics` for Prometheus (when a `Metrics` is
given, which also times every HTTP request); `/setup` for the first administrator of a fresh Roost.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from broker.service import BrokerService
from broker.settings import VERSION
from control.api import bridges, certificates, console, dashboard_api, docs, mqtt_instances, v1, websocket
from control.api.errors import EXCEPTION_HANDLERS
from control.api.live_guard import StreamGuard
from control.api.openapi import openapi_document
from control.dashboard import routes as dashboard
from control.dashboard import setup
from control.metrics import HTTPMetricsMiddleware, Metrics
from control.services import Services

__all__ = ["create_app"]


def create_app(
    service: BrokerService,
    services: Services,
    metrics: Metrics | None = None,
    health_problem: Callable[[], str | None] = lambda: None,
    first_run: setup.FirstRun | None = None,
) -> Starlette:
    async def health(request: Request) -> JSONResponse:
        problem = health_problem()
        body: dict[str, object] = {
            "status": "ok" if problem is None else "unhealthy",
            "version": VERSION,
            "uptime_seconds": int(service.uptime()),
            "clients_connected": len(service.clients()),
        }
        if problem is not None:
            body["problem"] = problem
        return JSONResponse(body, 200 if problem is None else 503)

    routes: list[BaseRoute] = [Route("/health", health, methods=["GET"])]
    routes += mqtt_instances.routes
    routes += v1.routes
    routes += certificates.routes
    routes += websocket.routes  # MQTT over WebSocket at /mqtt
    routes += dashboard_api.routes  # /api/v1/stats, /live, /clients
    routes += bridges.routes  # /api/v1/bridges
    routes += console.routes  # /api/v1/subscriptions, /retained, /events, /stats/history
    document = openapi_document(routes)

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(document)

    routes.append(Route("/api/v1/openapi.json", openapi, methods=["GET"]))
    routes += docs.routes  # Swagger UI on that document, from the swagger-ui-bundle package's files
    routes += setup.routes  # the first administrator of a fresh Roost (a one-time link)
    middleware: list[Middleware] = []
    if metrics is not None:
        routes.append(Route("/metrics", metrics.endpoint, methods=["GET"]))  # not part of the REST API
        middleware.append(Middleware(HTTPMetricsMiddleware, metrics=metrics))
    routes += dashboard.routes  # the web dashboard at / (not part of the REST API)
    app = Starlette(
        routes=routes, middleware=middleware, exception_handlers=EXCEPTION_HANDLERS  # type: ignore[arg-type]
    )
    app.state.services = services
    app.state.broker = service
    app.state.first_run = first_run if first_run is not None else setup.FirstRun()
    dashboard.install(app.state)
    # A password change, deactivation or deletion ends that user's dashboard sessions.
    services.context.user_listeners.append(app.state.dashboard_sessions.end_user)
    # Live streams re-check their credential when one of their user's may have been revoked.
    guard = app.state.live_guard = StreamGuard()
    for listeners in (services.context.user_listeners, services.context.api_key_listeners,
                      app.state.dashboard_sessions.listeners):
        listeners.append(guard.revoked)
    return app
