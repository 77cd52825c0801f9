"""Fixtures for the dashboard's end-to-end tests: Debian's chromium driven by Playwright (sync API), and a
Roost that refuses anonymous MQTT clients, with users that have dashboard passwords.

The tests skip when chromium or Playwright is missing (scripts/test.sh installs both). Screenshots go to
test-artifacts/dashboard/ (gitignored).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PahoClient, RoostThread
from tests.tenant_helpers import Tenant, make_tenant

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One browser per module: Playwright's sync API runs an event loop on the main thread while it is
    open, so it must be closed before pytest-asyncio tests in other modules run."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("chromium not installed (scripts/test.sh installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def dashboard_roost(make_roost: Callable[..., RoostThread]) -> RoostThread:
    return make_roost(allow_anonymous=False)


def user_with_password(roost: RoostThread, name: str, *, is_admin: bool = False, plan: str = "starter") -> Tenant:
    tenant = make_tenant(roost, name, plan=plan, is_admin=is_admin)
    roost.run(tenant.services.context.store.users.set_password(tenant.user.id, PASSWORD))
    return tenant


@pytest.fixture
def new_page(browser: Any, dashboard_roost: RoostThread) -> Iterator[Callable[..., Any]]:
    """Open pages (each in its own browser context: its own cookies) on the dashboard; closed after the test."""
    contexts: list[Any] = []

    def factory(width: int = 1280, height: int = 860) -> Any:
        context = browser.new_context(
            base_url=f"http://127.0.0.1:{dashboard_roost.http_port}", viewport={"width": width, "height": height},
        )
        context.set_default_timeout(5000)
        contexts.append(context)
        return context.new_page()

    yield factory
    for context in contexts:
        context.close()


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


class Fleet:
    """One tenant's connected clients, each with a subscription, a shared one and a retained message,
    every name carrying the tenant's mark."""

    def __init__(self, tenant: Tenant, mark: str, count: int = 3) -> None:
        self.tenant = tenant
        self.mark = mark
        credentials = tenant.instance()
        self.clients: list[PahoClient] = []
        for n in range(count):
            client = tenant.client(credentials, client_id=f"{mark}-c{n}").connect()
            self.clients.append(client)
            client.subscribe(f"{mark}/in/{n}", qos=1)
            client.subscribe(f"$share/{mark}-group/{mark}/work", qos=1)
            client.publish(f"{mark}/state/{n}", f"{mark} payload {n}".encode(), qos=1, retain=True)
        self.clients[0].publish(f"{mark}/json", json.dumps({"mark": mark, "n": [1, 2]}).encode(), qos=1, retain=True)
        self.clients[0].publish(f"{mark}/binary", b"\xff\x00" * 7000, qos=1, retain=True)

    def close(self) -> None:
        for client in self.clients:
            client.close()
