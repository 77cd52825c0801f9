"""`GET /health` on the HTTP port, over a real HTTP connection."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from broker.settings import VERSION
from tests.helpers import TIMEOUT, RoostThread


def _get(roost: RoostThread, path: str) -> tuple[int, str, bytes]:
    url = f"http://127.0.0.1:{roost.http_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status, response.headers.get("content-type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), exc.read()


def test_health_is_ok_with_the_version(roost: RoostThread) -> None:
    status, content_type, body = _get(roost, "/health")
    assert status == 200
    assert content_type.startswith("application/json")
    document = json.loads(body)
    assert document["status"] == "ok"
    assert document["version"] == VERSION


def test_health_counts_connected_clients(roost: RoostThread, client_factory) -> None:
    before = json.loads(_get(roost, "/health")[2])
    assert before["clients_connected"] == 0
    client_factory("health-a")
    client_factory("health-b", version=4)
    after = json.loads(_get(roost, "/health")[2])
    assert after["clients_connected"] == 2
    assert isinstance(after["uptime_seconds"], int) and after["uptime_seconds"] >= 0


def test_unknown_path_is_404(roost: RoostThread) -> None:
    assert _get(roost, "/no-such-page")[0] == 404


def test_health_refuses_post(roost: RoostThread) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{roost.http_port}/health", data=b"", method="POST")
    try:
        urllib.request.urlopen(request, timeout=TIMEOUT)
        status = 200
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert status == 405
