"""REST changes felt at once by connected MQTT clients: each test makes a change through real HTTP and watches
a paho-mqtt client (or a RawClient, byte-exact) on the same Roost.

The promise comes from mqtt-instances-api.md ("All instances created are available immediately after
creation"; removal: "All topics and transport data will stop working immediately") and, for /api/v1, from
docs/api.md (devices, topics, credentials and quotas are enforced on live clients). A revoked v5 client hears
DISCONNECT 0x98 Administrative action first [MQTT-3.14.2-1]; a refused CONNECT gets CONNACK 0x86 (bad user
name or password) or 0x87 (not authorized) and is closed [MQTT-3.2.2-7].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from broker.codec import Publish, Suback, Subscribe, Subscription
from tests.control.api_helpers import Api, Rest, api_error, ok
from tests.helpers import RawClient, RoostThread, sync
from tests.storage.live_helpers import AckClient, Clients, ping, poll, raw_connack, stop, wait_revoked

P = "/api/v1"


@dataclass
class Live:
    roost: RoostThread
    rest: Rest
    clients: Clients

    def tenant(self, plan: str = "starter") -> tuple[Any, Api]:
        return self.rest.tenant(plan=plan)

    def connect(self, credentials: tuple[str, str], client_id: str = "", version: int = 5) -> AckClient:
        return self.clients.connect(self.roost, credentials, client_id, version)


@pytest.fixture
def live(make_roost: Callable[..., RoostThread]) -> Iterator[Live]:
    """A Roost that refuses anonymous clients, REST clients for tenants, and MQTT clients stopped after."""
    roost = make_roost(allow_anonymous=False)
    pool = Live(roost, Rest(roost), Clients())
    yield pool
    pool.clients.close_all()
    pool.rest.close()


def _instance(api: Api) -> tuple[dict[str, Any], tuple[str, str]]:
    instance = ok(api.post("/v1/mqtt"), 201)
    return instance, (instance["user"], instance["password"])


def _device(api: Api, project_id: int, device_id: str) -> tuple[dict[str, Any], tuple[str, str]]:
    device = api.create_device(project_id, device_id)
    return device, (device_id, device["mqtt_credentials"]["password"])


# -- /v1/mqtt ----------------------------------------------------------------------------------------------


def test_created_instance_connects_at_once(live: Live) -> None:
    """mqtt-instances-api.md Create new: "All instances created are available immediately after creation"."""
    _, api = live.tenant()
    instance, credentials = _instance(api)
    client = live.connect(credentials, "fresh")
    assert client.alive
    assert raw_connack(live.roost.mqtt_port, 5, "wrong-password", instance["user"], b"not-it") == 0x86


@pytest.mark.parametrize("version", [5, 4])
def test_removing_an_instance_disconnects_its_client_and_refuses_it(live: Live, version: int) -> None:
    """mqtt-instances-api.md Remove: "All topics and transport data will stop working immediately": the
    connected client is closed (v5: DISCONNECT 0x98 [MQTT-3.14.2-1]), reconnecting is refused with 0x86
    (v5) / return code 4 (3.1.1), and another instance of the same user is untouched."""
    _, api = live.tenant()
    instance, credentials = _instance(api)
    _, other_credentials = _instance(api)
    doomed = live.connect(credentials, "doomed", version)
    survivor = live.connect(other_credentials, "survivor")
    assert ok(api.delete(f"/v1/mqtt/{instance['_id']}")) == {"message": "'MQTT instance succesfully removed"}
    wait_revoked(doomed)
    refused = raw_connack(live.roost.mqtt_port, version, "doomed", credentials[0], credentials[1].encode())
    assert refused == (0x86 if version == 5 else 4)
    assert survivor.alive
    survivor.subscribe("still/here", qos=1)
    survivor.publish("still/here", b"ok", qos=1)
    assert survivor.expect().payload == b"ok"


def test_removing_an_instance_drops_its_retained_messages(live: Live) -> None:
    """Remove: "any active topic(s)" go too: a retained message the instance published is not delivered to
    a later subscriber of the same user."""
    _, api = live.tenant()
    instance, credentials = _instance(api)
    _, reader_credentials = _instance(api)
    publisher = live.connect(credentials, "publisher")
    publisher.publish("state/door", b"open", qos=1, retain=True)
    stop(publisher)
    ok(api.delete(f"/v1/mqtt/{instance['_id']}"))
    reader = live.connect(reader_credentials, "reader")
    reader.subscribe("state/door", qos=1)
    reader.subscribe("sync/marker", qos=1)
    sync(reader, reader)
    reader.expect_none()


# -- topics --------------------------------------------------------------------------------------------------


def test_narrowing_a_topic_stops_deliveries_to_a_subscribed_device(live: Live) -> None:
    """PUT /topics/{id} can_subscribe=false is enforced on the live subscription at once: the device gets no
    more messages on it, and subscribing again is refused (SUBACK 0x87 [MQTT-3.9.3-1]); the device's other
    topics keep working. Widening it again allows a new subscription."""
    tenant, api = live.tenant()
    project_id = api.create_project()["id"]
    topic = api.create_topic(project_id, "sensors/temp")
    api.create_topic(project_id, "sync/marker", can_publish=False)
    _, device_credentials = _device(api, project_id, f"narrow-{tenant.user.id}")
    _, instance_credentials = _instance(api)
    device = live.connect(device_credentials, device_credentials[0])
    publisher = live.connect(instance_credentials, "publisher")
    assert [c.value for c in device.subscribe("sensors/temp", qos=1)] == [1]
    device.subscribe("sync/marker", qos=1)
    publisher.publish("sensors/temp", b"before", qos=1)
    assert device.expect().payload == b"before"

    updated = ok(api.put(f"{P}/topics/{topic['id']}", json={"can_subscribe": False}))["data"]
    assert updated["can_subscribe"] is False
    publisher.publish("sensors/temp", b"after", qos=1)
    sync(publisher, device)
    device.expect_none()
    assert [c.value for c in device.subscribe("sensors/temp", qos=1)] == [0x87]
    assert device.alive

    ok(api.put(f"{P}/topics/{topic['id']}", json={"can_subscribe": True}))
    assert [c.value for c in device.subscribe("sensors/temp", qos=1)] == [1]
    publisher.publish("sensors/temp", b"again", qos=1)
    assert device.expect().payload == b"again"


def test_topic_without_publish_right_refuses_device_publishes(live: Live) -> None:
    """PUT /topics/{id} can_publish=false: the device's next PUBLISH on it is refused (PUBACK 0x87
    [MQTT-3.4.2-1]) and not delivered."""
    tenant, api = live.tenant()
    project_id = api.create_project()["id"]
    topic = api.create_topic(project_id, "cmd/light")
    api.create_topic(project_id, "sync/marker")
    _, device_credentials = _device(api, project_id, f"pub-{tenant.user.id}")
    _, instance_credentials = _instance(api)
    device = live.connect(device_credentials, device_credentials[0])
    watcher = live.connect(instance_credentials, "watcher")
    watcher.subscribe("cmd/light", qos=1)
    watcher.subscribe("sync/marker", qos=1)
    assert device.publish_code("cmd/light", b"on") == 0
    assert watcher.expect().payload == b"on"
    ok(api.put(f"{P}/topics/{topic['id']}", json={"can_publish": False}))
    assert device.publish_code("cmd/light", b"off") == 0x87
    sync(device, watcher)
    watcher.expect_none()


# -- messages ------------------------------------------------------------------------------------------------


def test_rest_publish_reaches_mqtt_subscribers_with_qos_and_retain(live: Live) -> None:
    """REST API v1 §Messages Publish: the message goes to the topic's MQTT subscribers at once, with its QoS
    (at most the subscription's [MQTT-3.8.4-8]) and its retain flag (kept with Retain As Published
    [MQTT-3.3.1-12]); retained, it is delivered to a later subscriber with RETAIN 1 [MQTT-3.3.1-6]. The topic
    a client sees is the project's, not Roost's internal namespace."""
    tenant, api = live.tenant()
    project_id = api.create_project()["id"]
    topic_id = api.create_topic(project_id, "sensors/temp")["id"]
    _, device_credentials = _device(api, project_id, f"sub-{tenant.user.id}")
    _, instance_credentials = _instance(api)
    device = live.connect(device_credentials, device_credentials[0])
    device.subscribe("sensors/temp", qos=2, retain_as_published=True)
    everything = live.connect(instance_credentials, "everything")
    everything.subscribe("#", qos=1, retain_as_published=True)

    for qos, retained in [(1, True), (2, False), (0, False)]:
        payload = f"temperature: 22.{qos}"
        message = ok(api.post(f"{P}/messages", json={"project_id": project_id, "topic_id": topic_id,
                                                      "payload": payload, "qos": qos, "retained": retained}), 201)
        assert (message["data"]["qos"], message["data"]["retained"]) == (qos, retained)
        got = device.expect()
        assert (got.topic, got.payload, got.qos, got.retain) == ("sensors/temp", payload.encode(), qos, retained)
        seen = everything.expect()
        assert (seen.topic, seen.payload, seen.qos, seen.retain) == (
            "sensors/temp", payload.encode(), min(qos, 1), retained)

    late = live.connect(instance_credentials, "late")
    late.subscribe("sensors/#", qos=2)
    retained_message = late.expect()
    assert (retained_message.topic, retained_message.payload, retained_message.qos, retained_message.retain) == (
        "sensors/temp", b"temperature: 22.1", 1, True)
    history = ok(api.get(f"{P}/messages", params={"project_id": project_id}))["data"]
    assert [m["payload"] for m in history] == ["temperature: 22.0", "temperature: 22.2", "temperature: 22.1"]


def test_rest_publish_stays_in_the_users_namespace(live: Live) -> None:
    """A REST publish reaches only its owner's clients: another tenant subscribed to `#` gets nothing."""
    _, api = live.tenant()
    _, stranger_api = live.tenant()
    project_id = api.create_project()["id"]
    topic_id = api.create_topic(project_id, "sensors/temp")["id"]
    _, own_credentials = _instance(api)
    _, stranger_credentials = _instance(stranger_api)
    own = live.connect(own_credentials, "own")
    stranger = live.connect(stranger_credentials, "stranger")
    own.subscribe("#", qos=1)
    stranger.subscribe("#", qos=1)
    ok(api.post(f"{P}/messages", json={"project_id": project_id, "topic_id": topic_id, "payload": "mine",
                                        "qos": 1}), 201)
    assert own.expect().payload == b"mine"
    stranger.subscribe("sync/marker", qos=1)
    sync(stranger, stranger)
    stranger.expect_none()


def _raw_subscriber(live: Live, credentials: tuple[str, str], topic: str) -> RawClient:
    raw = RawClient(live.roost.mqtt_port, 5)
    connack = raw.connect("raw-watch", username=credentials[0], password=credentials[1].encode())
    assert connack.reason_code == 0
    raw.send(Subscribe(1, (Subscription(topic, 1),)))
    assert isinstance(raw.receive(), Suback)
    return raw


def test_quota_counts_mqtt_and_rest_then_429_with_retry_after(live: Live) -> None:
    """REST API v1 §Rate Limiting: Free 100 messages/hour; past it "you'll receive a 429 response" with
    {"error": "Rate limit exceeded", "message": "You have exceeded your hourly message limit of 100"} and a
    Retry-After header (RFC 9110 §10.2.3: seconds). MQTT and REST messages share the quota (docs/api.md):
    99 MQTT publishes + 1 REST publish use it up; the 101st (REST) is 429 and not delivered; an MQTT
    publish past it gets PUBACK 0x97 Quota exceeded [MQTT-3.4.2-1]."""
    tenant, api = live.tenant(plan="free")
    project_id = api.create_project()["id"]
    topic_id = api.create_topic(project_id, "sensors/temp")["id"]
    _, credentials = _instance(api)
    publisher = live.connect(credentials, "counter")
    for i in range(99):
        publisher.publish("elsewhere", f"{i}".encode(), qos=1 if i == 98 else 0)
    assert api.me()["limits"]["messages_this_hour"] == 99
    raw = _raw_subscriber(live, credentials, "sensors/temp")
    try:
        body = {"project_id": project_id, "topic_id": topic_id, "payload": "the hundredth"}
        ok(api.post(f"{P}/messages", json=body), 201)
        delivered = raw.receive()
        assert isinstance(delivered, Publish) and delivered.payload == b"the hundredth"
        refused = api.post(f"{P}/messages", json=body | {"payload": "one too many"})
        api_error(refused, 429, "Rate limit exceeded", "You have exceeded your hourly message limit of 100")
        retry_after = refused.headers["retry-after"]
        assert retry_after.isdigit() and 1 <= int(retry_after) <= 3600
        # Nothing more reached the subscriber: a PINGREQ round trip shows what was in flight.
        assert ping(raw) == []
        assert publisher.publish_code("elsewhere", b"mqtt too") == 0x97
        assert api.me()["limits"]["messages_this_hour"] == 100
        assert [m["payload"] for m in ok(api.get(f"{P}/messages", params={"project_id": project_id}))["data"]] == [
            "the hundredth"]
    finally:
        raw.close()
    assert tenant.user.plan == "free"


# -- devices -------------------------------------------------------------------------------------------------


def test_device_status_is_online_while_connected(live: Live) -> None:
    """REST API v1 §Devices: `status` online/offline is live: online while the device's MQTT client is
    connected (in the device and in the list), offline once it has gone."""
    tenant, api = live.tenant()
    project_id = api.create_project()["id"]
    device, credentials = _device(api, project_id, f"status-{tenant.user.id}")
    assert ok(api.get(f"{P}/devices/{device['id']}"))["data"]["status"] == "offline"
    client = live.connect(credentials, credentials[0])
    assert ok(api.get(f"{P}/devices/{device['id']}"))["data"]["status"] == "online"
    listed = ok(api.get(f"{P}/devices", params={"project_id": project_id}))["data"]
    assert [d["status"] for d in listed] == ["online"]
    client.disconnect()
    assert poll(lambda: ok(api.get(f"{P}/devices/{device['id']}"))["data"]["status"] == "offline")


def test_device_set_inactive_is_disconnected_and_refused(live: Live) -> None:
    """REST API v1 §Devices Update status=inactive: the connected device is disconnected at once (v5 0x98),
    its CONNECT refused (0x87 Not authorized) and its status `inactive`; offline makes it active again."""
    tenant, api = live.tenant()
    project_id = api.create_project()["id"]
    device, credentials = _device(api, project_id, f"off-{tenant.user.id}")
    client = live.connect(credentials, credentials[0])
    assert ok(api.put(f"{P}/devices/{device['id']}", json={"status": "inactive"}))["data"]["status"] == "inactive"
    wait_revoked(client)
    assert raw_connack(live.roost.mqtt_port, 5, credentials[0], credentials[0], credentials[1].encode()) == 0x87
    assert ok(api.get(f"{P}/devices/{device['id']}"))["data"]["status"] == "inactive"
    ok(api.put(f"{P}/devices/{device['id']}", json={"status": "offline"}))
    back = live.connect(credentials, credentials[0])
    assert back.alive
    assert ok(api.get(f"{P}/devices/{device['id']}"))["data"]["status"] == "online"


def test_rotating_credentials_disconnects_the_old_session(live: Live) -> None:
    """POST /devices/{id}/credentials: the session using the old password is closed (v5 0x98); the old
    password is refused (0x86), the new one works."""
    tenant, api = live.tenant()
    project_id = api.create_project()["id"]
    device, old = _device(api, project_id, f"rot-{tenant.user.id}")
    client = live.connect(old, old[0])
    rotated = ok(api.post(f"{P}/devices/{device['id']}/credentials"))["data"]["mqtt_credentials"]
    wait_revoked(client)
    assert raw_connack(live.roost.mqtt_port, 5, old[0], old[0], old[1].encode()) == 0x86
    fresh = live.connect((rotated["username"], rotated["password"]), rotated["client_id"])
    assert fresh.alive


def test_deleting_a_device_or_its_project_disconnects_it(live: Live) -> None:
    """DELETE /devices/{id} and DELETE /projects/{id} (with its devices) close the devices' connections."""
    tenant, api = live.tenant()
    project_id = api.create_project()["id"]
    first, first_credentials = _device(api, project_id, f"del-{tenant.user.id}-a")
    _, second_credentials = _device(api, project_id, f"del-{tenant.user.id}-b")
    one = live.connect(first_credentials, first_credentials[0])
    two = live.connect(second_credentials, second_credentials[0])
    ok(api.delete(f"{P}/devices/{first['id']}"))
    wait_revoked(one)
    assert two.alive
    ok(api.delete(f"{P}/projects/{project_id}"))
    wait_revoked(two)
    assert raw_connack(live.roost.mqtt_port, 5, second_credentials[0], second_credentials[0],
                       second_credentials[1].encode()) == 0x86


def test_deactivating_a_user_disconnects_all_their_clients(live: Live) -> None:
    """Users API PUT is_active=false (admin): every client with the user's credentials is closed; the API key
    stops working too; the admin's own clients are untouched."""
    _, admin = live.rest.tenant(is_admin=True)
    tenant, api = live.tenant()
    project_id = api.create_project()["id"]
    _, device_credentials = _device(api, project_id, f"user-{tenant.user.id}")
    _, instance_credentials = _instance(api)
    device = live.connect(device_credentials, device_credentials[0])
    instance = live.connect(instance_credentials, "inst")
    _, admin_credentials = _instance(admin)
    admins = live.connect(admin_credentials, "admins")
    ok(admin.put(f"{P}/users/{tenant.user.id}", json={"is_active": False}))
    wait_revoked(device)
    wait_revoked(instance)
    api_error(api.get(f"{P}/users/me"), 401)
    assert admins.alive
