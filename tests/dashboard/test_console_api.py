"""The broker console's REST side, with real paho clients of two tenants: clients, subscriptions, shared
groups, retained messages (browse, delete), events and history. Every view a user calls is checked for
the other tenant's marks (client ids, topics, payloads): one found fails the test."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import PASSWORD, Fleet, user_with_password
from tests.helpers import TIMEOUT, PahoClient, RoostThread, roost_document
from broker.history import tenant_totals
from tests.tenant_helpers import Tenant

_names = itertools.count(1)


@pytest.fixture(scope="module")
def roost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostThread]:
    instance = RoostThread(roost_document(tmp_path_factory.mktemp("console"), allow_anonymous=False)).start()
    yield instance
    instance.stop()


def signed_in(roost: RoostThread, name: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=f"http://127.0.0.1:{roost.http_port}", timeout=TIMEOUT)
    response = client.post("/dashboard/session", json={"name": name, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return client, response.json()["data"]["csrf_token"]


@pytest.fixture
def fleets(roost: RoostThread) -> Iterator[tuple[Fleet, Fleet, Tenant]]:
    n = next(_names)
    a = Fleet(user_with_password(roost, f"ann{n}"), f"ann{n}")
    b = Fleet(user_with_password(roost, f"bob{n}"), f"bob{n}")
    admin = user_with_password(roost, f"root{n}", is_admin=True)
    yield a, b, admin
    a.close()
    b.close()


def _get(client: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


VIEWS = [("/api/v1/clients", {}), ("/api/v1/subscriptions", {}), ("/api/v1/shared-subscriptions", {}),
         ("/api/v1/retained", {"filter": "#"}), ("/api/v1/events", {})]


def test_each_view_shows_a_user_their_own_tenant_only(roost: RoostThread, fleets: tuple[Fleet, Fleet, Tenant]) -> None:
    a, b, admin = fleets
    client, _ = signed_in(roost, a.tenant.user.name)
    with closing(client):
        for path, params in VIEWS:
            text = json.dumps(_get(client, path, **params, per_page=500))
            assert a.mark in text, (path, "its own data is missing")
            assert b.mark not in text, (path, "another tenant's data is shown")
            assert "$u" not in text, (path, "a namespace prefix leaked")
        # A filter that names the other tenant's topics finds nothing (they are not in this namespace).
        assert _get(client, "/api/v1/retained", filter=f"{b.mark}/#")["data"] == []
        assert client.get("/api/v1/retained", params={"filter": "$u1/#"}).status_code == 422
    client, _ = signed_in(roost, admin.user.name)
    with closing(client):
        for path, params in VIEWS:
            text = json.dumps(_get(client, path, **params, per_page=500))
            assert a.mark in text and b.mark in text, path


def test_clients_show_their_details_page_by_page(roost: RoostThread, fleets: tuple[Fleet, Fleet, Tenant]) -> None:
    a, _b, _admin = fleets
    client, _ = signed_in(roost, a.tenant.user.name)
    with closing(client):
        first = _get(client, "/api/v1/clients", per_page=2)
        assert first["pagination"] == {"total": 3, "per_page": 2, "current_page": 1, "more": True}
        second = _get(client, "/api/v1/clients", per_page=2, page=2)
        assert second["pagination"]["more"] is False
        ids = [c["client_id"] for c in first["data"] + second["data"]]
        assert ids == [f"{a.mark}-c{n}" for n in range(3)]  # oldest connection first
        one = first["data"][0]
        assert one["protocol_version"] == 5 and one["tls"] is False and one["keep_alive"] == 60
        assert one["subscriptions"] == 2 and one["messages_in"] == 3  # three retained publishes
        assert one["remote_address"].startswith("127.0.0.1:")
        found = _get(client, "/api/v1/clients", q=f"{a.mark}-C2")["data"]  # any case
        assert [c["client_id"] for c in found] == [f"{a.mark}-c2"]
        assert client.get("/api/v1/clients", params={"per_page": 501}).status_code == 422


def test_subscriptions_and_shared_groups(roost: RoostThread, fleets: tuple[Fleet, Fleet, Tenant]) -> None:
    a, _b, _admin = fleets
    client, _ = signed_in(roost, a.tenant.user.name)
    with closing(client):
        body = _get(client, "/api/v1/subscriptions")
        assert body["pagination"]["total"] == 6
        plain = [s for s in body["data"] if s["share_group"] is None]
        assert {s["topic_filter"] for s in plain} == {f"{a.mark}/in/{n}" for n in range(3)}
        assert all(s["qos"] == 1 and s["online"] for s in body["data"])
        assert _get(client, "/api/v1/subscriptions", q="in/1")["pagination"]["total"] == 1
        [group] = _get(client, "/api/v1/shared-subscriptions")["data"]
        assert group["group"] == f"{a.mark}-group" and group["topic_filter"] == f"{a.mark}/work"
        assert sorted(group["members"]) == [f"{a.mark}-c{n}" for n in range(3)] and group["online"] == 3


def test_retained_messages_are_previewed_and_deleted_under_a_filter(
        roost: RoostThread, fleets: tuple[Fleet, Fleet, Tenant]) -> None:
    a, b, _admin = fleets
    client, csrf = signed_in(roost, a.tenant.user.name)
    with closing(client):
        by_topic = {r["topic"]: r for r in _get(client, "/api/v1/retained", filter=f"{a.mark}/#")["data"]}
        assert by_topic[f"{a.mark}/state/0"]["payload"]["text"] == f"{a.mark} payload 0"
        assert by_topic[f"{a.mark}/json"]["payload"]["format"] == "json"
        assert '\n  "mark"' in by_topic[f"{a.mark}/json"]["payload"]["text"]
        binary = by_topic[f"{a.mark}/binary"]["payload"]
        assert binary["format"] == "binary" and binary["size"] == 14_000 and binary["truncated"]
        assert binary["text"].startswith("ff 00 ff 00")
        assert by_topic[f"{a.mark}/state/0"]["age_seconds"] < TIMEOUT * 10
        # Deleting needs the CSRF token, then removes what is under the filter, in this namespace only.
        assert client.delete("/api/v1/retained", params={"filter": "#"}).status_code == 403
        one = client.delete("/api/v1/retained", params={"filter": f"{a.mark}/state/0"}, headers={"X-CSRF-Token": csrf})
        assert one.json()["deleted"] == 1
        every = client.delete("/api/v1/retained", params={"filter": "#"}, headers={"X-CSRF-Token": csrf})
        assert every.status_code == 200 and every.json()["deleted"] == 4
        assert _get(client, "/api/v1/retained")["data"] == []
    client, _ = signed_in(roost, b.tenant.user.name)
    with closing(client):
        assert len(_get(client, "/api/v1/retained")["data"]) == 5  # the other tenant's are all still there


def test_events_name_reasons_in_words_and_kicks_carry_theirs(
        roost: RoostThread, fleets: tuple[Fleet, Fleet, Tenant]) -> None:
    a, b, admin = fleets
    refused = PahoClient(roost.mqtt_port, client_id=f"{a.mark}-guess", username="nobody", password="wrong")
    refused.connect(expect_success=False)
    refused.close()
    client, csrf = signed_in(roost, a.tenant.user.name)
    with closing(client):
        victim = _get(client, "/api/v1/clients", q=f"{a.mark}-c1")["data"][0]
        kicked = client.post(f"/api/v1/clients/{victim['id']}/kick", json={"reason": "firmware update"},
                             headers={"X-CSRF-Token": csrf})
        assert kicked.status_code == 200
        assert a.clients[1].disconnected.wait(TIMEOUT)
        events = _get(client, "/api/v1/events", kind="kicked")["data"]
        assert events[0]["client_id"] == f"{a.mark}-c1" and events[0]["reason"] == "administrative action"
        assert events[0]["detail"] == f"by {a.tenant.user.name}: firmware update"
        connected = _get(client, "/api/v1/events", kind="connected", q=a.mark)["data"]
        assert len(connected) == 3
        # A refused client has no tenant yet: only administrators see it.
        assert _get(client, "/api/v1/events", kind="refused")["data"] == []
        assert client.get("/api/v1/events", params={"kind": "exploded"}).status_code == 422
        # A user cannot kick another tenant's client.
        theirs = f"{b.mark}-c0"
    client, csrf = signed_in(roost, admin.user.name)
    with closing(client):
        refusals = _get(client, "/api/v1/events", kind="refused", q=f"{a.mark}-guess")["data"]
        assert refusals[0]["reason"] == "bad user name or password" and refusals[0]["username"] == "nobody"
        gone = _get(client, "/api/v1/events", kind="disconnected", q=f"{a.mark}-c1")["data"]
        assert gone[0]["reason"] == "administrative action" and gone[0]["tenant"] == a.tenant.user.name
        their_id = _get(client, "/api/v1/clients", q=theirs)["data"][0]["id"]
    client, csrf = signed_in(roost, a.tenant.user.name)
    with closing(client):
        assert client.post(f"/api/v1/clients/{their_id}/kick", headers={"X-CSRF-Token": csrf}).status_code == 404
    assert not b.clients[0].disconnected.is_set()


def test_the_history_is_kept_by_the_server(roost: RoostThread, fleets: tuple[Fleet, Fleet, Tenant]) -> None:
    """Administrators get the broker's hour, a user their own namespace's (no drops: not counted per tenant)."""
    a, b, admin = fleets
    service = roost.roost.service  # type: ignore[union-attr]

    def sample() -> None:  # what the history task does every 10 s, done now rather than waited for
        roost.call(lambda: service.history.sample(service.broker.stats))
        roost.call(lambda: service.tenant_history.sample(tenant_totals(service.server)))

    sample()
    for n in range(20):
        a.clients[0].publish(f"{a.mark}/burst", str(n).encode(), qos=1)
    sample()
    client, _ = signed_in(roost, admin.user.name)
    with closing(client):
        body = _get(client, "/api/v1/stats/history")["data"]
        assert body["interval"] == 10 and body["span"] == 3600
        assert body["points"][-1]["connections"] >= 6 and body["points"][-1]["dropped"] is not None
    for fleet, published in ((a, True), (b, False)):
        client, _ = signed_in(roost, fleet.tenant.user.name)
        with closing(client):
            points = _get(client, "/api/v1/stats/history")["data"]["points"]
            assert points[-1]["connections"] == 3 and all(point["dropped"] is None for point in points)
            # The history task samples every 10 s too: one of its samples may fall after the burst's, so
            # the burst shows in some point, not always in the last one.
            assert any(point["messages_in"] > 0 for point in points) is published, (fleet.mark, points)
