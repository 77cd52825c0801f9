"""The dashboard end to end, in headless chromium: a person signs in, makes MQTT credentials, sees a real
paho client connect with them, watches its messages live, deletes the instance (the client is
disconnected), manages devices and API keys; an administrator kicks a tenant's client.

Along the way: every page has a title and labelled inputs, the main flows work from the keyboard, errors
appear next to the field they concern, and each main page is saved as a screenshot (test-artifacts/).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import PASSWORD, screenshot, user_with_password
from tests.helpers import TIMEOUT, PahoClient, RoostThread

expect = pytest.importorskip("playwright.sync_api").expect

# Every visible form control has a label; every button and link has a name; the page has one h1.
_A11Y_PROBLEMS = """() => {
  const problems = [];
  const visible = (el) => !el.closest('[hidden]') && el.getClientRects().length > 0;
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden' || !visible(el)) continue;
    const named = (el.labels && el.labels.length) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
    if (!named) problems.push('unlabelled ' + el.outerHTML.slice(0, 100));
  }
  for (const el of document.querySelectorAll('button, a[href]')) {
    if (visible(el) && !(el.getAttribute('aria-label') || el.textContent.trim())) problems.push('unnamed ' + el.outerHTML.slice(0, 100));
  }
  if (document.querySelectorAll('h1').length !== 1) problems.push('expected one h1');
  if (document.documentElement.scrollWidth > window.innerWidth + 1) problems.push('scrolls sideways');
  return problems;
}"""


def check_page(page: Any, title: str, name: str) -> None:
    """The page is titled `title` and passes the accessibility basics; saved as screenshot `name`."""
    expect(page).to_have_title(f"{title} · Roost dashboard")
    assert page.evaluate(_A11Y_PROBLEMS) == []
    screenshot(page, name)


def focused_name(page: Any) -> str:
    return page.evaluate("() => { const e = document.activeElement; return (e.getAttribute('aria-label') || e.textContent || '').trim(); }")


def tab_to(page: Any, name: str, backwards: bool = False, limit: int = 40) -> None:
    """Press Tab (or Shift+Tab) until the focused element is named `name`: keyboard-only navigation."""
    for _ in range(limit):
        page.keyboard.press("Shift+Tab" if backwards else "Tab")
        if focused_name(page) == name:
            return
    raise AssertionError(f"could not reach {name!r} with the keyboard")


def sign_in(page: Any, name: str) -> None:
    page.goto("/")
    expect(page.get_by_label("User name")).to_be_focused()
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1, name="Overview")).to_be_visible()


def test_sign_in_instance_live_delete_and_api_keys(dashboard_roost: RoostThread, new_page: Any) -> None:
    roost = dashboard_roost
    user_with_password(roost, "alice")
    page = new_page()

    # Signing in: a wrong password is explained next to the password field; then in, from the keyboard.
    page.goto("/")
    check_page(page, "Sign in", "sign-in")
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    password = page.get_by_label("Password")
    expect(password).to_have_attribute("aria-invalid", "true")
    expect(password).to_have_accessible_description(re.compile("not right"))
    cookies = page.context.cookies()
    assert cookies == []
    sign_in(page, "alice")
    [cookie] = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]  # plain HTTP here
    expect(page.locator("[data-card='Version']")).to_have_text(re.compile(r"Roost \d+\.\d+"))
    expect(page.locator("[data-card='Messages this hour']")).to_have_text("0 of 1000")
    expect(page.locator(".chart svg")).to_have_attribute("aria-label", re.compile("Messages per second"))
    check_page(page, "Overview", "overview")

    # Keyboard only: back from the heading to the navigation, open Instances, create one.
    tab_to(page, "Instances", backwards=True)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1, name="MQTT instances")).to_be_focused()
    tab_to(page, "Create instance")
    page.keyboard.press("Enter")
    notice = page.get_by_role("region", name="New instance")
    expect(notice).to_be_visible()
    username = notice.locator("code[data-field='User']").inner_text()
    secret = notice.locator("code[data-field='Password']").inner_text()
    assert notice.locator("code[data-field='Port']").inner_text() == str(roost.config.mqtt.public_port or roost.config.mqtt.port)
    notice.get_by_role("button", name="Copy password").click()
    expect(page.locator("#status")).to_have_text("Password copied")

    # A real client connects with the credentials shown, and appears as connected.
    client = PahoClient(roost.mqtt_port, client_id="e2e-sensor", username=username, password=secret).connect()
    try:
        row = page.locator(f"tr[data-instance='{username}']")
        expect(row.locator("[data-clients-for]")).to_contain_text("1 connected", timeout=TIMEOUT * 1000)
        expect(row.locator("[data-clients-for]")).to_contain_text("e2e-sensor")
        check_page(page, "MQTT instances", "instances")

        # Its messages arrive in the live view.
        page.get_by_role("link", name="Live messages").click()
        page.get_by_label("Topic filter").fill("demo/#")
        page.get_by_role("button", name="Watch").click()
        expect(page.get_by_text("Watching demo/#")).to_be_visible()
        client.publish("demo/hello", b"hi from paho", qos=1)
        client.publish("elsewhere/x", b"not watched", qos=1)
        messages = page.get_by_role("list", name="Messages")
        expect(messages.locator("li").first).to_contain_text("demo/hello")
        expect(messages.locator("li").first).to_contain_text("hi from paho")
        expect(messages).not_to_contain_text("not watched")
        check_page(page, "Live messages", "live")
        # A bad filter is explained next to its field.
        page.get_by_label("Topic filter").fill("demo/#/x")
        page.get_by_role("button", name="Watch").click()
        expect(page.get_by_label("Topic filter")).to_have_accessible_description(re.compile("topic filter such as"))

        # Deleting asks first (Escape keeps it), says it is irreversible, then disconnects the client.
        page.get_by_role("link", name="Instances").click()
        delete = page.get_by_role("button", name=f"Delete instance {username}")
        delete.focus()
        page.keyboard.press("Enter")
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("irreversible")
        expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
        screenshot(page, "instances-delete-confirmation")
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        assert not client.disconnected.is_set()
        delete.click()
        page.get_by_role("dialog").get_by_role("button", name="Delete").click()
        expect(page.get_by_text("No instance yet")).to_be_visible()
        assert client.disconnected.wait(TIMEOUT), "the instance's client was not disconnected"
    finally:
        client.close()

    # API keys: created (key and secret shown once, then only a prefix), an empty name explained, revoked.
    page.get_by_role("link", name="API keys").click()
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_label("Key name")).to_have_accessible_description("The name field is required.")
    page.get_by_label("Key name").fill("ci")
    page.get_by_role("button", name="Create key").click()
    shown = page.get_by_role("region", name="New API key")
    key = shown.locator("code[data-field='Key']").inner_text()
    assert key.startswith("sk_") and shown.locator("code[data-field='Secret']").inner_text()
    row = page.locator("tr[data-key='ci']")
    expect(row.locator("code")).to_have_text(re.compile(r"\.\.\.$"))
    assert key not in row.inner_text()
    check_page(page, "API keys", "api-keys")
    http = httpx.Client(base_url=f"http://127.0.0.1:{roost.http_port}", headers={"Authorization": f"Bearer {key}"})
    assert http.get("/api/v1/users/me").status_code == 200
    page.get_by_role("button", name="Revoke key ci").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(row.locator("[data-state]")).to_have_text("revoked")
    assert http.get("/api/v1/users/me").status_code == 401
    http.close()

    # Signing out ends the session: the page asks to sign in again, the cookie no longer works.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to Roost")).to_be_visible()
    assert page.request.get("/api/v1/users/me").status == 401


def test_projects_devices_topics_and_publish(dashboard_roost: RoostThread, new_page: Any) -> None:
    roost = dashboard_roost
    user_with_password(roost, "bob")
    page = new_page(390, 844)  # a phone
    sign_in(page, "bob")
    check_page(page, "Overview", "overview-phone")
    page.get_by_role("link", name="Projects").click()
    page.get_by_label("Project name").fill("Home")
    page.get_by_role("button", name="Create project").click()
    page.get_by_role("link", name="Home", exact=True).click()
    expect(page.get_by_role("heading", level=1, name="Project Home")).to_be_visible()

    # A device's credentials are shown once; its status follows its connection.
    page.get_by_label("Device name").fill("Kitchen sensor")
    page.get_by_label("Device id").fill("kitchen-1")
    page.get_by_role("button", name="Add device").click()
    shown = page.get_by_role("region", name="Device credentials")
    secret = shown.locator("code[data-field='Password']").inner_text()
    status = page.locator("tr[data-device='kitchen-1'] [data-status]")
    expect(status).to_have_text("offline")
    page.get_by_label("Topic", exact=True).fill("kitchen/temperature")
    page.get_by_role("button", name="Add topic").click()
    expect(page.get_by_role("checkbox", name="Devices may publish: kitchen/temperature")).to_be_checked()
    device = PahoClient(roost.mqtt_port, client_id="kitchen-1", username="kitchen-1", password=secret).connect()
    try:
        expect(status).to_have_text("online", timeout=TIMEOUT * 1000)
        check_page(page, "Project Home", "project-phone")
        # The device id is unique across Roost: the error is next to that field.
        page.get_by_label("Device name").fill("Another")
        page.get_by_label("Device id").fill("kitchen-1")
        page.get_by_role("button", name="Add device").click()
        expect(page.get_by_label("Device id")).to_have_attribute("aria-invalid", "true")

        # Publish a test message from the dashboard; the device and the live view both get it.
        assert not device.subscribe("kitchen/temperature", qos=1)[0].is_failure
        page.get_by_role("link", name="Live messages").click()
        page.get_by_role("button", name="Watch").click()
        expect(page.get_by_text("Watching #")).to_be_visible()
        page.get_by_label("Payload").fill("21.5")
        page.get_by_role("button", name="Publish").click()
        expect(page.get_by_role("list", name="Messages")).to_contain_text("kitchen/temperature")
        received = device.expect()
        assert (received.topic, received.payload) == ("kitchen/temperature", b"21.5")
        check_page(page, "Live messages", "live-phone")
    finally:
        device.close()


def test_admin_sees_every_tenant_and_kicks_a_client(dashboard_roost: RoostThread, new_page: Any) -> None:
    roost = dashboard_roost
    user_with_password(roost, "ada", is_admin=True)
    carol = user_with_password(roost, "carol")
    client = carol.client(carol.instance(), client_id="carol-probe").connect()
    try:
        page = new_page()
        sign_in(page, "ada")
        expect(page.locator("[data-card='Connected clients']")).to_have_text("0 yours, 1 in all")
        page.get_by_role("link", name="Clients").click()
        row = page.locator("tr[data-client='carol-probe']")
        expect(row).to_contain_text("carol")
        check_page(page, "Connected clients", "admin-clients")
        row.get_by_role("button", name="Kick carol-probe").click()
        page.get_by_role("dialog").get_by_role("button", name="Kick").click()
        assert client.disconnected.wait(TIMEOUT), "the kicked client stayed connected"

        page.get_by_role("link", name="Users").click()
        plan = page.get_by_label("Plan of carol")
        plan.fill("gold")
        page.get_by_role("button", name="Save plan").nth(1).click()
        expect(plan).to_have_accessible_description(re.compile("invalid"))
        plan.fill("professional")
        page.get_by_role("button", name="Save plan").nth(1).click()
        expect(page.locator("#status")).to_have_text("Plan saved")
        check_page(page, "Users and plans", "admin-users")
    finally:
        client.close()
    assert roost.run(carol.services.context.store.users.get(carol.user.id)).plan == "professional"  # type: ignore[union-attr]


def test_lists_longer_than_one_page_are_shown_whole(dashboard_roost: RoostThread, new_page: Any) -> None:
    """The REST API pages its lists (API keys 10 to a page); the dashboard shows every item."""
    roost = dashboard_roost
    tenant = user_with_password(roost, "pager")
    for n in range(12):  # with the key the user was created with: 13, two pages
        roost.run(tenant.services.api_keys.create(tenant.user, f"key-{n:02d}"))
    page = new_page()
    sign_in(page, "pager")
    page.goto("/#/api-keys")
    expect(page.locator("tr[data-key]")).to_have_count(13)
    expect(page.locator("tr[data-key='key-11']")).to_be_visible()
