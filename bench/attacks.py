"""What the attacks of issue 14 cost a running Roost, measured on a real `roost serve` (bench/brokers.py):

- **pre-auth flood**: idle RSS, then `--connections` (300) connections that each send the start of a 1 MB
  CONNECT (every byte but the last), held for `--hold` seconds; the broker's RSS at its peak and after, how
  many of the connections the broker closed, and the PINGREQ round trips of a logged-in client, pinging
  every 10 ms from its own process from before the flood to after it (p99 and max). A second variant sends
  CONNECT starts below `max_connect_size` (64,000 of 65,000 bytes), which the pending-connection budget
  (`max_pending_bytes`) has to bound instead. A third sends the 1 MB CONNECT over WebSocket (`/mqtt` on the
  HTTP port): each connection opens one binary message announced as the whole CONNECT and sends all of it
  but the last byte, which a WebSocket layer that gathers whole messages would hold before MQTT saw any;
- **deep filter**: with the limits raised (`max_topic_levels = 5000`), a subscriber on `"+/" * 1200 + "#"` and
  a publisher sending `--deep-messages` PUBLISH to `"/" * 2000`: delivered messages per second and the other
  client's PINGREQ p99 meanwhile; with the default limits, what the two clients hear (SUBACK 0x8F,
  DISCONNECT 0x90).

Targets (issue 14): RSS below idle + 50 MB and the logged-in client's PINGREQ p99 under 20 ms during the
flood.

    python -m bench.attacks                       # the working tree
    python -m bench.attacks --roost-rev main      # Roost at a git revision, for a before/after
    python -m bench.attacks --cases ws            # only the WebSocket flood (cases: tcp, small, ws, deep)

Everything goes to 127.0.0.1; every loop is bounded by a deadline.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import os
import socket
import struct
import sys
import time
from collections.abc import Iterator
from typing import Any

from broker.codec.encode import encode_varint

from . import wire
from .brokers import HOST, Limits, RoostBroker, roost_revision, start_broker
from .loadgen import BenchError, Pinger, Worker, _read_frames, gather, mqtt_connect
from .run import raise_file_limit

__all__ = ["deep_filter", "main", "preauth_flood"]

DEEP_FILTER = "+/" * 1200 + "#"
DEEP_TOPIC = "/" * 2000
MEGABYTE = 1_000_000  # "1 MB": just under the default max_packet_size (1 MiB), so only max_connect_size refuses it
PING_INTERVAL = 0.01


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


class HighLimitsRoost(RoostBroker):
    """Roost with extra `[mqtt]` lines (the deep-filter case raises the topic limits)."""

    extra = "max_topic_levels = 5000\nmax_topic_length = 65535\n"

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text()
        self.config_path.write_text(text.replace("[mqtt]\n", "[mqtt]\n" + self.extra, 1))


@contextlib.contextmanager
def _pinger(broker: Any, seconds: float) -> Iterator[Worker]:
    """A logged-in client in its own process, pinging every 10 ms for `seconds` from now."""
    worker = Worker(Pinger, HOST, broker.port, 4, broker.credentials, "attack-pinger")
    try:
        gather([worker], "connect")
        start = time.perf_counter() + 0.2
        worker.send("ping", PING_INTERVAL, start, start + seconds)
        yield worker
    finally:
        worker.close()


def _tcp_starts(port: int, connections: int, announced: int, sent: int) -> dict[socket.socket, memoryview]:
    """`connections` TCP connections, each with the CONNECT start it is to send."""
    todo: dict[socket.socket, memoryview] = {}
    for _ in range(connections):
        sock = socket.create_connection((HOST, port), timeout=5)
        sock.setblocking(False)
        todo[sock] = memoryview(b"\x10" + encode_varint(announced) + bytes(sent))
    return todo


def _ws_handshake(port: int) -> socket.socket:
    """A WebSocket to Roost's `/mqtt` (subprotocol `mqtt`), opened by hand; the 101 answer read."""
    sock = socket.create_connection((HOST, port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /mqtt HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n"
                 "\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            raise BenchError(f"the WebSocket handshake was closed: {answer[:200]!r}")
        answer += chunk
    if not answer.startswith(b"HTTP/1.1 101"):
        raise BenchError(f"the WebSocket handshake was refused: {answer[:200]!r}")
    sock.setblocking(False)
    return sock


def _ws_starts(port: int, connections: int, announced: int, sent: int) -> dict[socket.socket, memoryview]:
    """`connections` WebSockets, each with the start of one binary message to send: a frame header announcing
    the whole CONNECT (masked with key 0, RFC 6455 section 5.3), then the CONNECT's first bytes, as over TCP."""
    connect = b"\x10" + encode_varint(announced)
    header = struct.pack("!BBQ", 0x82, 0x80 | 127, len(connect) + announced) + bytes(4)
    return {_ws_handshake(port): memoryview(header + connect + bytes(sent)) for _ in range(connections)}


def _flood(todo: dict[socket.socket, memoryview], deadline: float) -> tuple[list[socket.socket], int]:
    """Push each connection's bytes round-robin (non-blocking, 64 KiB at a time) until all is sent, the
    broker closed it, or the deadline; the sockets and how many the broker closed."""
    socks = list(todo)
    closed = 0
    while todo and time.perf_counter() < deadline:
        progressed = False
        for sock, data in list(todo.items()):
            try:
                n = sock.send(data[:65536])
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    closed += 1
                del todo[sock]
                continue
            progressed = True
            if n == len(data):
                del todo[sock]
            else:
                todo[sock] = data[n:]
        if not progressed:
            time.sleep(0.005)
    return socks, closed


def _closed_by_broker(socks: list[socket.socket]) -> int:
    """How many of the sockets the broker has closed by now: EOF, a reset, or (WebSocket) a Close frame."""
    count = 0
    for sock in socks:
        try:
            data = sock.recv(1)
        except BlockingIOError:
            continue
        except OSError:
            count += 1
            continue
        if not data or data == b"\x88":  # nothing else is sent to a connection before its CONNECT
            count += 1
    return count


def preauth_flood(connections: int, announced: int, sent: int, hold: float, transport: str = "tcp") -> dict[str, float]:
    """The flood over `transport`: "tcp" (the MQTT port) or "ws" (`/mqtt` on the HTTP port)."""
    with start_broker("roost", Limits()) as broker:
        time.sleep(0.5)
        idle_kb = broker.rss_kb()
        with _pinger(broker, hold + 8.0) as pinger:
            time.sleep(0.5)  # the pinger's baseline before the flood
            began = time.perf_counter()
            if transport == "ws":
                starts = _ws_starts(broker.http_port, connections, announced, sent)
            else:
                starts = _tcp_starts(broker.port, connections, announced, sent)
            socks, refused_on_send = _flood(starts, began + 30.0)
            sent_in = time.perf_counter() - began
            peak_kb = broker.rss_kb()
            until = time.perf_counter() + hold
            while time.perf_counter() < until:
                peak_kb = max(peak_kb, broker.rss_kb())
                time.sleep(0.05)
            closed = _closed_by_broker(socks)
            held_kb = broker.rss_kb()
            for sock in socks:
                sock.close()
            rtts = pinger.result(hold + 30.0)
        if not broker.alive():
            raise RuntimeError(f"roost died under the flood:\n{broker.log_tail()}")
        peak_kb = max(peak_kb, broker.peak_rss_kb())
    return {
        "idle_mb": idle_kb / 1024, "peak_mb": peak_kb / 1024, "growth_mb": (peak_kb - idle_kb) / 1024,
        "held_growth_mb": (held_kb - idle_kb) / 1024, "closed": float(max(closed, refused_on_send)),
        "send_s": sent_in, "ping_p99": _percentile(rtts, 0.99), "ping_max": max(rtts) if rtts else float("nan"),
        "pings": float(len(rtts)),
    }


def _subscribe(sock: socket.socket, rest: bytes, topic_filter: str) -> tuple[int, bytes]:
    sock.setblocking(True)
    sock.sendall(wire.subscribe_packet(1, [topic_filter], 0, 5))
    sock.setblocking(False)
    frames, rest = _read_frames(sock, rest, 1, time.perf_counter() + 10)
    first, body = frames[0]
    assert first >> 4 == wire.SUBACK, first
    return body[-1], rest


def deep_filter(messages: int, raised: bool) -> dict[str, float]:
    """Raised limits: the rate of deep PUBLISH delivered to the deep subscriber and another client's
    PINGREQ p99 meanwhile. Default limits: the SUBACK code and whether the publisher heard DISCONNECT 0x90."""
    cls = HighLimitsRoost if raised else RoostBroker
    from .brokers import BROKERS

    previous, BROKERS["roost"] = BROKERS["roost"], cls
    try:
        with start_broker("roost", Limits()) as broker:
            sub, sub_rest = mqtt_connect(HOST, broker.port, "deep-sub", 5, broker.credentials)
            code, sub_rest = _subscribe(sub, sub_rest, DEEP_FILTER)
            pub, pub_rest = mqtt_connect(HOST, broker.port, "deep-pub", 5, broker.credentials)
            packet = wire.publish_packet(DEEP_TOPIC, b"deep", 0, 5)
            result: dict[str, float] = {"suback": float(code)}
            with _pinger(broker, 6.0) as pinger:
                time.sleep(0.4)
                began = time.perf_counter()
                pub.setblocking(True)
                disconnect_code = -1.0
                try:
                    pub.sendall(packet * messages)
                except OSError:
                    pass
                pub.setblocking(False)
                delivered = 0
                deadline = began + 10
                if code < 0x80:
                    with contextlib.suppress(BenchError):  # a broker that lost them: counted as not delivered
                        while delivered < messages and time.perf_counter() < deadline:
                            frames, sub_rest = _read_frames(sub, sub_rest, 1, deadline)
                            delivered += sum(1 for first, _ in frames if first >> 4 == wire.PUBLISH)
                elapsed = time.perf_counter() - began
                with contextlib.suppress(Exception):
                    frames, pub_rest = _read_frames(pub, pub_rest, 1, time.perf_counter() + 2)
                    if frames and frames[0][0] >> 4 == wire.DISCONNECT:
                        disconnect_code = float(frames[0][1][0]) if frames[0][1] else 0.0
                rtts = pinger.result(30.0)
            result.update({"delivered": float(delivered), "rate": delivered / elapsed if delivered else 0.0,
                           "publisher_disconnect": disconnect_code, "ping_p99": _percentile(rtts, 0.99),
                           "alive": float(broker.alive())})
            sub.close()
            pub.close()
    finally:
        BROKERS["roost"] = previous
    return result


CASES = ("tcp", "small", "ws", "deep")


def report(version: str, connections: int, hold: float, deep_messages: int, cases: tuple[str, ...] = CASES) -> str:
    floods = []
    if "tcp" in cases:
        floods.append((f"{connections} x start of a 1 MB CONNECT",
                       preauth_flood(connections, MEGABYTE, MEGABYTE - 1, hold)))
    if "small" in cases:
        floods.append((f"{connections} x 64,000 bytes of a 65,000-byte CONNECT",
                       preauth_flood(connections, 65_000, 64_000, hold)))
    if "ws" in cases:
        floods.append((f"{connections} WebSockets x all but 1 byte of a 1 MB message holding a 1 MB CONNECT",
                       preauth_flood(connections, MEGABYTE, MEGABYTE - 1, hold, "ws")))

    def target(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = [
        f"Roost: {version}. {connections} connections, held {hold:.0f} s; PINGREQ every 10 ms from a logged-in client.",
        "",
        "| case | idle RSS | peak RSS (growth) | closed by Roost | PINGREQ p99 / max | target: +50 MB, p99 < 20 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, row in floods:
        lines.append(
            f"| {label} | {row['idle_mb']:.1f} MB | {row['peak_mb']:.1f} MB (+{row['growth_mb']:.1f}) | "
            f"{row['closed']:.0f} of {connections} | {row['ping_p99']:.2f} / {row['ping_max']:.2f} ms | "
            f"{target(row['growth_mb'] < 50 and row['ping_p99'] < 20)} |"
        )
    if "deep" not in cases:
        return "\n".join(lines)
    try:
        deep: dict[str, float] | None = deep_filter(deep_messages, raised=True)
    except RuntimeError:  # a Roost without the limit settings refuses the config: nothing to raise
        deep = None
    refused = deep_filter(10, raised=False)
    lines += [
        "",
        "| deep filter (`+/` x 1200 + `#`, PUBLISH to `/` x 2000) | result |",
        "| --- | --- |",
        f"| default limits: SUBACK code / publisher hears / 10 deep PUBLISH delivered | "
        f"0x{int(refused['suback']):02X} / {_disconnect(refused)} / {refused['delivered']:.0f} |",
    ]
    if deep is None:
        lines.append("| `max_topic_levels = 5000` | (this Roost has no such setting) |")
    else:
        lines.append(
            f"| `max_topic_levels = 5000`: {deep_messages} deep PUBLISH | {deep['delivered']:.0f} delivered at "
            f"{deep['rate']:,.0f} msg/s; publisher hears {_disconnect(deep)}; other client's PINGREQ p99 "
            f"{deep['ping_p99']:.2f} ms; Roost {'up' if deep['alive'] else 'DOWN'} |"
        )
    return "\n".join(lines)


def _disconnect(row: dict[str, float]) -> str:
    code = row["publisher_disconnect"]
    return "nothing" if code < 0 else f"DISCONNECT 0x{int(code):02X}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--roost-rev", default="worktree", help="git revision of Roost to run (default: the tree)")
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--hold", type=float, default=3.0, help="seconds the flood is held open (default 3)")
    parser.add_argument("--deep-messages", type=int, default=2000)
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated, of {', '.join(CASES)} (default: all)")
    args = parser.parse_args(argv)
    cases = tuple(case.strip() for case in args.cases.split(",") if case.strip())
    if unknown := set(cases) - set(CASES):
        parser.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    raise_file_limit()
    with roost_revision(args.roost_rev) as version:
        print(report(version, args.connections, args.hold, args.deep_messages, cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
