"""The edge bridge (issue 16), side by side with a Mosquitto-to-Mosquitto bridge on the same machine.

    python -m bench.bridge [--messages 20000] [--outage 60] [--runs 1] [--output docs/benchmarks.md]

Each run starts, per gateway kind, a fresh upstream (Debian's mosquitto, anonymous, `persistence true`)
and a fresh gateway on free loopback ports in temp dirs:

- `roost`: `roost serve` with one `[[bridge]]` (forward `bench/#`, remote prefix `gw/`, QoS 1, the default
  outbox: fsynced at each commit) and `[storage] durability = "batched"`;
- `mosquitto`: mosquitto with `connection cloud` / `topic bench/# out 1 "" gw/`, `cleansession false`,
  `persistence true`, `autosave_interval 1`, `max_queued_messages 1000000`, `max_inflight_messages 100`.

A publisher sends QoS 1 messages numbered in their payload (64 bytes) to the gateway, keeping 100
unacknowledged; a subscriber on the upstream (3.1.1, clean session 0, QoS 1, acknowledging everything)
records which numbers arrive. Three scenarios, each on fresh processes:

- `forward`: messages/s from the first PUBLISH to the gateway until the last one reached the subscriber;
- `drain`: the upstream is stopped (gracefully: it keeps the subscriber's session), N messages are
  published and acknowledged by the gateway, the outage lasts `--outage` seconds, the upstream starts
  again and the subscriber reconnects at once: N / (the first -> the N-th message at the subscriber), and
  `reconnect_s`, upstream start -> the first message (the bridges' reconnect backoff: both are capped at
  5 s here, Roost `reconnect_max = 5.0`, Mosquitto `restart_timeout 1 5`);
- `kill`: the gateway gets SIGKILL once a third of N are acknowledged, and is started again on the same
  data; lost = acknowledged to the publisher but never at the subscriber (after the gateway restarted and
  went quiet for 5 s); duplicates = copies beyond the first;
- `kill_drain`: as `drain` with no wait, and the gateway gets SIGKILL once a third of the backlog reached
  the subscriber; lost and duplicates as in `kill`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import wire
from .brokers import HOST, _mosquitto_binary, ensure_mosquitto, free_port, mosquitto_version
from .durability import persistent_connect

TOPIC = "bench/bridge"
WINDOW = 100
PAYLOAD = 64
PROBE = 99_999_999


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port}")


class Process:
    """A broker process on a fixed port, started and stopped (or killed) any number of times."""

    def __init__(self, name: str, command: list[str], port: int, workdir: Path) -> None:
        self.name, self.command, self.port, self.workdir = name, command, port, workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.workdir / f"{self.name}.log", "ab")
        self.process = subprocess.Popen(self.command, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        log.close()
        _wait_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None


def upstream(workdir: Path) -> Process:
    port = free_port()
    (workdir / "upstream.conf").write_text(
        f"listener {port} {HOST}\nallow_anonymous true\npersistence true\npersistence_location {workdir}/\n"
        "persistence_file upstream.db\nmax_queued_messages 1000000\nmax_inflight_messages 100\nsys_interval 0\nset_tcp_nodelay true\n"
        "log_dest stderr\nlog_type error\nlog_type warning\n" + ("user root\n" if os.geteuid() == 0 else "")
    )
    return Process("upstream", [_mosquitto_binary(), "-c", str(workdir / "upstream.conf")], port, workdir)


DRAIN_RATE = 1000.0  # Roost's default; --drain-rate changes it


def gateway(kind: str, workdir: Path, upstream_port: int) -> Process:
    port = free_port()
    if kind == "mosquitto":
        (workdir / "gateway.conf").write_text(
            f"listener {port} {HOST}\nallow_anonymous true\npersistence true\npersistence_location {workdir}/\n"
            "persistence_file gateway.db\nautosave_interval 1\nmax_queued_messages 1000000\nmax_inflight_messages 100\nsys_interval 0\n"
            "set_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n"
            + ("user root\n" if os.geteuid() == 0 else "")
            + f"connection cloud\naddress {HOST}:{upstream_port}\nclientid gw-mosquitto\ncleansession false\n"
            'topic bench/# out 1 "" gw/\nrestart_timeout 1 5\n'
        )
        return Process("gateway", [_mosquitto_binary(), "-c", str(workdir / "gateway.conf")], port, workdir)
    (workdir / "roost.toml").write_text(
        f'data_dir = "{workdir / "data"}"\n[mqtt]\nhost = "{HOST}"\nport = {port}\nallow_anonymous = true\n'
        f'sys_interval = 0\nmax_inflight = 1000\n[http]\nhost = "{HOST}"\nport = {free_port()}\n[tls]\nport = 0\n'
        '[log]\nlevel = "warning"\n[storage]\ndurability = "batched"\n'
        f'[[bridge]]\nname = "cloud"\nurl = "mqtt://{HOST}:{upstream_port}"\nclient_id = "gw-roost"\n'
        'forward = ["bench/#"]\nremote_prefix = "gw/"\nqos = 1\ninflight = 100\nreconnect_max = 5.0\n'
        f"drain_rate = {DRAIN_RATE}\n"
    )
    script = Path(sys.executable).with_name("roost")
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "control.cli"]
    return Process("gateway", [*launcher, "serve", "--config", str(workdir / "roost.toml")], port, workdir)


@dataclass
class Subscriber:
    """The upstream's subscriber: persistent session, QoS 1, records every number that arrives."""

    port: int
    arrivals: list[int] = field(default_factory=list)
    first_at: float = 0.0
    last_at: float = 0.0
    stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def subscribe(self) -> None:
        sock, _, _ = persistent_connect(HOST, self.port, "bench-sub", 4, None)
        sock.setblocking(True)
        sock.sendall(wire.subscribe_packet(1, ["gw/#"], 1, 4))
        buf = b""
        while not any(first >> 4 == wire.SUBACK for first, _, _ in wire.split_frames(buf)[0]):
            buf += sock.recv(65536)
        sock.sendall(wire.disconnect_packet(4))
        sock.close()

    def start(self) -> None:
        self.stopping.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, buf, _ = persistent_connect(HOST, self.port, "bench-sub", 4, None)
            except Exception:
                time.sleep(0.05)  # the upstream is not back yet: try again
                continue
            sock.setblocking(True)
            sock.settimeout(0.2)
            with sock:
                while not self.stopping.is_set():
                    frames, used = wire.split_frames(buf)
                    acks = []
                    for first, start, end in frames:
                        if first >> 4 != wire.PUBLISH:
                            continue
                        packet_id, offset = wire.publish_fields(buf, first, start, 4)
                        self.arrivals.append(int(buf[offset:offset + 8]))
                        if packet_id:
                            acks.append(wire.puback_packet(packet_id))
                    if frames:
                        self.last_at = time.perf_counter()
                        self.first_at = self.first_at or self.last_at
                    buf = buf[used:]
                    try:
                        if acks:
                            sock.sendall(b"".join(acks))
                        chunk = sock.recv(1 << 16)
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                    if not chunk:
                        break
                    buf += chunk

    def wait_for(self, numbers: set[int], quiet: float, timeout: float) -> None:
        """Until every number in `numbers` arrived, or nothing arrived for `quiet` s, or `timeout`."""
        began = time.perf_counter()
        while time.perf_counter() - began < timeout:
            if numbers <= set(self.arrivals):
                return
            if self.last_at and time.perf_counter() - max(self.last_at, began) > quiet:
                return
            time.sleep(0.05)


def publish(port: int, first: int, count: int, acked: list[int], stop_after: int | None = None,
            timeout: float = 120.0) -> float:
    """QoS 1, WINDOW unacknowledged, numbers first..first+count-1; the acknowledged numbers go to `acked`.
    Returns the time of the first PUBLISH. Ends early (quietly) if the gateway goes away."""
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(wire.connect_packet(f"bench-pub-{first}", 4))
    buf = b""
    while not wire.split_frames(buf)[0]:
        buf += sock.recv(65536)
    buf = buf[wire.split_frames(buf)[1]:]
    pad = b"." * (PAYLOAD - 8)
    in_flight: dict[int, int] = {}
    sent = 0
    began = time.perf_counter()
    deadline = began + timeout
    with sock:
        try:
            while len(acked) < count and time.perf_counter() < deadline:
                out = []
                while len(in_flight) < WINDOW and sent < count:
                    number = first + sent
                    packet_id = sent % 65_535 + 1
                    in_flight[packet_id] = number
                    out.append(wire.publish_packet(TOPIC, b"%08d" % number + pad, 1, 4, packet_id))
                    sent += 1
                if out:
                    sock.sendall(b"".join(out))
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
                frames, used = wire.split_frames(buf)
                for kind, start, _ in frames:
                    if kind >> 4 == wire.PUBACK:
                        number = in_flight.pop((buf[start] << 8) | buf[start + 1], None)
                        if number is not None:
                            acked.append(number)
                            if stop_after is not None and len(acked) >= stop_after:
                                return began
                buf = buf[used:]
        except OSError:
            pass  # killed mid-stream: what was acknowledged is in `acked`
    return began


@contextlib.contextmanager
def pair(kind: str) -> Iterator[tuple[Process, Process, Subscriber]]:
    with tempfile.TemporaryDirectory(prefix=f"bench-bridge-{kind}-") as tmp:
        workdir = Path(tmp)
        up = upstream(workdir)
        up.start()
        subscriber = Subscriber(up.port)
        subscriber.subscribe()
        gw = gateway(kind, workdir, up.port)
        gw.start()
        try:
            # Ready when a probe goes through: the gateway's bridge connects in the background.
            subscriber.start()
            deadline = time.perf_counter() + 30
            while PROBE not in subscriber.arrivals and time.perf_counter() < deadline:
                publish(gw.port, PROBE, 1, [])
                subscriber.wait_for({PROBE}, quiet=2, timeout=2)
            if PROBE not in subscriber.arrivals:
                raise RuntimeError(f"the {kind} gateway's bridge did not carry a probe within 30 s")
            subscriber.stop()
            subscriber.arrivals.clear()
            subscriber.first_at = subscriber.last_at = 0.0
            yield up, gw, subscriber
        finally:
            subscriber.stop()
            gw.kill()
            up.kill()


def forward(kind: str, messages: int) -> dict[str, float]:
    with pair(kind) as (_up, gw, subscriber):
        subscriber.start()
        acked: list[int] = []
        began = publish(gw.port, 0, messages, acked)
        subscriber.wait_for(set(acked), quiet=10, timeout=300)
        arrived = len(set(subscriber.arrivals))
        return {"messages_s": arrived / (subscriber.last_at - began), "arrived": arrived, "acked": len(acked)}


def drain(kind: str, messages: int, outage: float) -> dict[str, float]:
    with pair(kind) as (up, gw, subscriber):
        up.stop()
        acked: list[int] = []
        publish(gw.port, 0, messages, acked)
        time.sleep(max(0.0, outage))  # the outage itself: what the scenario measures is after it
        started = time.perf_counter()
        up.start()
        subscriber.start()
        subscriber.wait_for(set(acked), quiet=15, timeout=600)
        arrived = len(set(subscriber.arrivals) & set(acked))
        return {"messages_s": arrived / (subscriber.last_at - subscriber.first_at), "arrived": arrived,
                "acked": len(acked), "reconnect_s": subscriber.first_at - started,
                "with_reconnect_messages_s": arrived / (subscriber.last_at - started)}


def kill(kind: str, messages: int) -> dict[str, float]:
    with pair(kind) as (_up, gw, subscriber):
        subscriber.start()
        acked: list[int] = []
        publish(gw.port, 0, messages, acked, stop_after=messages // 3)
        return _kill_and_count(gw, subscriber, acked, quiet=5)


def kill_drain(kind: str, messages: int) -> dict[str, float]:
    """`kill`, but while the gateway drains a backlog built up during an outage (no wait after it)."""
    with pair(kind) as (up, gw, subscriber):
        up.stop()
        acked: list[int] = []
        publish(gw.port, 0, messages, acked)
        up.start()
        subscriber.start()
        deadline = time.perf_counter() + 120
        while len(subscriber.arrivals) < messages // 3 and time.perf_counter() < deadline:
            time.sleep(0.01)  # watching the drain: kill once a third is through
        return _kill_and_count(gw, subscriber, acked, quiet=10)


def _kill_and_count(gw: Process, subscriber: Subscriber, acked: list[int], quiet: float) -> dict[str, float]:
    """SIGKILL the gateway, start it again on its data, and count what the subscriber never got."""
    gw.kill()
    gw.start()
    subscriber.wait_for(set(acked), quiet=quiet, timeout=300)
    time.sleep(1.0)  # late duplicates still on their way are counted too
    received = set(subscriber.arrivals)
    return {"acked": len(acked), "lost": len(set(acked) - received),
            "duplicates": len(subscriber.arrivals) - len(received)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the upstream is down in `drain`")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--kinds", default="roost,mosquitto")
    parser.add_argument("--drain-rate", type=float, default=1000.0,
                        help="the Roost bridge's drain_rate (messages/s; 0: unpaced)")
    args = parser.parse_args(argv)
    global DRAIN_RATE
    DRAIN_RATE = args.drain_rate
    ensure_mosquitto()
    kinds = args.kinds.split(",")
    rows: dict[str, list[dict[str, float]]] = {}
    for run in range(args.runs):
        for kind in (kinds if run % 2 == 0 else list(reversed(kinds))):
            for name, result in (
                ("forward", forward(kind, args.messages)),
                ("drain", drain(kind, args.messages, args.outage)),
                ("kill", kill(kind, args.messages)),
                ("kill_drain", kill_drain(kind, args.messages)),
            ):
                rows.setdefault(f"{kind} {name}", []).append(result)
                print(f"{kind:9} {name:10} " + "  ".join(f"{k}={v:.1f}" for k, v in result.items()), flush=True)
    command = "python -m bench.bridge " + shlex.join(argv if argv is not None else sys.argv[1:])
    print(f"\ncommand: {command}\nmosquitto: {mosquitto_version()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
