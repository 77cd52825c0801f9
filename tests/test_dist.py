"""The single-file build: `scripts/dist.sh x86_64 aarch64` makes dist/roost-x86_64.pyz, which then runs on
its own (no virtualenv, no pip) against Debian's mosquitto clients with credentials it made itself, and
dist/roost-aarch64.pyz, whose aarch64 wheels must resolve; it is checked here for its extension modules and
run under emulation in tests/test_emulated_aarch64.py.

Bounded: the build gets BUILD_SECONDS (tests/dist_helpers.py; the wheels are cached in build/wheelhouse
after the first run, and the files are reused while their sources are unchanged); a build that cannot reach
the package index with nothing cached, or that takes longer, skips the test and says so.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.dist_helpers import ServeProcess, config_file, mosquitto, single_file

TIMEOUT = 15

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                       reason="builds and runs the linux x86-64 file"),
    pytest.mark.timeout(300),  # a first build (the module's fixture) may take up to BUILD_SECONDS
]


@pytest.fixture(scope="module")
def files() -> dict[str, Path]:
    if shutil.which("mosquitto_pub") is None or shutil.which("mosquitto_sub") is None:
        pytest.skip("mosquitto-clients not installed")
    return single_file("x86_64", "aarch64")


@pytest.fixture(scope="module")
def artifact(files: dict[str, Path]) -> Path:
    return files["x86_64"]


def test_aarch64_file_carries_aarch64_extension_modules_for_each_python(files: dict[str, Path]) -> None:
    names = zipfile.ZipFile(files["aarch64"]).namelist()
    for version in ("311", "312", "313"):
        assert f"site-packages/uvloop/loop.cpython-{version}-aarch64-linux-gnu.so" in names
        assert f"site-packages/_cffi_backend.cpython-{version}-aarch64-linux-gnu.so" in names
    assert "site-packages/cryptography/hazmat/bindings/_rust.abi3.so" in names
    assert not any("x86_64" in name for name in names)


def _run(artifact: Path, env: dict[str, str], *args: str) -> str:
    result = subprocess.run([str(artifact), *args], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_single_file_serves_mqtt_with_its_own_credentials(artifact: Path, tmp_path: Path) -> None:
    config = config_file(tmp_path, Path("data"))
    # A clean environment: no virtualenv on PATH, shiv unpacking into a fresh folder.
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "SHIV_ROOT": str(tmp_path / "shiv")}
    if shutil.which("python3", path=env["PATH"]) is None:
        env["PATH"] = os.environ["PATH"]
    assert _run(artifact, env, "--version").strip().startswith("roost ")
    assert "OK" in _run(artifact, env, "check-config", "--config", str(config))
    _run(artifact, env, "user", "add", "alice", "--plan", "starter", "--json", "--create", "--config", str(config))
    credentials = json.loads(_run(artifact, env, "mqtt", "add", "alice", "--json", "--config", str(config)))

    server = ServeProcess([str(artifact), "serve", "--config", str(config)], env, timeout=TIMEOUT)
    try:
        mqtt_port, http_port = server.wait_started()
        mosquitto("mosquitto_pub", mqtt_port, credentials, "-t", "demo/hello", "-m", "hi from the single file",
                  "-r", "-q", "1")
        received = mosquitto("mosquitto_sub", mqtt_port, credentials, "-t", "demo/#", "-C", "1", "-W", "10", "-v")
        assert received.strip() == "demo/hello hi from the single file"

        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=TIMEOUT).text
        assert 'roost_mqtt_messages_received_total{qos="1"}' in metrics
        assert "Save" not in _run(artifact, env, "backup", str(tmp_path / "copy.db"), "--config", str(config))
        assert (tmp_path / "copy.db").stat().st_size > 0
    except BaseException:
        server.kill()
        raise
    rest = server.stop()
    assert credentials["password"] not in rest
