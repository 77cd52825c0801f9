"""The dashboard's Bridges page (control/dashboard/static/console.js) against a real bridge: a Roost whose
[[bridge]] points at an upstream that is not there, with QoS 1 messages waiting in its outbox. An
administrator sees the bridge's name, its state, where it is connected (nowhere), the backlog and why the
link last failed, as GET /api/v1/bridges reports them; and, connected, the upstream's address."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bridge.conftest import mosquitto  # noqa: F401 (a fixture)
from tests.bridge.upstreams import Mosquitto, bridge_status, bridge_table, free_port, gateway, wait_connected, wait_for
from tests.dashboard.conftest import user_with_password
from tests.dashboard.test_e2e import check_page, sign_in
from tests.helpers import PahoClient, RoostThread

expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture
def bridged_roost(tmp_path: Path) -> Iterator[RoostThread]:
    # Nobody listens on the upstream's port; the long reconnect delay keeps the bridge in "backoff" while
    # the page is read.
    table = bridge_table(free_port(), reconnect_min=30.0, reconnect_max=60.0)
    with gateway(tmp_path / "gw", table, allow_anonymous=True) as roost:
        yield roost


def test_the_bridges_page_shows_name_state_backlog_and_last_error(bridged_roost: RoostThread, browser: Any) -> None:
    roost = bridged_roost
    status = wait_for(lambda: (s := bridge_status(roost)) and s["state"] == "backoff" and s["last_error"] and s,
                      what="the bridge's first failed connect")
    publisher = PahoClient(roost.mqtt_port).connect()
    try:
        for n in range(3):
            publisher.publish(f"sensors/t{n}", b"21.5", qos=1)  # PUBACK once in the outbox on disk
    finally:
        publisher.disconnect()
    assert bridge_status(roost)["backlog"]["messages"] == 3
    admin = user_with_password(roost, "root", is_admin=True)

    context = browser.new_context(base_url=f"http://127.0.0.1:{roost.http_port}",
                                  viewport={"width": 1280, "height": 860})
    context.set_default_timeout(5000)
    try:
        page = context.new_page()
        sign_in(page, admin.user.name)
        page.get_by_role("link", name="Bridges", exact=True).click()
        expect(page.get_by_role("heading", level=1, name="Bridges")).to_be_visible()
        row = page.locator("main table tbody tr")
        expect(row).to_have_count(1)
        cells = row.first.locator("td")
        expect(cells.nth(0)).to_have_text("cloud")
        expect(cells.nth(1)).to_have_text("backoff")
        expect(cells.nth(2)).to_have_text("not connected")
        expect(cells.nth(3)).to_contain_text("3 messages")
        expect(cells.nth(4)).to_have_text(status["last_error"])
        assert "[object Object]" not in page.locator("main").inner_text()
        check_page(page, "Bridges", "console-bridges-configured")
    finally:
        context.close()


def test_the_bridges_page_shows_the_upstream_address_connected_to(tmp_path: Path, mosquitto: Mosquitto,
                                                                   browser: Any) -> None:
    with gateway(tmp_path / "gw", bridge_table(mosquitto.port), allow_anonymous=True) as roost:
        wait_connected(roost)
        admin = user_with_password(roost, "root", is_admin=True)
        context = browser.new_context(base_url=f"http://127.0.0.1:{roost.http_port}")
        context.set_default_timeout(5000)
        try:
            page = context.new_page()
            sign_in(page, admin.user.name)
            page.get_by_role("link", name="Bridges", exact=True).click()
            cells = page.locator("main table tbody tr").first.locator("td")
            expect(cells.nth(1)).to_have_text("connected")
            expect(cells.nth(2)).to_have_text(f"127.0.0.1:{mosquitto.port}")
        finally:
            context.close()
