"""Live authentication and topic ACLs from SQLite, through real clients (paho-mqtt 3.1.1 and 5, and
RawClient where the bytes matter): who may connect, what tenants and devices may see and do, and how a
change in the database acts on clients that are connected now.

Reason codes: v5 CONNACK 0x86 Bad User Name or Password, 0x87 Not authorized, 0x85 Client Identifier not
valid; 3.1.1 return codes 4, 5 and 2 (section 3.2.2.3 of each version)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from broker.codec import Connack, Disconnect, Puback, Publish, Suback, Subscribe, Subscription, Will
from storage.store import open_store
from tests.helpers import RawClient, RoostThread, sync
from tests.storage.live_helpers import (
    AckClient,
    Clients,
    db_rows,
    device_row_id,
    instance_public_id,
    packets_until_closed,
    ping,
    poll,
    raw_connack,
    stop,
    wait_revoked,
)
from tests.tenant_helpers import Tenant, make_tenant

VERSIONS = pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
BAD_CREDENTIALS = {4: 4, 5: 0x86}
NOT_AUTHORIZED = {4: 5, 5: 0x87}
SUBACK_REFUSED = {4: 0x80, 5: 0x87}


@pytest.fixture
def secure_roost(make_roost: Any) -> RoostThread:
    return make_roost(allow_anonymous=False)


@pytest.fixture
def clients() -> Iterator[Clients]:
    pool = Clients()
    yield pool
    pool.close_all()


@pytest.fixture
def alice(secure_roost: RoostThread) -> Tenant:
    return make_tenant(secure_roost, "alice")


@pytest.fixture
def bob(secure_roost: RoostThread) -> Tenant:
    return make_tenant(secure_roost, "bob")


# -- CONNECT --------------------------------------------------------------------------------------------------


@VERSIONS
def test_instance_credentials_are_accepted(secure_roost: RoostThread, alice: Tenant, clients: Clients,
                                           version: int) -> None:
    """An MQTT instance's generated username and password open the door: CONNACK 0 with Session Present 0
    for a new session [MQTT-3.2.2-2] (3.1.1: [MQTT-3.2.2-1]), and the client can use its namespace."""
    client = clients.connect(secure_roost, alice.instance(), "c1", version)
    assert not client.session_present
    client.subscribe("a/b", qos=1)
    client.publish("a/b", b"hello", qos=1)
    assert client.expect().payload == b"hello"


def _refusals(tenant: Tenant) -> dict[str, tuple[dict[str, Any], dict[int, int]]]:
    """CONNECTs that must be refused, with the expected code by protocol version."""
    username, password = tenant.instance()
    return {
        "wrong password": ({"username": username, "password": b"not-" + password.encode()}, BAD_CREDENTIALS),
        "unknown user": ({"username": "nobody-" + username, "password": password.encode()}, BAD_CREDENTIALS),
        "300-char username": ({"username": "u" * 300, "password": password.encode()}, BAD_CREDENTIALS),
        "non-UTF-8 password": ({"username": username, "password": b"\xff\xfe" + password.encode()}, BAD_CREDENTIALS),
        "password missing": ({"username": username, "password": None}, BAD_CREDENTIALS),
        "anonymous": ({"username": None, "password": None}, NOT_AUTHORIZED),
    }


REFUSALS = ["wrong password", "unknown user", "300-char username", "non-UTF-8 password", "password missing",
            "anonymous"]


@VERSIONS
@pytest.mark.parametrize("case", REFUSALS)
def test_bad_credentials_are_refused_without_trace(secure_roost: RoostThread, alice: Tenant, version: int,
                                                   case: str, caplog: pytest.LogCaptureFixture) -> None:
    """Failed authentication: v5 CONNACK 0x86 (anonymous: 0x87) then close [MQTT-3.1.4-2][MQTT-3.2.2-7];
    3.1.1 return code 4 (anonymous: 5) then close [MQTT-3.2.2-5]. The refusal changes nothing in the
    database, and the log line that reports it does not contain the password."""
    caplog.set_level(logging.DEBUG, logger="roost")
    kwargs, codes = _refusals(alice)[case]
    before = db_rows(secure_roost)
    assert raw_connack(secure_roost.mqtt_port, version, "c1", **kwargs) == codes[version]
    assert db_rows(secure_roost) == before
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refused, "the refusal is not logged"
    password = kwargs["password"]
    if password:
        for secret in {password, password.replace(b"not-", b"").replace(b"\xff\xfe", b"")}:
            assert secret.decode(errors="replace") not in caplog.text
            assert repr(secret) not in caplog.text


def test_bad_password_is_refused_to_a_paho_client(secure_roost: RoostThread, alice: Tenant,
                                                  clients: Clients) -> None:
    """The same refusal as a real v5 client sees it: CONNACK 0x86 [MQTT-3.1.4-2]."""
    username, _ = alice.instance()
    client = clients.make(secure_roost, (username, "wrong"), "c1", 5)
    client.connect(expect_success=False)
    assert client.connack is not None and client.connack[1].value == 0x86


@VERSIONS
def test_device_must_use_its_own_device_id_as_client_id(secure_roost: RoostThread, alice: Tenant,
                                                        version: int) -> None:
    """A device's credentials with another client id: v5 0x85 Client Identifier not valid; 3.1.1 return code
    2 Identifier rejected [MQTT-3.1.3-9]. With its own device id it connects."""
    project = alice.project()
    device_id, secret = alice.device(project, "dev-1")
    port = secure_roost.mqtt_port
    expected = {4: 2, 5: 0x85}[version]
    assert raw_connack(port, version, "other", username=device_id, password=secret.encode()) == expected
    assert raw_connack(port, version, "", username=device_id, password=secret.encode()) == expected
    assert raw_connack(port, version, device_id, username=device_id, password=secret.encode()) == 0


@VERSIONS
def test_device_created_inactive_is_not_authorized(secure_roost: RoostThread, alice: Tenant, version: int) -> None:
    """A device created with status "inactive": v5 0x87 Not authorized, 3.1.1 return code 5."""
    project = alice.project()
    device_id, secret = alice.device(project, "dev-1", status="inactive")
    code = raw_connack(secure_roost.mqtt_port, version, device_id, username=device_id, password=secret.encode())
    assert code == NOT_AUTHORIZED[version]


@VERSIONS
def test_device_updated_to_inactive_is_not_authorized_and_active_again_is(
    secure_roost: RoostThread, alice: Tenant, version: int
) -> None:
    project = alice.project()
    device_id, secret = alice.device(project, "dev-1")
    row = device_row_id(alice, project, device_id)
    port = secure_roost.mqtt_port
    secure_roost.run(alice.services.devices.update(alice.user, row, status="inactive"))
    refused = NOT_AUTHORIZED[version]
    assert raw_connack(port, version, device_id, username=device_id, password=secret.encode()) == refused
    secure_roost.run(alice.services.devices.update(alice.user, row, status="offline"))
    assert raw_connack(port, version, device_id, username=device_id, password=secret.encode()) == 0


@VERSIONS
def test_deactivated_user_is_not_authorized(secure_roost: RoostThread, alice: Tenant, version: int) -> None:
    """Every credential of a deactivated user is refused: 0x87 / 5 (instance and device alike)."""
    instance = alice.instance()
    project = alice.project()
    device_id, secret = alice.device(project, "dev-1")
    secure_roost.run(alice.services.users.update(None, alice.user.id, is_active=False))
    port, refused = secure_roost.mqtt_port, NOT_AUTHORIZED[version]
    assert raw_connack(port, version, "c1", username=instance[0], password=instance[1].encode()) == refused
    assert raw_connack(port, version, device_id, username=device_id, password=secret.encode()) == refused


# -- anonymous clients next to tenants --------------------------------------------------------------------


@pytest.fixture
def open_roost(make_roost: Any) -> RoostThread:
    return make_roost(allow_anonymous=True)


@VERSIONS
@pytest.mark.parametrize("topic_filter", ["#", "+/#", "$share/g/#", "sensors/temp"])
def test_anonymous_subscribers_never_see_tenant_messages(open_roost: RoostThread, clients: Clients, version: int,
                                                         topic_filter: str) -> None:
    """Tenants live under `$u{id}/`: wildcard filters do not match `$` topics [MQTT-4.7.2-1], and a
    tenant's `sensors/temp` is not the anonymous `sensors/temp`. The anonymous subscriber sees its own
    marker (so it was listening) and nothing of the tenant's publishes."""
    alice = make_tenant(open_roost, "alice")
    tenant = clients.connect(open_roost, alice.instance(), "a1", version)
    anonymous = clients.connect(open_roost, None, "anon", version)
    assert anonymous.subscribe(topic_filter, qos=1)[0].value < 0x80
    anonymous.subscribe("sync/marker", qos=1)
    tenant.publish("sensors/temp", b"alice", qos=1)
    tenant.publish("sensors/temp", b"alice-retained", qos=1, retain=True)
    publisher = clients.connect(open_roost, None, "anon-pub", version)
    sync(publisher, anonymous)
    anonymous.expect_none()


@VERSIONS
def test_anonymous_cannot_reach_into_a_tenant_namespace(open_roost: RoostThread, clients: Clients,
                                                        version: int) -> None:
    """An anonymous client names `$u1/...` directly: subscribing is refused (v5 0x87, 3.1.1 0x80
    [MQTT-3.9.3-1]); publishing there is refused (v5 PUBACK 0x87; 3.1.1 acknowledged but not delivered
    [MQTT-3.3.5-2]); and its own `sensors/temp` is not the tenant's."""
    alice = make_tenant(open_roost, "alice")
    mount = f"$u{alice.user.id}/"
    tenant = clients.connect(open_roost, alice.instance(), "a1", 5)
    tenant.subscribe("#", qos=1)
    anonymous = clients.connect(open_roost, None, "anon", version)
    for topic_filter in (f"{mount}#", f"$share/g/{mount}#", f"{mount}sensors/temp"):
        assert anonymous.subscribe(topic_filter, qos=1)[0].value == SUBACK_REFUSED[version], topic_filter
    code = anonymous.publish_code(f"{mount}sensors/temp", b"intruder")
    assert code == (0x87 if version == 5 else 0)
    anonymous.publish("sensors/temp", b"anonymous", qos=1)
    sync(tenant, tenant)
    tenant.expect_none()


# -- tenant isolation ---------------------------------------------------------------------------------------


@VERSIONS
@pytest.mark.parametrize("topic_filter", ["#", "+/#", "+/+", "$share/g/#", "sensors/temp"])
def test_tenants_with_the_same_names_never_see_each_other(secure_roost: RoostThread, alice: Tenant, bob: Tenant,
                                                          clients: Clients, version: int,
                                                          topic_filter: str) -> None:
    """Alice and Bob use the same client id and the same topic names. Whatever Bob subscribes to, he gets
    none of Alice's messages (live or retained) while Alice's own identical subscription gets them; the
    second connection with the same client id does not take over the first [MQTT-3.1.4-3] (sessions are
    per tenant)."""
    a = clients.connect(secure_roost, alice.instance(), "same", version)
    b = clients.connect(secure_roost, bob.instance(), "same", version)
    for client in (a, b):
        assert client.subscribe(topic_filter, qos=1)[0].value < 0x80
        client.subscribe("sync/marker", qos=1)
    a.publish("sensors/temp", b"alice", qos=1)
    a.publish("sensors/temp", b"alice-retained", qos=1, retain=True)
    assert [a.expect().payload, a.expect().payload] == [b"alice", b"alice-retained"]
    sync(b, b)
    b.expect_none()
    # A new subscription of Bob's gets no retained message of Alice's either [MQTT-3.3.1-9 context].
    assert b.subscribe("sensors/temp", qos=1)[0].value < 0x80
    sync(b, b)
    b.expect_none()
    assert a.alive and b.alive


@VERSIONS
def test_a_tenant_retained_message_goes_to_its_own_tenant_only(secure_roost: RoostThread, alice: Tenant,
                                                               bob: Tenant, clients: Clients,
                                                               version: int) -> None:
    """Alice's retained `status` is sent to Alice's new `#` subscription with RETAIN 1 [MQTT-3.3.1-9], and
    not to Bob's."""
    credentials = alice.instance()
    a = clients.connect(secure_roost, credentials, "a", version)
    a.publish("status", b"on", qos=1, retain=True)
    watcher = clients.connect(secure_roost, credentials, "a-watch", version)
    watcher.subscribe("#", qos=1)
    message = watcher.expect()
    assert (message.topic, message.payload, message.retain) == ("status", b"on", True)
    b = clients.connect(secure_roost, bob.instance(), "b", version)
    b.subscribe("#", qos=1)
    sync(b, b)
    b.expect_none()


@VERSIONS
def test_a_tenant_will_goes_to_its_own_tenant_only(secure_roost: RoostThread, alice: Tenant, bob: Tenant,
                                                   clients: Clients, version: int) -> None:
    """Alice's client dies without DISCONNECT: its will is published [MQTT-3.1.2-8] into Alice's namespace,
    where Alice's `#` subscriber gets it, and Bob's `#` subscriber does not."""
    username, password = alice.instance()
    a = clients.connect(secure_roost, (username, password), "a-watch", version)
    a.subscribe("#", qos=1)
    b = clients.connect(secure_roost, bob.instance(), "b-watch", version)
    b.subscribe("#", qos=1)
    dying = RawClient(secure_roost.mqtt_port, version)
    connack = dying.connect("dying", username=username, password=password.encode(),
                            will=Will("status", b"gone", 1, False))
    assert isinstance(connack, Connack) and connack.reason_code == 0
    dying.close()
    message = a.expect()
    assert (message.topic, message.payload) == ("status", b"gone")
    sync(b, b)
    b.expect_none()


def test_same_client_id_in_two_tenants_keeps_two_sessions(secure_roost: RoostThread, alice: Tenant, bob: Tenant,
                                                          clients: Clients) -> None:
    """Bob connecting as "same" with clean start 0 finds no session (Session Present 0 [MQTT-3.2.2-3])
    although Alice's "same" has one; Alice stays connected (no DISCONNECT 0x8E) and keeps receiving."""
    a = clients.connect(secure_roost, alice.instance(), "same", 5, persistent=True)
    a.subscribe("x", qos=1)
    b = clients.connect(secure_roost, bob.instance(), "same", 5, persistent=True)
    assert not b.session_present
    a.publish("x", b"still here", qos=1)
    assert a.expect().payload == b"still here"
    assert a.alive and b.alive


@VERSIONS
def test_a_tenant_cannot_name_another_tenant_namespace_or_sys(secure_roost: RoostThread, alice: Tenant,
                                                              bob: Tenant, clients: Clients,
                                                              version: int) -> None:
    """Alice names Bob's mount point, or `$SYS`, directly: subscriptions refused (v5 0x87, 3.1.1 0x80
    [MQTT-3.9.3-1]), publishes refused (v5 PUBACK 0x87; 3.1.1 acknowledged, not delivered [MQTT-3.3.5-2])."""
    mount = f"$u{bob.user.id}/"
    b = clients.connect(secure_roost, bob.instance(), "b", 5)
    b.subscribe("#", qos=1)
    a = clients.connect(secure_roost, alice.instance(), "a", version)
    for topic_filter in (f"{mount}#", f"$share/g/{mount}#", f"{mount}x", "$SYS/#", "$SYS/broker/version"):
        assert a.subscribe(topic_filter, qos=1)[0].value == SUBACK_REFUSED[version], topic_filter
    for topic in (f"{mount}x", "$SYS/broker/version"):
        assert a.publish_code(topic, b"intruder") == (0x87 if version == 5 else 0), topic
    sync(b, b)
    b.expect_none()


@VERSIONS
def test_sys_topics_are_for_admin_tenants_only(make_roost: Any, clients: Clients, version: int) -> None:
    """A non-admin tenant's `$SYS/#` is refused (0x87 / 0x80); an admin tenant's is granted and receives
    `$SYS/broker/version` (retained). The admin's `#` does not include `$SYS` [MQTT-4.7.2-1]."""
    roost = make_roost(allow_anonymous=False, sys_interval=1)
    admin = make_tenant(roost, "root", plan="enterprise", is_admin=True)
    plain = make_tenant(roost, "alice")
    user = clients.connect(roost, plain.instance(), "u", version)
    assert user.subscribe("$SYS/#", qos=0)[0].value == SUBACK_REFUSED[version]
    credentials = admin.instance()
    boss = clients.connect(roost, credentials, "boss", version)
    assert boss.subscribe("$SYS/broker/version", qos=0)[0].value == 0
    message = boss.expect()
    assert message.topic == "$SYS/broker/version" and message.payload.startswith(b"roost ")
    watcher = clients.connect(roost, credentials, "boss-all", version)
    watcher.subscribe("#", qos=1)
    sync(watcher, watcher)
    watcher.expect_none()


# -- device ACLs ----------------------------------------------------------------------------------------------


@pytest.fixture
def acl_project(alice: Tenant) -> int:
    """A project whose devices may publish to `sensors/+/temp` and `telemetry`, subscribe to
    `sensors/+/temp` and `cmd/dev-1`, and use `sync/marker` both ways."""
    project = alice.project()
    alice.topic(project, "sensors/+/temp", publish=True, subscribe=True)
    alice.topic(project, "cmd/dev-1", publish=False, subscribe=True)
    alice.topic(project, "telemetry", publish=True, subscribe=False)
    alice.topic(project, "sync/marker", publish=True, subscribe=True)
    return project


@VERSIONS
def test_device_publishes_only_to_its_project_topics(secure_roost: RoostThread, alice: Tenant, acl_project: int,
                                                     clients: Clients, version: int) -> None:
    """A device's PUBLISH to a topic no can_publish rule matches: v5 PUBACK 0x87 Not authorized; 3.1.1
    acknowledged but not delivered [MQTT-3.3.5-2], as an instance client of the same tenant on `#` shows.
    Allowed topics (a filter rule `sensors/+/temp` included) are delivered."""
    instance = clients.connect(secure_roost, alice.instance(), "watch", 5)
    instance.subscribe("#", qos=1)
    device = clients.connect(secure_roost, alice.device(acl_project, "dev-1"), "dev-1", version)
    refused = 0x87 if version == 5 else 0
    outcomes = {
        "sensors/kitchen/temp": 0, "telemetry": 0, "cmd/dev-1": refused, "other": refused,
        "sensors/kitchen/humidity": refused, "sensors/kitchen/temp/x": refused, "sensors/temp": refused,
    }
    for topic, expected in outcomes.items():
        assert device.publish_code(topic, topic.encode()) == expected, topic
    sync(instance, instance)
    delivered = []
    while not instance.messages.empty():
        delivered.append(instance.expect().topic)
    assert delivered == ["sensors/kitchen/temp", "telemetry"]


@VERSIONS
def test_device_subscribes_where_a_can_subscribe_rule_overlaps_the_filter(
    secure_roost: RoostThread, alice: Tenant, acl_project: int, clients: Clients, version: int
) -> None:
    """A filter is granted when a can_subscribe rule overlaps it (Mosquitto's model), otherwise v5 0x87 /
    3.1.1 0x80 [MQTT-3.9.3-1]. Granted filters receive what an instance client publishes, each message
    checked against the device's rules at delivery: `#` brings nothing a rule does not match."""
    device = clients.connect(secure_roost, alice.device(acl_project, "dev-1"), "dev-1", version)
    outcomes = {
        "cmd/dev-1": True, "sensors/+/temp": True, "sensors/kitchen/temp": True, "$share/g/sensors/+/temp": True,
        "telemetry": False, "sensors/#": True, "#": True, "+/+/temp": True, "sensors/+/+": True,
        "cmd/+": True, "$SYS/#": False, "other/#": False,
    }
    for topic_filter, granted in outcomes.items():
        code = device.subscribe(topic_filter, qos=1)[0].value
        assert code == (1 if granted else SUBACK_REFUSED[version]), topic_filter
    device.subscribe("sync/marker", qos=1)
    instance = clients.connect(secure_roost, alice.instance(), "pub", 5)
    instance.publish("cmd/dev-1", b"go", qos=1)
    instance.publish("sensors/hall/temp", b"21", qos=1)
    instance.publish("telemetry", b"not for devices", qos=1)
    sync(instance, device)
    received = set()
    while not device.messages.empty():
        received.add(device.expect().topic)
    assert received == {"cmd/dev-1", "sensors/hall/temp"}


# -- changes act on connected clients at once ------------------------------------------------------------


class Estate:
    """Alice's instance, two devices in project one, one device in project two; Bob's instance. Every
    client is connected with a persistent session and a subscription."""

    def __init__(self, roost: RoostThread, clients: Clients, version: int) -> None:
        self.roost = roost
        self.clients = clients
        self.version = version
        self.alice = make_tenant(roost, "alice", plan="starter")
        self.bob = make_tenant(roost, "bob")
        self.credentials: dict[str, tuple[str, str]] = {"instance": self.alice.instance()}
        self.project_one = self.alice.project("one")
        self.project_two = self.alice.project("two")
        for project in (self.project_one, self.project_two):
            self.alice.topic(project, "data")
        self.credentials["d1"] = self.alice.device(self.project_one, "d1")
        self.credentials["d2"] = self.alice.device(self.project_one, "d2")
        self.credentials["d3"] = self.alice.device(self.project_two, "d3")
        self.credentials["bob"] = self.bob.instance()
        self.live: dict[str, AckClient] = {}
        for name, credentials in self.credentials.items():
            client = self.connect(name, credentials)
            client.subscribe("data", qos=1)
            self.live[name] = client

    def client_id(self, name: str) -> str:
        return name if name.startswith("d") else "same"  # both instance clients use the same client id

    def connect(self, name: str, credentials: tuple[str, str]) -> AckClient:
        return self.clients.connect(self.roost, credentials, self.client_id(name), self.version, persistent=True)

    def check(self, revoked: set[str]) -> None:
        """The revoked clients are closed (v5: DISCONNECT 0x98 first); the others still work."""
        for name in revoked:
            wait_revoked(self.live[name])
        for name in set(self.live) - revoked:
            client = self.live[name]
            assert client.publish_code("data", b"ping") == 0, name
            assert client.alive, name

    def refused(self, name: str, expected: dict[int, int]) -> None:
        """Reconnecting with the old credentials is refused."""
        username, password = self.credentials[name]
        code = raw_connack(self.roost.mqtt_port, self.version, self.client_id(name), username, password.encode())
        assert code == expected[self.version], name

    def session_gone(self, name: str, credentials: tuple[str, str]) -> None:
        """With valid credentials again and clean start 0, the old session is not there: Session Present 0
        [MQTT-3.2.2-3] (3.1.1: [MQTT-3.2.2-2])."""
        client = self.connect(name, credentials)
        assert not client.session_present, name
        stop(client)


@pytest.fixture(params=[4, 5], ids=["v311", "v5"])
def estate(request: pytest.FixtureRequest, secure_roost: RoostThread, clients: Clients) -> Estate:
    return Estate(secure_roost, clients, request.param)


def test_deleting_an_instance_closes_its_clients(estate: Estate) -> None:
    alice = estate.alice
    estate.roost.run(alice.services.instances.delete(alice.user, instance_public_id(alice)))
    estate.check(revoked={"instance"})
    estate.refused("instance", BAD_CREDENTIALS)
    estate.session_gone("instance", alice.instance())


def test_deleting_a_device_closes_it(estate: Estate) -> None:
    alice = estate.alice
    row = device_row_id(alice, estate.project_one, "d1")
    estate.roost.run(alice.services.devices.delete(alice.user, row))
    estate.check(revoked={"d1"})
    estate.refused("d1", BAD_CREDENTIALS)
    estate.session_gone("d1", alice.device(estate.project_one, "d1"))


def test_rotating_a_device_credentials_closes_it(estate: Estate) -> None:
    alice = estate.alice
    row = device_row_id(alice, estate.project_one, "d1")
    view = estate.roost.run(alice.services.devices.rotate_credentials(alice.user, row))
    estate.check(revoked={"d1"})
    estate.refused("d1", BAD_CREDENTIALS)
    assert view.secret is not None
    estate.session_gone("d1", ("d1", view.secret))


def test_deactivating_a_device_closes_it(estate: Estate) -> None:
    alice = estate.alice
    row = device_row_id(alice, estate.project_one, "d1")
    estate.roost.run(alice.services.devices.update(alice.user, row, status="inactive"))
    estate.check(revoked={"d1"})
    estate.refused("d1", NOT_AUTHORIZED)
    estate.roost.run(alice.services.devices.update(alice.user, row, status="offline"))
    estate.session_gone("d1", estate.credentials["d1"])


def test_deactivating_a_user_closes_all_their_clients(estate: Estate) -> None:
    alice = estate.alice
    estate.roost.run(alice.services.users.update(None, alice.user.id, is_active=False))
    estate.check(revoked={"instance", "d1", "d2", "d3"})
    for name in ("instance", "d1", "d3"):
        estate.refused(name, NOT_AUTHORIZED)
    estate.roost.run(alice.services.users.update(None, alice.user.id, is_active=True))
    estate.session_gone("instance", estate.credentials["instance"])
    estate.session_gone("d1", estate.credentials["d1"])


def test_deleting_a_user_closes_all_their_clients(estate: Estate) -> None:
    alice = estate.alice
    estate.roost.run(alice.services.users.delete(None, alice.user.id))
    estate.check(revoked={"instance", "d1", "d2", "d3"})
    for name in ("instance", "d1", "d3"):
        estate.refused(name, BAD_CREDENTIALS)
    again = make_tenant(estate.roost, "alice")
    estate.session_gone("instance", again.instance())
    estate.session_gone("d1", again.device(again.project(), "d1"))


def test_deleting_a_project_closes_its_devices(estate: Estate) -> None:
    alice = estate.alice
    estate.roost.run(alice.services.projects.delete(alice.user, estate.project_one))
    estate.check(revoked={"d1", "d2"})
    estate.refused("d1", BAD_CREDENTIALS)
    estate.session_gone("d1", alice.device(alice.project("three"), "d1"))


@VERSIONS
def test_a_revoked_client_hears_0x98_then_the_connection_closes(secure_roost: RoostThread, alice: Tenant,
                                                                version: int) -> None:
    """Byte-exact: v5 gets exactly one DISCONNECT with 0x98 Administrative action and then the close
    [MQTT-3.14.2-1][MQTT-3.14.4-2]; 3.1.1 (no server DISCONNECT) gets nothing but the close."""
    username, password = alice.instance()
    raw = RawClient(secure_roost.mqtt_port, version)
    try:
        assert raw.connect("c1", username=username, password=password.encode()).reason_code == 0
        secure_roost.run(alice.services.instances.delete(alice.user, instance_public_id(alice)))
        packets = packets_until_closed(raw)
    finally:
        raw.close()
    assert packets == ([Disconnect(0x98)] if version == 5 else [])


@VERSIONS
def test_an_offline_session_of_a_revoked_device_is_removed(secure_roost: RoostThread, alice: Tenant,
                                                           clients: Clients, version: int) -> None:
    """A device with a persistent session is offline when its credentials are rotated: its session (and
    the messages queued for it) goes too; with the new password it finds Session Present 0 and nothing
    queued."""
    project = alice.project()
    alice.topic(project, "cmd")
    device = clients.connect(secure_roost, alice.device(project, "d1"), "d1", version, persistent=True)
    device.subscribe("cmd", qos=1)
    device.disconnect()
    instance = clients.connect(secure_roost, alice.instance(), "pub", 5)
    instance.publish("cmd", b"queued for the old session", qos=1)
    row = device_row_id(alice, project, "d1")
    view = secure_roost.run(alice.services.devices.rotate_credentials(alice.user, row))
    assert view.secret is not None
    again = clients.connect(secure_roost, ("d1", view.secret), "d1", version, persistent=True)
    assert not again.session_present
    again.subscribe("cmd", qos=1)
    sync(instance, again, "cmd")
    again.expect_none()


# -- narrowing an ACL ----------------------------------------------------------------------------------------


@pytest.fixture
def narrowing(secure_roost: RoostThread, alice: Tenant, clients: Clients) -> dict[str, Any]:
    project = alice.project()
    topics = {name: alice.topic(project, name) for name in ("cmd", "sensors/+/temp", "sync/marker")}
    return {"project": project, "topics": topics, "instance": clients.connect(secure_roost, alice.instance(), "i", 5)}


def _narrow(roost: RoostThread, alice: Tenant, topic_id: int, how: str) -> None:
    topics = alice.services.topics
    if how == "delete":
        roost.run(topics.delete(alice.user, topic_id))
    elif how == "can_subscribe False":
        roost.run(topics.update(alice.user, topic_id, can_subscribe=False))
    else:  # rename
        roost.run(topics.update(alice.user, topic_id, name="renamed"))


@VERSIONS
@pytest.mark.parametrize(
    ("how", "topic_filter"),
    [("delete", "cmd"), ("can_subscribe False", "cmd"), ("rename", "cmd"), ("delete", "$share/g/cmd")],
)
def test_narrowing_a_topic_removes_live_subscriptions(secure_roost: RoostThread, alice: Tenant, clients: Clients,
                                                      narrowing: dict[str, Any], version: int, how: str,
                                                      topic_filter: str) -> None:
    """A device subscribed to `cmd` (plain or shared) loses the subscription as soon as the topic is deleted,
    renamed, or loses can_subscribe: what the instance publishes to `cmd` afterwards is not delivered, while
    the still-allowed `sync/marker` is (the sync marker proves it)."""
    device = clients.connect(secure_roost, alice.device(narrowing["project"], "d1"), "d1", version)
    instance = narrowing["instance"]
    assert device.subscribe(topic_filter, qos=1)[0].value == 1
    device.subscribe("sync/marker", qos=1)
    instance.publish("cmd", b"before", qos=1)
    assert device.expect().payload == b"before"
    _narrow(secure_roost, alice, narrowing["topics"]["cmd"], how)
    instance.publish("cmd", b"after", qos=1)
    sync(instance, device)
    device.expect_none()
    assert device.alive


@VERSIONS
def test_a_still_covering_rule_keeps_the_subscription(secure_roost: RoostThread, alice: Tenant, clients: Clients,
                                                      narrowing: dict[str, Any], version: int) -> None:
    """Only what is no longer allowed goes: with `sensors/#` (subscribe only) added, deleting
    `sensors/+/temp` keeps the device's `sensors/kitchen/temp` subscription, now covered by the other rule."""
    alice.topic(narrowing["project"], "sensors/#", publish=False, subscribe=True)
    device = clients.connect(secure_roost, alice.device(narrowing["project"], "d1"), "d1", version)
    device.subscribe("sensors/kitchen/temp", qos=1)
    _narrow(secure_roost, alice, narrowing["topics"]["sensors/+/temp"], "delete")
    narrowing["instance"].publish("sensors/kitchen/temp", b"21", qos=1)
    assert device.expect().payload == b"21"


@VERSIONS
def test_narrowing_filters_a_partly_granted_wildcard_at_once(secure_roost: RoostThread, alice: Tenant,
                                                            clients: Clients, narrowing: dict[str, Any],
                                                            version: int) -> None:
    """A device's `#` is granted in part (its rules overlap it) and filtered per message; deleting the
    `cmd` rule stops `cmd` at once while `sensors/+/temp` still flows (the per-message answers are dropped
    with every access change)."""
    device = clients.connect(secure_roost, alice.device(narrowing["project"], "d1"), "d1", version)
    instance = narrowing["instance"]
    assert device.subscribe("#", qos=1)[0].value == 1
    instance.publish("cmd", b"before", qos=1)
    assert device.expect().payload == b"before"
    _narrow(secure_roost, alice, narrowing["topics"]["cmd"], "delete")
    instance.publish("cmd", b"after", qos=1)
    instance.publish("sensors/hall/temp", b"20", qos=1)
    sync(instance, device)
    received = []
    while not device.messages.empty():
        received.append(device.expect().payload)
    assert received == [b"20"]


@VERSIONS
def test_taking_away_can_publish_refuses_the_next_publish(secure_roost: RoostThread, alice: Tenant,
                                                          clients: Clients, narrowing: dict[str, Any],
                                                          version: int) -> None:
    """After can_publish False, the device's next PUBLISH to that topic is refused: v5 PUBACK 0x87; 3.1.1
    acknowledged and not delivered [MQTT-3.3.5-2]."""
    instance = narrowing["instance"]
    instance.subscribe("#", qos=1)
    device = clients.connect(secure_roost, alice.device(narrowing["project"], "d1"), "d1", version)
    assert device.publish_code("cmd", b"allowed") == 0
    assert instance.expect().payload == b"allowed"
    secure_roost.run(alice.services.topics.update(alice.user, narrowing["topics"]["cmd"], can_publish=False))
    assert device.publish_code("cmd", b"refused") == (0x87 if version == 5 else 0)
    sync(instance, instance)
    instance.expect_none()


# -- writes by another process ------------------------------------------------------------------------------


def _outside(roost: RoostThread, write: Any) -> None:
    """Run `write(store)` on a second store over the same database file, as the CLI in another process
    would (the running server is not told)."""

    async def main() -> None:
        async with await open_store(roost.config.data_dir) as store:
            await write(store)

    asyncio.run(main())


@VERSIONS
def test_an_instance_deleted_by_another_process_is_closed_within_seconds(secure_roost: RoostThread, alice: Tenant,
                                                                        clients: Clients, version: int) -> None:
    """The server notices the outside write (its poll of the database's change token) and closes the client
    (v5: DISCONNECT 0x98) within about two seconds; its credentials are refused from then on."""
    credentials = alice.instance()
    client = clients.connect(secure_roost, credentials, "c1", version, persistent=True)
    public_id = instance_public_id(alice)
    _outside(secure_roost, lambda store: store.instances.delete(public_id, user_id=None))
    wait_revoked(client)
    code = raw_connack(secure_roost.mqtt_port, version, "c1", credentials[0], credentials[1].encode())
    assert code == BAD_CREDENTIALS[version]


def test_a_topic_narrowed_by_another_process_stops_deliveries(secure_roost: RoostThread, alice: Tenant,
                                                              clients: Clients, narrowing: dict[str, Any]) -> None:
    """A topic deleted through a second store: the device's subscription goes within seconds. The device
    is told nothing, so the test waits until a publish to `cmd` is no longer delivered (a sync marker after
    each try)."""
    device = clients.connect(secure_roost, alice.device(narrowing["project"], "d1"), "d1", 5)
    device.subscribe("cmd", qos=1)
    device.subscribe("sync/marker", qos=1)
    instance = narrowing["instance"]
    topic_id = narrowing["topics"]["cmd"]
    _outside(secure_roost, lambda store: store.topics.delete(topic_id, user_id=None))

    def stopped() -> bool:
        instance.publish("cmd", b"probe", qos=1)
        sync(instance, device)
        delivered = not device.messages.empty()
        while not device.messages.empty():
            device.expect()
        return not delivered

    assert poll(stopped), "deliveries to the narrowed subscription did not stop"


# -- hourly quota over MQTT -------------------------------------------------------------------------------


def _raw_tenant_client(roost: RoostThread, credentials: tuple[str, str], client_id: str, version: int) -> RawClient:
    raw = RawClient(roost.mqtt_port, version)
    username, password = credentials
    connack = raw.connect(client_id, username=username, password=password.encode())
    assert isinstance(connack, Connack) and connack.reason_code == 0
    return raw


def _use_up_quota(raw: RawClient, count: int = 100) -> None:
    """Subscribe to `q/#` and publish `count` QoS 0 messages there; all of them come back."""
    raw.send(Subscribe(1, (Subscription("q/#", 0),)))
    assert isinstance(raw.receive(), Suback)
    for n in range(count):
        raw.send(Publish(f"q/{n}", b"x"))
    delivered = ping(raw)
    assert len(delivered) == count and all(isinstance(p, Publish) for p in delivered)


def test_v5_publish_beyond_the_hourly_quota_gets_0x97(secure_roost: RoostThread, alice: Tenant, bob: Tenant,
                                                     clients: Clients) -> None:
    """A free user's 100 messages an hour: the 101st QoS 1 PUBLISH gets PUBACK 0x97 Quota exceeded and is
    not delivered; QoS 0 beyond the quota is dropped; the connection stays open. The quota is the user's
    (a device of the same user is refused too), and another tenant is not affected."""
    raw = _raw_tenant_client(secure_roost, alice.instance(), "c1", 5)
    try:
        _use_up_quota(raw)
        raw.send(Publish("q/over", b"x", qos=1, packet_id=7))
        assert raw.receive() == Puback(7, 0x97)
        raw.send(Publish("q/over", b"x"))
        assert ping(raw) == []  # dropped, and still connected
    finally:
        raw.close()
    project = alice.project()
    alice.topic(project, "data")
    device = clients.connect(secure_roost, alice.device(project, "d1"), "d1", 5)
    assert device.publish_code("data") == 0x97
    other = clients.connect(secure_roost, bob.instance(), "c1", 5)
    assert other.publish_code("data") == 0


def test_v311_qos1_publish_beyond_the_quota_closes_the_connection(secure_roost: RoostThread, alice: Tenant) -> None:
    """3.1.1 cannot hear a reason code: QoS 0 beyond the quota is dropped, and a QoS 1 PUBLISH the server
    will not accept closes the connection instead of being acknowledged [MQTT-3.3.5-2]."""
    raw = _raw_tenant_client(secure_roost, alice.instance(), "c1", 4)
    try:
        _use_up_quota(raw)
        raw.send(Publish("q/over", b"x"))
        assert ping(raw) == []
        raw.send(Publish("q/over", b"x", qos=1, packet_id=7))
        assert packets_until_closed(raw) == []
    finally:
        raw.close()


def test_a_new_user_does_not_inherit_a_deleted_user_quota(secure_roost: RoostThread) -> None:
    """Alice uses up her quota and is deleted; the next user created starts with a fresh quota (SQLite may
    give them Alice's old id)."""
    alice = make_tenant(secure_roost, "alice")
    raw = _raw_tenant_client(secure_roost, alice.instance(), "c1", 5)
    try:
        _use_up_quota(raw)
    finally:
        raw.close()
    secure_roost.run(alice.services.users.delete(None, alice.user.id))
    carol = make_tenant(secure_roost, "carol")
    raw = _raw_tenant_client(secure_roost, carol.instance(), "c1", 5)
    try:
        raw.send(Publish("q/first", b"x", qos=1, packet_id=1))
        assert raw.receive() == Puback(1, 0)
    finally:
        raw.close()


def test_a_new_user_does_not_see_a_deleted_user_retained_messages(secure_roost: RoostThread,
                                                                 clients: Clients) -> None:
    """Alice's clients leave retained messages and Alice is deleted; a user created afterwards (SQLite may
    give them Alice's old id, hence her mount point) subscribes to `#` and must receive none of them."""
    alice = make_tenant(secure_roost, "alice")
    project = alice.project()
    alice.topic(project, "device/state")
    instance = clients.connect(secure_roost, alice.instance(), "a", 5)
    instance.publish("secret", b"alice's", qos=1, retain=True)
    device = clients.connect(secure_roost, alice.device(project, "d1"), "d1", 5)
    device.publish("device/state", b"alice's device", qos=1, retain=True)
    secure_roost.run(alice.services.users.delete(None, alice.user.id))
    mallory = make_tenant(secure_roost, "mallory")
    watcher = clients.connect(secure_roost, mallory.instance(), "m", 5)
    watcher.subscribe("#", qos=1)
    sync(watcher, watcher)
    watcher.expect_none()


def test_usage_keeps_being_written_after_a_user_is_deleted(secure_roost: RoostThread, alice: Tenant, bob: Tenant,
                                                           clients: Clients) -> None:
    """Alice publishes and is deleted before the meter's next write (once a second); Bob's usage still
    reaches the `quota_usage` table, so it survives a restart."""
    a = clients.connect(secure_roost, alice.instance(), "a", 5)
    a.publish("x", b"1", qos=1)
    secure_roost.run(alice.services.users.delete(None, alice.user.id))
    b = clients.connect(secure_roost, bob.instance(), "b", 5)
    b.publish("x", b"2", qos=1)

    def bob_counted() -> bool:
        return any(row[0] == bob.user.id for row in db_rows(secure_roost)["quota_usage"])

    assert poll(bob_counted, timeout=3), "Bob's usage was never written"


# -- message history -----------------------------------------------------------------------------------------


@VERSIONS
def test_device_messages_on_registered_topics_are_recorded(secure_roost: RoostThread, alice: Tenant,
                                                           acl_project: int, clients: Clients,
                                                           version: int) -> None:
    """What a device publishes on its project's topics is in the project's history (written in batches
    about once a second); a refused publish is not."""
    device = clients.connect(secure_roost, alice.device(acl_project, "dev-1"), "dev-1", version)
    device.publish("other", b"refused", qos=1)
    device.publish("sensors/kitchen/temp", b"21.5", qos=1, retain=True)
    messages = poll(lambda: secure_roost.run(alice.services.messages.list(alice.user, acl_project)))
    assert len(messages) == 1
    message = messages[0]
    topics = secure_roost.run(alice.services.topics.list(alice.user, acl_project)).items
    rule = next(t for t in topics if t.name == "sensors/+/temp")
    assert (message.topic, message.payload, message.qos, message.retained, message.topic_id) == (
        "sensors/kitchen/temp", b"21.5", 1, True, rule.id
    )


def test_history_keeps_being_recorded_after_a_topic_is_deleted(secure_roost: RoostThread, alice: Tenant,
                                                               clients: Clients) -> None:
    """A device publishes and its topic is deleted before the recorder's next write; messages published
    afterwards on another topic are still recorded."""
    project = alice.project()
    doomed = alice.topic(project, "doomed")
    alice.topic(project, "kept")
    device = clients.connect(secure_roost, alice.device(project, "d1"), "d1", 5)
    device.publish("doomed", b"1", qos=1)
    secure_roost.run(alice.services.topics.delete(alice.user, doomed))
    device.publish("kept", b"2", qos=1)

    def kept() -> list[Any]:
        return [m for m in secure_roost.run(alice.services.messages.list(alice.user, project)) if m.topic == "kept"]

    assert poll(kept, timeout=3), "the message on `kept` was never recorded"
