"""TLS set-ups, session resumption and a reconnect storm: Roost and Mosquitto side by side, same certificate.

    python -m bench.tls_bench [--runs 3] [--seconds 5] [--workers 2] [--storm 10000] [--storm-window 500]
                              [--messages 200000] [--payload 64] [--output FILE]

Roost runs as `roost serve` (uvloop) from this tree and makes its own CA and EC P-256 server certificate on
first start; Mosquitto (Debian's) is then started on that same certificate and key, so both brokers sign
the same handshakes with the same key. Both allow anonymous clients, on free loopback ports. Every client
speaks MQTT 3.1.1 through Roost's codec over Python's `ssl`, TLS 1.3, verifying the certificate against
the CA. For each run the brokers are measured one after the other (Roost first in odd runs, Mosquitto first
in even ones), so a noisy neighbour hurts both alike:

- full set-ups/s: `--workers` processes each connect, handshake, send CONNECT, wait for CONNACK and close,
  again and again for `--seconds`; every handshake is a full one (no session kept).
- resumed set-ups/s: the same, but each worker keeps the TLS session (the ticket the server sent after its
  first handshake) and offers it on the next connection, as a device that reconnects does; the fraction
  of handshakes the server actually resumed is reported beside the rate.
- broker CPU per set-up: the broker process's user + system time over each set-up loop (from /proc),
  divided by the set-ups: what a handshake costs the broker itself, whoever else wants the CPU.
- reconnect storm: `--storm` devices connect at once after a power cut (full handshakes: a device that
  lost power has lost its tickets), each keeping at most `--storm-window` handshakes under way per worker
  process, and stay connected until every one has its CONNACK. Reported: the time from the first attempt
  to the last CONNACK, and how many attempts had to be retried (refused, reset, or no CONNACK in 30 s).
- throughput: one publisher and one subscriber over TLS, `--messages` QoS 0 PUBLISH packets of
  `--payload` bytes; messages delivered per second, first to last byte (`--messages 0` skips it).

Bounded in time and count; loopback only; stops by itself. The client side (Python's `ssl`) costs about as
much CPU per handshake as the broker side, on the same 2 cores: compare the ratio, not the rates.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from broker.codec import NEED_DATA, Connect, PacketReader, Publish, Subscribe, Subscription, encode

from .brokers import ensure_mosquitto, free_port, mosquitto_version

CONNACK_SIZE = 4
HOST = "127.0.0.1"
STORM_ATTEMPT_TIMEOUT = 30.0
STORM_DEADLINE = 600.0


@dataclass(slots=True)
class Endpoint:
    name: str
    port: int
    cafile: str
    pid: int = 0


@dataclass(slots=True)
class Figures:
    full: float = 0.0
    resumed: float = 0.0
    resumed_fraction: float = 0.0
    full_cpu_ms: float = 0.0
    resumed_cpu_ms: float = 0.0
    storm_seconds: float = 0.0
    storm_retries: int = 0
    storm_connected: int = 0
    messages_per_second: float = 0.0
    delivered: int = 0


def _wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client_context(cafile: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def _open(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return context.wrap_socket(sock, server_hostname="localhost", session=session)


def _mqtt_connect(sock: socket.socket, client_id: str) -> bytes:
    sock.sendall(encode(Connect(client_id=client_id, protocol_version=4), 4))
    data = b""
    while len(data) < CONNACK_SIZE:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed before CONNACK")
        data += chunk
    return data[CONNACK_SIZE:]


def _setup_worker(endpoint: Endpoint, resume: bool, seconds: float, index: int, results: multiprocessing.Queue) -> None:
    context = _client_context(endpoint.cafile)
    count = reused = 0
    session: ssl.SSLSession | None = None
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sock = _open(endpoint.port, context, session if resume else None)
        _mqtt_connect(sock, f"s{index}-{count}")
        # A TLS 1.3 ticket arrives after the handshake; the CONNACK read above has taken it in.
        if resume:
            reused += sock.session_reused
            session = sock.session
        sock.close()
        count += 1
    results.put((count, reused))


def setups_per_second(endpoint: Endpoint, resume: bool, seconds: float, workers: int) -> tuple[float, float, float]:
    """Set-ups per second over all workers, the fraction of them the server resumed, and the broker's CPU
    milliseconds per set-up (its user + system time over the loop: less noisy than the rate on a shared
    machine, as it does not count the time the broker waits for the CPU)."""
    results: multiprocessing.Queue = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(target=_setup_worker, args=(endpoint, resume, seconds, i, results))
        for i in range(workers)
    ]
    cpu = _cpu_seconds(endpoint.pid)
    start = time.perf_counter()
    for process in processes:
        process.start()
    counts = [results.get(timeout=seconds + 60) for _ in processes]
    cpu = _cpu_seconds(endpoint.pid) - cpu
    for process in processes:
        process.join()
    total = sum(count for count, _ in counts)
    reused = sum(reused for _, reused in counts)
    elapsed = time.perf_counter() - start
    return total / elapsed, (reused / total if total else 0.0), (cpu * 1000 / total if total else 0.0)


async def _storm_devices(endpoint: Endpoint, first: int, devices: int, window: int) -> tuple[float, float, int, int]:
    context = _client_context(endpoint.cafile)
    gate = asyncio.Semaphore(window)
    connected: list[asyncio.StreamWriter] = []
    retries = 0
    packet = {i: encode(Connect(client_id=f"storm-{i}", protocol_version=4, keep_alive=600), 4) for i in range(first, first + devices)}
    give_up = time.monotonic() + STORM_DEADLINE

    async def device(number: int) -> None:
        nonlocal retries
        while time.monotonic() < give_up:
            async with gate:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(HOST, endpoint.port, ssl=context, server_hostname="localhost"),
                        STORM_ATTEMPT_TIMEOUT,
                    )
                    writer.write(packet[number])
                    connack = await asyncio.wait_for(reader.readexactly(CONNACK_SIZE), STORM_ATTEMPT_TIMEOUT)
                    if connack[0] == 0x20 and connack[3] == 0:
                        connected.append(writer)
                        return
                    writer.close()
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
                    pass
            retries += 1
            await asyncio.sleep(0.05)  # a device's back-off before it tries again

    start = time.monotonic()
    await asyncio.gather(*(device(i) for i in range(first, first + devices)))
    end = time.monotonic()
    count = len(connected)
    for writer in connected:
        writer.close()
    return start, end, retries, count


def _storm_worker(endpoint: Endpoint, first: int, devices: int, window: int, go: multiprocessing.Event,
                  results: multiprocessing.Queue) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    go.wait(60)
    results.put(asyncio.run(_storm_devices(endpoint, first, devices, window)))


def storm(endpoint: Endpoint, devices: int, workers: int, window: int) -> tuple[float, int, int]:
    """Seconds from the first attempt to the last CONNACK, retried attempts, devices connected."""
    results: multiprocessing.Queue = multiprocessing.Queue()
    go = multiprocessing.Event()
    share = [devices // workers + (1 if i < devices % workers else 0) for i in range(workers)]
    firsts = [sum(share[:i]) for i in range(workers)]
    processes = [
        multiprocessing.Process(target=_storm_worker, args=(endpoint, firsts[i], share[i], window, go, results))
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    go.set()
    outcomes = [results.get(timeout=STORM_DEADLINE + 60) for _ in processes]
    for process in processes:
        process.join()
    start = min(outcome[0] for outcome in outcomes)
    end = max(outcome[1] for outcome in outcomes)
    return end - start, sum(outcome[2] for outcome in outcomes), sum(outcome[3] for outcome in outcomes)


def throughput(endpoint: Endpoint, messages: int, payload_size: int) -> tuple[float, int]:
    context = _client_context(endpoint.cafile)
    subscriber = _open(endpoint.port, context)
    _mqtt_connect(subscriber, "bench-sub")
    subscriber.sendall(encode(Subscribe(1, (Subscription("bench/t", 0),)), 4))
    reader = PacketReader(4)
    while reader.next_packet() is NEED_DATA:  # SUBACK
        reader.receive_data(subscriber.recv(65536))
    one = encode(Publish("bench/t", os.urandom(payload_size), qos=0), 4)
    publisher = _open(endpoint.port, context)
    _mqtt_connect(publisher, "bench-pub")
    expected = len(one) * messages
    received = 0
    first = last = 0.0

    def read() -> None:
        nonlocal received, first, last
        subscriber.settimeout(2.0)
        try:
            while received < expected:
                chunk = subscriber.recv(1 << 20)
                if not chunk:
                    break
                first = first or time.perf_counter()
                received += len(chunk)
                last = time.perf_counter()
        except (TimeoutError, socket.timeout):
            pass  # nothing for 2 s: the rest was dropped

    thread = threading.Thread(target=read)
    thread.start()
    sent = 0
    while sent < messages:
        step = min(1000, messages - sent)
        publisher.sendall(one * step)
        sent += step
    thread.join(120)
    publisher.close()
    subscriber.close()
    delivered = received // len(one)
    return (delivered / (last - first) if last > first else 0.0), delivered


def start_roost(folder: Path) -> tuple[subprocess.Popen, Endpoint]:
    mqtt_port, tls_port, http_port = free_port(), free_port(), free_port()
    config = folder / "roost.toml"
    config.write_text(
        f'data_dir = "data"\n[mqtt]\nhost = "{HOST}"\nport = {mqtt_port}\nallow_anonymous = true\n'
        f"sys_interval = 0\nmax_queued_messages = 100000\n"
        f'[http]\nhost = "{HOST}"\nport = {http_port}\n'
        f'[tls]\nhost = "{HOST}"\nport = {tls_port}\nwatch_interval = 0.0\n[log]\nlevel = "warning"\n'
    )
    process = subprocess.Popen([sys.executable, "-m", "control.cli", "serve", "--config", str(config)], cwd=folder)
    _wait_port(tls_port, time.monotonic() + 60)
    return process, Endpoint("Roost", tls_port, str(folder / "data" / "certs" / "ca.pem"), process.pid)


def start_mosquitto(folder: Path, certs: Path) -> tuple[subprocess.Popen, Endpoint]:
    """Mosquitto on Roost's own certificate and key (copied, so that Mosquitto may read them as itself)."""
    port = free_port()
    for name in ("ca.pem", "server.pem", "server.key"):
        shutil.copy(certs / name, folder / name)
        (folder / name).chmod(0o644)
    user = "user root\n" if os.geteuid() == 0 else ""
    (folder / "mosquitto.conf").write_text(
        f"listener {port} {HOST}\nallow_anonymous true\ncafile {folder / 'ca.pem'}\n"
        f"certfile {folder / 'server.pem'}\nkeyfile {folder / 'server.key'}\ntls_version tlsv1.3\n"
        f"max_queued_messages 100000\npersistence false\nsys_interval 0\nset_tcp_nodelay true\n"
        f"log_dest stderr\nlog_type error\n{user}"
    )
    # Mosquitto logs every client that closes without a TLS close_notify as an error: keep that off the screen.
    log = open(folder / "mosquitto.log", "wb")
    process = subprocess.Popen(["mosquitto", "-c", str(folder / "mosquitto.conf")], stderr=log)
    log.close()
    _wait_port(port, time.monotonic() + 20)
    return process, Endpoint("Mosquitto", port, str(folder / "ca.pem"), process.pid)


def measure(endpoint: Endpoint, args: argparse.Namespace) -> Figures:
    figures = Figures()
    figures.full, _, figures.full_cpu_ms = setups_per_second(endpoint, False, args.seconds, args.workers)
    figures.resumed, figures.resumed_fraction, figures.resumed_cpu_ms = setups_per_second(
        endpoint, True, args.seconds, args.workers
    )
    if args.storm:
        figures.storm_seconds, figures.storm_retries, figures.storm_connected = storm(
            endpoint, args.storm, args.workers, args.storm_window
        )
    if args.messages:
        figures.messages_per_second, figures.delivered = throughput(endpoint, args.messages, args.payload)
    print(
        f"{endpoint.name}: {figures.full:,.0f} full set-ups/s ({figures.full_cpu_ms:.3f} ms broker CPU each); "
        f"{figures.resumed:,.0f} resumed set-ups/s ({figures.resumed_fraction:.0%} resumed, "
        f"{figures.resumed_cpu_ms:.3f} ms each); storm of {args.storm:,}: {figures.storm_seconds:.1f} s, "
        f"{figures.storm_connected:,} connected, {figures.storm_retries:,} retried; "
        f"{figures.messages_per_second:,.0f} msg/s ({figures.delivered:,} delivered)",
        flush=True,
    )
    return figures


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def report(args: argparse.Namespace, runs: dict[str, list[Figures]]) -> list[str]:
    command = (
        f"python -m bench.tls_bench --runs {args.runs} --seconds {args.seconds:g} --workers {args.workers} "
        f"--storm {args.storm} --storm-window {args.storm_window} --messages {args.messages} --payload {args.payload}"
    )
    lines = [
        "",
        f"`{command}` on {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()},"
        f" {ssl.OPENSSL_VERSION}, {mosquitto_version()}; TLS 1.3, both brokers on Roost's EC P-256 certificate;"
        f" medians of {args.runs} runs (the Roost/Mosquitto ratio is taken per run, then its median).",
        "",
        "| figure | Roost | Mosquitto | Roost / Mosquitto |",
        "| --- | ---: | ---: | ---: |",
    ]
    roost, mosquitto = runs["Roost"], runs["Mosquitto"]

    def row(label: str, field: str, fmt: str, lower_is_better: bool = False) -> None:
        mine = [getattr(f, field) for f in roost]
        theirs = [getattr(f, field) for f in mosquitto]
        ratios = [a / b for a, b in zip(mine, theirs) if b]
        ratio = _median(ratios)
        note = " (lower is better)" if lower_is_better else ""
        lines.append(f"| {label}{note} | {_median(mine):{fmt}} | {_median(theirs):{fmt}} | {ratio:.2f} |")

    row("full set-ups/s", "full", ",.0f")
    row("resumed set-ups/s", "resumed", ",.0f")
    row("share of reconnections resumed", "resumed_fraction", ".0%")
    row("broker CPU per full set-up, ms", "full_cpu_ms", ".3f", lower_is_better=True)
    row("broker CPU per resumed set-up, ms", "resumed_cpu_ms", ".3f", lower_is_better=True)
    if args.storm:
        row(f"storm: {args.storm:,} devices, seconds to the last CONNACK", "storm_seconds", ".1f", lower_is_better=True)
        row("storm: retried attempts", "storm_retries", ",.0f", lower_is_better=True)
        row("storm: devices connected", "storm_connected", ",.0f")
    if args.messages:
        row(f"QoS 0 msg/s over TLS (1 pub -> 1 sub, {args.payload} B)", "messages_per_second", ",.0f")
    lines.append("")
    lines.append("Per run (Roost; Mosquitto): " + "; ".join(
        f"full {r.full:,.0f}/{m.full:,.0f} ({r.full_cpu_ms:.3f}/{m.full_cpu_ms:.3f} ms CPU), "
        f"resumed {r.resumed:,.0f}/{m.resumed:,.0f} ({r.resumed_cpu_ms:.3f}/{m.resumed_cpu_ms:.3f} ms CPU), storm {r.storm_seconds:.1f}/{m.storm_seconds:.1f} s"
        for r, m in zip(roost, mosquitto)
    ))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--storm", type=int, default=10_000, help="devices in the reconnect storm (0: skip it)")
    parser.add_argument("--storm-window", type=int, default=500, help="handshakes under way per worker")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--output", help="append a Markdown table to this file")
    args = parser.parse_args()
    ensure_mosquitto()
    runs: dict[str, list[Figures]] = {"Roost": [], "Mosquitto": []}
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        folder = Path(tmp)
        (folder / "roost").mkdir()
        (folder / "mosquitto").mkdir()
        roost, roost_endpoint = start_roost(folder / "roost")
        try:
            mosquitto, mosquitto_endpoint = start_mosquitto(folder / "mosquitto", folder / "roost" / "data" / "certs")
            try:
                for run in range(args.runs):
                    order = [roost_endpoint, mosquitto_endpoint]
                    for endpoint in order if run % 2 == 0 else order[::-1]:
                        runs[endpoint.name].append(measure(endpoint, args))
            finally:
                _stop(mosquitto)
        finally:
            _stop(roost)
    lines = report(args, runs)
    print("\n".join(lines))
    if args.output:
        with open(args.output, "a") as file:
            file.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
