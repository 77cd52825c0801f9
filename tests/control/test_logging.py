"""Logs: one line per event that matters, text or JSON, and never a password, key, secret or payload.

The secrecy test drives the events that log about a client (refusals with wrong and right-but-refused
credentials, a denied publish, an exhausted quota, a kick) at DEBUG level, with every secret and payload
made unique, and then searches every record Roost logged.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from control.config import LogConfig
from control.logging_setup import JSONFormatter, setup_logging
from tests.helpers import TIMEOUT, PahoClient, RoostThread, roost_document
from tests.tenant_helpers import make_tenant


@pytest.fixture
def roost(tmp_path: Path) -> Iterator[RoostThread]:
    document = roost_document(tmp_path, allow_anonymous=False)
    document["plans"] = {"tiny": {"messages_per_hour": 2}}
    instance = RoostThread(document).start()
    yield instance
    instance.stop()


def _refused(port: int, client_id: str, username: str | None, password: str | None) -> None:
    client = PahoClient(port, client_id, username=username, password=password)
    client.connect(expect_success=False)
    client.client.loop_stop()


def test_no_secret_or_payload_in_any_log_line(roost: RoostThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = []
    admin = make_tenant(roost, "admin", is_admin=True)
    created = roost.run(admin.services.api_keys.create(admin.user, "ops key"))
    secrets += [created.key, created.secret]
    tenant = make_tenant(roost, "tenant", plan="tiny")
    username, password = tenant.instance()
    secrets.append(password)

    _refused(roost.mqtt_port, "guesser", username, "not-the-password-0f3c9a")
    secrets.append("not-the-password-0f3c9a")
    _refused(roost.mqtt_port, "stranger", "nobody-such", "stranger-password-77e1")
    secrets.append("stranger-password-77e1")
    _refused(roost.mqtt_port, "anonymous", None, None)

    client = tenant.client((username, password), "sensor").connect()
    try:
        payloads = [b"payload-ok-5b1d", b"payload-quota-1-9c2e", b"payload-quota-2-41aa", b"payload-denied-3e8f"]
        client.publish("readings", payloads[0], qos=1)
        client.publish("readings", b"payload-second-c0de", qos=1)
        payloads.append(b"payload-second-c0de")
        for payload in payloads[1:3]:  # past the tiny plan's 2 an hour: PUBACK 0x97, logged once
            client.publish("readings", payload, qos=1)
        client.publish("$SYS/forbidden", payloads[3], qos=1)  # a tenant may not publish to `$` topics
        clients = httpx.get(f"http://127.0.0.1:{roost.http_port}/api/v1/clients",
                            headers={"Authorization": f"Bearer {created.key}"}, timeout=TIMEOUT).json()["data"]
        kicked = next(c for c in clients if c["client_id"] == "sensor")
        response = httpx.post(f"http://127.0.0.1:{roost.http_port}/api/v1/clients/{kicked['id']}/kick",
                              headers={"Authorization": f"Bearer {created.key}"}, timeout=TIMEOUT)
        assert response.status_code == 200
        assert client.disconnected.wait(TIMEOUT)
    finally:
        client.client.loop_stop()

    # The formatted records and pytest's own text rendering of them (tracebacks included).
    everything = "\n".join(record.getMessage() for record in caplog.records) + "\n" + caplog.text
    for secret in secrets:
        assert secret not in everything, f"a secret reached the log: {secret!r}"
    for payload in payloads:
        assert payload.decode() not in everything, f"a payload reached the log: {payload!r}"

    messages = [record.getMessage() for record in caplog.records if record.name.startswith("roost")]
    refusals = [m for m in messages if m.startswith("refused")]
    assert any("guesser" in m and "reason 0x86" in m for m in refusals), refusals
    assert any("stranger" in m for m in refusals), refusals
    assert len(refusals) == 3, refusals  # one line per refused client, not two
    assert sum("quota" in m for m in messages) == 1, messages
    assert any(m.startswith("kicked client sensor") for m in messages), messages


def test_json_format_is_one_object_per_line() -> None:
    stream = io.StringIO()
    handler = setup_logging(LogConfig(level="info", format="json"), stream)
    try:
        log = logging.getLogger("roost.test")
        log.info("refused %s from %s: reason 0x%02x", "c1", "10.0.0.1:5000", 0x86)
        log.debug("below the level: %s", "not formatted")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed")
    finally:
        logging.getLogger().removeHandler(handler)
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(entries) == 2
    first, second = entries
    assert first["message"] == "refused c1 from 10.0.0.1:5000: reason 0x86"
    assert first["level"] == "info" and first["logger"] == "roost.test"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]


def test_text_format_is_the_default() -> None:
    assert LogConfig().format == "text"
    record = logging.LogRecord("roost", logging.INFO, __file__, 1, "started on %d", (1883,), None)
    assert json.loads(JSONFormatter().format(record))["message"] == "started on 1883"
