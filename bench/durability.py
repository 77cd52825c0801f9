"""Durable state (issue 8): QoS 1 with a persistent session, Roost in each durability mode against Mosquitto
with persistence on, and the disk bytes each writes per 1,000 messages.

    python -m bench.durability [--quick] [--runs 3] [--offline-messages 20000] [--output docs/benchmarks.md]

Two scenarios, each run on a fresh broker process with a fresh data directory, the brokers' order rotated
from one run and scenario to the next, medians over the runs:

- `online`: 4 QoS 1 publishers, each keeping 100 PUBLISH unacknowledged (as `bench.run`'s qos1), to one
  subscriber with a persistent session (MQTT 3.1.1, clean session 0, subscribed to `bench/#` at QoS 1),
  online and acknowledging. Messages/s counted at the subscriber over the window.
- `offline`: the same subscriber subscribes, disconnects (DISCONNECT: its session stays), the 4 publishers
  publish N messages between them (QoS 1, window 100) while it is away; the rate is N / (first PUBLISH to
  last PUBACK). Then the benchmark waits until the broker has put the queue on disk (Roost: its
  `roost_state_pending_changes` gauge reads 0; Mosquitto with autosave: its next "Saving in-memory
  database" log line), the subscriber reconnects (session present) and drains: N / (CONNECT to the N-th
  PUBLISH), acknowledging each.

Brokers (`variants()`, `--brokers`): Roost with `[storage] durability = "off"`, `"batched"`, `"strict"`
(authenticated tenant, as `bench.brokers` starts it); Mosquitto 2.0 with `persistence true` in the run's
temp dir and `autosave_interval 1` (it saves its whole in-memory database when more than that has passed
since the last save: every 2 s in practice, see the saves/s figure), and Mosquitto with its default
autosave (1,800 s: within a run it saves only when stopped). Both get `max_queued_messages` 30,000.

Disk writes: `write_bytes` from `/proc/<broker pid>/io` (bytes the process caused to be sent to the block
device, counted when a page is dirtied, so at 4 KiB page granularity; the file system's journal, written by
a kernel thread, is not in it), taken at the start and end of the measuring window, per 1,000 messages. If
it stays 0 everywhere (tmpfs, some overlays) the growth of the state files is reported instead, and the
report says so. Roost's commits and rows come from GET /metrics (`roost_state_commits_total`,
`roost_state_rows_written_total`), and during the online window its `roost_state_pending_changes` is read
every 0.25 s (every Roost, "off" included, gets the same requests). fsync/fdatasync calls are counted with
`perf record -a` on the syscall tracepoints, kept for the broker's pid and, for Roost, for the descriptors
open on broker-state.db and its WAL (per-process perf counters count nothing on this kernel); `--no-perf`
or no perf: not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from broker.codec import Connect, encode

from . import wire
from .brokers import HOST, Broker, Limits, MosquittoBroker, RoostBroker, ensure_mosquitto, roost_revision
from .loadgen import BenchError, Publisher, Subscriber, Worker, _recv, _send_all, _send_whole, _sleep_until, gather
from .run import _fmt, _interrupt, machine, raise_file_limit, write_output
from .scenarios import _workers, median

BEGIN, END = "<!-- bench:durability:begin -->", "<!-- bench:durability:end -->"
TOPIC_FILTER = "bench/#"
SUBSCRIBER_ID = "durable-sub"
SAVE_LINE = "Saving in-memory database"


@dataclass(frozen=True, slots=True)
class DurabilityPlan:
    duration: float = 4.0
    warmup: float = 0.5
    publishers: int = 4
    window: int = 100
    payload: int = 64
    offline_messages: int = 20_000
    max_inflight: int = 1000
    max_queued_messages: int = 30_000  # above offline_messages: nothing is dropped while the subscriber is away
    mosquitto_autosave: int = 1

    @classmethod
    def quick(cls) -> DurabilityPlan:
        return cls(duration=0.6, warmup=0.2, offline_messages=2_000)

    def limits(self) -> Limits:
        return Limits(max_inflight=self.max_inflight, max_queued_messages=self.max_queued_messages)


# --- brokers --------------------------------------------------------------------------------------------------

class DurableRoost(RoostBroker):
    """Roost (authenticated tenant, as `bench.brokers` sets it up) with `[storage] durability = MODE`."""

    def __init__(self, workdir: Path, limits: Limits, durability: str = "batched") -> None:
        super().__init__(workdir, limits)
        self.durability = durability

    def write_config(self) -> None:
        super().write_config()
        with self.config_path.open("a") as config:
            config.write(f'\n[storage]\ndurability = "{self.durability}"\n')

    def state_files(self) -> list[Path]:
        return sorted((self.workdir / "data").glob("broker-state.db*"))


class PersistentMosquitto(MosquittoBroker):
    """Mosquitto as `bench.brokers` sets it up, with `persistence true` in the run's temp dir, and
    `autosave_interval` seconds (None: Mosquitto's default, 1,800 s). `log_type information` is on, so that
    each save's log line can be counted."""

    def __init__(self, workdir: Path, limits: Limits, autosave: int | None = 1) -> None:
        super().__init__(workdir, limits)
        self.autosave = autosave
        self.persist_dir = workdir / "persist"

    def write_config(self) -> None:
        super().write_config()
        self.persist_dir.mkdir(exist_ok=True)
        path = self.workdir / "mosquitto.conf"
        text = path.read_text()
        if "persistence false\n" not in text:
            raise RuntimeError("bench.brokers' Mosquitto config changed: no 'persistence false' line to replace")
        lines = ["persistence true", f"persistence_location {self.persist_dir}/", "persistence_file mosquitto.db",
                 "log_type information"]
        if self.autosave is not None:
            lines.append(f"autosave_interval {self.autosave}")
        path.write_text(text.replace("persistence false\n", "\n".join(lines) + "\n"))

    def state_files(self) -> list[Path]:
        return sorted(self.persist_dir.glob("*"))

    def saves(self) -> int:
        """How many times Mosquitto has logged that it saves its in-memory database."""
        try:
            return self.log_path.read_text(errors="replace").count(SAVE_LINE)
        except OSError:
            return 0


@dataclass(frozen=True, slots=True)
class Variant:
    key: str
    label: str
    kind: str  # "roost" or "mosquitto"
    option: Any

    def make(self, workdir: Path, limits: Limits) -> Broker:
        if self.kind == "roost":
            return DurableRoost(workdir, limits, durability=self.option)
        return PersistentMosquitto(workdir, limits, autosave=self.option)


def variants(plan: DurabilityPlan) -> list[Variant]:
    return [
        Variant("roost-off", 'Roost, durability "off"', "roost", "off"),
        Variant("roost-batched", 'Roost, durability "batched"', "roost", "batched"),
        Variant("roost-strict", 'Roost, durability "strict"', "roost", "strict"),
        Variant("mosq-autosave", f"Mosquitto, persistence, autosave_interval {plan.mosquitto_autosave}",
                "mosquitto", plan.mosquitto_autosave),
        Variant("mosq-default", "Mosquitto, persistence, default autosave (1800 s)", "mosquitto", None),
    ]


@contextlib.contextmanager
def start_variant(variant: Variant, limits: Limits) -> Iterator[Broker]:
    with tempfile.TemporaryDirectory(prefix=f"bench-dur-{variant.key}-") as tmp:
        broker = variant.make(Path(tmp), limits)
        try:
            broker.start()
            yield broker
        finally:
            broker.stop()


# --- what the broker did -------------------------------------------------------------------------------------

def proc_io(pid: int) -> dict[str, int]:
    values = {}
    with open(f"/proc/{pid}/io") as io:
        for line in io:
            name, _, value = line.partition(":")
            values[name.strip()] = int(value)
    return values


def roost_metrics(broker: Broker) -> dict[str, float]:
    """Roost's durable-state counters from GET /metrics; {} if it has none (durability off, or an old Roost)."""
    assert isinstance(broker, RoostBroker)
    wanted = {"roost_state_commits_total": "commits", "roost_state_rows_written_total": "rows",
              "roost_state_pending_changes": "pending", "roost_state_commit_failures_total": "failures"}
    with urllib.request.urlopen(f"http://{HOST}:{broker.http_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            found[wanted[name]] = float(value)
    return found


@dataclass(slots=True)
class Snapshot:
    at: float
    io: dict[str, int]
    cpu: float
    files: int
    metrics: dict[str, float]
    saves: int


def snapshot(broker: Broker) -> Snapshot:
    at = time.perf_counter()
    io = proc_io(broker.pid)
    cpu = broker.cpu_seconds()
    files = sum(p.stat().st_size for p in broker.state_files() if p.is_file())  # type: ignore[attr-defined]
    metrics = roost_metrics(broker) if isinstance(broker, RoostBroker) else {}
    saves = broker.saves() if isinstance(broker, PersistentMosquitto) else 0
    return Snapshot(at, io, cpu, files, metrics, saves)


def wait_on_disk(broker: Broker, since: Snapshot, timeout: float = 5.0) -> float:
    """Wait until what the broker holds is on disk: Roost, no pending changes (at least one commit interval
    for a Roost without the gauge); Mosquitto with autosave, one save logged after `since` (plus a moment to
    write it); otherwise a short pause. Returns the seconds waited."""
    began = time.perf_counter()
    deadline = began + timeout
    if isinstance(broker, DurableRoost) and broker.durability != "off":
        time.sleep(0.15)
        while time.perf_counter() < deadline:
            if roost_metrics(broker).get("pending", 0.0) == 0.0:
                break
            time.sleep(0.05)
    elif isinstance(broker, PersistentMosquitto) and broker.autosave is not None:
        while time.perf_counter() < deadline and broker.saves() <= since.saves:
            time.sleep(0.05)
        time.sleep(0.2)
    else:
        time.sleep(0.3)
    return time.perf_counter() - began


class FsyncCounter:
    """fsync + fdatasync calls of one process between `start()` and `stop()`, from `perf record -a` on the
    syscall tracepoints with CLOCK_MONOTONIC time stamps (so the window can be cut to perf_counter() instants).
    Unavailable (None) without perf or tracepoints."""

    EVENTS = "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync"

    def __init__(self, folder: Path) -> None:
        self.out = folder / f"fsync-{time.monotonic_ns()}.data"
        self.process: subprocess.Popen[bytes] | None = None
        self.events: list[tuple[float, int]] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("perf") is not None and os.geteuid() == 0

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["perf", "record", "-q", "-a", "-k", "CLOCK_MONOTONIC", "-o", str(self.out), "-e", self.EVENTS],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def times(self, pid: int, t_from: float, t_to: float, fds: set[int] | None = None) -> list[float] | None:
        """When `pid` (any of its threads) called fsync or fdatasync in [t_from, t_to), on `fds` only if
        given; None if unknown. The first call stops the recording."""
        if self.events is None:
            self.stop()
            self.events = self._read(pid)
        if self.events is None:
            return None
        return [t for t, fd in self.events if t_from <= t < t_to and (fds is None or fd in fds)]

    def _read(self, pid: int) -> list[tuple[float, int]] | None:
        if not self.out.exists():
            return None
        done = subprocess.run(["perf", "script", "-i", str(self.out), "-F", "pid,time,trace"], capture_output=True,
                              text=True, timeout=60)
        if done.returncode:
            return None
        events = []
        for line in done.stdout.splitlines():
            match = re.match(r"\s*(\d+)\s+([\d.]+):\s*fd: (0x[0-9a-f]+)", line)
            if match and int(match.group(1)) == pid:
                events.append((float(match.group(2)), int(match.group(3), 16)))
        return events


def sync_figures(counter: FsyncCounter | None, broker: Broker, t_from: float, t_to: float,
                 fds: tuple[set[int] | None, set[int] | None], messages: float, prefix: str = "") -> dict[str, float]:
    """fsync+fdatasync calls on the state files in a window: count, per second, messages per call, and the
    longest time between two of them (or from the window's edges), i.e. the longest a change could wait."""
    files, main = fds
    times = counter.times(broker.pid, t_from, t_to, files) if counter is not None else None
    if times is None:
        return {}
    seconds = t_to - t_from
    edges = [t_from, *sorted(times), t_to]
    out = {prefix + "fsyncs": float(len(times)), prefix + "fsyncs_per_s": len(times) / seconds,
           prefix + "msgs_per_fsync": messages / len(times) if times else float("nan"),
           prefix + "max_sync_gap_s": max(b - a for a, b in zip(edges, edges[1:]))}
    if main is not None and counter is not None:
        # SQLite syncs the main file only when a checkpoint copies the WAL's pages into it.
        out[prefix + "checkpoint_fsyncs"] = float(len(counter.times(broker.pid, t_from, t_to, main) or []))
    return out


def main_db_fds(broker: Broker, fds: set[int] | None) -> set[int] | None:
    """Of `fds`, those open on broker-state.db itself (not its -wal or -shm)."""
    if fds is None:
        return None
    found = set()
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{broker.pid}/fd/{fd}").endswith("broker-state.db"):
                found.add(fd)
    return found


def state_fds(broker: Broker) -> set[int] | None:
    """Roost: the descriptors open on broker-state.db and its WAL (roost.db, the control plane's, is left
    out); Mosquitto: None (every sync it makes is a save)."""
    if not isinstance(broker, RoostBroker):
        return None
    found = set()
    folder = Path(f"/proc/{broker.pid}/fd")
    for entry in folder.iterdir():
        with contextlib.suppress(OSError):
            if "broker-state.db" in os.readlink(entry):
                found.add(int(entry.name))
    return found


@contextlib.contextmanager
def fsync_counter(enabled: bool) -> Iterator[FsyncCounter | None]:
    if not enabled:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="bench-dur-perf-") as tmp:
        counter = FsyncCounter(Path(tmp))
        counter.start()
        time.sleep(0.3)  # perf's start-up, before the window opens
        try:
            yield counter
        finally:
            counter.stop()


def activity(broker: Broker, before: Snapshot, after: Snapshot, messages: float, prefix: str = "") -> dict[str, float]:
    """What the broker wrote and did between two snapshots, absolute and per message."""
    seconds = after.at - before.at
    written = after.io["write_bytes"] - before.io["write_bytes"]
    out = {
        "write_bytes": float(written),
        "cancelled_bytes": float(after.io["cancelled_write_bytes"] - before.io["cancelled_write_bytes"]),
        "file_growth": float(after.files - before.files),
        "cpu": (after.cpu - before.cpu) / seconds if seconds > 0 else float("nan"),
        # CPU time per message: unlike msg/s, not lowered when other jobs take the broker's core away.
        "cpu_us_per_msg": (after.cpu - before.cpu) / messages * 1e6 if messages else float("nan"),
        "kb_per_1000": written / 1024 / messages * 1000 if messages else float("nan"),
        "growth_kb_per_1000": (after.files - before.files) / 1024 / messages * 1000 if messages else float("nan"),
    }
    if "commits" in after.metrics and "commits" in before.metrics:
        commits = after.metrics["commits"] - before.metrics["commits"]
        rows = after.metrics["rows"] - before.metrics["rows"]
        out |= {"commits": commits, "commits_per_s": commits / seconds, "rows": rows,
                "rows_per_1000": rows / messages * 1000 if messages else float("nan"),
                "msgs_per_commit": messages / commits if commits else float("nan"),
                "failures": after.metrics.get("failures", 0.0) - before.metrics.get("failures", 0.0)}
    if isinstance(broker, PersistentMosquitto):
        saves = after.saves - before.saves
        out |= {"saves": float(saves), "saves_per_s": saves / seconds}
    return {prefix + k: v for k, v in out.items()}


# --- clients -------------------------------------------------------------------------------------------------

def persistent_connect(host: str, port: int, client_id: str, version: int, credentials: wire.Credentials | None,
                       timeout: float = 10.0) -> tuple[socket.socket, bytes, bool]:
    """Like `loadgen.mqtt_connect`, with clean session 0: the socket, bytes after the CONNACK, session present."""
    packet = encode(Connect(client_id=client_id, protocol_version=version, clean_start=False, keep_alive=600,
                            username=credentials.username if credentials else None,
                            password=credentials.password.encode() if credentials else None), version)
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    deadline = time.perf_counter() + timeout
    _send_all(sock, packet, deadline)
    # Not `_read_frames`: a resumed session's queued PUBLISH often share the CONNACK's segment, and the
    # bytes after the first packet must be kept whole.
    buf = b""
    while True:
        frames, _ = wire.split_frames(buf)
        if frames:
            break
        if time.perf_counter() > deadline:
            sock.close()
            raise BenchError(f"no CONNACK for {client_id!r}")
        chunk = _recv(sock, max(0.0, deadline - time.perf_counter()))
        if chunk == b"":
            sock.close()
            raise BenchError(f"broker closed the connection of {client_id!r} before CONNACK")
        buf += chunk or b""
    first, start, end = frames[0]
    body, rest = buf[start:end], buf[end:]
    if first >> 4 != wire.CONNACK or len(body) < 2 or body[1] != 0:
        sock.close()
        raise BenchError(f"persistent CONNECT of {client_id!r} refused: {bytes(body[:2]).hex()}")
    return sock, rest, bool(body[0] & 1)


class DurableSubscriber(Subscriber):
    """One subscriber with a persistent session (3.1.1 clean session 0), which can go away and come back."""

    def connect_persistent(self) -> bool:
        sock, rest, present = persistent_connect(self.host, self.port, self.name, self.version, self.credentials)
        self.socks, self.pending = [sock], [rest]
        return present

    def leave(self) -> None:
        """DISCONNECT and close: the session, its subscription and what it is sent from now on stay."""
        for sock in self.socks:
            with contextlib.suppress(OSError):
                _send_whole(sock, wire.disconnect_packet(self.version), time.perf_counter() + 5)
                sock.close()
        self.socks, self.pending = [], []

    def drain(self, want: int, quiet: float, timeout: float) -> dict[str, float]:  # type: ignore[override]
        """Reconnect and read (acknowledging) until `want` PUBLISH arrived, or nothing came for `quiet` s."""
        began = time.perf_counter()
        sock, buf, present = persistent_connect(self.host, self.port, self.name, self.version, self.credentials)
        self.socks, self.pending = [sock], [b""]
        connected = time.perf_counter()
        deadline = began + timeout
        count = duplicates = 0
        last = connected
        acks: dict[int, bytes] = {}
        while count < want and time.perf_counter() < deadline:
            frames, used = wire.split_frames(buf)
            out = []
            for first, start, _ in frames:
                if first >> 4 != wire.PUBLISH:
                    continue
                count += 1
                duplicates += bool(first & 0x08)
                packet_id, _ = wire.publish_fields(buf, first, start, self.version)
                if packet_id:
                    ack = acks.get(packet_id)
                    if ack is None:
                        ack = acks[packet_id] = wire.puback_packet(packet_id)
                    out.append(ack)
            if frames:
                last = time.perf_counter()
            buf = buf[used:]
            if out and not _send_whole(sock, b"".join(out), deadline):
                break
            if count >= want:
                break
            chunk = _recv(sock, min(quiet, max(0.0, deadline - time.perf_counter())))
            if chunk == b"":
                raise BenchError("broker closed the subscriber's connection during the drain")
            if chunk is None:
                if time.perf_counter() - last >= quiet:
                    break
                continue
            buf += chunk
        self.pending = [buf]
        return {"count": float(count), "duplicates": float(duplicates), "session_present": float(present),
                "connect_s": connected - began, "seconds": last - began}


class CountedPublisher(Publisher):
    """QoS 1 with a window of unacknowledged PUBLISH, like `Publisher.windowed`, stopping after `count`."""

    def publish_count(self, topic: str, payload_size: int, window: int, count: int, t_start: float,
                      deadline: float) -> dict[str, float]:
        delay = t_start - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        began = time.perf_counter()
        acked = self.windowed([topic], payload_size, window, began, deadline, count=count)
        return {"acked": float(acked), "began": began, "done": time.perf_counter()}


# --- scenarios -----------------------------------------------------------------------------------------------

def _spawn(started: list[Worker], broker: Broker, cls: type, name: str, n: int = 1) -> list[Worker]:
    workers = [Worker(cls, HOST, broker.port, 4, broker.credentials, name if n == 1 else f"{name}{i}")
               for i in range(n)]
    started.extend(workers)
    return workers


def sample_pending(broker: Broker, until: float, every: float = 0.25) -> float:
    """Roost with durable state: the most changes waiting for a commit, read from /metrics every `every` s
    until `until` (NaN for other brokers). Roost "off" is polled too, so every Roost pays the same requests."""
    highest = float("nan")
    while True:
        now = time.perf_counter()
        if now >= until:
            return highest
        if isinstance(broker, RoostBroker):
            pending = roost_metrics(broker).get("pending")
            if pending is not None:
                highest = pending if highest != highest else max(highest, pending)
        time.sleep(min(every, max(0.0, until - time.perf_counter())))


def online(broker: Broker, plan: DurabilityPlan, perf: bool) -> dict[str, float]:
    with _workers() as started:
        sub = _spawn(started, broker, DurableSubscriber, SUBSCRIBER_ID)
        pubs = _spawn(started, broker, Publisher, "durable-pub", plan.publishers)
        gather(sub, "connect_persistent")
        gather(sub, "subscribe", [TOPIC_FILTER], 1)
        gather(pubs, "connect")
        with fsync_counter(perf) as fsyncs:
            t0 = time.perf_counter() + 0.3
            t_start = t0 + plan.warmup
            t_end = t_start + plan.duration
            sub[0].send("receive", "ack", t_start, t_end, t_end + 0.3)
            for index, worker in enumerate(pubs):
                worker.send("windowed", [f"bench/d/{index}"], plan.payload, plan.window, t0, t_end)
            _sleep_until(t_start)
            before = snapshot(broker)
            pending = sample_pending(broker, t_end - 0.05)
            _sleep_until(t_end)
            after = snapshot(broker)
            files = state_fds(broker)
            fds = (files, main_db_fds(broker, files))
            timeout = plan.warmup + plan.duration + 30
            acked = sum(worker.result(timeout) for worker in pubs)
            answer = sub[0].result(timeout)
            received = answer["count"]
            syncs = sync_figures(fsyncs, broker, before.at, after.at, fds, received)
    out = {"rate": received / plan.duration, "acked_rate": acked / (plan.warmup + plan.duration),
           "max_gap_s": answer["max_gap_s"], "pending_max": pending}
    out |= activity(broker, before, after, received)
    out |= syncs
    return out


def offline(broker: Broker, plan: DurabilityPlan, perf: bool) -> dict[str, float]:
    n = plan.offline_messages
    share = [n // plan.publishers + (1 if i < n % plan.publishers else 0) for i in range(plan.publishers)]
    with _workers() as started:
        sub = _spawn(started, broker, DurableSubscriber, SUBSCRIBER_ID)
        pubs = _spawn(started, broker, CountedPublisher, "durable-pub", plan.publishers)
        gather(sub, "connect_persistent")
        gather(sub, "subscribe", [TOPIC_FILTER], 1)
        gather(sub, "leave")
        gather(pubs, "connect")
        with fsync_counter(perf) as fsyncs:
            time.sleep(0.2)  # the session's own changes (subscription, disconnect) are written by now
            t0 = time.perf_counter() + 0.2
            before = snapshot(broker)
            for index, worker in enumerate(pubs):
                worker.send("publish_count", f"bench/d/{index}", plan.payload, plan.window, share[index], t0, t0 + 120)
            answers = [worker.result(150) for worker in pubs]
            published = snapshot(broker)
            waited = wait_on_disk(broker, published)
            queued = snapshot(broker)
            sub[0].send("drain", n, 3.0, 120.0)
            drained = sub[0].result(150)
            wait_on_disk(broker, queued)
            after = snapshot(broker)
            files = state_fds(broker)
            fds = (files, main_db_fds(broker, files))
            syncs = sync_figures(fsyncs, broker, before.at, queued.at, fds, n, "queue_")
            syncs |= sync_figures(fsyncs, broker, queued.at, after.at, fds, drained["count"], "drain_")
    acked = sum(a["acked"] for a in answers)
    if acked < n:
        raise RuntimeError(f"only {acked:.0f} of {n} QoS 1 PUBLISH were acknowledged")
    seconds = max(a["done"] for a in answers) - min(a["began"] for a in answers)
    out = {"publish_rate": n / seconds, "publish_s": seconds, "settle_s": waited,
           "drain_rate": drained["count"] / drained["seconds"] if drained["seconds"] else float("nan"),
           "drained": drained["count"], "drain_s": drained["seconds"], "session_present": drained["session_present"],
           "duplicates": drained["duplicates"]}
    out |= activity(broker, before, queued, n, "queue_")
    out |= activity(broker, queued, after, drained["count"], "drain_")
    out |= syncs
    return out


SCENARIOS: dict[str, Callable[[Broker, DurabilityPlan, bool], dict[str, float]]] = {
    "online": online, "offline": offline,
}


# --- running and reporting -----------------------------------------------------------------------------------

Results = dict[tuple[str, str], list[dict[str, float]]]


def run_all(chosen: list[Variant], scenarios: list[str], runs: int, plan: DurabilityPlan,
            perf: bool) -> tuple[Results, list[str]]:
    results: Results = {(s, v.key): [] for s in scenarios for v in chosen}
    errors: list[str] = []
    for run in range(runs):
        for index, scenario in enumerate(scenarios):
            shift = (run * len(scenarios) + index) % len(chosen)
            order = chosen[shift:] + chosen[:shift]
            if (run + index) % 2:
                order = order[::-1]
            for variant in order:
                began = time.perf_counter()
                try:
                    with start_variant(variant, plan.limits()) as broker:
                        values = SCENARIOS[scenario](broker, plan, perf)
                        problems = [line for line in broker.log_tail(200).splitlines()
                                    if re.search(r"error|traceback|exception|critical", line, re.I)]
                        if problems and variant.kind == "roost":
                            errors.append(f"run {run + 1}, {scenario}, {variant.key}: Roost logged: "
                                          + " | ".join(problems[-3:]))
                except Exception as exc:  # one failed measurement must not lose the others
                    values = {}
                    errors.append(f"run {run + 1}, {scenario}, {variant.key}: {exc}")
                    traceback.print_exc(file=sys.stderr)
                results[(scenario, variant.key)].append(values)
                shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if k in SHOWN) or "FAILED"
                print(f"[run {run + 1}/{runs}] {scenario:7} {variant.key:13} {shown}  "
                      f"({time.perf_counter() - began:.1f} s)", file=sys.stderr, flush=True)
    return results, errors


SHOWN = {"rate", "cpu_us_per_msg", "kb_per_1000", "commits_per_s", "msgs_per_commit", "fsyncs_per_s", "saves", "max_sync_gap_s",
         "pending_max", "publish_rate", "drain_rate", "queue_kb_per_1000", "drain_kb_per_1000", "queue_commits",
         "queue_fsyncs", "drained"}


def _med(results: Results, scenario: str, key: str, figure: str) -> float:
    return median([run.get(figure, float("nan")) for run in results.get((scenario, key), [])])


def _cell(value: float, unit: str = "") -> str:
    return "" if value != value else _fmt(value) + unit


def online_table(results: Results, chosen: list[Variant]) -> str:
    base = _med(results, "online", "mosq-autosave", "rate")
    rows = [
        "| broker | msg/s at the subscriber | vs Mosquitto autosave | publishers' acked msg/s "
        "| disk KB written per 1,000 msgs | broker CPU (cores) | broker CPU per msg received (µs) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in chosen:
        m = lambda figure: _med(results, "online", v.key, figure)  # noqa: E731
        rows.append(f"| {v.label} | {_cell(m('rate'))} | {_cell(m('rate') / base if base else float('nan'))} "
                    f"| {_cell(m('acked_rate'))} | {_cell(m('kb_per_1000'))} | {_cell(m('cpu'))} "
                    f"| {_cell(m('cpu_us_per_msg'))} |")
    return "\n".join(rows) + "\n"


def online_costs(results: Results, chosen: list[Variant]) -> str:
    rows = [
        "| broker | commits/s (Roost), saves/s (Mosquitto) | msgs per commit | rows written per 1,000 msgs "
        "| fsync+fdatasync/s on the state files | msgs per fsync | longest time without a sync (s) "
        "| most changes pending (Roost) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in chosen:
        m = lambda figure: _med(results, "online", v.key, figure)  # noqa: E731
        commits = m("commits_per_s") if v.kind == "roost" else m("saves_per_s")
        rows.append(f"| {v.label} | {_cell(commits)} | {_cell(m('msgs_per_commit'))} | {_cell(m('rows_per_1000'))} "
                    f"| {_cell(m('fsyncs_per_s'))} | {_cell(m('msgs_per_fsync'))} "
                    f"| {'none in the window' if m('fsyncs') == 0 else _cell(m('max_sync_gap_s'))} "
                    f"| {_cell(m('pending_max'))} |")
    return "\n".join(rows) + "\n"


def offline_table(results: Results, chosen: list[Variant], plan: DurabilityPlan) -> str:
    rows = [
        f"| broker | queuing {plan.offline_messages:,} msgs: publish msg/s | CPU per msg (µs) | disk KB per 1,000 "
        "queued | commits (Roost), saves (Mosquitto) | fsync+fdatasync | drain msg/s | CPU per msg (µs) "
        "| delivered (each run) | disk KB per 1,000 drained | commits (saves) | fsync+fdatasync |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for v in chosen:
        m = lambda figure: _med(results, "offline", v.key, figure)  # noqa: E731
        unit = "commits" if v.kind == "roost" else "saves"
        delivered = [run.get("drained", float("nan")) for run in results.get(("offline", v.key), [])]
        rows.append(
            f"| {v.label} | {_cell(m('publish_rate'))} | {_cell(m('queue_cpu_us_per_msg'))} "
            f"| {_cell(m('queue_kb_per_1000'))} | {_cell(m('queue_' + unit))} "
            f"| {_cell(m('queue_fsyncs'))} | {_cell(m('drain_rate'))} | {_cell(m('drain_cpu_us_per_msg'))} "
            f"| {', '.join(_fmt(d) for d in delivered)} "
            f"| {_cell(m('drain_kb_per_1000'))} | {_cell(m('drain_' + unit))} | {_cell(m('drain_fsyncs'))} |")
    return "\n".join(rows) + "\n"


# Figures left out of "Every run": derived from others there (rates per second or per message), or checks
# that are shown only when they are not zero.
_DERIVED = ("_per_s", "_per_1000", "msgs_per_", "growth_kb", "_per_msg")
_CHECKS = ("cancelled_bytes", "failures", "duplicates")


def _shown_in_details(key: str, runs: list[dict[str, float]]) -> bool:
    if key in ("kb_per_1000", "queue_kb_per_1000", "drain_kb_per_1000"):
        return True
    if any(part in key for part in _DERIVED):
        return False
    if key.endswith(_CHECKS):
        return any(run.get(key, 0.0) not in (0.0,) for run in runs)
    return True


def details(results: Results, scenarios: list[str], chosen: list[Variant]) -> str:
    rows = ["| scenario | broker | figure | runs |", "| --- | --- | --- | --- |"]
    for scenario in scenarios:
        for v in chosen:
            runs = results[(scenario, v.key)]
            keys = sorted({k for run in runs for k in run if _shown_in_details(k, runs)})
            if not keys:
                rows.append(f"| {scenario} | {v.key} | (failed) | |")
            for key in keys:
                rows.append(f"| {scenario} | {v.key} | {key} | "
                            f"{', '.join(_fmt(run.get(key, float('nan'))) for run in runs)} |")
    return "\n".join(rows) + "\n"


def io_source(results: Results) -> str:
    """Which disk figure the tables show: write_bytes, unless every run read 0 (then file growth)."""
    written = [run.get(k, 0.0) for runs in results.values() for run in runs
               for k in ("write_bytes", "queue_write_bytes")]
    return "write_bytes" if any(w > 0 for w in written) else "file_growth"


def fallback_to_files(results: Results) -> None:
    """/proc/PID/io write_bytes read 0 everywhere (tmpfs, overlay): report the state files' growth instead."""
    for runs in results.values():
        for run in runs:
            for prefix in ("", "queue_", "drain_"):
                if prefix + "growth_kb_per_1000" in run:
                    run[prefix + "kb_per_1000"] = run[prefix + "growth_kb_per_1000"]


def report(command: str, info: dict[str, str], plan: DurabilityPlan, runs: int, chosen: list[Variant],
           scenarios: list[str], results: Results, errors: list[str], seconds: float, perf: bool) -> str:
    source = io_source(results)
    parts = [
        BEGIN, "", "## Durable state (issue 8)", "",
        "QoS 1 with a persistent session (MQTT 3.1.1, clean session 0): Roost in each `[storage] durability` "
        "mode against Mosquitto with `persistence true`, from `bench/durability.py`.", "",
        f"    {command}", "",
        f"- {info['nproc']} cores: {info['cpu']}; Linux {info['kernel']}; data dirs on {info['fs']}",
        f"- Roost at {info['roost']}; Python {info['python']}, uvloop {info['uvloop']}, SQLite {info['sqlite']}; "
        f"{info['mosquitto']}",
        f"- {runs} run(s) per broker and scenario, each on a fresh broker process with a fresh data dir, brokers' "
        f"order rotated; medians; {plan.publishers} publishers x window {plan.window}, {plan.payload}-byte payloads; "
        f"`max_inflight` {plan.max_inflight}, `max_queued_messages` {plan.max_queued_messages:,} for both brokers; "
        f"whole run {seconds / 60:.1f} min",
        f"- Mosquitto: `persistence true`, `persistence_location` in the run's temp dir, `autosave_interval "
        f"{plan.mosquitto_autosave}` (it saves its whole in-memory database when at least that many seconds have "
        f"passed since the last save: the saves/s column shows how often that was), and its default "
        f"(`autosave_interval 1800`, `autosave_on_changes false`: no save at all within a run, only at exit).",
        f"- Disk bytes: {'`write_bytes` of /proc/PID/io (bytes the broker caused to be written to the block device, counted per dirtied 4 KiB page; the journal of ext4 is not in it)' if source == 'write_bytes' else 'growth of the state files (write_bytes of /proc/PID/io read 0 on this file system)'}, "
        "over the measuring window, per 1,000 messages received by the subscriber (online) or queued / drained "
        f"(offline). Commits and rows: Roost's `roost_state_commits_total` and `roost_state_rows_written_total`; most changes "
        "pending: its `roost_state_pending_changes`, read every 0.25 s in the online window (from every Roost). "
        f"fsync+fdatasync: {'calls by the broker process (all threads) on its state files (Roost: descriptors open on broker-state.db and its -wal; Mosquitto: all, it syncs only its saves), from `perf record -a` on the syscall tracepoints' if perf else 'not counted (no perf)'}.",
        "",
    ]
    if "online" in scenarios:
        parts += [
            f"### Subscriber online: {plan.publishers} QoS 1 publishers -> 1 persistent subscriber, acknowledging "
            f"(medians, windows of {plan.duration:g} s after {plan.warmup:g} s of warm-up)", "",
            online_table(results, chosen),
            "Where the writes go (medians over the same windows):", "",
            online_costs(results, chosen),
        ]
    if "offline" in scenarios:
        parts += [
            f"### Subscriber offline: {plan.offline_messages:,} messages queued for it, then it reconnects and "
            "drains (medians)", "",
            "Queuing: from the first PUBLISH to the last PUBACK, then until the broker had the queue on disk "
            "(Roost: no pending changes; Mosquitto with autosave: its next save) for the disk figures. Draining: "
            "from the reconnect's CONNECT to the last message, acknowledging each, then again until on disk.", "",
            offline_table(results, chosen, plan),
        ]
    parts += ["### Every run", "",
              "Raw figures per run, in run order (bytes, counts, seconds; `max_gap_s` is the longest silence the "
              "subscriber saw, `max_sync_gap_s` the longest time without an fsync/fdatasync on the state files, "
              "`checkpoint_fsyncs` those on broker-state.db itself, i.e. WAL checkpoints). Checked and listed only "
              "when not 0: `cancelled_bytes` (cancelled_write_bytes), commit `failures`, `duplicates` (DUP "
              "redeliveries at the drain).", "",
              details(results, scenarios, chosen)]
    if errors:
        parts += ["### Failed measurements and errors in Roost's log", ""] + [f"- {e}" for e in errors] + [""]
    parts.append(END)
    return "\n".join(parts) + "\n"


def filesystem(path: str) -> str:
    done = subprocess.run(["df", "-T", path], capture_output=True, text=True)
    lines = done.stdout.splitlines()
    return lines[1].split()[1] if len(lines) > 1 else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.durability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: one short run of everything")
    parser.add_argument("--runs", type=int, default=None, help="runs per broker and scenario (default 3; quick 1)")
    parser.add_argument("--scenarios", default="online,offline", help="comma-separated, of: online, offline")
    parser.add_argument("--brokers", default=None,
                        help="comma-separated, of: roost-off, roost-batched, roost-strict, mosq-autosave, mosq-default")
    parser.add_argument("--offline-messages", type=int, default=None, help="messages queued offline (default 20000)")
    parser.add_argument("--no-perf", action="store_true", help="do not count fsync calls with perf")
    parser.add_argument("--roost-rev", default="HEAD",
                        help="git revision of Roost (default HEAD, exported to a temp dir); 'worktree' for the tree")
    parser.add_argument("--output", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)

    plan = DurabilityPlan.quick() if args.quick else DurabilityPlan()
    if args.offline_messages:
        plan = replace(plan, offline_messages=args.offline_messages,
                       max_queued_messages=max(plan.max_queued_messages, args.offline_messages + 10_000))
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    every = variants(plan)
    names = [b.strip() for b in args.brokers.split(",")] if args.brokers else [v.key for v in every]
    unknown = [s for s in scenarios if s not in SCENARIOS] + [b for b in names if b not in {v.key for v in every}]
    if unknown:
        parser.error(f"unknown scenario or broker: {', '.join(unknown)}")
    chosen = [v for v in every if v.key in names]
    runs = args.runs or (1 if args.quick else 3)
    perf = not args.no_perf and FsyncCounter.available()
    if any(v.kind == "mosquitto" for v in chosen):
        ensure_mosquitto()
    raise_file_limit()

    began = time.perf_counter()
    with roost_revision(args.roost_rev) as roost_version:
        results, errors = run_all(chosen, scenarios, runs, plan, perf)
    seconds = time.perf_counter() - began
    if io_source(results) != "write_bytes":
        fallback_to_files(results)

    command = "python -m bench.durability " + shlex.join(sys.argv[1:] if argv is None else argv)
    info = machine() | {"roost": roost_version, "sqlite": sqlite3.sqlite_version, "fs": filesystem(tempfile.gettempdir())}
    text = report(command, info, plan, runs, chosen, scenarios, results, errors, seconds, perf)
    print(text)
    if errors:
        print("failed:\n" + "\n".join(errors), file=sys.stderr)
    if args.output:
        write_output(args.output, text, BEGIN, END)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
