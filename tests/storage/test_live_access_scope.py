"""Issue 14, attack 3 (second half): an access change in one tenant cost every tenant. After one tenant made
400,000 subscriptions, each `PUT /api/v1/topics/{id}` by anyone re-checked all of them (~330 ms frozen).

Now a change in tenant X re-checks X's sessions only (the broker's tenant index), in steps that let the
loop run. These tests show, through real clients, that the change still acts at once on X's clients and
that the other tenants' sessions are not even looked at; bench/access_change.py measures the stall.
"""

from __future__ import annotations

import pytest

from broker.hooks import ClientInfo, Decision
from storage.access import StorageAuthHook
from tests.helpers import RoostThread, sync
from tests.storage.live_helpers import Clients, device_row_id
from tests.tenant_helpers import make_tenant


class _Spy:
    """Counts the subscription checks the storage hook answers, by the asking client's tenant mount."""

    def __init__(self, hook: StorageAuthHook) -> None:
        self.asked: dict[str, int] = {}
        self._hook = hook
        self._original = hook.authorize_subscribe
        hook.authorize_subscribe = self._count  # type: ignore[method-assign]

    def _count(self, client: ClientInfo, topic_filter: str) -> Decision:
        self.asked[client.mount] = self.asked.get(client.mount, 0) + 1
        return self._original(client, topic_filter)

    def restore(self) -> None:
        self._hook.authorize_subscribe = self._original  # type: ignore[method-assign]


def _spy(roost: RoostThread) -> _Spy:
    assert roost.roost is not None
    return roost.call(lambda: _Spy(roost.roost.auth_hook))  # type: ignore[union-attr]


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_a_topic_change_acts_at_once_on_its_tenant_and_leaves_the_others_alone(
    secure_roost: RoostThread, clients: Clients, version: int
) -> None:
    alice, bob = make_tenant(secure_roost, "alice", "enterprise"), make_tenant(secure_roost, "bob", "enterprise")
    project = alice.project()
    cmd = alice.topic(project, "cmd")
    alice.topic(project, "sync/marker")
    device = clients.connect(secure_roost, alice.device(project, "d1"), "d1", version)
    device.subscribe("cmd", qos=1)
    device.subscribe("sync/marker", qos=1)
    publisher = clients.connect(secure_roost, alice.instance(), "pub", 5)
    # Bob: an instance with many subscriptions, and a device of his own on a topic of his.
    bob_project = bob.project()
    bob.topic(bob_project, "cmd")
    bob_instance = clients.connect(secure_roost, bob.instance(), "many", version)
    bob_instance.subscribe([(f"room/{n}/#", 1) for n in range(200)])
    bob_device = clients.connect(secure_roost, bob.device(bob_project, "b1"), "b1", version)
    bob_device.subscribe("cmd", qos=1)
    bob_publisher = clients.connect(secure_roost, bob.instance(), "bob-pub", 5)

    spy = _spy(secure_roost)
    try:
        secure_roost.run(alice.services.topics.update(alice.user, cmd, can_subscribe=False))
    finally:
        secure_roost.call(spy.restore)
    alice_mount, bob_mount = f"$u{alice.user.id}/", f"$u{bob.user.id}/"
    assert spy.asked.get(alice_mount, 0) == 2  # the device's two subscriptions, re-checked
    assert bob_mount not in spy.asked, spy.asked  # not one of Bob's 202

    # At once, for Alice's device: the narrowed subscription is gone, the other one stays.
    publisher.publish("cmd", b"after", qos=1)
    sync(publisher, device)
    device.expect_none()
    # Bob's clients keep everything.
    bob_publisher.publish("room/7/temp", b"21", qos=1)
    assert bob_instance.expect().payload == b"21"
    bob_publisher.publish("cmd", b"for bob", qos=1)
    assert bob_device.expect().payload == b"for bob"


def test_revoking_a_device_kicks_only_in_its_tenant(secure_roost: RoostThread, clients: Clients) -> None:
    """Deleting a device disconnects it at once; another tenant's device with the same client id stays."""
    alice, bob = make_tenant(secure_roost, "alice", "enterprise"), make_tenant(secure_roost, "bob", "enterprise")
    a_project, b_project = alice.project(), bob.project()
    alice.topic(a_project, "t")
    bob.topic(b_project, "t")
    a_device = clients.connect(secure_roost, alice.device(a_project, "dev-a"), "dev-a", 5)
    b_device = clients.connect(secure_roost, bob.device(b_project, "dev-b"), "dev-b", 5)
    b_device.subscribe("t", qos=1)
    b_publisher = clients.connect(secure_roost, bob.instance(), "p", 5)
    spy = _spy(secure_roost)
    try:
        row = device_row_id(alice, a_project, "dev-a")
        secure_roost.run(alice.services.devices.delete(alice.user, row))
    finally:
        secure_roost.call(spy.restore)
    assert a_device.disconnected.wait(5)
    assert f"$u{bob.user.id}/" not in spy.asked
    b_publisher.publish("t", b"still here", qos=1)
    assert b_device.expect().payload == b"still here"

