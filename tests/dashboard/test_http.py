"""The dashboard's HTTP side without a browser: signing in and out, the session cookie and its CSRF token on
the REST API, throttled sign-ins, and the routes the dashboard added (/api/v1/stats, /live, /clients)."""

from __future__ import annotations

import json
import ssl
from contextlib import closing
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from control.dashboard.sessions import COOKIE
from tests.dashboard.conftest import PASSWORD, user_with_password
from tests.helpers import TIMEOUT, PahoClient, RoostThread, roost_document
from tests.tenant_helpers import Tenant


@pytest.fixture(scope="module")
def roost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostThread]:
    instance = RoostThread(roost_document(tmp_path_factory.mktemp("dashboard"), allow_anonymous=False)).start()
    yield instance
    instance.stop()


_names = iter(range(1, 10_000))


@pytest.fixture
def tenant(roost: RoostThread) -> Tenant:
    return user_with_password(roost, f"user{next(_names)}")


def http(roost: RoostThread, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{roost.http_port}", timeout=TIMEOUT, **kwargs)


def signed_in(roost: RoostThread, name: str) -> tuple[httpx.Client, str]:
    client = http(roost)
    response = client.post("/dashboard/session", json={"name": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return client, response.json()["data"]["csrf_token"]


def test_the_page_and_its_files_are_served_locally(roost: RoostThread) -> None:
    with http(roost) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for path in ("/dashboard/static/app.js", "/dashboard/static/style.css"):
            assert client.get(path).status_code == 200
        # Nothing is loaded from another origin.
        assert "http" not in page.text.replace("http-equiv", "")


def test_sign_in_sets_a_strict_http_only_cookie(roost: RoostThread, tenant: Tenant) -> None:
    with http(roost) as client:
        response = client.post("/dashboard/session", json={"name": tenant.user.name, "password": PASSWORD})
        assert response.status_code == 200
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
        assert response.json()["data"]["user"]["name"] == tenant.user.name
        assert client.get("/dashboard/session").json()["data"]["csrf_token"] == response.json()["data"]["csrf_token"]
        assert client.get("/api/v1/users/me").json()["data"]["id"] == tenant.user.id


def test_cookie_changes_need_the_csrf_token(roost: RoostThread, tenant: Tenant) -> None:
    client, csrf = signed_in(roost, tenant.user.name)
    with closing(client):
        for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
            refused = client.post("/api/v1/projects", json={"name": "p"}, headers=headers)
            assert refused.status_code == 403 and "CSRF" in refused.json()["message"]
        assert client.get("/api/v1/projects").json()["data"] == []  # nothing was made
        assert client.post("/api/v1/projects", json={"name": "p"}, headers={"X-CSRF-Token": csrf}).status_code == 201
        assert client.delete("/v1/mqtt/0123456789abcdef01234567").status_code == 403


def test_an_api_key_wins_over_the_cookie(roost: RoostThread, tenant: Tenant) -> None:
    other = user_with_password(roost, f"other{next(_names)}")
    key = roost.run(other.services.api_keys.create(other.user, "k")).key
    client, _ = signed_in(roost, tenant.user.name)
    with closing(client):
        me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {key}"})
        assert me.json()["data"]["id"] == other.user.id
        # A bad key is refused even with a good cookie: no falling back.
        assert client.get("/api/v1/users/me", headers={"Authorization": "Bearer sk_nope"}).status_code == 401


def test_sign_in_refuses_cross_site_forms_and_wrong_passwords(roost: RoostThread, tenant: Tenant) -> None:
    name = tenant.user.name
    with http(roost) as client:
        form = client.post("/dashboard/session", data={"name": name, "password": PASSWORD})
        assert form.status_code == 403
        foreign = client.post("/dashboard/session", json={"name": name, "password": PASSWORD},
                              headers={"Origin": "https://evil.example"})
        assert foreign.status_code == 403
        missing = client.post("/dashboard/session", json={})
        assert missing.status_code == 422 and set(missing.json()["errors"]) == {"name", "password"}
        wrong = client.post("/dashboard/session", json={"name": name, "password": "nope-nope"})
        assert wrong.status_code == 401 and COOKIE not in wrong.cookies
        nobody = client.post("/dashboard/session", json={"name": "no-such-user", "password": PASSWORD})
        assert nobody.status_code == 401 and nobody.json()["message"] == wrong.json()["message"]
        assert client.get("/dashboard/session").status_code == 401


def test_a_deactivated_user_is_signed_out(roost: RoostThread, tenant: Tenant) -> None:
    client, _ = signed_in(roost, tenant.user.name)
    with closing(client):
        roost.run(tenant.services.users.update(None, tenant.user.id, is_active=False))
        assert client.get("/api/v1/users/me").status_code == 401
        assert client.post("/dashboard/session", json={"name": tenant.user.name, "password": PASSWORD}).status_code == 401


def test_repeated_failed_sign_ins_are_slowed_down(dashboard_roost: RoostThread) -> None:
    # A Roost of its own: the address it slows down is every test's.
    roost = dashboard_roost
    tenant = user_with_password(roost, "throttled")
    with http(roost) as client:
        for _ in range(5):
            assert client.post("/dashboard/session", json={"name": tenant.user.name, "password": "wrong-one"}).status_code == 401
        assert client.post("/dashboard/session", json={"name": tenant.user.name, "password": "wrong-one"}).status_code == 401
        # Now even the right password must wait, and is told how long.
        waiting = client.post("/dashboard/session", json={"name": tenant.user.name, "password": PASSWORD})
        assert waiting.status_code == 429 and int(waiting.headers["retry-after"]) >= 1
        assert "Try again in" in waiting.json()["message"]


def test_sign_out_needs_the_token_and_ends_the_session(roost: RoostThread, tenant: Tenant) -> None:
    client, csrf = signed_in(roost, tenant.user.name)
    with closing(client):
        token = client.cookies[COOKIE]
        assert client.delete("/dashboard/session").status_code == 403
        assert client.delete("/dashboard/session", headers={"X-CSRF-Token": csrf}).status_code == 200
        assert client.get("/api/v1/users/me").status_code == 401
    with http(roost, cookies={COOKIE: token}) as replay:
        assert replay.get("/api/v1/users/me").status_code == 401


def test_stats_show_a_user_their_own_figures_and_admins_the_broker(roost: RoostThread, tenant: Tenant) -> None:
    admin = user_with_password(roost, f"admin{next(_names)}", is_admin=True)
    device = tenant.client(tenant.instance(), client_id="stats-probe").connect()
    try:
        client, _ = signed_in(roost, tenant.user.name)
        with closing(client):
            before = client.get("/api/v1/stats").json()["data"]["user"]["messages_sent"]
            # Messages in and out for the chart: one publish the client also receives counts once each way.
            device.subscribe("stats/#", qos=1)
            device.publish("stats/x", b"1", qos=1)
            device.expect()
            mine = client.get("/api/v1/stats").json()["data"]
            assert mine["user"]["clients_connected"] == 1 and "broker" not in mine
            assert mine["user"]["messages_per_hour"] == 1000
            assert mine["user"]["messages_this_hour"] >= 1
            assert mine["user"]["messages_sent"] == before + 1
        client, _ = signed_in(roost, admin.user.name)
        with closing(client):
            everything = client.get("/api/v1/stats").json()["data"]
            assert everything["user"]["clients_connected"] == 0
            assert everything["broker"]["clients_connected"] >= 1
            assert everything["broker"]["messages_received"] >= 0
    finally:
        device.disconnect()


def test_clients_are_listed_per_tenant_and_kicked(roost: RoostThread, tenant: Tenant) -> None:
    neighbour = user_with_password(roost, f"neighbour{next(_names)}")
    admin = user_with_password(roost, f"admin{next(_names)}", is_admin=True)
    mine = tenant.client(tenant.instance(), client_id="same-id").connect()
    theirs = neighbour.client(neighbour.instance(), client_id="same-id").connect()
    try:
        client, csrf = signed_in(roost, tenant.user.name)
        with closing(client):
            [listed] = client.get("/api/v1/clients").json()["data"]
            assert listed["client_id"] == "same-id" and "user_id" not in listed
        client, csrf = signed_in(roost, neighbour.user.name)
        with closing(client):
            [their_listed] = client.get("/api/v1/clients").json()["data"]
            assert their_listed["id"] != listed["id"]
            # Another tenant's client is not there for them to kick.
            refused = client.post(f"/api/v1/clients/{listed['id']}/kick", headers={"X-CSRF-Token": csrf})
            assert refused.status_code == 404
        client, csrf = signed_in(roost, admin.user.name)
        with closing(client):
            every = {c["id"]: c for c in client.get("/api/v1/clients").json()["data"]}
            assert every[listed["id"]]["user_name"] == tenant.user.name
            assert client.post(f"/api/v1/clients/{listed['id']}/kick", headers={"X-CSRF-Token": csrf}).status_code == 200
            assert client.post("/api/v1/clients/bm9ib2R5/kick", headers={"X-CSRF-Token": csrf}).status_code == 404
        assert mine.disconnected.wait(TIMEOUT)
        assert not theirs.disconnected.is_set()
    finally:
        mine.close()
        theirs.disconnect()


def _read_events(response: httpx.Response, count: int, found: list[dict[str, Any]], ready: threading.Event) -> None:
    name = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            if name == "ready":
                ready.set()
            elif name == "message":
                found.append(json.loads(line[6:]))
                if len(found) == count:
                    return


def test_live_streams_the_namespace_only(roost: RoostThread, tenant: Tenant) -> None:
    neighbour = user_with_password(roost, f"neighbour{next(_names)}")
    publisher = tenant.client(tenant.instance(), client_id="pub").connect()
    stranger = neighbour.client(neighbour.instance(), client_id="pub").connect()
    publisher.publish("home/retained", b"kept", qos=1, retain=True)
    client, _ = signed_in(roost, tenant.user.name)
    found: list[dict[str, Any]] = []
    ready = threading.Event()
    try:
        with closing(client), client.stream("GET", "/api/v1/live", params={"filter": "home/#"}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = threading.Thread(target=_read_events, args=(response, 3, found, ready), daemon=True)
            reader.start()
            assert ready.wait(TIMEOUT)
            stranger.publish("home/a", b"not yours", qos=1)
            publisher.publish("away/a", b"not on the filter", qos=1)
            publisher.publish("home/a", b"\xff\x00", qos=1)
            publisher.publish("home/b", "grüße".encode(), qos=2)
            reader.join(TIMEOUT)
        assert [(m["topic"], m["payload"]["format"], m["payload"]["text"], m["retain"]) for m in found] == [
            ("home/retained", "text", "kept", True),
            ("home/a", "binary", "ff 00", False),  # binary is shown as hex, never as base64
            ("home/b", "text", "grüße", False),
        ]
        # The stream's subscription goes once the reader hangs up (the server hears the socket close).
        broker = roost.roost.broker  # type: ignore[union-attr]
        deadline = time.monotonic() + TIMEOUT
        while roost.call(lambda: any(k.startswith("\x00watch") for k in broker.sessions)):
            assert time.monotonic() < deadline, "the live stream's watch outlived its reader"
            threading.Event().wait(0.02)
    finally:
        publisher.disconnect()
        stranger.disconnect()


def test_live_explains_a_bad_filter_and_limits_open_streams(roost: RoostThread, tenant: Tenant) -> None:
    client, _ = signed_in(roost, tenant.user.name)
    with closing(client):
        for bad in ("a/#/b", "$SYS/#", "$share/g/a", "a+"):
            answer = client.get("/api/v1/live", params={"filter": bad})
            assert answer.status_code == 422 and "filter" in answer.json()["errors"], bad
        streams = [client.stream("GET", "/api/v1/live") for _ in range(4)]
        opened = [s.__enter__() for s in streams]
        try:
            readers = [response.iter_lines() for response in opened]  # kept: dropping one closes its stream
            for lines in readers:
                assert next(lines) == "retry: 3000"  # each stream has started
            assert client.get("/api/v1/live").status_code == 429
        finally:
            for stream in streams:
                stream.__exit__(None, None, None)


def test_the_cookie_is_secure_over_https(tmp_path: Path) -> None:
    document = roost_document(tmp_path)
    document["tls"] = {"port": 0, "https": True}
    roost = RoostThread(document).start()
    try:
        user_with_password(roost, "secure-user")
        ca = ssl.create_default_context(cafile=str(roost.config.data_dir / "certs" / "ca.pem"))
        with httpx.Client(base_url=f"https://localhost:{roost.http_port}", verify=ca, timeout=TIMEOUT) as client:
            response = client.post("/dashboard/session", json={"name": "secure-user", "password": PASSWORD})
            assert response.status_code == 200
            assert "secure" in response.headers["set-cookie"].lower().split("; ")
    finally:
        roost.stop()


def test_a_paho_client_on_the_page_s_credentials_is_counted(roost: RoostThread, tenant: Tenant) -> None:
    """The instances page's credentials are the REST API's: a client using them shows up in /clients."""
    client, csrf = signed_in(roost, tenant.user.name)
    with closing(client):
        instance = client.post("/v1/mqtt", headers={"X-CSRF-Token": csrf}).json()
        device = PahoClient(roost.mqtt_port, client_id="via-rest", username=instance["user"],
                            password=instance["password"]).connect()
        try:
            [listed] = client.get("/api/v1/clients").json()["data"]
            assert (listed["client_id"], listed["username"]) == ("via-rest", instance["user"])
        finally:
            device.disconnect()
