"""Attack 4 of issue 14: an open `GET /api/v1/live` stream kept delivering after its API key was deleted,
its dashboard session signed out, or its user deactivated.

Now the stream ends (`event: revoked`, then the server closes the response), as a revoked MQTT client is
kicked. Each test opens a real stream over HTTP, proves it delivers, revokes through the REST API or the
dashboard's sign-out, and waits for the stream to end; then a message published after that must not have
been sent on it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest

from storage.store import open_store
from tests.dashboard.conftest import PASSWORD, user_with_password
from tests.helpers import TIMEOUT, PahoClient, RoostThread, roost_document
from tests.tenant_helpers import Tenant, make_tenant


@pytest.fixture(scope="module")
def roost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoostThread]:
    instance = RoostThread(roost_document(tmp_path_factory.mktemp("live-revocation"), allow_anonymous=False)).start()
    yield instance
    instance.stop()


_names = iter(range(1, 10_000))


class Stream:
    """A live stream read by a thread: the events it got, and whether the server ended it."""

    def __init__(self, client: httpx.Client, **kwargs: Any) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.ready = threading.Event()
        self.ended = threading.Event()
        # Reads may wait longer than the tests wait for the end: only the server can end the stream in time.
        self._context = client.stream("GET", "/api/v1/live", params={"filter": "live/#"},
                                      timeout=httpx.Timeout(TIMEOUT, read=6 * TIMEOUT), **kwargs)
        self.response = self._context.__enter__()
        assert self.response.status_code == 200, self.response.read()
        self._got: threading.Condition = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.ready.wait(TIMEOUT)

    def _read(self) -> None:
        name = ""
        try:
            for line in self.response.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    with self._got:
                        self.events.append((name, json.loads(line[6:])))
                        self._got.notify_all()
                    if name == "ready":
                        self.ready.set()
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()

    def wait_message(self, payload: str) -> None:
        with self._got:
            assert self._got.wait_for(lambda: payload in self.payloads(), TIMEOUT), self.events

    def payloads(self) -> list[str]:
        """The text of each message's payload (`{format, size, text, truncated}`, see docs/dashboard.md)."""
        return [data["payload"]["text"] for name, data in self.events if name == "message"]

    def close(self) -> None:
        self._context.__exit__(None, None, None)


def _http(roost: RoostThread, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=f"http://127.0.0.1:{roost.http_port}", headers=headers, timeout=TIMEOUT)


def _revoked(stream: Stream, publisher: PahoClient) -> None:
    """The stream ended with `revoked`, and a message published afterwards was not sent on it."""
    assert stream.ended.wait(TIMEOUT), "the live stream outlived its revocation"
    assert stream.events[-1][0] == "revoked", stream.events
    publisher.publish("live/after", b"after", qos=1)
    assert "after" not in stream.payloads()


@pytest.fixture
def tenant(roost: RoostThread) -> Tenant:
    return user_with_password(roost, f"viewer{next(_names)}")


@pytest.fixture
def publisher(tenant: Tenant) -> Iterator[PahoClient]:
    client = tenant.client(tenant.instance(), client_id="pub").connect()
    yield client
    client.close()


@pytest.mark.parametrize("how", ["delete", "deactivate"])
def test_a_stream_ends_when_its_api_key_is_revoked(roost: RoostThread, tenant: Tenant, publisher: PahoClient,
                                                   how: str) -> None:
    viewer = roost.run(tenant.services.api_keys.create(tenant.user, "viewer"))
    manager = roost.run(tenant.services.api_keys.create(tenant.user, "manager"))
    with closing(_http(roost, viewer.key)) as client, closing(_http(roost, manager.key)) as admin:
        stream = Stream(client)
        try:
            publisher.publish("live/before", b"before", qos=1)
            stream.wait_message("before")
            if how == "delete":
                assert admin.delete(f"/api/v1/api-keys/{viewer.api_key.id}").status_code == 200
            else:
                assert admin.post(f"/api/v1/api-keys/{viewer.api_key.id}/deactivate").status_code == 200
            _revoked(stream, publisher)
            assert client.get("/api/v1/live").status_code == 401  # and it cannot come back
        finally:
            stream.close()


def test_a_stream_ends_when_its_dashboard_session_signs_out(roost: RoostThread, tenant: Tenant,
                                                            publisher: PahoClient) -> None:
    with closing(_http(roost)) as client:
        signed_in = client.post("/dashboard/session", json={"name": tenant.user.name, "password": PASSWORD})
        assert signed_in.status_code == 200
        csrf = signed_in.json()["data"]["csrf_token"]
        stream = Stream(client)
        try:
            publisher.publish("live/before", b"before", qos=1)
            stream.wait_message("before")
            assert client.delete("/dashboard/session", headers={"X-CSRF-Token": csrf}).status_code == 200
            _revoked(stream, publisher)
        finally:
            stream.close()


@pytest.mark.parametrize("credential", ["api key", "session"])
def test_a_stream_ends_when_its_user_is_deactivated(roost: RoostThread, tenant: Tenant, publisher: PahoClient,
                                                    credential: str) -> None:
    admin = make_tenant(roost, f"admin{next(_names)}", is_admin=True)
    admin_key = roost.run(admin.services.api_keys.create(admin.user, "admin")).key
    viewer_key = roost.run(tenant.services.api_keys.create(tenant.user, "viewer")).key
    with closing(_http(roost, viewer_key if credential == "api key" else None)) as client, \
            closing(_http(roost, admin_key)) as admin_http:
        if credential == "session":
            assert client.post("/dashboard/session",
                               json={"name": tenant.user.name, "password": PASSWORD}).status_code == 200
        stream = Stream(client)
        try:
            publisher.publish("live/before", b"before", qos=1)
            stream.wait_message("before")
            response = admin_http.put(f"/api/v1/users/{tenant.user.id}", json={"is_active": False})
            assert response.status_code == 200, response.text
            # (The publisher is the user's too, and is kicked: nothing can publish here afterwards.)
            assert stream.ended.wait(TIMEOUT), "the live stream outlived its user's deactivation"
            assert stream.events[-1][0] == "revoked", stream.events
        finally:
            stream.close()


def test_a_stream_opened_elsewhere_keeps_going(roost: RoostThread, tenant: Tenant, publisher: PahoClient) -> None:
    """Revoking one key ends only the streams opened with it: another key's stream of the same user goes on."""
    first = roost.run(tenant.services.api_keys.create(tenant.user, "first"))
    second = roost.run(tenant.services.api_keys.create(tenant.user, "second"))
    with closing(_http(roost, first.key)) as one, closing(_http(roost, second.key)) as two:
        doomed, kept = Stream(one), Stream(two)
        try:
            assert two.delete(f"/api/v1/api-keys/{first.api_key.id}").status_code == 200
            _revoked(doomed, publisher)
            kept.wait_message("after")  # published by _revoked: the other stream still delivers
            assert not kept.ended.is_set()
        finally:
            doomed.close()
            kept.close()


def test_a_stream_ends_when_another_process_deactivates_its_user(roost: RoostThread, tenant: Tenant,
                                                                 publisher: PahoClient) -> None:
    """The CLI writes the database from another process, without telling the server: the stream notices
    the database's change token within a second and re-checks."""
    viewer_key = roost.run(tenant.services.api_keys.create(tenant.user, "viewer")).key
    with closing(_http(roost, viewer_key)) as client:
        stream = Stream(client)
        try:
            publisher.publish("live/before", b"before", qos=1)
            stream.wait_message("before")

            async def deactivate() -> None:
                async with await open_store(roost.config.data_dir) as store:
                    await store.users.set_active(tenant.user.id, False)

            asyncio.run(deactivate())
            assert stream.ended.wait(TIMEOUT), "the live stream outlived its user's deactivation elsewhere"
            assert stream.events[-1][0] == "revoked", stream.events
        finally:
            stream.close()
