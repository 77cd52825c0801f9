"""Issue 14, attack 1 over HTTP: `POST /api/v1/messages` to a topic 2,001 levels deep once answered 500 (the
RecursionError of the subscription trie). Now the REST API refuses what MQTT refuses, 422 naming the limit
(`max_topic_levels`), both when a topic is created and when a message is posted to a topic stored before the
limit was lowered; with the limits raised, the message is published and delivered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.codec import Connack, Publish, Suback, Subscribe, Subscription
from tests.control.api_helpers import Rest, field_errors, ok, rest, shared_roost  # noqa: F401  (fixtures)
from tests.helpers import RawClient, RoostThread, roost_document
from tests.session_helpers import ping

DEEP_FILTER = "+/" * 1200 + "#"
DEEP_TOPIC = "/" * 2000


def _tenant_subscriber(roost: RoostThread, credentials: tuple[str, str], topic_filter: str) -> tuple[RawClient, int]:
    raw = RawClient(roost.mqtt_port, 5)
    username, password = credentials
    connack = raw.connect("deep-sub", username=username, password=password.encode())
    assert isinstance(connack, Connack) and connack.reason_code == 0
    raw.send(Subscribe(1, (Subscription(topic_filter, 0),)))
    suback = raw.receive()
    assert isinstance(suback, Suback)
    return raw, suback.reason_codes[0]


def test_creating_a_topic_over_max_topic_levels_is_422(rest: Rest) -> None:  # noqa: F811
    tenant, api = rest.tenant()
    project = api.create_project()["id"]
    errors = field_errors(api.post("/api/v1/topics", json={"project_id": project, "name": DEEP_TOPIC}))
    assert set(errors) == {"name"} and "max_topic_levels" in errors["name"] and "2001 levels" in errors["name"]
    errors = field_errors(api.post("/api/v1/topics", json={"project_id": project, "name": DEEP_FILTER}))
    assert "max_topic_levels" in errors["name"]
    errors = field_errors(api.post("/api/v1/topics", json={"project_id": project, "name": "x" * 5000}))
    assert "max_topic_length" in errors["name"]


def test_posting_to_a_stored_topic_over_the_limit_is_422_and_mqtt_refuses_the_filter(rest: Rest) -> None:  # noqa: F811
    """A topic stored before the limit was lowered (made here through the repository, below the API's
    check): the post is refused with 422 naming max_topic_levels, never 500; the deep MQTT filter is
    refused with 0x8F, and the broker keeps serving."""
    tenant, api = rest.tenant()
    project = api.create_project()["id"]
    store = tenant.services.context.store
    topic = rest.roost.run(store.topics.create(project, DEEP_TOPIC))
    subscriber, code = _tenant_subscriber(rest.roost, tenant.instance(), DEEP_FILTER)
    assert code == 0x8F
    response = api.post("/api/v1/messages", json={"project_id": project, "topic_id": topic.id, "payload": "x"})
    errors = field_errors(response)
    assert set(errors) == {"topic_id"} and "max_topic_levels" in errors["topic_id"]
    assert ping(subscriber) == []
    subscriber.close()
    metrics = ok_text(api, "/metrics")
    assert 'roost_mqtt_topic_limit_refusals_total{where="rest"}' in metrics


def ok_text(api: object, path: str) -> str:
    response = api.raw("GET", path)  # type: ignore[attr-defined]
    assert response.status_code == 200
    return str(response.text)


@pytest.fixture
def high_limits_roost(tmp_path: Path) -> Iterator[RoostThread]:
    roost = RoostThread(roost_document(tmp_path, allow_anonymous=False, max_topic_levels=5000,
                                       max_topic_length=65_535)).start()
    yield roost
    roost.stop()


def test_with_high_limits_the_post_is_published_to_the_deep_subscriber(high_limits_roost: RoostThread) -> None:
    """The issue's 500: a tenant's MQTT client holds the 1,200-level filter, and a REST post goes to the
    2,001-level topic. It is delivered (201), with no RecursionError."""
    pool = Rest(high_limits_roost)
    try:
        tenant, api = pool.tenant()
        project = api.create_project()["id"]
        topic = api.create_topic(project, DEEP_TOPIC)["id"]
        subscriber, code = _tenant_subscriber(high_limits_roost, tenant.instance(), DEEP_FILTER)
        assert code == 0
        body = ok(api.post("/api/v1/messages", json={"project_id": project, "topic_id": topic, "payload": "deep"}), 201)
        assert body["data"]["topic"] == DEEP_TOPIC
        delivered = ping(subscriber)
        assert [(p.topic, p.payload) for p in delivered if isinstance(p, Publish)] == [(DEEP_TOPIC, b"deep")]
        subscriber.close()
    finally:
        pool.close()
