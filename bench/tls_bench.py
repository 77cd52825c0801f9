"""TLS against plain TCP on one Roost: connection set-ups per second and QoS 0 message throughput.

    python -m bench.tls_bench [--seconds 5] [--messages 200000] [--payload 64] [--workers 2] [--output FILE]

Roost runs as `roost serve` (uvloop) in a subprocess, on free loopback ports, with its own generated
certificate (EC P-256). Every client is a plain socket speaking MQTT through Roost's codec:

- connects: each worker process opens a connection, sends CONNECT, waits for CONNACK and closes, again and
  again for `--seconds`; on the TLS port each round is a full TLS handshake (no session resumption), so
  the number is handshakes per second including the MQTT round trip.
- throughput: one subscriber and one publisher; the publisher writes `--messages` QoS 0 PUBLISH packets as
  fast as the socket takes them; the subscriber counts the bytes of the deliveries (they all have the same
  size). Reported: messages delivered per second, from first to last byte, and how many were delivered
  (QoS 0 to a congested subscriber may be dropped: see docs/architecture.md, flow control).

Bounded in time and count; loopback only; stops by itself.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from broker.codec import NEED_DATA, Connect, PacketReader, Publish, Subscribe, Subscription, encode

CONNACK_MIN = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def _open(port: int, context: ssl.SSLContext | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="localhost")
    return sock


def _mqtt_connect(sock: socket.socket, client_id: str) -> bytes:
    sock.sendall(encode(Connect(client_id=client_id, protocol_version=4), 4))
    data = b""
    while len(data) < CONNACK_MIN:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed before CONNACK")
        data += chunk
    return data[CONNACK_MIN:]


def _connect_worker(port: int, cafile: str | None, seconds: float, index: int, results: multiprocessing.Queue) -> None:
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    count = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sock = _open(port, context)
        _mqtt_connect(sock, f"c{index}-{count}")
        sock.close()
        count += 1
    results.put(count)


def connects_per_second(port: int, cafile: str | None, seconds: float, workers: int) -> float:
    results: multiprocessing.Queue = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(target=_connect_worker, args=(port, cafile, seconds, i, results)) for i in range(workers)
    ]
    start = time.perf_counter()
    for process in processes:
        process.start()
    total = sum(results.get(timeout=seconds + 30) for _ in processes)
    for process in processes:
        process.join()
    return total / (time.perf_counter() - start)


def throughput(port: int, cafile: str | None, messages: int, payload_size: int) -> tuple[float, int]:
    context = ssl.create_default_context(cafile=cafile) if cafile else None
    subscriber = _open(port, context)
    _mqtt_connect(subscriber, "bench-sub")
    subscriber.sendall(encode(Subscribe(1, (Subscription("bench/t", 0),)), 4))
    reader = PacketReader(4)
    while True:
        packet = reader.next_packet()
        if packet is not NEED_DATA:
            break  # SUBACK
        reader.receive_data(subscriber.recv(65536))
    payload = os.urandom(payload_size)
    one = encode(Publish("bench/t", payload, qos=0), 4)
    batch = one * 1000
    publisher = _open(port, context)
    _mqtt_connect(publisher, "bench-pub")
    expected = len(one) * messages
    received = 0
    first = last = 0.0
    done = threading.Event()

    def read() -> None:
        nonlocal received, first, last
        subscriber.settimeout(2.0)
        try:
            while received < expected:
                chunk = subscriber.recv(1 << 20)
                if not chunk:
                    break
                if not first:
                    first = time.perf_counter()
                received += len(chunk)
                last = time.perf_counter()
        except (TimeoutError, socket.timeout):
            pass  # nothing for 2 s: the rest was dropped
        done.set()

    thread = threading.Thread(target=read)
    thread.start()
    sent = 0
    while sent < messages:
        publisher.sendall(batch if messages - sent >= 1000 else one * (messages - sent))
        sent += min(1000, messages - sent)
    done.wait(120)
    thread.join()
    publisher.close()
    subscriber.close()
    delivered = received // len(one)
    return (delivered / (last - first) if last > first else 0.0), delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", help="append a Markdown table to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        mqtt_port, tls_port, http_port = _free_port(), _free_port(), _free_port()
        config = Path(folder) / "roost.toml"
        config.write_text(
            f'data_dir = "data"\n[mqtt]\nhost = "127.0.0.1"\nport = {mqtt_port}\nallow_anonymous = true\n'
            f"sys_interval = 0\nmax_queued_messages = 100000\n"
            f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
            f'[tls]\nhost = "127.0.0.1"\nport = {tls_port}\nwatch_interval = 0.0\n[log]\nlevel = "warning"\n'
        )
        broker = subprocess.Popen([sys.executable, "-m", "control.cli", "serve", "--config", str(config)])
        try:
            deadline = time.monotonic() + 20
            _wait_port(mqtt_port, deadline)
            _wait_port(tls_port, deadline)
            cafile = str(Path(folder) / "data" / "certs" / "ca.pem")
            rows = []
            for name, port, ca in (("TCP", mqtt_port, None), ("TLS 1.3", tls_port, cafile)):
                rate = connects_per_second(port, ca, args.seconds, args.workers)
                messages_rate, delivered = throughput(port, ca, args.messages, args.payload)
                rows.append((name, rate, messages_rate, delivered))
                print(f"{name}: {rate:,.0f} connects/s; {messages_rate:,.0f} msg/s ({delivered:,}/{args.messages:,} delivered)")
        finally:
            broker.terminate()
            broker.wait(30)
    if args.output:
        lines = [
            "",
            f"`python -m bench.tls_bench --seconds {args.seconds:g} --messages {args.messages} --payload {args.payload}"
            f" --workers {args.workers}` on {platform.machine()}, {os.cpu_count()} cores, Python"
            f" {platform.python_version()}, {ssl.OPENSSL_VERSION}; Roost on uvloop, client and broker on one machine.",
            "",
            "| transport | CONNECT+CONNACK set-ups/s | QoS 0 msg/s (1 pub -> 1 sub) | delivered |",
            "| --- | ---: | ---: | ---: |",
        ]
        for name, rate, messages_rate, delivered in rows:
            lines.append(f"| {name} | {rate:,.0f} | {messages_rate:,.0f} | {delivered:,} / {args.messages:,} |")
        with open(args.output, "a") as file:
            file.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
