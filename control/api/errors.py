"""Turning errors into the documents' error bodies.

`/api/v1` answers `{"error": <code>, "message": <text>}` (422 adds `errors`, one message per field; 429 adds
a `Retry-After` header). `/v1/mqtt` answers `{"message": <text>}` as mqtt-instances-api.md shows (500s add
`error`). Nothing becomes a traceback in a response: an unexpected exception is logged and answered 500.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from control.api.common import ApiError
from control.errors import Forbidden, LimitReached, NotFound, QuotaExceeded, ServiceError, ValidationFailed

__all__ = ["EXCEPTION_HANDLERS"]

log = logging.getLogger("roost.api")

_MQTT_500 = {
    "GET": "Error when getting MQTT instances",
    "POST": "Error when creating MQTT instance",
    "DELETE": "Error when removing MQTT instance",
}


def _is_mqtt_api(request: Request) -> bool:
    return request.url.path.startswith("/v1/mqtt")


def _respond(request: Request, error: ApiError) -> JSONResponse:
    if _is_mqtt_api(request):
        body: dict[str, object] = {"message": error.message}
        if error.status >= 500:
            body["error"] = error.error
    else:
        body = {"error": error.error, "message": error.message}
    if error.fields:
        body["errors"] = error.fields
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _to_api_error(exc: ServiceError) -> ApiError:
    if isinstance(exc, NotFound):
        return ApiError(404, "Not Found", str(exc))
    if isinstance(exc, Forbidden):
        return ApiError(403, "Forbidden", str(exc))
    if isinstance(exc, LimitReached):
        return ApiError(422, "Limit exceeded", str(exc), fields={exc.kind: str(exc)})
    if isinstance(exc, ValidationFailed):
        return ApiError(422, "Validation failed", str(exc), fields=exc.fields)
    if isinstance(exc, QuotaExceeded):
        return ApiError(429, "Rate limit exceeded", str(exc), headers={"Retry-After": str(exc.retry_after)})
    return ApiError(400, "Bad Request", str(exc))


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _respond(request, exc)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return _respond(request, _to_api_error(exc))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    names = {404: "Not Found", 405: "Method Not Allowed"}
    error = names.get(exc.status_code, "Error")
    message = "Resource not found" if exc.status_code == 404 else str(exc.detail)
    if _is_mqtt_api(request) and exc.status_code == 404:
        message = "No such MQTT instance"
    return _respond(request, ApiError(exc.status_code, error, message, headers=dict(exc.headers or {})))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error answering %s %s", request.method, request.url.path)
    if _is_mqtt_api(request):
        if request.method == "GET" and request.url.path.rstrip("/") != "/v1/mqtt":
            message = "Error when getting MQTT instance"  # one instance; the list has its own message
        else:
            message = _MQTT_500.get(request.method, "Error when getting MQTT instance")
        return JSONResponse({"message": message, "error": type(exc).__name__}, status_code=500)
    return JSONResponse({"error": "Internal Server Error", "message": "An unexpected error occurred"}, status_code=500)


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    ServiceError: _service_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
