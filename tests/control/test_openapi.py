"""GET /api/v1/openapi.json: a valid OpenAPI 3.1 document (OpenAPI Specification 3.1.0) that lists exactly the
app's REST operations, and whose schemas accept what the two API documents show and what Roost answers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.routing import Route

from control.app import create_app
from tests.control.api_helpers import (
    Rest,
    ok,
    rest,  # noqa: F401  (fixture)
    shared_roost,  # noqa: F401  (fixture)
)
from tests.helpers import RoostThread

METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
REST_PREFIXES = ("/api/", "/v1/")


@pytest.fixture
def document(rest: Rest) -> dict[str, Any]:
    """The document as a client gets it: no API key needed."""
    response = rest.api(None).get("/api/v1/openapi.json")
    return ok(response)


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def _app_operations(roost: RoostThread) -> set[tuple[str, str]]:
    """(method, path) of every HTTP route of the app under /api/ and /v1/, plus /health, with Starlette's
    `{name:convertor}` written `{name}` as OpenAPI does. HEAD (added by Starlette to each GET) is left out;
    the dashboard's HTML pages and the WebSocket route are not REST operations."""
    assert roost.roost is not None and roost.roost.services is not None
    app = create_app(roost.roost.service, roost.roost.services)
    found = set()
    for route in app.routes:
        if not isinstance(route, Route) or route.methods is None:
            continue
        if not (route.path.startswith(REST_PREFIXES) or route.path == "/health"):
            continue
        path = re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*):[A-Za-z_]+\}", r"{\1}", route.path)
        found |= {(method, path) for method in route.methods if method != "HEAD"}
    return found


def _validator(document: dict[str, Any], name: str) -> Draft202012Validator:
    """A validator for one component schema, resolving its $refs inside the document."""
    return Draft202012Validator({**document, "$ref": f"#/components/schemas/{name}"})


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    """OpenAPI 3.1.0 §4: the document validates against the specification's schema."""
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_every_app_route_is_documented_and_nothing_else(rest: Rest, document: dict[str, Any]) -> None:
    """Every REST route of the app (method + path) is in the document, and every operation in the document
    is a route of the app."""
    documented = set(_operations(document))
    routes = _app_operations(rest.roost)
    assert routes - documented == set(), "routes missing from the document"
    assert documented - routes == set(), "documented operations the app does not have"
    undocumented = [key for key, op in _operations(document).items() if op.get("x-undocumented")]
    assert undocumented == [], "routes without a description in control/api/openapi.py"


def test_every_operation_is_complete(document: dict[str, Any]) -> None:
    """Each operation: a unique operationId, its path parameters declared, JSON schemas for its bodies, the
    error responses the handlers give (401 where a key is needed, 500 everywhere), request bodies closed."""
    operation_ids = set()
    for (method, path), operation in _operations(document).items():
        assert operation["operationId"] not in operation_ids
        operation_ids.add(operation["operationId"])
        declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"\{(\w+)\}", path)), (method, path)
        responses = operation["responses"]
        assert any(code.startswith("2") for code in responses), (method, path)
        public = operation.get("security") == []
        if not public:
            assert "401" in responses and "500" in responses, (method, path)
        if "requestBody" in operation:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            name = schema["$ref"].rsplit("/", 1)[1]
            assert document["components"]["schemas"][name]["additionalProperties"] is False
            for code in ("400", "413", "422"):
                assert code in responses, (method, path, code)
        for code, response in responses.items():
            if code.startswith(("4", "5")) and path.startswith("/api/v1/") and path != "/api/v1/ca.pem":
                assert response["content"]["application/json"]["schema"]["$ref"].endswith(
                    ("/Error", "/ValidationError")), (method, path, code)
            if code.startswith(("4", "5")) and path.startswith("/v1/mqtt"):
                assert response["content"]["application/json"]["schema"]["$ref"].endswith(
                    ("/MqttError", "/MqttServerError")), (method, path, code)
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "An API key (sk_...)."}


def test_the_documents_examples_fit_the_schemas(document: dict[str, Any]) -> None:
    """The response examples of mqtt-instances-api.md and icmqtt-rest-api-v1.md (where Roost answers exactly
    that shape) are valid under the OpenAPI document's schemas."""
    instance = {"_id": "5e23585e02180144b6dcbb05", "server": "mqtt.iotaap.io", "user": "Hcixd1Fx",
                "password": "09RwX8S5aQET", "port": "8883", "owner": "5e10fc5e77ba18070312e171",
                "created_at": "2020-01-18T19:11:26.413Z", "__v": 0}
    examples: list[tuple[str, Any]] = [
        ("MqttInstance", instance),
        ("MqttInstanceList", {"mqtts": [instance], "recordsTotal": 21, "recordsFiltered": 2, "draw": "warp"}),
        ("MqttError", {"message": "No such MQTT instance"}),
        ("MqttError", {"message": "Maximum number of MQTT instances reached. Please upgrade your account."}),
        ("MqttServerError", {"message": "Error when getting MQTT instances", "error": "<Error information>"}),
        ("Deleted", {"message": "'MQTT instance succesfully removed"}),
        ("ProjectList", {
            "data": [{"id": 1, "name": "Smart Home", "description": "IoT home automation", "user_id": 1,
                      "created_at": "2026-02-09T10:00:00Z", "updated_at": "2026-02-09T10:00:00Z"}],
            "pagination": {"total": 10, "per_page": 15, "current_page": 1, "last_page": 1},
            "limits": {"max_projects": 20, "current_projects": 1}}),
        ("ProjectDetails", {
            "data": {"id": 1, "name": "Smart Home", "description": "IoT home automation", "user_id": 1,
                     "created_at": "2026-02-09T10:00:00Z", "updated_at": "2026-02-09T10:00:00Z"},
            "devices_count": 5, "topics_count": 3}),
        ("ApiKeyList", {
            "data": [{"id": 1, "name": "Production Key", "key": "sk_test_...", "is_active": True,
                      "last_used_at": "2026-02-09T15:30:00Z", "expires_at": None,
                      "created_at": "2026-02-09T10:00:00Z"}],
            "pagination": {"total": 3, "per_page": 10}}),
        ("Error", {"error": "Rate limit exceeded", "message": "You have exceeded your hourly message limit of 1000"}),
        ("ProjectCreate", {"name": "Smart Home", "description": "IoT home automation"}),
        ("ProjectUpdate", {"name": "Smart Home Updated", "description": "Updated description"}),
        ("DeviceCreate", {"project_id": 1, "name": "Living Room Sensor", "device_id": "sensor_001",
                          "status": "online"}),
        ("DeviceUpdate", {"name": "Updated Name", "status": "offline"}),
        ("MessagePublish", {"project_id": 1, "topic_id": 1, "payload": "temperature: 22.5", "qos": 1,
                            "retained": False}),
        ("ApiKeyCreate", {"name": "Production Key", "expires_at": "2027-02-09"}),
    ]
    for name, example in examples:
        errors = [e.message for e in _validator(document, name).iter_errors(example)]
        assert errors == [], (name, errors)


def test_request_schemas_refuse_what_the_api_refuses(document: dict[str, Any]) -> None:
    """The request schemas are as strict as the handlers: unknown fields, wrong types, out-of-range qos."""
    for name, body in [("ProjectCreate", {"name": "x", "owner": 1}), ("ProjectCreate", {}),
                       ("DeviceCreate", {"project_id": 1, "name": "n", "device_id": "has space"}),
                       ("DeviceCreate", {"project_id": 1, "name": "n", "device_id": "d", "status": "sleeping"}),
                       ("MessagePublish", {"project_id": 1, "topic_id": 1, "payload": "p", "qos": 3}),
                       ("MessagePublish", {"project_id": 1, "topic_id": 1, "payload": 22.5}),
                       ("TopicCreate", {"project_id": 1, "name": "$SYS/x"})]:
        assert list(_validator(document, name).iter_errors(body)), (name, body)


def test_live_responses_fit_the_schemas(rest: Rest, document: dict[str, Any]) -> None:
    """What Roost answers validates against the schema the document gives for it (schemathesis checks this
    for generated requests too; here for a known sequence that reaches the success shapes)."""
    _, api = rest.tenant(plan="starter")
    checks: list[tuple[str, Any]] = [
        ("MqttInstance", ok(api.post("/v1/mqtt"), 201)),
        ("MqttInstanceList", ok(api.get("/v1/mqtt", params={"draw": "1"}))),
        ("ProjectEnvelope", ok(api.post("/api/v1/projects", json={"name": "p"}), 201)),
        ("ProjectList", ok(api.get("/api/v1/projects"))),
    ]
    project_id = checks[-2][1]["data"]["id"]
    topic = ok(api.post("/api/v1/topics", json={"project_id": project_id, "name": "a/b"}), 201)
    device = ok(api.post("/api/v1/devices", json={"project_id": project_id, "name": "d",
                                                  "device_id": f"oa-{project_id}-{id(api)}"}), 201)
    message = ok(api.post("/api/v1/messages", json={"project_id": project_id, "topic_id": topic["data"]["id"],
                                                    "payload": "x", "retained": True}), 201)
    checks += [
        ("TopicEnvelope", topic),
        ("DeviceCredentialsEnvelope", device),
        ("DeviceEnvelope", ok(api.get(f"/api/v1/devices/{device['data']['id']}"))),
        ("DeviceList", ok(api.get("/api/v1/devices", params={"project_id": project_id}))),
        ("TopicList", ok(api.get("/api/v1/topics", params={"project_id": project_id}))),
        ("ProjectDetails", ok(api.get(f"/api/v1/projects/{project_id}"))),
        ("MessageEnvelope", message),
        ("MessageList", ok(api.get("/api/v1/messages", params={"project_id": project_id}))),
        ("CreatedApiKey", ok(api.post("/api/v1/api-keys", json={"name": "k", "expires_at": "2999-01-01"}), 201)),
        ("ApiKeyList", ok(api.get("/api/v1/api-keys"))),
        ("Me", api.me()),
        ("IssuedCertificate", ok(api.post(f"/api/v1/devices/{device['data']['id']}/certificate"), 201)),
        ("Stats", ok(api.get("/api/v1/stats"))),
        ("ConnectedClientList", ok(api.get("/api/v1/clients"))),
        ("ValidationError", ok(api.post("/api/v1/projects", json={"nope": 1}), 422)),
        ("Error", ok(api.get("/api/v1/projects/999999"), 404)),
        ("MqttError", ok(api.get("/v1/mqtt/nope"), 404)),
        ("Health", ok(api.get("/health"))),
    ]
    for name, body in checks:
        errors = [e.message for e in _validator(document, name).iter_errors(body)]
        assert errors == [], (name, errors)
