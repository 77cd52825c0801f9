"""Request parsing and response shaping shared by the REST handlers."""

from __future__ import annotations

import json
from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse

from control.dashboard.sessions import COOKIE, CSRF_HEADER, SAFE_METHODS, SessionStore
from control.services import Services
from storage.records import User

__all__ = ["ApiError", "authenticated", "json_body", "ok", "query_int", "services"]

MAX_BODY = 1_048_576


class IdConvertor(Convertor[int]):
    """Path ids: 1 to 19 digits. A longer number cannot be a row id (SQLite's integers are 64-bit), so it
    does not match the route and is answered 404 — instead of Starlette's `int` convertor turning a
    5,000-digit id into a 500 (CPython refuses to parse more than 4,300 digits)."""

    regex = "[0-9]{1,19}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("id", IdConvertor())


class ApiError(Exception):
    """An HTTP error with the documents' body: `{"error": ..., "message": ...}` (plus `errors` for 422)."""

    def __init__(self, status: int, error: str, message: str, headers: dict[str, str] | None = None,
                 fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers
        self.fields = fields


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def authenticated(request: Request) -> User:
    """The user behind `Authorization: Bearer <key>`; without that header, the user signed in to the
    dashboard with the session cookie (see `_session_user`); otherwise 401."""
    header = request.headers.get("authorization", "")
    if not header and COOKIE in request.cookies:
        return await _session_user(request)
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError(401, "Unauthorized", "Missing API key: send Authorization: Bearer <key>",
                       headers={"WWW-Authenticate": "Bearer"})
    user = await services(request).api_keys.authenticate(key)
    if user is None:
        raise ApiError(401, "Unauthorized", "Invalid or expired API key", headers={"WWW-Authenticate": "Bearer"})
    return user


async def _session_user(request: Request) -> User:
    """The dashboard's user. A change (any method but GET, HEAD, OPTIONS) must carry the session's CSRF
    token in `X-CSRF-Token`: another site's page can make the browser send the cookie, not the token."""
    store: SessionStore | None = getattr(request.app.state, "dashboard_sessions", None)
    session = store.get(request.cookies.get(COOKIE)) if store is not None else None
    if store is None or session is None:
        raise ApiError(401, "Unauthorized", "Your session has ended: please sign in again")
    if request.method not in SAFE_METHODS and not session.csrf_matches(request.headers.get(CSRF_HEADER)):
        raise ApiError(403, "Forbidden", "Missing or invalid CSRF token: reload the page and try again")
    user = await services(request).context.store.users.get(session.user_id)
    if user is None or not user.is_active:
        store.end_user(session.user_id)
        raise ApiError(401, "Unauthorized", "Your session has ended: please sign in again")
    return user


async def json_body(request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request's JSON object, refusing bodies too large, malformed JSON, non-objects and unknown fields."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY:
        raise ApiError(413, "Payload too large", f"The request body must not exceed {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, "Payload too large", f"The request body must not exceed {MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "Bad Request", "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Bad Request", "The request body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ApiError(422, "Validation failed", "The request has unknown fields",
                       fields={name: f"The {name} field is not allowed." for name in unknown})
    # JSON's \ud800 escapes can smuggle lone surrogates, which are not text and cannot be stored.
    broken = sorted(name for name, value in body.items() if isinstance(value, str) and not _is_text(value))
    if broken:
        raise ApiError(422, "Validation failed", "The request has fields that are not valid text",
                       fields={name: f"The {name} field must be valid Unicode text." for name in broken})
    return body


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def query_int(request: Request, name: str, *, default: int | None = None, low: int = 1,
              high: int = 2**31 - 1, required: bool = False) -> int | None:
    """An integer query parameter: missing and required → 400; not an integer or out of range → 422."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if required:
            raise ApiError(400, "Bad Request", f"Missing required parameter: {name}")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(422, "Validation failed", f"The {name} parameter must be an integer",
                       fields={name: f"The {name} parameter must be an integer."}) from None
    if not low <= value <= high:
        raise ApiError(422, "Validation failed", f"The {name} parameter must be between {low} and {high}",
                       fields={name: f"The {name} parameter must be between {low} and {high}."})
    return value


def ok(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)
