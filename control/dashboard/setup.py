"""First run: a one-time link that creates the first administrator in the browser.

A fresh Roost has no user, so nobody can sign in to the dashboard. When `roost serve` starts with no user
it opens a `FirstRun` and prints `http://HOST:PORT/setup?token=...` on its console, and only there (never
in the log, which may be shipped elsewhere). The token is 256 random bits held in memory: whoever can read
the console owns the machine anyway. The link works once: creating the administrator closes it, and so
does any user appearing another way (`roost user add`), checked on every request. A restart with users
prints no link. The CLI path (`roost user add NAME --admin --password-stdin`) stays.

    GET  /setup?token=T   a form: name and password of the first administrator
    POST /setup           (form fields token, name, password) creates them; the page shows the API key once

Plain HTML forms, no script: the page works with the dashboard's strict Content-Security-Policy.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Route

from control.api.common import services
from control.first_run import FirstRun
from control.errors import ValidationFailed

__all__ = ["FirstRun", "routes"]

_MAX_FORM = 8 * 1024
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the token is in the URL: never send it to another page
    "Cache-Control": "no-store",
}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    document = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{html.escape(title)} · Roost</title>"
        "<link rel=\"stylesheet\" href=\"/dashboard/static/style.css\"></head>"
        f"<body><main class=\"setup\"><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    )
    return HTMLResponse(document, status, headers=_HEADERS)


def _form(token: str, name: str = "", problem: str = "") -> str:
    note = f"<p role=\"alert\">{html.escape(problem)}</p>" if problem else ""
    return (
        "<p>No user exists yet. Create the first administrator: they sign in to the dashboard with this name "
        "and password, and manage everyone else.</p>" + note +
        "<form method=\"post\" action=\"/setup\">"
        f"<input type=\"hidden\" name=\"token\" value=\"{html.escape(token)}\">"
        f"<p><label>Name <input name=\"name\" required autocomplete=\"username\" value=\"{html.escape(name)}\">"
        "</label></p><p><label>Password (8 characters or more) <input name=\"password\" type=\"password\" "
        "required minlength=\"8\" autocomplete=\"new-password\"></label></p>"
        "<p><button type=\"submit\">Create the administrator</button></p></form>"
    )


async def _refusal(request: Request, token: str | None) -> HTMLResponse | None:
    """The page to answer instead of the form, or None when the link may be used."""
    first_run: FirstRun = request.app.state.first_run
    if first_run.token is not None and await services(request).context.store.users.count():
        first_run.close()  # a user was made another way (the CLI): the link has no purpose left
    if first_run.token is None:
        return _page("Roost is set up", "<p>An administrator exists already. <a href=\"/\">Sign in</a>.</p>", 410)
    if not first_run.matches(token):
        return _page("This setup link is not valid",
                     "<p>Use the link that <code>roost serve</code> printed on its console.</p>", 403)
    return None


async def setup_form(request: Request) -> HTMLResponse:
    token = request.query_params.get("token")
    refusal = await _refusal(request, token)
    return refusal or _page("Set up Roost", _form(token or ""))


async def setup_submit(request: Request) -> HTMLResponse:
    body = await request.body()
    form = {key: values[0] for key, values in parse_qs(body[:_MAX_FORM].decode("utf-8", "replace")).items()}
    token = form.get("token")
    refusal = await _refusal(request, token)
    if refusal is not None:
        return refusal
    assert token is not None
    name = form.get("name", "")
    try:
        created = await services(request).users.create(None, name, is_admin=True, password=form.get("password"))
    except ValidationFailed as exc:
        return _page("Set up Roost", _form(token, name, " ".join(exc.fields.values())), 422)
    request.app.state.first_run.close()
    key, secret = html.escape(created.api_key.key), html.escape(created.api_key.secret)
    return _page(
        "Administrator created",
        f"<p>{html.escape(created.user.name)} is an administrator. <a href=\"/\">Sign in to the dashboard</a>.</p>"
        f"<p>Their API key for the REST API, shown only now: <code>{key}</code>, secret <code>{secret}</code>.</p>",
        201,
    )


routes: list[BaseRoute] = [
    Route("/setup", setup_form, methods=["GET"]),
    Route("/setup", setup_submit, methods=["POST"]),
]
