"""The Starlette application served on the HTTP port.

Routes stay thin: they read the request, call a service, and shape the response. Until the control plane
lands, the app serves `GET /health`, which load balancers, systemd checks and the tests use.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from broker.service import BrokerService
from broker.settings import VERSION
from control.services import Services

__all__ = ["create_app"]


def create_app(service: BrokerService, services: Services | None = None) -> Starlette:
    async def health(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "version": VERSION,
                "uptime_seconds": int(service.uptime()),
                "clients_connected": len(service.clients()),
            }
        )

    return Starlette(routes=[Route("/health", health, methods=["GET"])])
