"""The README's first steps, run as a user runs them: `roost serve` on its secure defaults (no anonymous
access), credentials made with the CLI, and Debian's mosquitto_sub/mosquitto_pub with -V 311 and -V 5.

Only the ports differ from the defaults: MQTT, TLS and HTTP on free ports, so the test can run beside
anything else (8883 included)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOST = str(Path(sys.executable).with_name("roost"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"roost serve exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # polling a port that is not open yet: nothing to wait on but time
    raise AssertionError(f"port {port} did not open")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    mqtt_port, http_port, tls_port = _free_port(), _free_port(), _free_port()
    config = tmp_path / "roost.toml"
    config.write_text(f'[mqtt]\nport = {mqtt_port}\n[http]\nport = {http_port}\n[tls]\nport = {tls_port}\n')
    process = subprocess.Popen([ROOST, "serve", "--config", str(config)], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_port(mqtt_port, process)
        yield config, mqtt_port
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
        assert process.returncode == 0, stderr.decode()


def _cli(*args: str) -> str:
    result = subprocess.run([ROOST, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("version", ["311", "5"])
def test_readme_first_steps_with_mosquitto_clients(served, mosquitto_clients, version: str) -> None:
    config, port = served
    _cli("user", "add", "alice", "--plan", "starter", "--config", str(config))
    credentials = json.loads(_cli("mqtt", "add", "alice", "--json", "--config", str(config)))
    auth = ["-h", "127.0.0.1", "-p", str(port), "-u", credentials["user"], "-P", credentials["password"], "-V", version]
    # The credentials work as soon as `roost mqtt add` returns (it tells the running server); a retained
    # message makes the subscriber's readiness irrelevant (it gets the message whenever it subscribes).
    result = subprocess.run(["mosquitto_pub", *auth, "-t", "demo/hello", "-m", "hi", "-r", "-q", "1"],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    received = subprocess.run(["mosquitto_sub", *auth, "-t", "demo/#", "-v", "-C", "1", "-W", "10"],
                              capture_output=True, text=True, timeout=15)
    assert received.stdout.strip() == "demo/hello hi", received.stderr


def test_fresh_roost_refuses_clients_without_credentials(served, mosquitto_clients) -> None:
    _, port = served
    result = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", "x", "-m", "y", "-V", "311"],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode != 0
    assert "not authorised" in (result.stderr + result.stdout).lower()


def test_cli_user_add_json_prints_id_key_and_secret(tmp_path: Path) -> None:
    config = tmp_path / "roost.toml"
    config.write_text("")
    values = json.loads(_cli("user", "add", "admin", "--admin", "--json", "--create", "--config", str(config)))
    assert set(values) == {"id", "api_key", "secret"}
    assert values["api_key"].startswith("sk_") and values["secret"].startswith("secret_")
    assert os.path.exists(tmp_path / "roost-data" / "roost.db")


def test_a_port_in_use_stops_roost_with_a_clear_error_and_nothing_left_running(tmp_path: Path) -> None:
    """A failed start (here the MQTT port is taken) exits non-zero at once, saying why: no database thread
    or background task may keep the process alive."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "roost.toml"
        config.write_text(f"[mqtt]\nhost = \"127.0.0.1\"\nport = {port}\n[http]\nport = {_free_port()}\n[tls]\nport = 0\n")
        result = subprocess.run([ROOST, "serve", "--config", str(config)], cwd=tmp_path,
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "already in use" in result.stderr.lower()
    assert f"127.0.0.1:{port} (mqtt.port)" in result.stderr and "Traceback" not in result.stderr
