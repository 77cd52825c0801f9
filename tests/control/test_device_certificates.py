"""Device certificates over the REST API and the CLI, and the CA certificate at GET /api/v1/ca.pem."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from certs.authority import describe
from control.cli import main
from tests.helpers import TIMEOUT, RoostThread


def _request(roost: RoostThread, method: str, path: str, key: str | None = None) -> tuple[int, Any, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{roost.http_port}{path}", method=method)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


@pytest.fixture
def alice(roost: RoostThread) -> tuple[str, int, Any]:
    services = roost.roost.services  # type: ignore[union-attr]
    created = roost.run(services.users.create(None, "alice"))
    project = roost.run(services.projects.create(created.user, "home"))
    device = roost.run(services.devices.create(created.user, project.id, "Lamp", "lamp-1"))
    return created.api_key.key, device.device.id, created.user


def test_the_ca_certificate_is_public(roost: RoostThread) -> None:
    status, headers, body = _request(roost, "GET", "/api/v1/ca.pem")
    assert status == 200
    assert headers["content-type"].startswith("application/x-pem-file")
    assert describe(body).is_ca
    assert body == (roost.config.data_dir / "certs" / "ca.pem").read_bytes()


def test_issue_and_revoke_a_device_certificate(roost: RoostThread, alice) -> None:
    key, row_id, user = alice
    assert _request(roost, "POST", f"/api/v1/devices/{row_id}/certificate")[0] == 401
    status, _, body = _request(roost, "POST", f"/api/v1/devices/{row_id}/certificate", key)
    assert status == 201, body
    data = json.loads(body)["data"]
    certificate = data["certificate"]
    info = describe(certificate["certificate_pem"].encode())
    assert (info.common_name, info.serial) == ("lamp-1", certificate["serial"])
    assert "PRIVATE KEY" in certificate["private_key_pem"]
    assert describe(certificate["ca_certificate_pem"].encode()).is_ca
    stored = roost.run(roost.roost.services.context.store.devices.get(row_id, user_id=None))  # type: ignore[union-attr]
    assert stored.cert_serial == info.serial
    status, _, body = _request(roost, "DELETE", f"/api/v1/devices/{row_id}/certificate", key)
    assert status == 200, body
    stored = roost.run(roost.roost.services.context.store.devices.get(row_id, user_id=None))  # type: ignore[union-attr]
    assert stored.cert_serial is None


def test_another_tenants_device_is_not_found(roost: RoostThread, alice) -> None:
    _, row_id, _ = alice
    bob = roost.run(roost.roost.services.users.create(None, "bob"))  # type: ignore[union-attr]
    assert _request(roost, "POST", f"/api/v1/devices/{row_id}/certificate", bob.api_key.key)[0] == 404
    assert _request(roost, "DELETE", f"/api/v1/devices/{row_id}/certificate", bob.api_key.key)[0] == 404
    assert _request(roost, "POST", "/api/v1/devices/999999/certificate", bob.api_key.key)[0] == 404


def test_cli_issues_a_certificate_into_files(tmp_path: Path, capsys) -> None:
    config = tmp_path / "roost.toml"
    config.write_text('data_dir = "data"\n')
    assert main(["user", "add", "carol", "--json", "--create", "--config", str(config)]) == 0
    capsys.readouterr()
    import asyncio

    from control.services import Services
    from storage.store import open_store

    async def make_device() -> None:
        store = await open_store(tmp_path / "data")
        try:
            services = Services.build(store, {})
            user = await store.users.get_by_name("carol")
            project = await services.projects.create(user, "p")
            await services.devices.create(user, project.id, "Gate", "gate-7")
        finally:
            await store.close()

    asyncio.run(make_device())
    out = tmp_path / "out"
    assert main(["device", "cert", "gate-7", "--out", str(out), "--json", "--config", str(config)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert describe(printed["certificate_pem"].encode()).common_name == "gate-7"
    assert main(["device", "cert", "gate-7", "--out", str(out), "--config", str(config)]) == 0
    assert describe((out / "gate-7.pem").read_bytes()).common_name == "gate-7"
    assert oct(os.stat(out / "gate-7.key").st_mode & 0o777) == "0o600"
    assert (out / "ca.pem").read_bytes() == (tmp_path / "data" / "certs" / "ca.pem").read_bytes()
    assert main(["device", "revoke-cert", "gate-7", "--config", str(config)]) == 0
    assert main(["device", "cert", "nobody", "--config", str(config)]) == 1
