"""The Overview shows messages refused over the quota, and until when: an MQTT 3.1.1 QoS 0 publisher is
never told, so the dashboard is where its owner sees it (issue 18)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.dashboard.conftest import screenshot, user_with_password
from tests.dashboard.test_e2e import sign_in

expect = pytest.importorskip("playwright.sync_api").expect


def test_overview_shows_refused_messages_and_when_the_hour_resets(dashboard_roost: Any, new_page: Any) -> None:
    carol = user_with_password(dashboard_roost, "carol", plan="free")
    page = new_page()
    sign_in(page, "carol")
    expect(page.locator("[data-card='Messages this hour']")).to_have_text("0 of 100")
    expect(page.locator("[data-card='Refused over quota']")).to_have_count(0)  # nothing refused: no card

    credentials = carol.instance()
    publisher = carol.client(credentials, version=4).connect()
    for _ in range(103):
        publisher.publish("sensors/t", b"x")  # QoS 0, MQTT 3.1.1: 3 of them are refused without a word
    expect(page.locator("[data-card='Messages this hour']")).to_have_text("100 of 100", timeout=10_000)
    card = page.locator("[data-card='Refused over quota']")
    expect(card).to_have_text(re.compile(r"^\d+, until \d{1,2}:00"), timeout=10_000)
    expect(card).to_have_text(re.compile(r"^3, until "), timeout=10_000)
    screenshot(page, "quota-refused")
    publisher.disconnect()
