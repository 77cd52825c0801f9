"""Attack 7 of issue 14: at `[log] level = "debug"` no log line of `roost serve`, library loggers
included, carries a secret.

aiosqlite logs every call it runs at DEBUG with its SQL parameters: password hashes, API key digests and
the Fernet ciphertext of MQTT instance passwords (which `data_dir/secret.key` decrypts). This test runs
the real process at debug, creates a user (CLI), API keys and MQTT instances (REST and CLI), signs in to
the dashboard and logs in over MQTT with right and wrong passwords, then searches everything the process
wrote for every secret and every stored hash and ciphertext, read back from the database file.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import httpx

from tests.durability.process import ROOST, RoostProcess
from tests.helpers import TIMEOUT, PahoClient


def _cli(roost: RoostProcess, *args: str, stdin: str = "") -> tuple[dict[str, object], str]:
    """Run `roost ARGS --json` against the running server's data; its JSON output and its standard error."""
    done = subprocess.run([ROOST, *args, "--config", str(roost.config), "--json"], input=stdin.encode(),
                          capture_output=True, timeout=60, check=True)
    return json.loads(done.stdout), done.stderr.decode(errors="replace")


def _stored_secrets(database: Path) -> list[str]:
    """Every hash, digest and ciphertext in the database, as text (a log line would show them so)."""
    found: list[str] = []
    with sqlite3.connect(database) as connection:
        for query in ("SELECT password_hash FROM users WHERE password_hash IS NOT NULL",
                      "SELECT secret_hash FROM mqtt_instances", "SELECT secret_encrypted FROM mqtt_instances",
                      "SELECT key_hash FROM api_keys", "SELECT secret_hash FROM api_keys"):
            for (value,) in connection.execute(query):
                text = value.decode() if isinstance(value, bytes) else str(value)
                found.append(text)
                found.append(text[:24])  # a prefix is enough to give a hash away (and survives repr's escapes)
    return found


def test_debug_logs_of_the_real_process_carry_no_secret(tmp_path: Path) -> None:
    roost = RoostProcess(tmp_path / "roost", "batched", extra_config='[log]\nlevel = "debug"\n')
    roost.start()
    secrets: list[str] = []
    cli_errors = ""
    try:
        password = "dashboard-password-5e0c71aa"
        secrets.append(password)
        created, errors = _cli(roost, "user", "add", "alice", "--plan", "enterprise", "--admin",
                               "--password-stdin", stdin=password + "\n")
        cli_errors += errors
        api_key = str(created["api_key"])
        secrets += [api_key, str(created["secret"])]
        base = f"http://127.0.0.1:{roost.http_port}"
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=base, headers=headers, timeout=TIMEOUT) as http:
            key = http.post("/api/v1/api-keys", json={"name": "second"})
            assert key.status_code == 201, key.text
            secrets += [key.json()["data"]["key"], key.json()["data"]["secret"]]
            instance = http.post("/v1/mqtt")
            assert instance.status_code == 201, instance.text
            username, instance_password = instance.json()["user"], instance.json()["password"]
            secrets.append(instance_password)
            signed_in = httpx.post(f"{base}/dashboard/session", json={"name": "alice", "password": password},
                                   timeout=TIMEOUT)
            assert signed_in.status_code == 200, signed_in.text
            secrets += [signed_in.cookies["roost_session"], signed_in.json()["data"]["csrf_token"]]
            wrong = httpx.post(f"{base}/dashboard/session", json={"name": "alice", "password": "wrong-guess-1d9f"},
                               timeout=TIMEOUT)
            assert wrong.status_code == 401
            secrets.append("wrong-guess-1d9f")
        other, errors = _cli(roost, "mqtt", "add", "alice")
        cli_errors += errors
        secrets.append(str(other["password"]))

        client = PahoClient(roost.mqtt_port, "logger-test", username=username, password=instance_password).connect()
        client.disconnect()
        refused = PahoClient(roost.mqtt_port, "guesser", username=username, password="mqtt-guess-77b2")
        refused.connect(expect_success=False)
        refused.client.loop_stop()
        secrets.append("mqtt-guess-77b2")
    finally:
        assert roost.terminate() == 0, roost.log_tail()

    everything = roost.log_path.read_text(errors="replace") + cli_errors
    assert " DEBUG " in everything, "the server did not log at debug level"
    assert "client logger-test connected" in everything  # a debug line of Roost's own: debug was on
    stored = _stored_secrets(roost.folder / "data" / "roost.db")
    assert len(stored) >= 10
    for secret in secrets + stored:
        assert secret not in everything, f"a secret reached the log: {secret!r}"
