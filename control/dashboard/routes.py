"""The dashboard's HTTP routes: the page, its static files, and signing in and out.

Everything else the page does goes through the public REST API (`/v1/mqtt`, `/api/v1`), authenticated by
the session cookie set here instead of an API key (`control/api/common.py::authenticated`).

    GET    /                          the page (static HTML; the script draws each view)
    GET    /dashboard/static/{file}   its scripts, style sheet, icon and vendored MQTT.js (static/vendor/)
    GET    /favicon.ico               the icon, for browsers that ask there whatever the page says
    POST   /dashboard/session         sign in: {"name", "password"} -> cookie + {"user", "csrf_token"}
    GET    /dashboard/session         who is signed in: {"user", "csrf_token"}, or 401
    DELETE /dashboard/session         sign out (needs the X-CSRF-Token header)
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from control.api import serialize
from control.api.common import ApiError, json_body, services
from control.dashboard.sessions import COOKIE, CSRF_HEADER, SessionStore, SignInThrottle

__all__ = ["STATIC", "routes", "install"]

STATIC = Path(__file__).parent / "static"

# The page and its files come from this origin only; nothing is loaded from elsewhere.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def install(app_state: object) -> None:
    """Give the app its (in-memory) session store and sign-in throttle."""
    setattr(app_state, "dashboard_sessions", SessionStore())
    setattr(app_state, "dashboard_throttle", SignInThrottle())


def _store(request: Request) -> SessionStore:
    return request.app.state.dashboard_sessions  # type: ignore[no-any-return]


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=_PAGE_HEADERS)


async def favicon(request: Request) -> Response:
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml",
                        headers={"Cache-Control": "max-age=86400"})


def _same_origin(request: Request) -> bool:
    """Browsers send Origin with a POST; one naming another site is a cross-site request."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


async def sign_in(request: Request) -> JSONResponse:
    # JSON only: a form on another site cannot send it without the browser asking first (CORS), and an
    # Origin naming another site is refused, so no one can sign a visitor in to an account of theirs.
    if not request.headers.get("content-type", "").startswith("application/json") or not _same_origin(request):
        raise ApiError(403, "Forbidden", "Sign in from the dashboard's own page")
    body = await json_body(request, ("name", "password"))
    name, password = body.get("name"), body.get("password")
    errors = {}
    if not isinstance(name, str) or not name.strip():
        errors["name"] = "Enter your user name."
    if not isinstance(password, str) or not password:
        errors["password"] = "Enter your password."
    if errors:
        raise ApiError(422, "Validation failed", "Enter your user name and password", fields=errors)
    assert isinstance(name, str) and isinstance(password, str)
    throttle: SignInThrottle = request.app.state.dashboard_throttle
    keys = (f"name:{name.strip().lower()}", f"address:{request.client.host if request.client else '?'}")
    wait = throttle.retry_after(*keys)
    if wait > 0:
        seconds = int(wait) + 1
        raise ApiError(429, "Too many attempts",
                       f"Too many failed sign-ins. Try again in {seconds} second{'s' if seconds != 1 else ''}.",
                       headers={"Retry-After": str(seconds)})
    user = await services(request).context.store.users.authenticate(name.strip(), password[:1024])
    if user is None:
        throttle.failed(*keys)
        raise ApiError(401, "Unauthorized", "The user name or password is not right")
    throttle.succeeded(*keys)
    token, session = _store(request).create(user.id)
    response = JSONResponse({"data": {"user": serialize.user(user), "csrf_token": session.csrf_token}})
    response.set_cookie(
        COOKIE, token, max_age=int(_store(request).lifetime), path="/", httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def whoami(request: Request) -> JSONResponse:
    session = _store(request).get(request.cookies.get(COOKIE))
    user = await services(request).context.store.users.get(session.user_id) if session is not None else None
    if session is None or user is None or not user.is_active:
        raise ApiError(401, "Unauthorized", "Not signed in")
    return JSONResponse({"data": {"user": serialize.user(user), "csrf_token": session.csrf_token}},
                        headers={"Cache-Control": "no-store"})


async def sign_out(request: Request) -> JSONResponse:
    token = request.cookies.get(COOKIE)
    session = _store(request).get(token)
    if session is not None and not session.csrf_matches(request.headers.get(CSRF_HEADER)):
        raise ApiError(403, "Forbidden", "Missing or invalid CSRF token: reload the page and try again")
    _store(request).end(token)
    response = JSONResponse({"message": "Signed out"})
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return response


routes: list[BaseRoute] = [
    Route("/", page, methods=["GET"]),
    Route("/favicon.ico", favicon, methods=["GET"]),
    Route("/dashboard/session", sign_in, methods=["POST"]),
    Route("/dashboard/session", whoami, methods=["GET"]),
    Route("/dashboard/session", sign_out, methods=["DELETE"]),
    Mount("/dashboard/static", app=StaticFiles(directory=STATIC), name="dashboard-static"),
]
