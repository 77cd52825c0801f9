"""GET /metrics: real HTTP, parsed with prometheus_client's own parser, after real MQTT traffic.

The counters are the broker's (`broker/stats.py`), read at scrape time: these tests check that what a
client did shows up under the right name and labels, and that `$SYS` and the dashboard's stats report the
same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.sys_topics import publish_sys_topics
from tests.helpers import TIMEOUT, PahoClient, RoostThread, roost_document, sync
from tests.tenant_helpers import make_tenant

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(roost: RoostThread, accept: str | None = None) -> Samples:
    headers = {"Accept": accept} if accept else {}
    response = httpx.get(f"http://127.0.0.1:{roost.http_port}/metrics", headers=headers, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str, label: str) -> dict[str, float]:
    """Every sample of `name`, by the value of one label."""
    return {dict(key)[label]: v for (n, key), v in samples.items() if n == name}


def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for something the broker does on its own time (a closed socket noticed), with a deadline."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def clients() -> Iterator[list[PahoClient]]:
    made: list[PahoClient] = []
    yield made
    for client in made:
        client.client.disconnect()
        client.client.loop_stop()


def test_messages_by_qos_and_bytes_are_the_broker_counters(
    make_roost: Callable[..., RoostThread], clients: list[PahoClient]
) -> None:
    roost = make_roost(sys_interval=0)
    subscriber = PahoClient(roost.mqtt_port, "sub").connect()
    publisher = PahoClient(roost.mqtt_port, "pub").connect()
    clients += [subscriber, publisher]
    subscriber.subscribe("m/#", qos=2)
    subscriber.subscribe("sync/marker", qos=1)
    publisher.publish("m/a", b"12345", qos=0)
    publisher.publish("m/b", b"1234567", qos=1)
    publisher.publish("m/c", b"123", qos=2)
    sync(publisher, subscriber)
    assert sorted(subscriber.expect().payload for _ in range(3)) == [b"123", b"12345", b"1234567"]

    samples = scrape(roost)
    received = series(samples, "roost_mqtt_messages_received_total", "qos")
    sent = series(samples, "roost_mqtt_messages_sent_total", "qos")
    # The sync marker is one more QoS 1 message each way.
    assert received == {"0": 1, "1": 2, "2": 1}
    assert sent == {"0": 1, "1": 2, "2": 1}
    marker_bytes = value(samples, "roost_mqtt_payload_received_bytes_total", qos="1") - 7
    # Payload bytes: QoS 1 and 2 only (a QoS 0 message bumps one counter each way, see broker/stats.py).
    assert series(samples, "roost_mqtt_payload_received_bytes_total", "qos") == {"1": 7 + marker_bytes, "2": 3}
    assert series(samples, "roost_mqtt_payload_sent_bytes_total", "qos") == {"1": 7 + marker_bytes, "2": 3}
    assert value(samples, "roost_mqtt_clients_connected") == 2
    assert value(samples, "roost_mqtt_connections_opened_total") == 2
    assert value(samples, "roost_mqtt_sessions") == 2
    assert value(samples, "roost_mqtt_subscriptions") == 2
    stats = roost.call(lambda: roost.roost.broker.stats.as_dict())  # type: ignore[union-attr]
    assert value(samples, "roost_mqtt_network_received_bytes_total") <= stats["bytes_received"]
    assert stats["messages_received"] == sum(received.values())
    assert stats["messages_sent"] == sum(sent.values())


def test_dropped_by_reason_and_sys_report_the_same_total(
    make_roost: Callable[..., RoostThread], clients: list[PahoClient]
) -> None:
    roost = make_roost(sys_interval=0, max_queued_messages=1, anonymous={"deny": ["secret/#"]})
    broker = roost.roost.broker  # type: ignore[union-attr]
    # A persistent 3.1.1 session that goes offline: QoS 0 to it is dropped (offline), QoS 1 queues (one).
    sleeper = PahoClient(roost.mqtt_port, "sleeper", version=4, clean=False).connect()
    sleeper.subscribe("q/#", qos=1)
    sleeper.disconnect()
    until(lambda: roost.call(lambda: "sleeper" not in broker.connections), "the sleeper to be gone")
    publisher = PahoClient(roost.mqtt_port, "pub").connect()
    watcher = PahoClient(roost.mqtt_port, "watch").connect()
    clients += [publisher, watcher]
    watcher.subscribe("$SYS/broker/messages/dropped")
    publisher.publish("q/zero", b"x", qos=0)
    for n in range(3):
        publisher.publish("q/one", f"{n}".encode(), qos=1)  # the second and third push out the first
    publisher.publish("secret/x", b"no", qos=1)  # denied by the ACL (v5: PUBACK 0x87)

    samples = scrape(roost)
    dropped = series(samples, "roost_mqtt_messages_dropped_total", "reason")
    assert dropped == {
        "slow_subscriber": 0, "offline": 1, "queue_full": 2, "quota": 0, "acl": 1, "too_large": 0, "loop": 0,
    }
    assert value(samples, "roost_mqtt_queued_messages") == 1
    roost.call(lambda: publish_sys_topics(broker))
    assert watcher.expect().payload == b"4"  # $SYS/broker/messages/dropped: the same counters


def test_refusals_by_reason_and_auth_failures(make_roost: Callable[..., RoostThread]) -> None:
    roost = make_roost(allow_anonymous=False)
    refused = PahoClient(roost.mqtt_port, "nobody")
    refused.connect(expect_success=False)
    refused.client.loop_stop()
    wrong = PahoClient(roost.mqtt_port, "guess", username="nobody", password="wrong password")
    wrong.connect(expect_success=False)
    wrong.client.loop_stop()
    samples = scrape(roost)
    reasons = series(samples, "roost_mqtt_connections_refused_total", "reason")
    assert sum(reasons.values()) == 2 and set(reasons) <= {"not_authorized", "bad_user_name_or_password"}
    assert value(samples, "roost_mqtt_auth_failures_total") == 2
    assert value(samples, "roost_mqtt_clients_connected") == 0


def test_http_requests_are_labelled_by_route_template(make_roost: Callable[..., RoostThread]) -> None:
    roost = make_roost()
    base = f"http://127.0.0.1:{roost.http_port}"
    with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
        assert http.get("/health").status_code == 200
        for device in ("123", "456", "789"):
            assert http.get(f"/api/v1/devices/{device}").status_code == 401
        assert http.get("/no/such/page").status_code == 404
    samples = scrape(roost)
    requests = {
        (labels["route"], labels["status"]): v
        for (name, key), v in samples.items()
        if name == "roost_http_requests_total" and (labels := dict(key))["method"] == "GET"
    }
    assert requests[("/health", "200")] == 1
    assert requests[("/api/v1/devices/{device_id:id}", "401")] == 3  # one series for every device id
    assert requests[("<unmatched>", "404")] == 1
    assert not any("123" in route for route, _ in requests)
    assert value(samples, "roost_http_request_duration_seconds_count", method="GET", route="/health") == 1
    assert value(samples, "roost_http_request_duration_seconds_bucket", method="GET", route="/health", le="+Inf") == 1
    assert value(samples, "process_resident_memory_bytes") > 0


def test_openmetrics_when_the_scraper_asks(make_roost: Callable[..., RoostThread]) -> None:
    roost = make_roost()
    response = httpx.get(f"http://127.0.0.1:{roost.http_port}/metrics",
                         headers={"Accept": "application/openmetrics-text; version=1.0.0"}, timeout=TIMEOUT)
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_sqlite_batches_and_quota_rejections(make_roost: Callable[..., RoostThread], clients: list[PahoClient]) -> None:
    roost = make_roost(allow_anonymous=False)
    tenant = make_tenant(roost, "metered", plan="free")  # 100 messages an hour
    project = tenant.project()
    tenant.topic(project, "sensors/#")
    device = tenant.client(tenant.device(project, "thermo-1"), "thermo-1").connect()
    clients.append(device)
    for n in range(100):
        device.publish("sensors/t", f"{n}".encode(), qos=1 if n == 99 else 0)
    assert device.client.publish("sensors/t", b"over", qos=1).wait_for_publish(TIMEOUT) is None
    server = roost.roost
    assert server is not None and server.services is not None
    usage = server.services.context.usage
    recorder = server.auth_hook.recorder
    assert usage is not None and recorder is not None
    roost.run(usage.flush())
    roost.run(recorder.flush())
    samples = scrape(roost)
    assert value(samples, "roost_quota_rejections_total") == 1
    assert value(samples, "roost_mqtt_messages_dropped_total", reason="quota") == 1
    assert value(samples, "roost_sqlite_write_batch_rows_count", writer="quota") >= 1
    assert value(samples, "roost_sqlite_write_duration_seconds_count", writer="history") >= 1
    assert value(samples, "roost_sqlite_write_batch_rows_sum", writer="history") + recorder.dropped == 100
    assert value(samples, "roost_history_messages_written_total") == 100
    # Off by default: no per-tenant series.
    assert not any(name.startswith("roost_tenant_") for name, _ in samples)


def _start(tmp_path: Path, **sections: Any) -> RoostThread:
    document = roost_document(tmp_path, allow_anonymous=False)
    document.update(sections)
    return RoostThread(document).start()


def test_per_tenant_series_are_bounded(tmp_path: Path, clients: list[PahoClient]) -> None:
    roost = _start(tmp_path, metrics={"per_tenant": True, "max_tenants": 1})
    try:
        busy, quiet, idle = (make_tenant(roost, name, plan="starter") for name in ("busy", "quiet", "idle"))
        for tenant, count in ((busy, 3), (quiet, 1), (idle, 0)):
            client = tenant.client(tenant.instance(), f"{tenant.user.name}-1").connect()
            clients.append(client)
            for _ in range(count):
                client.publish("t", b"x", qos=1)
        samples = scrape(roost)
        assert series(samples, "roost_tenant_messages_this_hour", "tenant") == {str(busy.user.id): 3, "other": 1}
        assert series(samples, "roost_tenant_clients_connected", "tenant") == {str(busy.user.id): 1, "other": 2}
        assert series(samples, "roost_tenant_sessions", "tenant") == {str(busy.user.id): 1, "other": 2}
    finally:
        roost.stop()


def test_metrics_can_be_switched_off(tmp_path: Path) -> None:
    roost = _start(tmp_path, metrics={"enabled": False})
    try:
        assert httpx.get(f"http://127.0.0.1:{roost.http_port}/metrics", timeout=TIMEOUT).status_code == 404
    finally:
        roost.stop()


def test_dashboard_stats_read_the_same_counters(make_roost: Callable[..., RoostThread]) -> None:
    """The dashboard's chart polls /api/v1/stats; its broker counters are the ones /metrics reports."""
    roost = make_roost(sys_interval=0, allow_anonymous=False)
    admin = make_tenant(roost, "root", is_admin=True)
    key = roost.run(admin.services.api_keys.create(admin.user, "metrics test"))
    token = key.key
    stats = httpx.get(f"http://127.0.0.1:{roost.http_port}/api/v1/stats",
                      headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT).json()["data"]["broker"]
    samples = scrape(roost)
    assert stats["messages_received"] == sum(series(samples, "roost_mqtt_messages_received_total", "qos").values())
    assert stats["messages_dropped"] == sum(series(samples, "roost_mqtt_messages_dropped_total", "reason").values())
    assert stats["connections_refused"] == sum(series(samples, "roost_mqtt_connections_refused_total", "reason").values())


def test_sqlite_batches_before_the_instruments_exist_are_counted_once_they_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch write does not make the instruments (importing prometheus-client held the loop in the middle
    of the first traffic): its figures wait, and are in the first scrape; past PENDING_WRITES waiting, the
    next batch makes them."""
    from control import metrics as module

    metrics = module.Metrics()
    observe = metrics.write_observer("quota")
    for rows in (3, 4, 5):
        observe(0.001, rows)
    registry = metrics.registry
    assert registry.get_sample_value("roost_sqlite_write_batch_rows_count", {"writer": "quota"}) == 3
    observe(0.001, 6)
    assert registry.get_sample_value("roost_sqlite_write_batch_rows_sum", {"writer": "quota"}) == 18

    monkeypatch.setattr(module, "PENDING_WRITES", 2)
    bounded = module.Metrics()
    observe = bounded.write_observer("history")
    for rows in (1, 2, 3):
        observe(0.001, rows)  # the third is past the bound: made here, with the two that waited
    assert bounded.registry.get_sample_value("roost_sqlite_write_batch_rows_count", {"writer": "history"}) == 3
