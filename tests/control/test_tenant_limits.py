"""Attack 3 of issue 14: no limit on subscriptions. One client made 400,000 subscriptions (+243 MB).

Now a session holds at most `max_subscriptions_per_client` subscriptions, and a tenant at most its plan's
`max_subscriptions` (all its sessions and live views) and `max_connections` clients connected at once.
One more SUBSCRIBE gets 0x97 Quota exceeded (v5) or 0x80 (3.1.1), one more CONNECT CONNACK 0x97 (v5) or
3 Server unavailable (3.1.1), GET /api/v1/live 422 naming the limit; each is counted in `/metrics`
(`roost_limit_hits_total`). Everything goes through real sockets and HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broker.codec import Connack, Disconnect, Suback, Subscribe, Subscription, Unsubscribe, Unsuback
from tests.helpers import TIMEOUT, RawClient, RoostThread, roost_document
from tests.session_helpers import raw_connect
from tests.tenant_helpers import Tenant, make_tenant


@pytest.fixture
def roost(tmp_path: Path) -> Iterator[RoostThread]:
    document = roost_document(tmp_path, max_subscriptions_per_client=4)
    document["plans"] = {"tiny": {"max_connections": 2, "max_subscriptions": 3}}
    instance = RoostThread(document).start()
    yield instance
    instance.stop()


def _subscribe(client: RawClient, packet_id: int, *filters: str) -> tuple[int, ...]:
    client.send(Subscribe(packet_id, tuple(Subscription(f, 1) for f in filters)))
    suback = client.receive()
    assert isinstance(suback, Suback) and suback.packet_id == packet_id, suback
    return suback.reason_codes


def _login(tenant: Tenant, client_id: str, version: int = 5) -> tuple[RawClient, Connack]:
    username, password = tenant.instance()
    return raw_connect(tenant.roost.mqtt_port, client_id, version, username=username, password=password.encode())


def _metric(roost: RoostThread, limit: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{roost.http_port}/metrics", timeout=TIMEOUT).text
    line = next(line for line in text.splitlines() if line.startswith(f'roost_limit_hits_total{{limit="{limit}"}}'))
    return float(line.rpartition(" ")[2])


@pytest.mark.parametrize("version", [5, 4])
def test_one_client_cannot_hold_more_than_its_subscriptions(roost: RoostThread, version: int) -> None:
    client, connack = raw_connect(roost.mqtt_port, f"greedy-{version}", version)
    assert connack.reason_code == 0
    refused = 0x97 if version == 5 else 0x80
    try:
        assert _subscribe(client, 1, "a/1", "a/2", "a/3") == (1, 1, 1)
        # The fourth fits; the fifth and sixth do not; renewing one held is never refused.
        assert _subscribe(client, 2, "a/4", "a/5", "a/1", "a/6") == (1, refused, 1, refused)
        client.send(Unsubscribe(3, ("a/2",)))
        assert isinstance(client.receive(), Unsuback)
        assert _subscribe(client, 4, "a/5", "a/6") == (1, refused)  # the freed place is counted at once
    finally:
        client.close()
    assert _metric(roost, "client_subscriptions") == 3


def test_a_tenant_cannot_hold_more_than_its_plans_subscriptions(roost: RoostThread) -> None:
    tenant = make_tenant(roost, "tiny-subs", plan="tiny")
    other = make_tenant(roost, "other-subs", plan="free")
    first, _ = _login(tenant, "one")
    second, _ = _login(tenant, "two")
    stranger, _ = _login(other, "stranger")
    try:
        assert _subscribe(first, 1, "x/1", "x/2") == (1, 1)
        assert _subscribe(second, 1, "y/1", "y/2") == (1, 0x97)  # 3 for the whole tenant
        assert _subscribe(stranger, 1, "z/1", "z/2", "z/3", "z/4") == (1, 1, 1, 1)  # another tenant's own
        assert _metric(roost, "tenant_subscriptions") == 1
        # A session that ends gives its subscriptions back.
        first.send(Disconnect())
        assert first.closed_by_broker()
        assert _subscribe(second, 2, "y/2", "y/3", "y/4") == (1, 1, 0x97)
    finally:
        for client in (first, second, stranger):
            client.close()


@pytest.mark.parametrize("version", [5, 4])
def test_a_tenant_cannot_connect_more_than_its_plans_clients(roost: RoostThread, version: int) -> None:
    tenant = make_tenant(roost, f"tiny-conns-{version}", plan="tiny")
    clients = [_login(tenant, f"c{n}", version) for n in range(2)]
    assert [connack.reason_code for _, connack in clients] == [0, 0]
    over, connack = _login(tenant, "c2", version)
    assert connack.reason_code == (0x97 if version == 5 else 3)  # 3.1.1: 3 Server unavailable
    assert over.closed_by_broker()
    # Taking over a connected client id adds no connection: allowed.
    again, connack = _login(tenant, "c1", version)
    assert connack.reason_code == 0
    assert clients[1][0].closed_by_broker()
    # When one leaves, another may come.
    clients[0][0].send(Disconnect())
    assert clients[0][0].closed_by_broker()
    later, connack = _login(tenant, "c3", version)
    assert connack.reason_code == 0
    for client in (again, later, over, *(c for c, _ in clients)):
        client.close()
    assert _metric(roost, "tenant_connections") == 1
    text = httpx.get(f"http://127.0.0.1:{roost.http_port}/metrics", timeout=TIMEOUT).text
    assert 'roost_mqtt_connections_refused_total{reason="quota_exceeded"} 1.0' in text


def test_a_live_view_over_the_tenants_subscriptions_is_refused_with_422(roost: RoostThread) -> None:
    tenant = make_tenant(roost, "tiny-live", plan="tiny")
    key = roost.run(tenant.services.api_keys.create(tenant.user, "live")).key
    client, _ = _login(tenant, "full")
    try:
        assert _subscribe(client, 1, "s/1", "s/2", "s/3") == (1, 1, 1)
        response = httpx.get(f"http://127.0.0.1:{roost.http_port}/api/v1/live",
                             headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT)
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["error"] == "Limit exceeded" and "max_subscriptions" in body["errors"], body
        assert "3 subscriptions" in body["message"]
        me = httpx.get(f"http://127.0.0.1:{roost.http_port}/api/v1/users/me",
                       headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT).json()["limits"]
        assert (me["max_connections"], me["max_subscriptions"], me["connections"], me["subscriptions"]) == (2, 3, 1, 3)
    finally:
        client.close()
