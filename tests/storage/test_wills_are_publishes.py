"""Issue 14, attacks 5 and 6 through real sockets: wills are publishes.

5. A user at 20/20 of a 20-message plan opened 30 connections with a will each and closed them: 30 wills
   were delivered (a retained one stored), none counted. Now the publish hook counts a will against the
   hourly quota when it is published; over it the will is dropped (not retained) and counted.
6. A PUBLISH to `$SYS/broker/version` is refused, but a will with that topic reached the tenant's own `#`
   subscribers (inside the tenant's namespace, `$u{id}/$SYS/...`) and was retained. Now a `$` will topic
   is refused at CONNECT (v5 0x90, 3.1.1 return code 5), and checked again when a will is published.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broker.codec import Connack, Publish, Suback, Subscribe, Subscription, Will
from broker.hooks import ClientInfo
from tests.helpers import RawClient, RoostThread, roost_document
from tests.session_helpers import ping
from tests.storage.live_helpers import poll
from tests.tenant_helpers import Tenant, make_tenant

QUOTA = 20


@pytest.fixture
def quota_roost(tmp_path: Path) -> Iterator[RoostThread]:
    document = roost_document(tmp_path, allow_anonymous=False)
    document["plans"] = {"free": {"messages_per_hour": QUOTA}}
    roost = RoostThread(document).start()
    yield roost
    roost.stop()


@pytest.fixture
def alice(quota_roost: RoostThread) -> Tenant:
    return make_tenant(quota_roost, "alice")


def _connect(roost: RoostThread, credentials: tuple[str, str], client_id: str, version: int = 5,
             will: Will | None = None) -> tuple[RawClient, Connack]:
    raw = RawClient(roost.mqtt_port, version)
    username, password = credentials
    connack = raw.connect(client_id, username=username, password=password.encode(), will=will)
    assert isinstance(connack, Connack)
    return raw, connack


def _subscribe_all(raw: RawClient) -> None:
    raw.send(Subscribe(1, (Subscription("#", 1),)))
    suback = raw.receive()
    assert isinstance(suback, Suback) and suback.reason_codes == (1,)


def _connected(roost: RoostThread) -> int:
    broker = roost.roost.broker  # type: ignore[union-attr]
    return roost.call(lambda: broker.stats.clients_connected)


def _wills_dropped(roost: RoostThread) -> dict[str, int]:
    broker = roost.roost.broker  # type: ignore[union-attr]
    return roost.call(lambda: dict(broker.stats.wills_dropped))


def test_wills_over_the_hourly_quota_are_dropped_not_retained_and_counted(quota_roost: RoostThread,
                                                                          alice: Tenant) -> None:
    credentials = alice.instance()
    watcher, _ = _connect(quota_roost, credentials, "watcher")
    _subscribe_all(watcher)
    for n in range(QUOTA):  # 20 of 20: the quota is used up
        watcher.send(Publish(f"q/{n}", b"x"))
    assert len(ping(watcher)) == QUOTA
    for n in range(30):
        raw, connack = _connect(quota_roost, credentials, f"will-{n}", will=Will("status/gone", b"gone", 1, True))
        assert connack.reason_code == 0
        raw.close()  # no DISCONNECT: the will is due now [MQTT-3.1.2-8]
    # Every will-connection has been handled once the broker counts the watcher alone.
    assert poll(lambda: _connected(quota_roost) == 1), _connected(quota_roost)
    assert ping(watcher) == []  # none delivered
    late, _ = _connect(quota_roost, credentials, "late")
    _subscribe_all(late)
    assert ping(late) == []  # none retained
    assert _wills_dropped(quota_roost) == {"quota": 30}
    metrics = _metrics(quota_roost)
    assert 'roost_mqtt_wills_dropped_total{reason="quota"} 30.0' in metrics
    late.close()
    watcher.close()


def test_a_will_within_the_quota_counts_against_it(quota_roost: RoostThread, alice: Tenant) -> None:
    """19 messages, then a will: delivered (the 20th), and the next PUBLISH is over the quota (0x97)."""
    credentials = alice.instance()
    watcher, _ = _connect(quota_roost, credentials, "watcher")
    _subscribe_all(watcher)
    for n in range(QUOTA - 1):
        watcher.send(Publish(f"q/{n}", b"x"))
    assert len(ping(watcher)) == QUOTA - 1
    dying, _ = _connect(quota_roost, credentials, "dying", will=Will("status/gone", b"gone", 1))
    dying.close()
    message = watcher.receive()
    assert isinstance(message, Publish) and message.topic == "status/gone"
    watcher.send(Publish("q/over", b"x", qos=1, packet_id=9))
    acks = ping(watcher)
    assert [(type(p).__name__, p.reason_code) for p in acks] == [("Puback", 0x97)]
    watcher.close()


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_a_will_to_a_dollar_topic_is_refused_and_never_reaches_the_tenant(quota_roost: RoostThread, alice: Tenant,
                                                                          version: int) -> None:
    credentials = alice.instance()
    watcher, _ = _connect(quota_roost, credentials, "watcher")
    _subscribe_all(watcher)
    raw, connack = _connect(quota_roost, credentials, "sys-will", version,
                            will=Will("$SYS/broker/version", b"9.9.9-owned", 1, True))
    assert connack.reason_code == (0x90 if version == 5 else 5)
    raw.close()
    assert ping(watcher) == []
    late, _ = _connect(quota_roost, credentials, "late")
    _subscribe_all(late)
    assert ping(late) == []  # nothing retained under the tenant's `$SYS/...`
    late.close()
    watcher.close()


def test_a_dollar_will_that_got_past_connect_is_dropped_when_published(quota_roost: RoostThread,
                                                                       alice: Tenant) -> None:
    """Defence in depth: a will restored from an older run (kept before CONNECT checked it) is checked again
    when it is published, as a PUBLISH is: a `$` topic is dropped and counted (`acl`)."""
    credentials = alice.instance()
    watcher, _ = _connect(quota_roost, credentials, "watcher")
    _subscribe_all(watcher)
    broker = quota_roost.roost.broker  # type: ignore[union-attr]
    client = quota_roost.call(lambda: next(c.client for c in broker.connected() if c.client is not None))
    assert isinstance(client, ClientInfo)
    quota_roost.call(lambda: broker.publish_will(Will("$SYS/broker/version", b"owned", 0, True), client))
    assert ping(watcher) == []
    assert _wills_dropped(quota_roost) == {"acl": 1}
    watcher.close()


def _metrics(roost: RoostThread) -> str:
    return httpx.get(f"http://127.0.0.1:{roost.http_port}/metrics", timeout=5).text
