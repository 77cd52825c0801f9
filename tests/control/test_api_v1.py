"""`/api/v1` through real HTTP, as icmqtt-rest-api-v1.md describes it ("REST API v1" below), plus Roost's own
additions in the same style (topics, device credentials, users), as docs/api.md describes them.

Success bodies are `{"data": ...}` (lists add `pagination`, projects add `limits`); errors are
`{"error", "message"}` ("Response Format"), 422 adds `errors` (one message per field). Document sections are
cited as "REST API v1 §Projects" etc.; status codes as "REST API v1 §Error Codes".
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.control.api_helpers import (
    API_KEY_FIELDS,
    DEVICE_FIELDS,
    MESSAGE_FIELDS,
    OBJECT_ID,
    PROJECT_FIELDS,
    TIMESTAMP,
    TOPIC_FIELDS,
    USER_FIELDS,
    Api,
    AsyncioRoostThread,
    Rest,
    api_error,
    field_errors,
    mqtt_error,
    ok,
    rest,  # noqa: F401  (fixture)
    shared_roost,  # noqa: F401  (fixture)
)
from tests.helpers import roost_document

P = "/api/v1"
SAVE_KEY = "Save your API key and secret. You will not be able to see them again."


def _project_with_topic(api: Api, topic: str = "sensors/temp") -> tuple[int, int]:
    project = api.create_project()
    return project["id"], api.create_topic(project["id"], topic)["id"]


# -- authentication (REST API v1 §Authentication) ------------------------------------------------------------

OPERATIONS = [
    ("GET", "/projects"), ("POST", "/projects"), ("GET", "/projects/1"), ("PUT", "/projects/1"),
    ("DELETE", "/projects/1"), ("GET", "/devices?project_id=1"), ("POST", "/devices"), ("GET", "/devices/1"),
    ("PUT", "/devices/1"), ("DELETE", "/devices/1"), ("POST", "/devices/1/credentials"),
    ("GET", "/topics?project_id=1"), ("POST", "/topics"), ("GET", "/topics/1"), ("PUT", "/topics/1"),
    ("DELETE", "/topics/1"), ("GET", "/messages?project_id=1"), ("POST", "/messages"), ("GET", "/messages/1"),
    ("DELETE", "/messages/1"), ("GET", "/api-keys"), ("POST", "/api-keys"), ("POST", "/api-keys/1/deactivate"),
    ("DELETE", "/api-keys/1"), ("GET", "/users/me"), ("GET", "/users"), ("POST", "/users"), ("GET", "/users/1"),
    ("PUT", "/users/1"), ("DELETE", "/users/1"),
]


def test_every_operation_requires_a_bearer_key_401(rest: Rest) -> None:
    """§Authentication: "All API requests require a Bearer token"; §Error Codes 401 "Invalid or missing API
    key", with WWW-Authenticate: Bearer (RFC 6750 §3). Checked before the body is even read."""
    api = rest.api(None)
    for method, path in OPERATIONS:
        response = api.request(method, P + path, content=b"{not json")
        api_error(response, 401, "Unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"


def test_malformed_authorization_headers_are_401(rest: Rest) -> None:
    """§Authentication: only `Authorization: Bearer <key>` opens the API; anything else is 401, not 400/500."""
    _, owner = rest.tenant()
    assert owner.key is not None
    api = rest.api(None)
    for header in ["", "Bearer", "Basic dXNlcjpwYXNz", owner.key, f"Token {owner.key}", "Bearer sk_nope",
                   f"Bearer {owner.key}x", f"Bearer {owner.key[:-1]}", f"Bearer {'k' * 20_000}",
                   "Bearer \u043a\u043b\u044e\u0447".encode(), b"Bearer \xff\xfe"]:
        api_error(api.get(f"{P}/users/me", headers={"Authorization": header}), 401, "Unauthorized")


def test_bearer_scheme_is_case_insensitive(rest: Rest) -> None:
    """RFC 7235 §2.1: the auth-scheme is case-insensitive."""
    _, owner = rest.tenant()
    api = rest.api(None)
    for scheme in ("bearer", "BEARER", "Bearer"):
        ok(api.get(f"{P}/users/me", headers={"Authorization": f"{scheme} {owner.key}"}))


def test_unknown_path_is_404_and_wrong_method_405_with_error_bodies(rest: Rest) -> None:
    """§Response Format: errors are JSON {"error", "message"}, also for paths and methods that do not exist."""
    _, api = rest.tenant()
    api_error(api.get(f"{P}/nothing-here"), 404, "Not Found")
    api_error(api.request("PATCH", f"{P}/projects"), 405, "Method Not Allowed")
    api_error(api.request("PUT", f"{P}/messages/1"), 405)


def test_responses_on_a_keep_alive_connection_are_prompt_on_asyncios_loop(tmp_path: Path) -> None:
    """A REST call on a kept-alive connection takes a few milliseconds on loopback, not a delayed-ACK
    timer's 40 ms (which caps one connection at ~25 requests a second). Run on asyncio's own loop, which
    Roost uses where uvloop is not installed (control/cli.py _run)."""
    roost = AsyncioRoostThread(roost_document(tmp_path, allow_anonymous=False)).start()
    client = Api(roost, None)
    try:
        client.get("/health")
        durations = []
        for _ in range(15):
            start = time.perf_counter()
            client.get("/health")
            durations.append(time.perf_counter() - start)
    finally:
        client.close()
        roost.stop()
    assert statistics.median(durations) < 0.02, f"median {statistics.median(durations) * 1000:.1f} ms"


# -- projects (REST API v1 §Projects) ------------------------------------------------------------------------


def test_project_create_get_update_delete_shapes(rest: Rest) -> None:
    """§Projects: Create → 201 {data: project}; Get → {data, devices_count, topics_count}; Update →
    {data}; Delete → 200 (with a message; docs/api.md)."""
    tenant, api = rest.tenant()
    created = ok(api.post(f"{P}/projects", json={"name": "Smart Home", "description": "IoT home automation"}), 201)
    assert set(created) == {"data"}
    project = created["data"]
    assert set(project) == PROJECT_FIELDS
    assert (project["name"], project["description"], project["user_id"]) == (
        "Smart Home", "IoT home automation", tenant.user.id)
    assert TIMESTAMP.match(project["created_at"]) and project["updated_at"] == project["created_at"]
    details = ok(api.get(f"{P}/projects/{project['id']}"))
    assert details == {"data": project, "devices_count": 0, "topics_count": 0}
    updated = ok(api.put(f"{P}/projects/{project['id']}",
                         json={"name": "Smart Home Updated", "description": "Updated description"}))
    assert set(updated) == {"data"}
    assert updated["data"]["name"] == "Smart Home Updated"
    assert updated["data"]["description"] == "Updated description"
    assert updated["data"]["created_at"] == project["created_at"]
    assert updated["data"]["updated_at"] >= project["updated_at"]
    # A partial update keeps the other field.
    renamed = ok(api.put(f"{P}/projects/{project['id']}", json={"name": "Only name"}))["data"]
    assert renamed["description"] == "Updated description"
    deleted = ok(api.delete(f"{P}/projects/{project['id']}"))
    assert set(deleted) == {"message"}
    api_error(api.get(f"{P}/projects/{project['id']}"), 404, "Not Found")
    api_error(api.delete(f"{P}/projects/{project['id']}"), 404)


def test_project_description_is_optional(rest: Rest) -> None:
    """§Projects Create: the request shows name and description; description may be left out."""
    _, api = rest.tenant()
    assert api.create_project("no description")["description"] == ""


def test_project_counts_devices_and_topics(rest: Rest) -> None:
    """§Projects Get Project Details: devices_count and topics_count."""
    _, api = rest.tenant()
    project_id, _ = _project_with_topic(api)
    api.create_topic(project_id, "sensors/humidity")
    api.create_device(project_id, f"count-{project_id}-{id(api)}")
    details = ok(api.get(f"{P}/projects/{project_id}"))
    assert (details["devices_count"], details["topics_count"]) == (1, 2)


def test_project_list_envelope_pagination_and_limits(rest: Rest) -> None:
    """§Projects List: data, pagination {total, per_page, current_page, last_page}, limits {max_projects,
    current_projects} (free plan: 3 projects, docs/api.md)."""
    _, api = rest.tenant(plan="free")
    empty = ok(api.get(f"{P}/projects"))
    assert empty == {
        "data": [],
        "pagination": {"total": 0, "per_page": 15, "current_page": 1, "last_page": 1},
        "limits": {"max_projects": 3, "current_projects": 0},
    }
    first = api.create_project("first")
    second = api.create_project("second")
    listing = ok(api.get(f"{P}/projects"))
    assert listing["data"] == [first, second]
    assert listing["pagination"] == {"total": 2, "per_page": 15, "current_page": 1, "last_page": 1}
    assert listing["limits"] == {"max_projects": 3, "current_projects": 2}


def test_project_pages(rest: Rest) -> None:
    """§Projects List: `page`; 15 per page; past the last page is an empty page, not an error."""
    _, api = rest.tenant(plan="enterprise")
    ids = [api.create_project(f"p{i}")["id"] for i in range(16)]
    page1 = ok(api.get(f"{P}/projects"))
    assert [p["id"] for p in page1["data"]] == ids[:15]
    assert page1["pagination"] == {"total": 16, "per_page": 15, "current_page": 1, "last_page": 2}
    assert page1["limits"] == {"max_projects": None, "current_projects": 16}  # enterprise: unlimited
    page2 = ok(api.get(f"{P}/projects", params={"page": 2}))
    assert [p["id"] for p in page2["data"]] == ids[15:]
    assert page2["pagination"]["current_page"] == 2
    page9 = ok(api.get(f"{P}/projects", params={"page": 9}))
    assert page9["data"] == [] and page9["pagination"]["current_page"] == 9
    assert ok(api.get(f"{P}/projects", params={"page": 2**31 - 1}))["data"] == []


def test_bad_page_parameter_is_422(rest: Rest) -> None:
    """§Projects List: page is an int ≥ 1; §Error Codes 422 "Validation error" with the field named."""
    _, api = rest.tenant()
    for page in ["0", "-1", "abc", "1.5", "2147483648", "9" * 5000, "1e3"]:
        assert "page" in field_errors(api.get(f"{P}/projects", params={"page": page}))
    assert "page" in field_errors(api.get(f"{P}/api-keys", params={"page": "x"}))
    assert "page" in field_errors(api.get(f"{P}/devices", params={"project_id": 1, "page": "0"}))


def test_free_plan_project_limit_is_422(rest: Rest) -> None:
    """Plan limits (docs/api.md): the free plan's 3rd project is the last; the 4th is 422 "Limit exceeded"
    with errors.projects, and nothing is created."""
    _, api = rest.tenant(plan="free")
    for i in range(3):
        api.create_project(f"p{i}")
    body = api_error(api.post(f"{P}/projects", json={"name": "one too many"}), 422, "Limit exceeded")
    assert set(body["errors"]) == {"projects"}
    assert "3" in body["errors"]["projects"]
    assert ok(api.get(f"{P}/projects"))["limits"] == {"max_projects": 3, "current_projects": 3}


def test_project_validation_422_names_each_field(rest: Rest) -> None:
    """§Error Codes 422: required, max 255 characters, strings only; every bad field is named at once."""
    _, api = rest.tenant()
    cases: list[tuple[Any, set[str]]] = [
        ({}, {"name"}),
        ({"name": None}, {"name"}),
        ({"name": ""}, {"name"}),
        ({"name": "   "}, {"name"}),
        ({"name": "x" * 256}, {"name"}),
        ({"name": 123}, {"name"}),
        ({"name": ["a"]}, {"name"}),
        ({"name": {"a": 1}}, {"name"}),
        ({"name": True}, {"name"}),
        ({"name": "ok", "description": 5}, {"description"}),
        ({"name": 5, "description": 5}, {"name", "description"}),
        ({"name": "ok", "description": "x" * 10_001}, {"description"}),
        ({"name": "ok", "owner": 7}, {"owner"}),
        ({"name": "ok", "user_id": 1, "id": 3}, {"user_id", "id"}),
    ]
    for body, fields in cases:
        assert set(field_errors(api.post(f"{P}/projects", json=body))) == fields, body
    assert ok(api.get(f"{P}/projects"))["pagination"]["total"] == 0
    project = api.create_project("x" * 255)
    for body, fields in [({"name": ""}, {"name"}), ({"name": " "}, {"name"}), ({"name": 1}, {"name"}),
                         ({"description": []}, {"description"}), ({"user_id": 2}, {"user_id"})]:
        assert set(field_errors(api.put(f"{P}/projects/{project['id']}", json=body))) == fields, body


def test_unicode_names_round_trip(rest: Rest) -> None:
    """Strings are stored and returned as given: accents, CJK, emoji (astral), RTL, combining marks."""
    _, api = rest.tenant()
    for name in ["K\u00fcche", "\u6f22\u5b57", "\U0001f426 roost", "\u05e9\u05dc\u05d5\u05dd", "e\u0301"]:
        project = api.create_project(name, description=name * 3)
        assert (project["name"], project["description"]) == (name, name * 3)
        assert ok(api.get(f"{P}/projects/{project['id']}"))["data"]["name"] == name
        api.delete(f"{P}/projects/{project['id']}")


# -- bad bodies: never a 500 or a traceback (§Error Codes 400/422; 413 per docs/api.md) ---------------------

BODY_ENDPOINTS = [("POST", "/projects"), ("PUT", "/projects/{project}"), ("POST", "/devices"),
                  ("PUT", "/devices/{device}"), ("POST", "/topics"), ("PUT", "/topics/{topic}"),
                  ("POST", "/messages"), ("POST", "/api-keys")]


@pytest.fixture
def owned(rest: Rest) -> tuple[Api, dict[str, int]]:
    """A tenant with one project, topic and device, for the body tests of every endpoint."""
    tenant, api = rest.tenant(plan="starter")
    project_id, topic_id = _project_with_topic(api)
    device = api.create_device(project_id, f"body-{tenant.user.id}")
    return api, {"project": project_id, "topic": topic_id, "device": device["id"]}


def test_malformed_json_is_400(owned: tuple[Api, dict[str, int]]) -> None:
    """§Error Codes 400 "Bad Request": a body that is not JSON, or not a JSON object."""
    api, ids = owned
    bodies = [b"{", b"{name: 1}", b"{'name': 'x'}", b"nul", b'{"name": "x"} trailing', b"\xff\xfe\x00",
              b'"just a string"', b"[]", b'[{"name": "x"}]', b"42", b"null", b"true",
              b'{"name": "\xff"}']
    for method, template in BODY_ENDPOINTS:
        path = P + template.format(**ids)
        for body in bodies:
            api_error(api.request(method, path, content=body, headers={"Content-Type": "application/json"}),
                      400, "Bad Request")


def test_unknown_fields_are_422_with_errors(owned: tuple[Api, dict[str, int]]) -> None:
    """docs/api.md: an unknown field is 422 naming it (a typo must not be silently ignored)."""
    api, ids = owned
    for method, template in BODY_ENDPOINTS:
        errors = field_errors(api.request(method, P + template.format(**ids), json={"nmae": "typo", "zzz": 1}))
        assert {"nmae", "zzz"} <= set(errors), (method, template, errors)


def test_wrong_types_are_422_never_500(owned: tuple[Api, dict[str, int]]) -> None:
    """§Devices/§Messages Validation: each field has a type; any other JSON value is 422 naming the field."""
    api, ids = owned
    weird: list[Any] = [None, True, 1.5, -1, 0, 2**64, "1", [], {}, [1], {"a": 1}, "x" * 300, "\u00e9"]
    fields = {
        ("POST", "/devices"): ["project_id", "name", "device_id", "status"],
        ("PUT", "/devices/{device}"): ["name", "status"],
        ("POST", "/topics"): ["project_id", "name", "can_publish", "can_subscribe", "description"],
        ("PUT", "/topics/{topic}"): ["name", "can_publish", "can_subscribe", "description"],
        ("POST", "/messages"): ["project_id", "topic_id", "payload", "qos", "retained"],
        ("POST", "/api-keys"): ["name", "expires_at"],
    }
    valid: dict[str, Any] = {"project_id": ids["project"], "topic_id": ids["topic"], "payload": "p", "name": "n",
                             "device_id": f"wt-{ids['device']}", "status": "offline", "qos": 1, "retained": False,
                             "can_publish": True, "can_subscribe": True, "description": "d", "expires_at": None}
    for (method, template), names in fields.items():
        path = P + template.format(**ids)
        for name in names:
            for value in weird:
                body = {n: valid[n] for n in names} | {name: value}
                response = api.request(method, path, json=body)
                assert response.status_code in (200, 201, 422, 429), (method, path, body, response.text)
                if response.status_code == 201 and method == "POST" and template == "/devices":
                    api.delete(f"{P}/devices/{response.json()['data']['id']}")
                if response.status_code == 201 and template == "/topics":
                    api.delete(f"{P}/topics/{response.json()['data']['id']}")


def test_deeply_nested_json_is_400_not_500(owned: tuple[Api, dict[str, int]]) -> None:
    """§Error Codes 400: a body nested deeper than any parser allows is a bad request, not a server error."""
    api, _ = owned
    api_error(api.post(f"{P}/projects", content=b"[" * 100_000), 400)


def test_huge_bodies_are_413(owned: tuple[Api, dict[str, int]]) -> None:
    """docs/api.md: bodies over 1 MiB are refused with 413, by Content-Length or while streaming."""
    api, ids = owned
    big = b'{"name": "' + b"x" * (1024 * 1024) + b'"}'
    for method, template in BODY_ENDPOINTS:
        api_error(api.request(method, P + template.format(**ids), content=big), 413, "Payload too large")

    def chunks() -> Any:  # no Content-Length: chunked transfer encoding
        for _ in range(20):
            yield b"x" * 65536

    api_error(api.post(f"{P}/projects", content=chunks()), 413, "Payload too large")
    # Exactly 1 MiB is still read (and then judged on its content).
    exact = b'{"name": "n", "description": "' + b"d" * (1024 * 1024 - 32) + b'"}'
    exact += b" " * (1024 * 1024 - len(exact))
    assert len(exact) == 1024 * 1024
    assert "description" in field_errors(api.post(f"{P}/projects", content=exact))


def test_empty_body_means_no_fields(owned: tuple[Api, dict[str, int]]) -> None:
    """An empty body is an empty object: 422 for what is required, a no-op update otherwise."""
    api, ids = owned
    assert "name" in field_errors(api.post(f"{P}/projects", content=b""))
    assert ok(api.put(f"{P}/projects/{ids['project']}", content=b""))["data"]["id"] == ids["project"]


@pytest.mark.parametrize(
    ("method", "template", "body"),
    [
        ("POST", "/projects", b'{"name": "\\ud800"}'),
        ("POST", "/topics", b'{"project_id": %(project)d, "name": "t", "description": "\\udfff"}'),
        ("POST", "/messages", b'{"project_id": %(project)d, "topic_id": %(topic)d, "payload": "\\ud800"}'),
        ("POST", "/devices", b'{"project_id": %(project)d, "name": "n", "device_id": "d\\udc00"}'),
    ],
    ids=["project-name", "topic-description", "message-payload", "device-id"],
)
def test_lone_surrogates_are_422_not_500(owned: tuple[Api, dict[str, int]], method: str, template: str,
                                         body: bytes) -> None:
    """JSON may escape a lone UTF-16 surrogate (RFC 8259 §8.2 leaves it undefined); such a string is not
    valid Unicode text and must be refused as a validation error."""
    api, ids = owned
    api_error(api.request(method, P + template, content=(body.decode() % ids).encode()), 422)


def test_names_with_nul_are_422(owned: tuple[Api, dict[str, int]]) -> None:
    """A name with a NUL character is refused with 422 naming the field (SQLite's length() would stop at the
    NUL), never a 500."""
    api, ids = owned
    for method, path, body in [
        ("POST", f"{P}/projects", {"name": "\u0000"}),
        ("PUT", f"{P}/projects/{ids['project']}", {"name": "\u0000x"}),
        ("POST", f"{P}/devices", {"project_id": ids["project"], "name": "\u0000", "device_id": "nul-name"}),
        ("PUT", f"{P}/devices/{ids['device']}", {"name": "\u0000"}),
    ]:
        assert "name" in field_errors(api.request(method, path, json=body)), (method, path)


def test_topic_with_nul_is_422(owned: tuple[Api, dict[str, int]]) -> None:
    """[MQTT-4.7.3-2] Topic Names and Topic Filters MUST NOT include the null character (U+0000)."""
    api, ids = owned
    assert "name" in field_errors(api.post(f"{P}/topics", json={"project_id": ids["project"], "name": "a\u0000"}))


def test_device_id_with_unprintable_characters_is_422(owned: tuple[Api, dict[str, int]]) -> None:
    """§Devices Create: device_id is an MQTT client id and user name; unprintable ones are a validation error."""
    api, ids = owned
    for device_id in ["a\x7fb", "zero\u200bwidth", "nel\x85"]:
        body = {"project_id": ids["project"], "name": "n", "device_id": device_id}
        assert "device_id" in field_errors(api.post(f"{P}/devices", json=body))


# -- ids in paths ------------------------------------------------------------------------------------------

ID_PATHS = ["/projects/{}", "/devices/{}", "/topics/{}", "/messages/{}", "/users/{}"]


def test_unknown_non_integer_and_enormous_ids_are_404(rest: Rest) -> None:
    """§Error Codes 404: ids that are not integers, negative, zero, beyond SQLite's range: 404, never 500."""
    _, api = rest.tenant(is_admin=True)
    for template in ID_PATHS:
        for raw in ["0", "999999", str(2**63 - 1), str(2**63), "9" * 40, "-1", "abc", "1.5", "1e3", "%20",
                    "\u0661", "0x10", "%00"]:
            api_error(api.get(P + template.format(raw)), 404)
    for raw in [str(2**63), "abc"]:
        api_error(api.delete(f"{P}/projects/{raw}"), 404)
        api_error(api.put(f"{P}/projects/{raw}", json={"name": "x"}), 404)
        api_error(api.post(f"{P}/api-keys/{raw}/deactivate"), 404)
        api_error(api.post(f"{P}/devices/{raw}/credentials"), 404)


def test_id_with_thousands_of_digits_is_404(rest: Rest) -> None:
    """An id of 5,000 digits (more than CPython parses by default) is 404 like any other impossible id."""
    _, api = rest.tenant()
    api_error(api.get(f"{P}/projects/{'9' * 5000}"), 404)


def test_another_tenants_ids_are_404(rest: Rest) -> None:
    """§Error Codes 404 (and 403 "You don't have permission"): Roost answers 404 for another user's
    resources, so ids do not reveal what exists; nothing of theirs changes."""
    alice_tenant, alice = rest.tenant(plan="starter")
    _, bob = rest.tenant(plan="starter")
    project_id, topic_id = _project_with_topic(alice)
    device = alice.create_device(project_id, f"alice-dev-{alice_tenant.user.id}")
    message = ok(alice.post(f"{P}/messages", json={"project_id": project_id, "topic_id": topic_id,
                                                     "payload": "secret"}), 201)["data"]
    key_id = ok(alice.get(f"{P}/api-keys"))["data"][0]["id"]
    bob_project, bob_topic = _project_with_topic(bob)
    for method, path, body in [
        ("GET", f"/projects/{project_id}", None), ("PUT", f"/projects/{project_id}", {"name": "x"}),
        ("DELETE", f"/projects/{project_id}", None), ("GET", f"/devices?project_id={project_id}", None),
        ("GET", f"/devices/{device['id']}", None), ("PUT", f"/devices/{device['id']}", {"status": "inactive"}),
        ("POST", f"/devices/{device['id']}/credentials", None), ("DELETE", f"/devices/{device['id']}", None),
        ("GET", f"/topics?project_id={project_id}", None), ("GET", f"/topics/{topic_id}", None),
        ("PUT", f"/topics/{topic_id}", {"can_subscribe": False}), ("DELETE", f"/topics/{topic_id}", None),
        ("GET", f"/messages?project_id={project_id}", None), ("GET", f"/messages/{message['id']}", None),
        ("DELETE", f"/messages/{message['id']}", None), ("POST", f"/api-keys/{key_id}/deactivate", None),
        ("DELETE", f"/api-keys/{key_id}", None),
    ]:
        api_error(bob.request(method, P + path, json=body), 404)
    # Creating into Alice's project, or publishing to her topic, names the field instead (422).
    assert "project_id" in field_errors(bob.post(f"{P}/topics", json={"project_id": project_id, "name": "x"}))
    assert "project_id" in field_errors(
        bob.post(f"{P}/devices", json={"project_id": project_id, "name": "x", "device_id": "bob-into-alice"}))
    assert "project_id" in field_errors(
        bob.post(f"{P}/messages", json={"project_id": project_id, "topic_id": topic_id, "payload": "x"}))
    assert "topic_id" in field_errors(
        bob.post(f"{P}/messages", json={"project_id": bob_project, "topic_id": topic_id, "payload": "x"}))
    # Alice's things are untouched and still hers.
    assert ok(alice.get(f"{P}/devices/{device['id']}"))["data"]["status"] == "offline"
    assert ok(alice.get(f"{P}/topics/{topic_id}"))["data"]["can_subscribe"] is True
    assert ok(alice.get(f"{P}/messages/{message['id']}"))["data"]["payload"] == "secret"
    assert ok(alice.get(f"{P}/api-keys"))["data"][0]["is_active"] is True
    assert ok(bob.get(f"{P}/projects"))["pagination"]["total"] == 1
    assert bob_topic


# -- devices (REST API v1 §Devices) --------------------------------------------------------------------------


def test_device_create_shows_credentials_once(rest: Rest) -> None:
    """§Devices Create → 201; Roost adds mqtt_credentials {client_id, username, password} and a message
    to the create response only (docs/api.md); reads never show the password."""
    tenant, api = rest.tenant()
    project_id = api.create_project()["id"]
    device_id = f"sensor_{tenant.user.id}"
    created = ok(api.post(f"{P}/devices", json={"project_id": project_id, "name": "Living Room Sensor",
                                                "device_id": device_id, "status": "online"}), 201)
    assert set(created) == {"data", "message"}
    device = created["data"]
    assert set(device) == DEVICE_FIELDS | {"mqtt_credentials"}
    assert (device["project_id"], device["name"], device["device_id"]) == (project_id, "Living Room Sensor", device_id)
    credentials = device["mqtt_credentials"]
    assert set(credentials) == {"client_id", "username", "password"}
    assert credentials["client_id"] == credentials["username"] == device_id
    assert len(credentials["password"]) >= 16
    # `status` is live: asked to be "online", it is "offline" until the device connects.
    assert device["status"] == "offline"
    read = ok(api.get(f"{P}/devices/{device['id']}"))
    assert set(read) == {"data"} and set(read["data"]) == DEVICE_FIELDS
    listed = ok(api.get(f"{P}/devices", params={"project_id": project_id}))["data"]
    assert [set(d) for d in listed] == [DEVICE_FIELDS]


def test_device_list_requires_project_id_400(rest: Rest) -> None:
    """§Devices List: project_id (int, required) → 400 "Missing required parameter" when absent; 422 when
    not an integer; 404 when not the user's project."""
    _, api = rest.tenant()
    api_error(api.get(f"{P}/devices"), 400, "Bad Request")
    api_error(api.get(f"{P}/devices", params={"project_id": ""}), 400)
    assert "project_id" in field_errors(api.get(f"{P}/devices", params={"project_id": "one"}))
    assert "project_id" in field_errors(api.get(f"{P}/devices", params={"project_id": "0"}))
    api_error(api.get(f"{P}/devices", params={"project_id": "987654"}), 404)


def test_device_list_pagination(rest: Rest) -> None:
    """§Devices List: {data, pagination {total, per_page, current_page}}, 15 per page."""
    tenant, api = rest.tenant(plan="starter")
    project_id = api.create_project()["id"]
    ids = [api.create_device(project_id, f"pg-{tenant.user.id}-{i}")["id"] for i in range(16)]
    page1 = ok(api.get(f"{P}/devices", params={"project_id": project_id}))
    assert [d["id"] for d in page1["data"]] == ids[:15]
    assert page1["pagination"] == {"total": 16, "per_page": 15, "current_page": 1}
    page2 = ok(api.get(f"{P}/devices", params={"project_id": project_id, "page": 2}))
    assert [d["id"] for d in page2["data"]] == ids[15:]
    assert page2["pagination"] == {"total": 16, "per_page": 15, "current_page": 2}


def test_device_validation(rest: Rest) -> None:
    """§Devices Validation Rules: project_id required and must exist; name required, max 255; device_id
    required, unique across the system; status one of online/offline/inactive."""
    tenant, api = rest.tenant()
    _, other = rest.tenant()
    project_id = api.create_project()["id"]
    taken = f"taken-{tenant.user.id}"
    api.create_device(project_id, taken)
    base = {"project_id": project_id, "name": "n", "device_id": f"new-{tenant.user.id}"}
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"name": "n", "device_id": "x1"}, {"project_id"}),
        (base | {"project_id": 99999999}, {"project_id"}),
        (base | {"project_id": "1"}, {"project_id"}),
        (base | {"name": None}, {"name"}),
        (base | {"name": "x" * 256}, {"name"}),
        (base | {"device_id": None}, {"device_id"}),
        (base | {"device_id": ""}, {"device_id"}),
        (base | {"device_id": "with space"}, {"device_id"}),
        (base | {"device_id": "tab\there"}, {"device_id"}),
        (base | {"device_id": "x" * 256}, {"device_id"}),
        (base | {"device_id": taken}, {"device_id"}),
        (base | {"status": "sleeping"}, {"status"}),
        (base | {"status": "ONLINE"}, {"status"}),
        ({}, {"project_id", "name", "device_id"}),
    ]
    for body, fields in cases:
        assert set(field_errors(api.post(f"{P}/devices", json=body))) == fields, body
    # Unique across the system: another tenant cannot take the id either.
    other_project = other.create_project()["id"]
    assert set(field_errors(other.post(f"{P}/devices", json={"project_id": other_project, "name": "n",
                                                            "device_id": taken}))) == {"device_id"}
    assert ok(api.get(f"{P}/projects/{project_id}"))["devices_count"] == 1


def test_device_id_cannot_take_an_mqtt_instance_user_name(rest: Rest) -> None:
    """A device_id is an MQTT user name, like an instance's `user`: the two share one name space."""
    _, api = rest.tenant()
    instance = ok(api.post("/v1/mqtt"), 201)
    project_id = api.create_project()["id"]
    body = {"project_id": project_id, "name": "n", "device_id": instance["user"]}
    assert "device_id" in field_errors(api.post(f"{P}/devices", json=body))


def test_device_update_rotate_and_delete(rest: Rest) -> None:
    """§Devices Update {name, status}; Roost's POST /devices/{id}/credentials gives a new password (once);
    §Devices Delete → 200 {message} (docs/api.md), then 404."""
    tenant, api = rest.tenant()
    project_id = api.create_project()["id"]
    device = api.create_device(project_id, f"upd-{tenant.user.id}")
    renamed = ok(api.put(f"{P}/devices/{device['id']}", json={"name": "Updated Name", "status": "offline"}))
    assert set(renamed) == {"data"}
    assert (renamed["data"]["name"], renamed["data"]["status"]) == ("Updated Name", "offline")
    inactive = ok(api.put(f"{P}/devices/{device['id']}", json={"status": "inactive"}))["data"]
    assert inactive["status"] == "inactive" and inactive["name"] == "Updated Name"
    assert ok(api.get(f"{P}/devices/{device['id']}"))["data"]["status"] == "inactive"
    assert ok(api.put(f"{P}/devices/{device['id']}", json={"status": "online"}))["data"]["status"] == "offline"
    for body, field in [({"name": ""}, "name"), ({"name": " "}, "name"), ({"status": "gone"}, "status"),
                        ({"device_id": "rename"}, "device_id"), ({"project_id": 1}, "project_id")]:
        assert field in field_errors(api.put(f"{P}/devices/{device['id']}", json=body)), body
    rotated = ok(api.post(f"{P}/devices/{device['id']}/credentials"))
    assert set(rotated) == {"data", "message"}
    new_password = rotated["data"]["mqtt_credentials"]["password"]
    assert new_password != device["mqtt_credentials"]["password"]
    again = ok(api.post(f"{P}/devices/{device['id']}/credentials"))["data"]["mqtt_credentials"]["password"]
    assert again != new_password
    assert set(ok(api.delete(f"{P}/devices/{device['id']}"))) == {"message"}
    api_error(api.get(f"{P}/devices/{device['id']}"), 404)
    api_error(api.delete(f"{P}/devices/{device['id']}"), 404)
    api_error(api.post(f"{P}/devices/{device['id']}/credentials"), 404)


def test_device_created_inactive(rest: Rest) -> None:
    """§Devices Create: status "inactive" creates a device that is switched off."""
    tenant, api = rest.tenant()
    project_id = api.create_project()["id"]
    assert api.create_device(project_id, f"off-{tenant.user.id}", status="inactive")["status"] == "inactive"


def test_free_plan_device_limit_is_422(rest: Rest) -> None:
    """REST API v1 §Messages Errors "422: Device or topic limit exceeded"; the free plan has 10 devices
    (docs/api.md), counted over all of the user's projects."""
    tenant, api = rest.tenant(plan="free")
    first = api.create_project("a")["id"]
    second = api.create_project("b")["id"]
    for i in range(10):
        api.create_device(first if i < 5 else second, f"lim-{tenant.user.id}-{i}")
    body = api_error(api.post(f"{P}/devices", json={"project_id": second, "name": "n",
                                                     "device_id": f"lim-{tenant.user.id}-x"}), 422, "Limit exceeded")
    assert set(body["errors"]) == {"devices"}
    ok(api.delete(f"{P}/devices/{ok(api.get(f'{P}/devices', params={'project_id': first}))['data'][0]['id']}"))
    api.create_device(second, f"lim-{tenant.user.id}-y")


# -- topics (Roost's addition; docs/api.md) ------------------------------------------------------------------


def test_topic_lifecycle_and_shapes(rest: Rest) -> None:
    """Topics follow §Projects' shapes: {data}; list {data, pagination {total, per_page, current_page}};
    can_publish/can_subscribe default to true; delete → 200 {message}, then 404."""
    _, api = rest.tenant()
    project_id = api.create_project()["id"]
    created = ok(api.post(f"{P}/topics", json={"project_id": project_id, "name": "home/+/temp",
                                               "description": "all rooms"}), 201)
    assert set(created) == {"data"}
    topic = created["data"]
    assert set(topic) == TOPIC_FIELDS
    assert (topic["name"], topic["description"], topic["can_publish"], topic["can_subscribe"]) == (
        "home/+/temp", "all rooms", True, True)
    listing = ok(api.get(f"{P}/topics", params={"project_id": project_id}))
    assert listing == {"data": [topic], "pagination": {"total": 1, "per_page": 15, "current_page": 1}}
    updated = ok(api.put(f"{P}/topics/{topic['id']}", json={"can_publish": False, "name": "home/#"}))["data"]
    assert (updated["name"], updated["can_publish"], updated["can_subscribe"]) == ("home/#", False, True)
    assert ok(api.get(f"{P}/topics/{topic['id']}"))["data"] == updated
    assert set(ok(api.delete(f"{P}/topics/{topic['id']}"))) == {"message"}
    api_error(api.get(f"{P}/topics/{topic['id']}"), 404)
    api_error(api.get(f"{P}/topics"), 400)


def test_topic_validation(rest: Rest) -> None:
    """A topic is an MQTT topic name or filter: not empty [MQTT-4.7.3-1], wildcards placed as
    [MQTT-4.7.1-2]/[MQTT-4.7.1-3] say, not starting with $ (reserved, [MQTT-4.7.2-1]), unique in its project."""
    _, api = rest.tenant()
    project_id = api.create_project()["id"]
    api.create_topic(project_id, "taken")
    for name in ["", "a/#/b", "a#", "a/b+", "$SYS/x", "$share/g/t", "taken"]:
        assert set(field_errors(api.post(f"{P}/topics", json={"project_id": project_id, "name": name}))) == {"name"}, name
    for body, field in [({"project_id": project_id, "name": "x", "can_publish": "yes"}, "can_publish"),
                        ({"project_id": project_id, "name": "x", "can_subscribe": 1}, "can_subscribe"),
                        ({"name": "x"}, "project_id")]:
        assert field in field_errors(api.post(f"{P}/topics", json=body))
    other = api.create_topic(project_id, "other")
    for body in [{"name": "taken"}, {"name": "#/x"}, {"name": ""}, {"can_publish": None, "name": "$x"}]:
        assert "name" in field_errors(api.put(f"{P}/topics/{other['id']}", json=body)), body
    # Deep, wide and unicode topics are fine.
    for name in ["/".join(["l"] * 200), "\u6e29\u5ea6/\U0001f321", "a//b", "/", "+", "#", "+/+/#"]:
        api.create_topic(project_id, name)


def test_free_plan_topic_limit_is_422(rest: Rest) -> None:
    """REST API v1 §Messages Errors "422: Device or topic limit exceeded"; the free plan has 20 topics."""
    _, api = rest.tenant(plan="free")
    project_id = api.create_project()["id"]
    for i in range(20):
        api.create_topic(project_id, f"t/{i}")
    body = api_error(api.post(f"{P}/topics", json={"project_id": project_id, "name": "t/20"}), 422, "Limit exceeded")
    assert set(body["errors"]) == {"topics"}


# -- messages (REST API v1 §Messages) ------------------------------------------------------------------------


def test_publish_message_shape(rest: Rest) -> None:
    """§Messages Publish → 201 {data: message}: id, project_id, topic_id, payload, qos, retained,
    expires_at (the plan's retention: 7 days on free), created_at; Roost adds `topic` (its MQTT topic)."""
    _, api = rest.tenant(plan="free")
    project_id, topic_id = _project_with_topic(api)
    created = ok(api.post(f"{P}/messages", json={"project_id": project_id, "topic_id": topic_id,
                                                  "payload": "temperature: 22.5", "qos": 1, "retained": False}), 201)
    assert set(created) == {"data"}
    message = created["data"]
    assert set(message) == MESSAGE_FIELDS
    assert (message["project_id"], message["topic_id"], message["topic"], message["payload"], message["qos"],
            message["retained"]) == (project_id, topic_id, "sensors/temp", "temperature: 22.5", 1, False)
    created_at = datetime.fromisoformat(message["created_at"].replace("Z", "+00:00"))
    expires_at = datetime.fromisoformat(message["expires_at"].replace("Z", "+00:00"))
    assert abs((expires_at - created_at) - timedelta(days=7)) < timedelta(seconds=5)
    defaults = ok(api.post(f"{P}/messages", json={"project_id": project_id, "topic_id": topic_id,
                                                   "payload": ""}), 201)["data"]
    assert (defaults["qos"], defaults["retained"], defaults["payload"]) == (0, False, "")
    assert ok(api.get(f"{P}/messages/{message['id']}")) == {"data": message}


def test_message_list_filters_limit_and_order(rest: Rest) -> None:
    """§Messages List: project_id required, topic_id optional, limit max 1000 (default 50); newest first."""
    _, api = rest.tenant(plan="starter")
    project_id, temp = _project_with_topic(api)
    humidity = api.create_topic(project_id, "sensors/humidity")["id"]
    sent = []
    for i, topic_id in enumerate([temp, humidity, temp]):
        sent.append(ok(api.post(f"{P}/messages", json={"project_id": project_id, "topic_id": topic_id,
                                                        "payload": f"m{i}"}), 201)["data"])
    listing = ok(api.get(f"{P}/messages", params={"project_id": project_id}))
    assert set(listing) == {"data"}
    assert listing["data"] == sent[::-1]
    assert ok(api.get(f"{P}/messages", params={"project_id": project_id, "topic_id": temp}))["data"] == [sent[2], sent[0]]
    assert ok(api.get(f"{P}/messages", params={"project_id": project_id, "limit": 1}))["data"] == [sent[2]]
    assert ok(api.get(f"{P}/messages", params={"project_id": project_id, "limit": 1000}))["data"] == sent[::-1]
    assert ok(api.get(f"{P}/messages", params={"project_id": project_id, "topic_id": 999999}))["data"] == []
    api_error(api.get(f"{P}/messages"), 400, "Bad Request")
    for params in [{"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"topic_id": "t"}, {"topic_id": 0}]:
        assert set(field_errors(api.get(f"{P}/messages", params={"project_id": project_id, **params}))) == set(params)
    api_error(api.get(f"{P}/messages", params={"project_id": 999999}), 404)


def test_message_delete(rest: Rest) -> None:
    """§Messages Delete → 200 {message}; then 404 and gone from the list."""
    _, api = rest.tenant()
    project_id, topic_id = _project_with_topic(api)
    message = ok(api.post(f"{P}/messages", json={"project_id": project_id, "topic_id": topic_id,
                                                  "payload": "x"}), 201)["data"]
    assert set(ok(api.delete(f"{P}/messages/{message['id']}"))) == {"message"}
    api_error(api.get(f"{P}/messages/{message['id']}"), 404)
    api_error(api.delete(f"{P}/messages/{message['id']}"), 404)
    assert ok(api.get(f"{P}/messages", params={"project_id": project_id}))["data"] == []


def test_publish_validation(rest: Rest) -> None:
    """§Messages Validation: project_id and topic_id required; payload required, a string; qos 0-2;
    retained boolean. Publishing to a topic filter is 422 (docs/api.md)."""
    _, api = rest.tenant()
    project_id, topic_id = _project_with_topic(api)
    wildcard = api.create_topic(project_id, "sensors/+")["id"]
    other_project_topic = _project_with_topic(api, "elsewhere")[1]
    base = {"project_id": project_id, "topic_id": topic_id, "payload": "p"}
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({}, {"project_id", "topic_id", "payload"}),
        ({"project_id": project_id, "topic_id": topic_id}, {"payload"}),
        (base | {"payload": 22.5}, {"payload"}),
        (base | {"payload": {"t": 1}}, {"payload"}),
        (base | {"payload": "x" * (256 * 1024 + 1)}, {"payload"}),
        (base | {"qos": 3}, {"qos"}),
        (base | {"qos": -1}, {"qos"}),
        (base | {"qos": "1"}, {"qos"}),
        (base | {"qos": 1.0}, {"qos"}),
        (base | {"qos": True}, {"qos"}),
        (base | {"retained": "false"}, {"retained"}),
        (base | {"retained": 0}, {"retained"}),
        (base | {"topic_id": wildcard}, {"topic_id"}),
        (base | {"topic_id": other_project_topic}, {"topic_id"}),
        (base | {"topic_id": 999999}, {"topic_id"}),
        (base | {"project_id": 999999}, {"project_id"}),
    ]
    for body, fields in cases:
        assert set(field_errors(api.post(f"{P}/messages", json=body))) == fields, {k: str(v)[:20] for k, v in body.items()}
    assert ok(api.get(f"{P}/messages", params={"project_id": project_id}))["data"] == []
    # The largest payload allowed, and unicode payloads, are fine.
    ok(api.post(f"{P}/messages", json=base | {"payload": "x" * (256 * 1024)}), 201)
    assert ok(api.post(f"{P}/messages", json=base | {"payload": "\u00e9\U0001f426\u0000"}), 201)["data"]["payload"] == (
        "\u00e9\U0001f426\u0000")


# -- API keys (REST API v1 §API Keys) ------------------------------------------------------------------------


def test_api_key_create_shows_key_and_secret_once(rest: Rest) -> None:
    """§API Keys Create → 201 {data {id, name, key, secret, message}} (Roost adds expires_at); List shows only
    a prefix of each key and never the secret; the new key works at once."""
    _, api = rest.tenant()
    created = ok(api.post(f"{P}/api-keys", json={"name": "Production Key"}), 201)
    assert set(created) == {"data"}
    data = created["data"]
    assert set(data) == {"id", "name", "key", "secret", "expires_at", "message"}
    assert data["name"] == "Production Key" and data["expires_at"] is None
    assert data["key"].startswith("sk_") and data["secret"].startswith("secret_")
    assert data["message"] == SAVE_KEY
    listing = ok(api.get(f"{P}/api-keys"))
    assert set(listing) == {"data", "pagination"}
    listed = {k["id"]: k for k in listing["data"]}
    entry = listed[data["id"]]
    assert set(entry) == API_KEY_FIELDS
    assert entry["key"].endswith("...") and data["key"].startswith(entry["key"][:-3])
    assert len(entry["key"]) < len(data["key"]) - 10
    assert data["key"] not in listing.__repr__() and data["secret"] not in listing.__repr__()
    assert (entry["is_active"], entry["expires_at"], entry["last_used_at"]) == (True, None, None)
    assert TIMESTAMP.match(entry["created_at"])
    fresh = Api(api.roost, data["key"])
    try:
        ok(fresh.get(f"{P}/users/me"))
        # last_used_at: noted at once (written to the database in batches; docs/api.md).
        used = {k["id"]: k for k in ok(fresh.get(f"{P}/api-keys"))["data"]}[data["id"]]
        assert used["last_used_at"] is not None and TIMESTAMP.match(used["last_used_at"])
    finally:
        fresh.close()


def test_api_key_deactivate_then_401_then_delete(rest: Rest) -> None:
    """§API Keys Deactivate → the key answers 401 from then on (it stays listed, is_active false);
    Delete → 200, gone from the list, 404 the second time."""
    _, api = rest.tenant()
    data = ok(api.post(f"{P}/api-keys", json={"name": "temp"}), 201)["data"]
    other = Api(api.roost, data["key"])
    try:
        ok(other.get(f"{P}/projects"))
        deactivated = ok(api.post(f"{P}/api-keys/{data['id']}/deactivate"))
        assert set(deactivated) == {"data"} and set(deactivated["data"]) == API_KEY_FIELDS
        assert deactivated["data"]["is_active"] is False
        api_error(other.get(f"{P}/projects"), 401, "Unauthorized")
        mqtt_error(other.get("/v1/mqtt"), 401)  # One key for both APIs.
        assert {k["id"]: k for k in ok(api.get(f"{P}/api-keys"))["data"]}[data["id"]]["is_active"] is False
        assert set(ok(api.delete(f"{P}/api-keys/{data['id']}"))) == {"message"}
        assert data["id"] not in {k["id"] for k in ok(api.get(f"{P}/api-keys"))["data"]}
        api_error(api.delete(f"{P}/api-keys/{data['id']}"), 404)
        api_error(api.post(f"{P}/api-keys/{data['id']}/deactivate"), 404)
        api_error(other.get(f"{P}/projects"), 401)
    finally:
        other.close()


def test_deactivating_the_key_in_use_locks_it_out(rest: Rest) -> None:
    """A key can deactivate itself; its next request is 401."""
    _, api = rest.tenant()
    own_id = ok(api.get(f"{P}/api-keys"))["data"]
    mine = [k for k in own_id if api.key is not None and api.key.startswith(k["key"][:-3])]
    assert len(mine) == 1
    ok(api.post(f"{P}/api-keys/{mine[0]['id']}/deactivate"))
    api_error(api.get(f"{P}/api-keys"), 401)


def test_api_key_expiry(rest: Rest) -> None:
    """§API Keys Create: expires_at like "2027-02-09" (or a full ISO-8601 time) in the future; in the past,
    or not a date: 422; an expired key answers 401."""
    tenant, api = rest.tenant()
    future = ok(api.post(f"{P}/api-keys", json={"name": "f", "expires_at": "2999-02-09"}), 201)["data"]
    assert future["expires_at"] == "2999-02-09T00:00:00.000Z"
    timed = ok(api.post(f"{P}/api-keys", json={"name": "t", "expires_at": "2999-02-09T10:30:00+02:00"}), 201)
    assert timed["data"]["expires_at"] == "2999-02-09T08:30:00.000Z"
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
    for value in [yesterday, "2000-01-01", "2020-01-18T19:11:26.413Z", "tomorrow", "2027-13-01", "", 20270209,
                  True, ["2027-02-09"], "2027-02-09T25:00:00"]:
        assert set(field_errors(api.post(f"{P}/api-keys", json={"name": "p", "expires_at": value}))) == {"expires_at"}, value
    for body in [{}, {"name": ""}, {"name": "x" * 256}, {"name": 5}]:
        assert "name" in field_errors(api.post(f"{P}/api-keys", json=body))
    # An expired key: planted through the store (the API refuses to create one), then refused at the door.
    past = datetime.now(timezone.utc) - timedelta(minutes=1)
    expired = rest.roost.run(tenant.services.context.store.api_keys.create(tenant.user.id, "old", expires_at=past))
    gone = Api(api.roost, expired.key)
    try:
        api_error(gone.get(f"{P}/users/me"), 401, "Unauthorized")
    finally:
        gone.close()
    listed = {k["name"]: k for k in ok(api.get(f"{P}/api-keys"))["data"]}
    assert listed["old"]["expires_at"] is not None


def test_api_key_expiry_beyond_year_9999_in_utc_is_422(rest: Rest) -> None:
    """An expires_at that is past year 9999 once in UTC ("9999-12-31T23:59:59-23:59") cannot be stored: 422."""
    _, api = rest.tenant()
    response = api.post(f"{P}/api-keys", json={"name": "far", "expires_at": "9999-12-31T23:59:59-23:59"})
    assert set(field_errors(response)) == {"expires_at"}


def test_api_key_pagination(rest: Rest) -> None:
    """§API Keys List: pagination {total, per_page} with 10 per page (Roost accepts `page` as elsewhere).
    A new tenant has two keys already: the "Initial key" every user gets, and the test's own."""
    _, api = rest.tenant()
    assert ok(api.get(f"{P}/api-keys"))["pagination"] == {"total": 2, "per_page": 10}
    for i in range(9):
        ok(api.post(f"{P}/api-keys", json={"name": f"k{i}"}), 201)
    first = ok(api.get(f"{P}/api-keys"))
    assert first["pagination"] == {"total": 11, "per_page": 10} and len(first["data"]) == 10
    second = ok(api.get(f"{P}/api-keys", params={"page": 2}))
    assert len(second["data"]) == 1
    assert not {k["id"] for k in first["data"]} & {k["id"] for k in second["data"]}


# -- users (Roost's addition; docs/api.md) -------------------------------------------------------------------


def test_me_shows_the_account_and_the_plans_limits(rest: Rest) -> None:
    """GET /users/me: {data: user, limits} with the plan's numbers (free: 100 messages/hour per §Rate
    Limiting; 3 projects, 10 devices, 20 topics, 1 instance, 7 days per docs/api.md)."""
    tenant, api = rest.tenant(plan="free")
    me = api.me()
    assert set(me) == {"data", "limits"}
    assert set(me["data"]) == USER_FIELDS
    assert (me["data"]["id"], me["data"]["name"], me["data"]["plan"], me["data"]["is_admin"],
            me["data"]["is_active"]) == (tenant.user.id, tenant.user.name, "free", False, True)
    assert OBJECT_ID.match(me["data"]["public_id"])
    resets = me["limits"].pop("quota_resets_at")
    assert TIMESTAMP.match(resets) and resets.endswith(":00:00.000Z")  # the start of the next hour
    assert me["limits"] == {"messages_per_hour": 100, "messages_this_hour": 0, "max_projects": 3,
                            "max_devices": 10, "max_topics": 20, "max_instances": 1, "retention_days": 7,
                            "messages_refused_this_hour": 0}
    _, enterprise = rest.tenant(plan="enterprise")
    limits = enterprise.me()["limits"]
    assert limits.pop("quota_resets_at") == resets and limits.pop("messages_refused_this_hour") == 0
    assert limits == {"messages_per_hour": None, "messages_this_hour": 0, "max_projects": None,
                                         "max_devices": None, "max_topics": None, "max_instances": None,
                                         "retention_days": 365}


def test_users_are_admin_only_403(rest: Rest) -> None:
    """§Error Codes 403 "You don't have permission to access this resource": managing users needs an
    administrator; a user may read only their own account."""
    tenant, api = rest.tenant()
    other, _ = rest.tenant()
    for method, path, body in [("GET", "/users", None), ("POST", "/users", {"name": "x"}),
                               ("GET", f"/users/{other.user.id}", None),
                               ("PUT", f"/users/{other.user.id}", {"plan": "enterprise"}),
                               ("PUT", f"/users/{tenant.user.id}", {"plan": "enterprise"}),
                               ("DELETE", f"/users/{other.user.id}", None),
                               ("DELETE", f"/users/{tenant.user.id}", None)]:
        api_error(api.request(method, P + path, json=body), 403, "Forbidden")
    assert ok(api.get(f"{P}/users/{tenant.user.id}"))["data"]["plan"] == "free"
    assert api.me()["data"]["plan"] == "free"


def test_admin_manages_users(rest: Rest) -> None:
    """Users API (docs/api.md): create → 201 with a first API key and secret (once); get; list with
    pagination; update plan (the limits follow) and activity (the key stops working); delete."""
    _, admin = rest.tenant(is_admin=True)
    name = f"newcomer-{id(admin)}"
    created = ok(admin.post(f"{P}/users", json={"name": name, "plan": "starter", "password": "long enough"}), 201)
    assert set(created) == {"data"}
    data = created["data"]
    assert set(data) == USER_FIELDS | {"api_key", "secret", "message"}
    assert (data["name"], data["plan"], data["is_admin"], data["is_active"]) == (name, "starter", False, True)
    newcomer = Api(admin.roost, data["api_key"])
    try:
        assert newcomer.me()["limits"]["max_projects"] == 10
        assert ok(admin.get(f"{P}/users/{data['id']}"))["data"] == {k: data[k] for k in USER_FIELDS}
        listing = ok(admin.get(f"{P}/users"))
        assert set(listing) == {"data", "pagination"}
        assert set(listing["pagination"]) == {"total", "per_page", "current_page"}
        assert data["id"] in {u["id"] for u in listing["data"]}
        assert all(set(u) == USER_FIELDS for u in listing["data"])
        updated = ok(admin.put(f"{P}/users/{data['id']}", json={"plan": "professional"}))["data"]
        assert updated["plan"] == "professional"
        assert newcomer.me()["limits"]["max_projects"] == 20
        assert ok(admin.put(f"{P}/users/{data['id']}", json={"is_active": False}))["data"]["is_active"] is False
        api_error(newcomer.get(f"{P}/users/me"), 401)
        ok(admin.put(f"{P}/users/{data['id']}", json={"is_active": True}))
        ok(newcomer.get(f"{P}/users/me"))
        assert set(ok(admin.delete(f"{P}/users/{data['id']}"))) == {"message"}
        api_error(newcomer.get(f"{P}/users/me"), 401)
        api_error(admin.get(f"{P}/users/{data['id']}"), 404)
        api_error(admin.delete(f"{P}/users/{data['id']}"), 404)
        api_error(admin.put(f"{P}/users/{data['id']}", json={"plan": "free"}), 404)
    finally:
        newcomer.close()


def test_admin_user_validation(rest: Rest) -> None:
    """Users API: name required and unique; plan one of the configured plans; password ≥ 8 characters;
    is_admin/is_active booleans; an admin cannot delete themself (403)."""
    tenant, admin = rest.tenant(is_admin=True)
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "name"), ({"name": tenant.user.name}, "name"), ({"name": "u1", "plan": "platinum"}, "plan"),
        ({"name": "u2", "password": "short"}, "password"), ({"name": "u3", "is_admin": "yes"}, "is_admin"),
        ({"name": "u4", "owner": 1}, "owner"),
    ]
    for body, field in cases:
        assert field in field_errors(admin.post(f"{P}/users", json=body)), body
    for body, field in [({"plan": "gold"}, "plan"), ({"is_active": "no"}, "is_active"), ({"password": "1234567"}, "password"),
                        ({"name": "rename"}, "name")]:
        assert field in field_errors(admin.put(f"{P}/users/{tenant.user.id}", json=body)), body
    api_error(admin.delete(f"{P}/users/{tenant.user.id}"), 403, "Forbidden")
    assert admin.me()["data"]["is_admin"] is True


def test_admin_creates_an_inactive_user_or_is_told_no(rest: Rest) -> None:
    """Users API: a field the create request accepts is honoured (or refused with 422, like unknown fields)."""
    _, admin = rest.tenant(is_admin=True)
    response = admin.post(f"{P}/users", json={"name": f"dormant-{id(admin)}", "is_active": False})
    if response.status_code == 201:
        assert response.json()["data"]["is_active"] is False
    else:
        assert "is_active" in field_errors(response)


def test_admin_cannot_lock_themself_out(rest: Rest) -> None:
    """Users API: like deleting themself (403), an administrator cannot demote or deactivate themself."""
    tenant, admin = rest.tenant(is_admin=True)
    api_error(admin.put(f"{P}/users/{tenant.user.id}", json={"is_admin": False}), 403)
    api_error(admin.put(f"{P}/users/{tenant.user.id}", json={"is_active": False}), 403)


# -- status code 500 on /api/v1 ------------------------------------------------------------------------------


async def _fail(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("database unavailable")


def test_unexpected_failure_is_500_with_the_error_body(rest: Rest, monkeypatch: pytest.MonkeyPatch) -> None:
    """§Error Codes 500 "Internal Server Error": {"error", "message"}, nothing of the exception leaks.
    The failure is injected into the project service the app calls."""
    _, api = rest.tenant()
    assert rest.roost.roost is not None and rest.roost.roost.services is not None
    monkeypatch.setattr(rest.roost.roost.services.projects, "list", _fail)
    body = api_error(api.get(f"{P}/projects"), 500, "Internal Server Error")
    assert "database unavailable" not in body["message"] and "RuntimeError" not in str(body)
    monkeypatch.undo()
    fresh = rest.api(api.key)
    ok(fresh.get(f"{P}/projects"))


def test_health_is_public(rest: Rest) -> None:
    """/health answers without a key: {status, version, uptime_seconds, clients_connected}."""
    health = ok(rest.api(None).get("/health"))
    assert set(health) == {"status", "version", "uptime_seconds", "clients_connected"}
    assert health["status"] == "ok"


def test_head_is_answered_like_get_without_a_body(rest: Rest) -> None:
    """HEAD on a GET route is answered like GET without a body (RFC 9110 §9.3.2)."""
    _, api = rest.tenant()
    response = api.raw("HEAD", f"{P}/projects")
    assert response.status_code == 200 and response.content == b""
    assert response.headers["content-type"].startswith("application/json")
