"""Helpers for the tests of what Roost ships: the single files (tests/test_dist.py), the aarch64 file under
emulation (tests/test_emulated_aarch64.py) and the Debian packages (tests/test_deb.py).

`single_file(arch)` builds `dist/roost-ARCH.pyz` with scripts/dist.sh, or reuses the one there when the
sources it was built from are unchanged (a digest of them is kept in .cache/, which git ignores), so a
second run of the suite does not rebuild. `ServeProcess` is `roost serve` in a process of its own, however
it was started (the file, emulated, or the package's ExecStart), its JSON log lines read by a thread, with
readiness taken from the "started" line, which names the ports the OS chose. `emulated_aarch64_python()`
is Debian's arm64 Python under qemu-user (scripts/arm64-python.sh), cached in .cache/arm64.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
# The first build downloads the wheels (into build/wheelhouse); later ones work offline from there.
BUILD_SECONDS = 150
SETUP_SECONDS = 300  # the emulated Python: about 13 MB of Debian packages, downloaded once
# What a single file is built from: a change to any of these makes a new one.
_SOURCES = ("broker", "control", "storage", "certs", "pyproject.toml", "scripts/dist.sh")
_OFFLINE_SIGNS = ("No matching distribution", "Could not find a version", "NewConnectionError",
                  "Network is unreachable", "Temporary failure")


def _source_digest() -> str:
    digest = hashlib.sha256()
    for name in _SOURCES:
        path = REPO / name
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
        )
        for file in files:
            digest.update(str(file.relative_to(REPO)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def single_file(*arches: str) -> dict[str, Path]:
    """dist/roost-ARCH.pyz for each of `arches`, built now unless the ones there match the sources.
    Skips the test when the build cannot reach the package index with nothing cached, or is too slow."""
    digest = _source_digest()
    stamps = {arch: CACHE / f"dist-{arch}.digest" for arch in arches}
    files = {arch: REPO / "dist" / f"roost-{arch}.pyz" for arch in arches}
    stale = [arch for arch in arches
             if not files[arch].is_file() or not stamps[arch].is_file() or stamps[arch].read_text() != digest]
    if stale:
        try:
            result = subprocess.run(
                ["bash", "scripts/dist.sh", *stale], cwd=REPO, capture_output=True, text=True,
                timeout=BUILD_SECONDS, env={**os.environ, "PYTHON": sys.executable},
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"building the single file took longer than {BUILD_SECONDS} s (a slow first download?)")
        if result.returncode != 0:
            output = result.stdout + result.stderr
            if any(sign in output for sign in _OFFLINE_SIGNS):
                pytest.skip(f"the package index is unreachable and build/wheelhouse lacks a wheel: {output[-300:]}")
            pytest.fail(f"scripts/dist.sh failed:\n{output[-3000:]}")
        CACHE.mkdir(exist_ok=True)
        for arch in stale:
            stamps[arch].write_text(digest)
    for path in files.values():
        assert path.is_file() and os.access(path, os.X_OK), path
    return files


def emulated_aarch64_python() -> Path:
    """The emulated aarch64 Python 3.11 of scripts/arm64-python.sh (made once into .cache/arm64). Skips
    the test, saying why, where it cannot be made."""
    folder = CACHE / "arm64"
    if not (folder / "complete").exists() and os.geteuid() != 0:
        pytest.skip("the emulated aarch64 Python is made with apt-get the first time, which needs root: "
                    "run `sudo bash scripts/arm64-python.sh` once")
    try:
        result = subprocess.run(["bash", "scripts/arm64-python.sh", str(folder)], cwd=REPO, capture_output=True,
                                text=True, timeout=SETUP_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.skip(f"making the emulated aarch64 Python took longer than {SETUP_SECONDS} s")
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if any(sign in output for sign in ("Failed to fetch", "Temporary failure", "Unable to locate",
                                           "Could not resolve")):
            pytest.skip(f"no Debian archive to download the arm64 packages from: {output[-300:]}")
        pytest.fail(f"scripts/arm64-python.sh failed:\n{output[-3000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def config_file(folder: Path, data_dir: Path, *, tls_port: int = 0, extra: str = "") -> Path:
    """A roost.toml on 127.0.0.1, MQTT and HTTP on ports the OS chooses, JSON logs."""
    path = folder / "roost.toml"
    path.write_text(
        f'data_dir = "{data_dir}"\n'
        '[mqtt]\nhost = "127.0.0.1"\nport = 0\n'
        '[http]\nhost = "127.0.0.1"\nport = 0\n'
        f'[tls]\nhost = "127.0.0.1"\nport = {tls_port}\nwatch_interval = 0.0\n'
        '[log]\nformat = "json"\n'
        f"{extra}"
    )
    return path


def mosquitto(tool: str, port: int, credentials: dict[str, str], *args: str, cafile: Path | None = None) -> str:
    """Run Debian's mosquitto_pub or mosquitto_sub against 127.0.0.1:`port` with `credentials` (the JSON of
    `roost mqtt add`), over TLS trusting only `cafile` if given; its output."""
    login = ["-h", "127.0.0.1", "-p", str(port), "-u", credentials["user"], "-P", credentials["password"]]
    if cafile is not None:
        login += ["--cafile", str(cafile)]
    result = subprocess.run([tool, *login, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


class ServeProcess:
    """`roost serve` started by `command`; its JSON log lines (stderr) collected by a thread."""

    def __init__(self, command: list[str], env: dict[str, str], *, timeout: float, cwd: Path | None = None,
                 umask: int = -1) -> None:
        self.timeout = timeout
        self.process = subprocess.Popen(
            command, env=env, cwd=cwd, umask=umask, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[dict[str, str]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def _next(self) -> dict[str, str]:
        try:
            line = self.lines.get(timeout=self.timeout)
        except queue.Empty:
            raise AssertionError(f"roost serve said nothing for {self.timeout} s") from None
        assert line is not None, f"roost serve ended (status {self.process.wait(self.timeout)}): {self.seen[-5:]}"
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
        self.seen.append(entry)
        return entry

    def wait_started(self) -> tuple[int, int]:
        """Wait for the "started" line; the MQTT and HTTP ports it names. Every line before it must be
        info or warning."""
        while True:
            entry = self._next()
            assert entry["level"] in ("info", "warning"), entry
            message = entry["message"]
            if message.startswith("Roost ") and " started: " in message:
                mqtt = int(message.split("MQTT on ")[1].split(",")[0].rsplit(":", 1)[1])
                http = int(message.split("HTTP on ")[1].split(",")[0].rsplit(":", 1)[1])
                return mqtt, http

    def stop(self) -> str:
        """SIGTERM, then the rest of the log; fails unless it stopped cleanly (status 0, "stopped")."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(self.timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(self.timeout)
            raise
        rest = []
        while (line := self.lines.get(timeout=self.timeout)) is not None:
            rest.append(line)
        assert status == 0, rest
        assert any(json.loads(line)["message"] == "stopped" for line in rest), rest
        return "".join(rest)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(self.timeout)
