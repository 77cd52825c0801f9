"""Interactive API documentation at `/docs`: Swagger UI on Roost's own OpenAPI document.

The page and every file it loads come from this server (no CDN: a Roost on a LAN without internet, or a
browser that blocks third parties, gets the same page). The Swagger UI files are those of the
`swagger-ui-bundle-v2` package (Swagger UI 5, which reads OpenAPI 3.1, in the layout of spec-first's
`swagger_ui_bundle` module; see pyproject.toml for why this package); only the two files the page needs
are served, by name, never the package's folder, and none of its code is imported. The page's own script (`docs_page/init.js`) points Swagger UI at `/api/v1/openapi.json`, the same
document programs read; "Authorize" takes an API key (`sk_...`) as the bearer token.

    GET /docs                       the page
    GET /docs/static/{file}         swagger-ui-bundle.js, swagger-ui.css (from the package), init.js
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = ["routes"]

_OWN = Path(__file__).with_name("docs_page")
_HEADERS = {
    # Swagger UI sets inline styles and shows data: images; everything else is this origin's.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Roost API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/static/init.js"></script>
</body>
</html>
"""


def _files() -> dict[str, Path]:
    import importlib.util

    spec = importlib.util.find_spec("swagger_ui_bundle")  # found, not imported
    assert spec is not None and spec.submodule_search_locations, "swagger-ui-bundle-v2 is not installed"
    vendors = sorted(Path(next(iter(spec.submodule_search_locations)), "vendor").glob("swagger-ui-5*"))
    assert vendors, "swagger-ui-bundle-v2 holds no Swagger UI 5"
    vendor = vendors[-1]
    return {
        "swagger-ui-bundle.js": vendor / "swagger-ui-bundle.js",
        "swagger-ui.css": vendor / "swagger-ui.css",
        "init.js": _OWN / "init.js",
    }


_FILES = _files()


async def page(request: Request) -> Response:
    return HTMLResponse(_PAGE, headers={**_HEADERS, "Cache-Control": "no-cache"})


async def static(request: Request) -> Response:
    path = _FILES.get(request.path_params["name"])
    if path is None:
        return Response("Not Found", 404, media_type="text/plain")
    return FileResponse(path, headers={**_HEADERS, "Cache-Control": "public, max-age=86400"})


routes: list[BaseRoute] = [
    Route("/docs", page, methods=["GET"]),
    Route("/docs/static/{name}", static, methods=["GET"]),
]
