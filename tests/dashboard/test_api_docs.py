"""`/docs` in a real browser: Swagger UI draws Roost's API from /api/v1/openapi.json under the page's
Content-Security-Policy, with every file from Roost itself, and "Try it out" calls this Roost with an API
key given to "Authorize"."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from tests.dashboard.conftest import screenshot, user_with_password


def test_docs_page_draws_the_api_and_calls_it(new_page: Any, dashboard_roost: Any) -> None:
    alice = user_with_password(dashboard_roost, "alice")
    key = dashboard_roost.run(alice.services.api_keys.create(alice.user, "docs")).key
    page = new_page()
    requested: list[str] = []
    problems: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.goto("/docs")
    # Drawn from the document (1.5 MB of script to parse first: a busy machine takes a few seconds).
    page.wait_for_selector("#operations-users-getMe", timeout=30_000)
    assert page.locator(".opblock").count() > 20
    hosts = {urlparse(url).netloc for url in requested if not url.startswith("data:")}
    assert hosts == {f"127.0.0.1:{dashboard_roost.http_port}"}, hosts  # nothing from a CDN
    assert not [p for p in problems if "Content Security Policy" in p], problems

    page.click("button.authorize")
    page.fill(".auth-container input", key)
    page.click(".auth-btn-wrapper button.authorize")
    page.click("button.btn-done")
    operation = page.locator("#operations-users-getMe")
    operation.locator(".opblock-summary").click()  # open it: "Try it out" is on (init.js)
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "200"
    assert '"alice"' in operation.locator(".live-responses-table .microlight").first.inner_text()
    screenshot(page, "api-docs")
