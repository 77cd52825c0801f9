"""The OpenAPI document at /api/v1/openapi.json (filled in by the REST API's own module)."""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

__all__ = ["openapi_document"]


def openapi_document(routes: list[BaseRoute]) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "Roost", "version": "0.1.0"}, "paths": {}}
