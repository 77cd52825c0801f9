"""`roost serve` and the `roost` command as a user runs them: real processes in a temporary folder whose
`roost.toml` (found as `./roost.toml`, the way a user's is) puts every listener (MQTT, TLS, HTTP) on a
free port.

Readiness is awaited: `ServedRoost.start()` returns when Roost logs that its ports accept connections.
Every command's standard error is checked for a Python traceback: an error must be words.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.session_helpers import free_port

ROOST = str(Path(sys.executable).with_name("roost"))
START_TIMEOUT = 30.0
READY = " started: MQTT on "  # control/server.py logs it once every port accepts connections


def no_traceback(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return result


def roost_cli(*args: str, cwd: Path, input: str | None = None, env: dict[str, str] | None = None,
              ok: bool = True, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run `roost ARGS` in `cwd` (no --config unless given: the configuration is found as a user's is)."""
    environment = {key: value for key, value in os.environ.items() if key != "ROOST_CONFIG"}
    environment["ROOST_DEBUG"] = "1"  # a bug shows its traceback, which fails the test that met it
    environment.update(env or {})
    result = no_traceback(subprocess.run([*prefix, ROOST, *args], cwd=cwd, input=input, capture_output=True,
                                         text=True, timeout=60, env=environment))
    if ok:
        assert result.returncode == 0, result.stderr
    return result


class ServedRoost:
    """`roost serve` run in `folder` on free ports; its console (stdout) and log (stderr) kept as lines."""

    def __init__(self, folder: Path, extra: str = "") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.extra = extra
        self.config = folder / "roost.toml"
        self._choose_ports()
        self.console: list[str] = []
        self.log: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []

    def _choose_ports(self) -> None:
        self.mqtt_port, self.http_port, self.tls_port = free_port(), free_port(), free_port()
        self.config.write_text(
            f"{self.extra}\n[mqtt]\nport = {self.mqtt_port}\n[http]\nport = {self.http_port}\n"
            f"[tls]\nport = {self.tls_port}\n"
        )

    def start(self, command: tuple[str, ...] = (ROOST, "serve")) -> ServedRoost:
        """Start, and return once it serves. A free port taken by another program between its choice and
        the bind (other test runs share the machine) means new ports and another try, at most three."""
        for attempt in range(3):
            try:
                return self._start(command)
            except AssertionError:
                if attempt == 2 or not any("already in use" in line for line in self.log):
                    raise
                self.log.clear()
                self.console.clear()
                self._choose_ports()
        raise AssertionError("unreachable")

    def _start(self, command: tuple[str, ...]) -> ServedRoost:
        ready = threading.Event()
        environment = {key: value for key, value in os.environ.items() if key != "ROOST_CONFIG"}
        process = self.process = subprocess.Popen(
            list(command), cwd=self.folder, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=environment,
        )

        def pump(stream: Any, lines: list[str], watch: bool) -> None:
            for line in stream:
                lines.append(line.rstrip("\n"))
                if watch and READY in line:
                    ready.set()
            ready.set()  # the process ended: start() looks at its exit code

        for stream, lines, watch in ((process.stdout, self.console, False), (process.stderr, self.log, True)):
            reader = threading.Thread(target=pump, args=(stream, lines, watch), daemon=True)
            reader.start()
            self._readers.append(reader)
        if not ready.wait(START_TIMEOUT) or process.poll() is not None:
            self.stop()
            raise AssertionError("roost serve did not start:\n" + "\n".join(self.log[-30:]))
        return self

    def wait_for_console(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first console line matching `pattern`; the lines are printed right after the ready log line."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.console):
                match = re.search(pattern, line)
                if match:
                    return match
            time.sleep(0.02)  # the console reader thread appends as the process prints
        raise AssertionError(f"no console line matches {pattern!r}: {self.console}")

    def cli(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return roost_cli(*args, cwd=self.folder, **kwargs)

    def cli_json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.cli(*args, "--json", **kwargs).stdout)

    def http(self, method: str, path: str, body: Any = None, key: str | None = None,
             headers: dict[str, str] | None = None, raw: bytes | None = None) -> tuple[int, str]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def stop(self) -> int:
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        for reader in self._readers:
            reader.join(timeout=5)
        self._readers = []
        self.process = None
        assert not any("Traceback" in line for line in self.log), "\n".join(self.log)
        return process.returncode
