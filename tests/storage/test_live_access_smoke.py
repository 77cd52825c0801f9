"""Live access through real clients: stored credentials let clients in, tenants are isolated, and a revoke
disconnects at once. (The full matrix lives in tests/storage/test_live_access.py.)"""

from __future__ import annotations

import pytest

from tests.tenant_helpers import make_tenant


@pytest.fixture
def secure_roost(make_roost):
    return make_roost(allow_anonymous=False)


def test_instance_credentials_connect_and_deleting_the_instance_disconnects(secure_roost) -> None:
    alice = make_tenant(secure_roost, "alice", plan="starter")
    credentials = alice.instance()
    client = alice.client(credentials, "c1").connect()
    client.subscribe("a/#", qos=1)
    view = secure_roost.run(alice.services.instances.list(alice.user))
    secure_roost.run(alice.services.instances.delete(alice.user, view.items[0].instance.public_id))
    assert client.disconnected.wait(5)
    assert client.disconnect_reason.value == 0x98  # Administrative action
    again = alice.client(credentials, "c1")
    again.connect(expect_success=False)
    assert again.connack is not None and again.connack[1].value == 0x86


def test_two_tenants_never_see_each_other(secure_roost) -> None:
    alice = make_tenant(secure_roost, "alice")
    bob = make_tenant(secure_roost, "bob")
    a = alice.client(alice.instance(), "same-id").connect()
    b = bob.client(bob.instance(), "same-id").connect()
    a.subscribe("#", qos=1)
    b.subscribe("#", qos=1)
    a.publish("sensors/temp", b"alice", qos=1)
    b.publish("sensors/temp", b"bob", qos=1)
    assert a.expect().payload == b"alice"
    assert b.expect().payload == b"bob"
    assert a.connected.is_set() and not a.disconnected.is_set()  # same client id, no takeover across tenants
