"""Upstreams for the bridge tests: Debian's mosquitto started on a free port with a generated config, a
second Roost, and a TCP proxy between the gateway and its upstream that can stall, drop or reset the link.

Readiness is awaited: a port that answers, a state the gateway reports; nothing sleeps and hopes.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TIMEOUT, PahoClient, RoostThread, roost_document


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = TIMEOUT) -> None:
    """Until something accepts on 127.0.0.1:port (the upstream's readiness)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing answers on port {port}") from None
            time.sleep(0.02)  # the process is still starting: look again


def wait_for(predicate: Callable[[], Any], timeout: float = TIMEOUT * 2, what: str = "condition") -> Any:
    """Until `predicate()` is truthy (a state the system reports); AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling a reported state, not waiting for time to pass


class Mosquitto:
    """Debian's mosquitto on 127.0.0.1, persistence in a temporary folder; `stop()` and `start()` again."""

    def __init__(self, folder: Path, port: int | None = None, extra: str = "", tls: dict[str, Path] | None = None) -> None:
        if shutil.which("mosquitto") is None:
            pytest.skip("mosquitto not installed (apt-get install -y mosquitto)")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "user root",  # else mosquitto started as root drops to its own user, who cannot write here
            "persistence true",
            f"persistence_location {folder}/",
            "autosave_interval 1",
            "max_inflight_messages 0",
            "max_queued_messages 1000000",
            f"log_dest file {folder}/mosquitto.log",
        ]
        if tls is not None:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
            if "require_certificate" in tls:
                lines += ["require_certificate true", "use_identity_as_username true"]
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n" + extra)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(TIMEOUT)
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        self.process = None


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of `target_port`. `stall()` stops carrying bytes (both ways) while
    keeping the sockets open (a silent network); `reset()` resets every connection; `refuse()` closes new
    ones at once; `resume()` undoes all of it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.stalled = threading.Event()
        self.refusing = False
        self.connections = 0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=TIMEOUT)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(None)
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                break
            if not data:
                break
            while self.stalled.is_set() and not self._closed:
                time.sleep(0.01)  # holding the bytes: this is what a stalled network does
            try:
                sink.sendall(data)
            except OSError:
                break
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        self.stalled.clear()
        self.refusing = False

    def reset(self) -> None:
        """RST every open connection (SO_LINGER 0), as a NAT box that forgot them does."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    sock.close()

    def refuse(self) -> None:
        self.refusing = True

    def close(self) -> None:
        self._closed = True
        self.stalled.clear()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept thread (close() alone does not)
        self.listener.close()
        self.reset()


def bridge_table(port: int, scheme: str = "mqtt", **overrides: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "name": "cloud",
        "url": f"{scheme}://127.0.0.1:{port}",
        "client_id": "gw-1",
        "forward": ["sensors/#"],
        "subscribe": ["cmd/#"],
        "remote_prefix": "site1/",
        "qos": 2,
        "keep_alive": 5,
        "reconnect_min": 0.05,
        "reconnect_max": 0.5,
    }
    table.update(overrides)
    return table


def gateway_document(folder: Path, *bridges: dict[str, Any], **mqtt: Any) -> dict[str, Any]:
    document = roost_document(folder, **mqtt)
    document["bridge"] = list(bridges)
    return document


@contextlib.contextmanager
def gateway(folder: Path, *bridges: dict[str, Any], **mqtt: Any) -> Iterator[RoostThread]:
    instance = RoostThread(gateway_document(folder, *bridges, **mqtt)).start()
    try:
        yield instance
    finally:
        instance.stop()


def bridge_status(instance: RoostThread, name: str = "cloud") -> dict[str, Any]:
    assert instance.roost is not None
    bridge = instance.roost.bridges.get(name)
    assert bridge is not None
    return instance.call(bridge.status)


def wait_connected(instance: RoostThread, name: str = "cloud", connects: int = 1) -> dict[str, Any]:
    return wait_for(lambda: (s := bridge_status(instance, name))["connected"] and s["connects"] >= connects and s,
                    what=f"bridge {name} connected")


def subscriber(port: int, topic: str, qos: int = 2, version: int = 5, client_id: str = "", clean: bool = True) -> PahoClient:
    client = PahoClient(port, client_id=client_id, version=version, clean=clean).connect()
    client.subscribe(topic, qos)
    return client
