"""`/v1/mqtt`: MQTT instances, exactly as mqtt-instances-api.md describes them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control.api import serialize
from control.api.common import ApiError, authenticated, ok, services

__all__ = ["routes"]


def _window(request: Request, name: str, default: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "Bad Request", f"{name} must be a number") from None
    if not 0 <= value <= high:
        raise ApiError(400, "Bad Request", f"{name} must be between 0 and {high}")
    return value


async def list_instances(request: Request) -> JSONResponse:
    user = await authenticated(request)
    params = request.query_params
    order = (params.get("order_dir") or "asc").lower()
    if order not in ("asc", "desc"):
        raise ApiError(400, "Bad Request", "order_dir must be asc or desc")
    result = await services(request).instances.list(
        user,
        search=params.get("search_value") or None,
        offset=_window(request, "offset", 0, 2**31 - 1),
        limit=_window(request, "limit", 100, 1000),
        order=order,
    )
    return ok(
        {
            "mqtts": [serialize.instance(view) for view in result.items],
            "recordsTotal": result.total,
            "recordsFiltered": result.filtered,
            "draw": params.get("draw", ""),
        }
    )


async def get_instance(request: Request) -> JSONResponse:
    user = await authenticated(request)
    view = await services(request).instances.get(user, request.path_params["mqtt_id"])
    return ok(serialize.instance(view))


async def create_instance(request: Request) -> JSONResponse:
    user = await authenticated(request)
    view = await services(request).instances.create(user)
    return ok(serialize.instance(view), 201)


async def delete_instance(request: Request) -> JSONResponse:
    user = await authenticated(request)
    await services(request).instances.delete(user, request.path_params["mqtt_id"])
    # The document's message, typo and stray quote included: clients may compare it.
    return ok({"message": "'MQTT instance succesfully removed"})


routes = [
    Route("/v1/mqtt", list_instances, methods=["GET"]),
    Route("/v1/mqtt", create_instance, methods=["POST"]),
    Route("/v1/mqtt/{mqtt_id}", get_instance, methods=["GET"]),
    Route("/v1/mqtt/{mqtt_id}", delete_instance, methods=["DELETE"]),
]
