"""The README's commands, taken from README.md itself and run as written, so that the README cannot drift.

The first command of the README starts Roost (`.venv/bin/roost serve`, after making the virtualenv, which
the test has already); then the "First steps" and "Dashboard" sections' commands run, in order, in one
bash shell in the same folder, as a user pastes them into a second terminal. Only the ports change: the
folder's `roost.toml` (found as `./roost.toml`, as a user's is) puts MQTT, TLS and HTTP on free ports, and
the two port numbers the README spells out (8080 and 8883) are replaced by those. `.venv` in the folder is
a link to the virtualenv running the tests.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.control.cli_helpers import ServedRoost

README = Path(__file__).resolve().parents[2] / "README.md"
PASSPHRASE = "a long passphrase"  # the one the README's dashboard step pipes in


def section_commands(title: str) -> list[str]:
    """The indented command lines of the README section `## title`, in order."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match is not None, f"README.md has no section {title!r}"
    return [line[4:] for line in match.group(1).splitlines() if line.startswith("    ") and line.strip()]


def opening_commands() -> list[str]:
    """The README's two opening commands (the developers' guide fixes both)."""
    text = README.read_text().split("\n---\n", 1)[0]
    return [line[4:] for line in text.splitlines() if line.startswith("    ")]


def test_the_readme_opens_with_the_two_commands_the_developers_guide_requires() -> None:
    setup, tests = opening_commands()
    assert setup == "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/roost serve"
    assert tests == "bash scripts/test.sh"


def _with_ports(command: str, roost: ServedRoost) -> str:
    return command.replace("localhost:8080", f"localhost:{roost.http_port}").replace("-p 8883", f"-p {roost.tls_port}")


@pytest.fixture
def readme_roost(tmp_path: Path) -> ServedRoost:
    folder = tmp_path / "fresh"
    folder.mkdir()
    (folder / ".venv").symlink_to(Path(sys.prefix))
    serve = opening_commands()[0].rsplit("&& ", 1)[1]
    assert serve == ".venv/bin/roost serve"
    roost = ServedRoost(folder)
    roost.start(tuple(serve.split()))
    yield roost
    assert roost.stop() == 0


def test_first_steps_and_dashboard_run_verbatim(readme_roost: ServedRoost, mosquitto_clients) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl not installed (the README downloads the CA with it)")
    roost = readme_roost
    commands = section_commands("First steps") + section_commands("Dashboard")
    assert any("--admin" in command for command in commands), "the README must show how to make an administrator"
    script = "set -euo pipefail\n" + "\n".join(_with_ports(command, roost) for command in commands) + "\n"
    started = time.monotonic()
    result = subprocess.run(["bash", "-c", script], cwd=roost.folder, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 60

    # What the user sees: the subscriber printed the message (over TCP, then the retained one over TLS).
    assert result.stdout.count("demo/hello hi") == 2, result.stdout
    api_key = re.search(r"^api_key\s+(sk_\S+)$", result.stdout, re.M)
    assert api_key is not None, result.stdout
    for name in ("roost-ca.pem", "sensor-1.pem", "sensor-1.key", "ca.pem"):
        assert (roost.folder / name).is_file(), name

    # The message history has what alice sent with her instance credentials and what the device sent
    # with its certificate (the recorder writes once a second: wait for it, bounded).
    status, body = roost.http("GET", "/api/v1/projects", key=api_key.group(1))
    assert status == 200, body
    project = next(p for p in json.loads(body)["data"] if p["name"] == "demo")
    deadline = time.monotonic() + 10
    while True:
        status, body = roost.http("GET", f"/api/v1/messages?project_id={project['id']}", key=api_key.group(1))
        assert status == 200, body
        payloads = {m["topic"]: m["payload"] for m in json.loads(body)["data"]}
        if len(payloads) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)  # the recorder's next batch
    assert payloads == {"demo/hello": "hi", "demo/temperature": "21.5"}

    # The dashboard step gave alice a password: she signs in with it.
    status, body = roost.http("POST", "/dashboard/session", {"name": "alice", "password": PASSPHRASE},
                              headers={"Origin": f"http://127.0.0.1:{roost.http_port}"})
    assert status == 200, body
    assert json.loads(body)["data"]["user"]["name"] == "alice"
