"""dist/roost-aarch64.pyz, the file a Raspberry Pi runs, run here under emulation: Debian's own arm64
Python 3.11 (the one Raspberry Pi OS bookworm has) under qemu-user, made by scripts/arm64-python.sh into
.cache/arm64 (gitignored, reused by later runs). Its management commands make a user and MQTT
credentials, and `roost serve` answers /health, hands out its CA, serves MQTT over TCP and over TLS with a
server certificate that a child Python (emulated too) made, and keeps a retained message across a restart.

No binfmt_misc registration is needed: the emulated interpreter's `sys.executable` is a shell script that
starts qemu again (see scripts/arm64-python.sh). Skipped, saying why, where the emulated Python cannot be
made: not root the first time (apt), or no Debian archive to download from. Slow by nature (qemu
translates every instruction): about a minute once .cache/ holds the interpreter and the built file.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.dist_helpers import ServeProcess, config_file, emulated_aarch64_python, mosquitto, single_file
from tests.session_helpers import free_port

# Under emulation a start takes ~10 s and a management command ~5 s on this 2-core machine.
TIMEOUT = 120

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                       reason="emulates aarch64 on a linux x86-64 machine"),
    pytest.mark.timeout(600),
]


@pytest.fixture(scope="module")
def emulated_python() -> Path:
    if shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto-clients not installed")
    return emulated_aarch64_python()


@pytest.fixture(scope="module")
def arm_file(emulated_python: Path) -> Path:
    return single_file("aarch64")["aarch64"]


def _cli(command: list[str], env: dict[str, str], *args: str) -> str:
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_aarch64_file_serves_mqtt_tls_and_http_under_emulation_and_keeps_retained_messages(
    emulated_python: Path, arm_file: Path, tmp_path: Path
) -> None:
    tls_port = free_port()
    config = config_file(tmp_path, tmp_path / "data", tls_port=tls_port)
    # A clean environment, as on a Pi: no virtualenv, the file unpacking into a fresh folder.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHIV_ROOT": str(tmp_path / "shiv")}
    roost = [str(emulated_python), str(arm_file)]
    assert _cli(roost, env, "--version").strip().startswith("roost ")
    _cli(roost, env, "user", "add", "pi", "--plan", "starter", "--json", "--create", "--config", str(config))
    credentials = json.loads(_cli(roost, env, "mqtt", "add", "pi", "--json", "--config", str(config)))

    server = ServeProcess([*roost, "serve", "--config", str(config)], env, timeout=TIMEOUT)
    try:
        mqtt_port, http_port = server.wait_started()
        # The serving process is the emulator running aarch64 code, not this machine's Python.
        assert os.path.basename(os.readlink(f"/proc/{server.process.pid}/exe")) == "qemu-aarch64-static"
        assert any(entry["message"] == f"MQTT listener tls on 127.0.0.1:{tls_port}" for entry in server.seen)

        health = httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=TIMEOUT)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        ca = tmp_path / "roost-ca.pem"
        ca.write_bytes(httpx.get(f"http://127.0.0.1:{http_port}/api/v1/ca.pem", timeout=TIMEOUT).content)
        assert ca.read_bytes() == (tmp_path / "data" / "certs" / "ca.pem").read_bytes()

        # Published over TLS (the CA from the API is the only one trusted), retained, read back over TCP.
        mosquitto("mosquitto_pub", tls_port, credentials, "-t", "pi/hello", "-m", "from aarch64", "-r", "-q", "1",
                   cafile=ca)
        received = mosquitto("mosquitto_sub", mqtt_port, credentials, "-t", "pi/#", "-C", "1", "-W", "20", "-v")
        assert received.strip() == "pi/hello from aarch64"
    except BaseException:
        server.kill()
        raise
    server.stop()

    again = ServeProcess([*roost, "serve", "--config", str(config)], env, timeout=TIMEOUT)
    try:
        again.wait_started()
        received = mosquitto("mosquitto_sub", tls_port, credentials, "-t", "pi/#", "-C", "1", "-W", "20", "-v",
                              cafile=ca)
        assert received.strip() == "pi/hello from aarch64"  # the retained message survived the restart
    except BaseException:
        again.kill()
        raise
    log = again.stop()
    assert credentials["password"] not in log
