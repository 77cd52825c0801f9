"""Helpers for the REST API tests: an httpx client on a running Roost's HTTP port with a tenant's API key,
and assertions on the two documents' error bodies.

Every response these helpers return has been checked to be JSON (never an HTML page or a traceback): a
REST API that answers bad input with a stack trace is wrong whatever its status code.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.helpers import TIMEOUT, RoostThread, roost_document
from tests.tenant_helpers import Tenant, make_tenant

# "2020-01-18T19:11:26.413Z", as both documents print timestamps.
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")

INSTANCE_FIELDS = {"_id", "server", "user", "password", "port", "owner", "created_at", "__v"}
PROJECT_FIELDS = {"id", "name", "description", "user_id", "created_at", "updated_at"}
DEVICE_FIELDS = {"id", "project_id", "name", "device_id", "status", "created_at", "updated_at"}
TOPIC_FIELDS = {"id", "project_id", "name", "description", "can_publish", "can_subscribe", "created_at", "updated_at"}
MESSAGE_FIELDS = {"id", "project_id", "topic_id", "topic", "payload", "qos", "retained", "expires_at", "created_at"}
API_KEY_FIELDS = {"id", "name", "key", "is_active", "last_used_at", "expires_at", "created_at"}
USER_FIELDS = {"id", "public_id", "name", "plan", "is_admin", "is_active", "created_at", "updated_at"}


def checked(response: httpx.Response) -> httpx.Response:
    """The response, after checking that it is JSON and carries no traceback."""
    assert response.headers.get("content-type", "").startswith("application/json"), (
        f"{response.request.method} {response.request.url.path}: {response.status_code} is not JSON: "
        f"{response.text[:300]!r}"
    )
    assert "Traceback" not in response.text, response.text[:500]
    response.json()
    return response


class Api:
    """An httpx client for one API key on a running Roost (keep-alive, one connection)."""

    def __init__(self, roost: RoostThread, key: str | None) -> None:
        self.roost = roost
        self.key = key
        headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{roost.http_port}", headers=headers, timeout=TIMEOUT)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 500:
            self.settle()
        return checked(response)

    def settle(self) -> None:
        """Wait until the server has finished with an unhandled exception: uvicorn logs its traceback *after*
        the 500 went out, and CPython 3.11's traceback formatting parses source with `ast`, whose recursion
        counter is shared by all threads (CPython gh-106905): pytest formatting a failure at the same time
        then dies with "SystemError: AST constructor recursion depth mismatch" (INTERNALERROR). The server
        handles one callback at a time, so once a later request is answered the logging is done. (The first
        try may meet the kept-alive connection that uvicorn closes after an unhandled exception.)"""
        for _ in range(3):
            try:
                self.http.get("/health")
                return
            except httpx.TransportError:
                continue

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def raw(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request whose answer is not checked (to look at it as it is)."""
        return self.http.request(method, path, **kwargs)

    def close(self) -> None:
        self.http.close()

    # Shortcuts that assert success and return the `data` object.
    def create_project(self, name: str = "project", **fields: Any) -> dict[str, Any]:
        return ok(self.post("/api/v1/projects", json={"name": name, **fields}), 201)["data"]

    def create_topic(self, project_id: int, name: str, **fields: Any) -> dict[str, Any]:
        return ok(self.post("/api/v1/topics", json={"project_id": project_id, "name": name, **fields}), 201)["data"]

    def create_device(self, project_id: int, device_id: str, **fields: Any) -> dict[str, Any]:
        body = {"project_id": project_id, "name": fields.pop("name", device_id), "device_id": device_id, **fields}
        return ok(self.post("/api/v1/devices", json=body), 201)["data"]

    def me(self) -> dict[str, Any]:
        return ok(self.get("/api/v1/users/me"))


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text[:500]}"
    body = response.json()
    assert isinstance(body, dict)
    return body


def api_error(response: httpx.Response, status: int, error: str | None = None, message: str | None = None) -> dict[str, Any]:
    """/api/v1's error body (icmqtt-rest-api-v1.md "Error Response"): {"error", "message"}, plus `errors` for
    field problems (422 only)."""
    body = ok(response, status)
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    allowed = {"error", "message", "errors"} if status == 422 else {"error", "message"}
    assert set(body) <= allowed, body
    if status == 422:
        assert isinstance(body.get("errors"), dict) and body["errors"], body
        assert all(isinstance(v, str) for v in body["errors"].values()), body
    if error is not None:
        assert body["error"] == error, body
    if message is not None:
        assert body["message"] == message, body
    return body


def field_errors(response: httpx.Response) -> dict[str, str]:
    """The `errors` of a 422 answer."""
    return api_error(response, 422)["errors"]  # type: ignore[no-any-return]


def mqtt_error(response: httpx.Response, status: int, message: str | None = None) -> dict[str, Any]:
    """/v1/mqtt's error body (mqtt-instances-api.md): only {"message"} (500s add "error")."""
    body = ok(response, status)
    assert set(body) == ({"message", "error"} if status >= 500 else {"message"}), body
    assert isinstance(body["message"], str) and body["message"], body
    if message is not None:
        assert body["message"] == message, body
    return body


class AsyncioRoostThread(RoostThread):
    """A RoostThread on asyncio's own event loop (Roost's loop where uvloop is not installed)."""

    def __init__(self, document: dict[str, Any]) -> None:
        super().__init__(document)
        self.loop.close()
        self.loop = asyncio.new_event_loop()


_TENANT_NUMBERS = itertools.count(1)


@dataclass
class Rest:
    """Tenants with API clients on one running Roost; every client is closed after the test.

    Tenants are fresh for each test (unique names), so tests sharing one Roost cannot see each other's
    resources, quotas or limits."""

    roost: RoostThread
    clients: list[Api] = field(default_factory=list)

    def tenant(self, name: str | None = None, plan: str = "free", is_admin: bool = False) -> tuple[Tenant, Api]:
        tenant = make_tenant(self.roost, name or f"tenant{next(_TENANT_NUMBERS)}", plan=plan, is_admin=is_admin)
        return tenant, self.api(self.key(tenant))

    def key(self, tenant: Tenant, name: str = "test key") -> str:
        return self.roost.run(tenant.services.api_keys.create(tenant.user, name)).key

    def api(self, key: str | None) -> Api:
        client = Api(self.roost, key)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.fixture(scope="module")
def shared_roost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostThread]:
    """One Roost (refusing anonymous MQTT clients) for a whole test module: each test makes its own tenants."""
    roost = RoostThread(roost_document(tmp_path_factory.mktemp("api"), allow_anonymous=False)).start()
    yield roost
    roost.stop()


@pytest.fixture
def rest(shared_roost: RoostThread) -> Iterator[Rest]:
    """A factory of tenants with API clients on the module's Roost."""
    pool = Rest(shared_roost)
    yield pool
    pool.close()
