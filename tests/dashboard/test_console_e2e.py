"""The broker console end to end, in headless chromium, with real paho clients of two tenants connected:
each page (Clients, Subscriptions, Retained messages, MQTT client, Events; for an administrator Charts and
Bridges) is walked, checked for the accessibility basics, saved as a screenshot (test-artifacts/dashboard/),
and searched for the other tenant's marks: a view that shows one fails the test."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from broker.history import tenant_totals
from tests.dashboard.conftest import Fleet, screenshot, user_with_password
from tests.dashboard.test_e2e import check_page, sign_in
from tests.helpers import TIMEOUT, RoostThread
from tests.tenant_helpers import Tenant

expect = pytest.importorskip("playwright.sync_api").expect

_names = itertools.count(1)


@pytest.fixture
def two_tenants(dashboard_roost: RoostThread) -> Iterator[tuple[Fleet, Fleet]]:
    n = next(_names)
    a = Fleet(user_with_password(dashboard_roost, f"ann{n}"), f"ann{n}")
    b = Fleet(user_with_password(dashboard_roost, f"bob{n}"), f"bob{n}")
    yield a, b
    a.close()
    b.close()


def shows_nothing_of(page: Any, other: Fleet) -> None:
    """Neither the text nor the markup of the page names the other tenant (its user, client ids, topics,
    payloads all carry its mark), nor any tenant's namespace prefix."""
    html = page.content()
    assert other.mark not in html, f"{page.url} shows another tenant's data"
    assert "$u" not in page.locator("main").inner_text(), f"{page.url} shows a namespace prefix"


def go(page: Any, link: str, heading: str) -> None:
    page.get_by_role("link", name=link, exact=True).click()
    expect(page.get_by_role("heading", level=1, name=heading)).to_be_visible()


def test_a_user_walks_the_console_and_sees_only_their_tenant(
        dashboard_roost: RoostThread, new_page: Any, two_tenants: tuple[Fleet, Fleet]) -> None:
    a, b = two_tenants
    page = new_page()
    # Every request the page makes, the MQTT client's WebSocket included: none may leave the machine.
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.on("websocket", lambda socket: requested.append(socket.url))
    sign_in(page, a.tenant.user.name)

    # Clients: every detail, a filter, and a kick that asks for a reason first.
    go(page, "Clients", "Connected clients")
    rows = page.locator("tr[data-client]")
    expect(rows).to_have_count(3)
    first = page.locator(f"tr[data-client='{a.mark}-c0']")
    expect(first).to_contain_text("MQTT 5.0")
    expect(first).to_contain_text("60 s")
    expect(first).to_contain_text("3 / 0")  # messages in / out
    check_page(page, "Connected clients", "console-clients")
    shows_nothing_of(page, b)
    page.get_by_label("Filter clients").fill(f"{a.mark}-c1")
    page.get_by_role("button", name="Filter", exact=True).click()
    expect(rows).to_have_count(1)
    page.get_by_role("button", name=f"Kick {a.mark}-c1").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    assert not a.clients[1].disconnected.is_set()
    page.get_by_role("button", name=f"Kick {a.mark}-c1").click()
    dialog.get_by_label(re.compile("Reason")).fill("maintenance window")
    screenshot(page, "console-kick-confirmation")
    dialog.get_by_role("button", name="Kick").click()
    assert a.clients[1].disconnected.wait(TIMEOUT), "the kicked client stayed connected"
    expect(page.locator("#status")).to_have_text(f"{a.mark}-c1 disconnected")

    # Subscriptions with their options, and the shared group with its members.
    go(page, "Subscriptions", "Subscriptions")
    expect(page.locator(f"tr[data-filter='{a.mark}/in/0']")).to_contain_text("online")
    group = page.locator(f"tr[data-group='{a.mark}-group']")
    expect(group).to_contain_text(f"{a.mark}/work")
    expect(group).to_contain_text("2 (2 online)")  # the kicked client's session ended with it
    check_page(page, "Subscriptions", "console-subscriptions")
    shows_nothing_of(page, b)

    # Retained messages: text, pretty JSON and hex, never base64; delete one, then all under a filter.
    go(page, "Retained", "Retained messages")
    expect(page.locator("tr[data-topic]")).to_have_count(5)
    json_row = page.locator(f"tr[data-topic='{a.mark}/json']")
    expect(json_row.locator("pre[data-format='json']")).to_contain_text('"mark":')
    binary = page.locator(f"tr[data-topic='{a.mark}/binary']")
    expect(binary.locator("pre[data-format='binary']")).to_contain_text("ff 00 ff 00")
    expect(binary).to_contain_text("binary, hex · 13.7 KB · beginning shown")
    assert "/wD/" not in binary.inner_text()  # the base64 of ff 00 ff
    check_page(page, "Retained messages", "console-retained")
    shows_nothing_of(page, b)
    page.get_by_role("button", name=f"Delete retained {a.mark}/state/0").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("irreversible")
    dialog.get_by_role("button", name="Cancel").click()
    expect(page.locator("tr[data-topic]")).to_have_count(5)
    page.get_by_role("button", name=f"Delete retained {a.mark}/state/0").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.locator("tr[data-topic]")).to_have_count(4)
    page.get_by_label("Filter retained messages").fill(f"{a.mark}/state/#")
    page.get_by_role("button", name="Filter", exact=True).click()
    expect(page.locator("tr[data-topic]")).to_have_count(2)
    page.get_by_role("button", name=f"Delete all under {a.mark}/state/#").click()
    expect(page.get_by_role("dialog")).to_contain_text(f"under {a.mark}/state/#")
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_text("No retained message on this filter.")).to_be_visible()
    expect(page.locator(".pager-status")).to_have_text("Showing 0–0.")

    # The MQTT client: over /mqtt with the instance's credentials; receives a paho message, publishes one.
    go(page, "MQTT client", "MQTT client")
    page.get_by_role("button", name="Connect", exact=True).click()
    expect(page.locator(".state")).to_have_attribute("data-state", "connected", timeout=TIMEOUT * 1000)
    page.get_by_label("Subscribe to").fill(f"{a.mark}/chat/#")
    page.get_by_role("button", name="Subscribe", exact=True).click()
    expect(page.locator(f"li[data-sub='{a.mark}/chat/#']")).to_contain_text("QoS 0")
    a.clients[0].publish(f"{a.mark}/chat/hello", b'{"from": "paho"}', qos=1)
    received = page.get_by_role("list", name="Received messages")
    expect(received.locator("li").first).to_contain_text(f"{a.mark}/chat/hello")
    expect(received.locator("li").first.locator("pre[data-format='json']")).to_contain_text('"from": "paho"')
    a.clients[2].subscribe(f"{a.mark}/from-page", qos=1)
    page.get_by_label("Topic", exact=True).fill(f"{a.mark}/from-page")
    page.get_by_label("Message", exact=True).fill("hello from the page")
    page.get_by_label("QoS", exact=True).select_option("1")
    page.get_by_label("User properties (MQTT 5), one name=value a line").fill("origin=dashboard")
    page.get_by_role("button", name="Publish", exact=True).click()
    expect(page.locator(f"[data-published='{a.mark}/from-page']")).to_contain_text("acknowledged by Roost (QoS 1)")
    got = a.clients[2].expect()
    assert (got.topic, got.payload) == (f"{a.mark}/from-page", b"hello from the page")
    assert ("origin", "dashboard") in got.properties.UserProperty
    check_page(page, "MQTT client", "console-mqtt-client")
    shows_nothing_of(page, b)

    # Events: connections, the kick with its reason in words, filterable by kind.
    go(page, "Events", "Events")
    page.get_by_label("Kind").select_option("kicked")
    kicked = page.locator("tr[data-kind='kicked']")
    expect(kicked).to_have_count(1)
    expect(kicked).to_contain_text("administrative action (0x98)")
    expect(kicked).to_contain_text("maintenance window")
    page.get_by_label("Kind").select_option("")
    expect(page.locator("tr[data-kind='connected']").first).to_be_visible()
    check_page(page, "Events", "console-events")
    shows_nothing_of(page, b)

    # Charts: the user's own namespace's hour (messages and connections; drops are not counted per tenant).
    go(page, "Charts", "Charts")
    expect(page.locator("figure.chart")).to_have_count(2)
    expect(page.locator("figure.chart figcaption")).to_have_text(["Messages per second", "Connected clients"])
    check_page(page, "Charts", "console-charts-user")
    shows_nothing_of(page, b)

    origin = f"127.0.0.1:{dashboard_roost.http_port}/"
    assert requested and all(url.startswith((f"http://{origin}", f"ws://{origin}")) for url in requested), requested
    assert f"ws://{origin}mqtt" in requested

    # On a phone: every console page fits (no sideways scroll), passes the basics, has no other tenant.
    phone = new_page(width=390, height=844)
    sign_in(phone, a.tenant.user.name)
    for path, title in [("clients", "Connected clients"), ("subscriptions", "Subscriptions"),
                        ("mqtt-client", "MQTT client"), ("events", "Events"), ("charts", "Charts"),
                        ("retained", "Retained messages")]:
        phone.goto(f"/#/{path}")
        expect(phone.get_by_role("heading", level=1, name=title)).to_be_visible()
        phone.wait_for_load_state("networkidle")  # its rows are in: a wide table would show now
        check_page(phone, title, f"console-{path}-phone")
        shows_nothing_of(phone, b)
    expect(phone.locator("tr[data-topic]")).to_have_count(2)


def test_an_administrator_sees_charts_with_history_and_no_bridges(
        dashboard_roost: RoostThread, new_page: Any, two_tenants: tuple[Fleet, Fleet]) -> None:
    roost = dashboard_roost
    a, b = two_tenants
    admin = user_with_password(roost, f"root{next(_names)}", is_admin=True)
    service = roost.roost.service  # type: ignore[union-attr]
    # Samples as the history task takes them every 10 s, dated the last 30 s so that the test need not wait.
    start = time.time() - 40
    for n in range(5):
        for _ in range(10 * n):  # real traffic between the samples: a rising line
            a.clients[0].publish(f"{a.mark}/burst", b"x", qos=1)
        roost.call(lambda: service.history.sample(service.broker.stats, now=start + 10 * n))
        roost.call(lambda: service.tenant_history.sample(tenant_totals(service.server), now=start + 10 * n))
    page = new_page()
    sign_in(page, admin.user.name)
    go(page, "Charts", "Charts")
    charts = page.locator("figure.chart")
    expect(charts).to_have_count(3)
    expect(charts.nth(1).locator("svg")).to_have_attribute("aria-label", re.compile(r"Connected clients, last 60 minutes: Connected now 6"))
    expect(charts.nth(0).locator("text.tick").last).to_have_text(re.compile(r"\d\d:\d\d"))  # a labelled time axis
    check_page(page, "Charts", "console-charts")
    # A reload keeps the history: it is the server's.
    page.reload()
    expect(page.locator("figure.chart path.line").first).to_be_visible()

    go(page, "Clients", "Connected clients")
    expect(page.locator("tr[data-client]")).to_have_count(6)
    expect(page.locator(f"tr[data-client='{b.mark}-c0']")).to_contain_text(b.tenant.user.name)

    go(page, "Bridges", "Bridges")
    expect(page.get_by_text("No bridges configured.")).to_be_visible()
    check_page(page, "Bridges", "console-bridges")


def test_the_header_obeys_hidden_and_there_is_a_favicon(dashboard_roost: RoostThread, new_page: Any) -> None:
    tenant: Tenant = user_with_password(dashboard_roost, f"hid{next(_names)}")
    page = new_page()
    page.goto("/")
    expect(page.get_by_role("heading", level=1, name="Sign in to Roost")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    sign_in(page, tenant.user.name)
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    icon = page.locator("link[rel='icon']").get_attribute("href")
    assert icon is not None
    for path in (icon, "/favicon.ico"):
        response = httpx.get(f"http://127.0.0.1:{dashboard_roost.http_port}{path}", timeout=TIMEOUT)
        assert response.status_code == 200 and response.headers["content-type"].startswith("image/svg+xml")

