"""The load generator: MQTT clients on raw sockets, each kind in its own process, driven over a pipe.

A `Worker` is one process holding one client object (`Publisher`, `Subscriber`, `Pinger`, `IdleClients`,
`ConnectStorm`); the harness calls its methods with `gather(workers, "method", *args)`. Every method is
bounded in time: it is handed absolute `time.perf_counter()` instants (CLOCK_MONOTONIC on Linux, hence
comparable across processes), and every socket wait has a timeout. Latency is measured from a
`time.perf_counter_ns()` stamp written into the payload by the publisher and read by the subscriber.

Packets are pre-encoded with Roost's codec (`bench.wire`); sockets are non-blocking and written with
`send` on a memoryview, so a publisher that the broker stops reading from gives up cleanly at its
deadline instead of hanging or tearing a packet in half while it is still connected.
"""

from __future__ import annotations

import multiprocessing
import select
import selectors
import socket
import time
import traceback
from collections.abc import Sequence
from typing import Any

from . import wire
from .wire import Credentials

__all__ = [
    "ConnectRate", "ConnectStorm", "Holder", "IdleClients", "Pinger", "Publisher", "Subscriber", "Worker", "gather",
]

_RECV_SIZE = 1 << 20
_CONNECT_TIMEOUT = 10.0


class BenchError(RuntimeError):
    """A client could not do its part (refused CONNECT, timeout, broker gone)."""


# --- socket helpers ---------------------------------------------------------------------------------------

def _send_all(sock: socket.socket, data: bytes, deadline: float) -> int:
    """Write `data` to a non-blocking socket until done or `deadline`; the number of bytes written.

    Callers test it as `written < len(data)` (or for truthiness, when data cannot be empty)."""
    view = memoryview(data)
    total = len(view)
    offset = 0
    while offset < total:
        try:
            offset += sock.send(view[offset:])
        except BlockingIOError:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return offset
            _wait(sock, select.POLLOUT, min(remaining, 0.05))
    return offset


def _wait(sock: socket.socket, event: int, timeout: float) -> bool:
    """Whether `sock` became ready for `event` within `timeout` s (poll: any fd number, unlike select)."""
    poller = select.poll()
    poller.register(sock, event)
    return bool(poller.poll(max(0, int(timeout * 1000))))


def _send_whole(sock: socket.socket, data: bytes, deadline: float) -> bool:
    return _send_all(sock, data, deadline) == len(data)


def _recv(sock: socket.socket, timeout: float) -> bytes | None:
    """Bytes from a non-blocking socket, None if none came within `timeout`; b"" when the peer closed."""
    try:
        return sock.recv(_RECV_SIZE)
    except BlockingIOError:
        pass
    if not _wait(sock, select.POLLIN, timeout):
        return None
    try:
        return sock.recv(_RECV_SIZE)
    except BlockingIOError:
        return None
    except ConnectionError:
        return b""


def _read_frames(sock: socket.socket, pending: bytes, want: int, deadline: float) -> tuple[list[tuple[int, bytes]], bytes]:
    """Read until `want` complete packets arrived: [(first byte, body)], and the bytes left over."""
    frames: list[tuple[int, bytes]] = []
    buf = pending
    while True:
        found, used = wire.split_frames(buf)
        frames.extend((first, bytes(buf[start:end])) for first, start, end in found)
        buf = buf[used:]
        if len(frames) >= want:
            return frames, buf
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            raise BenchError(f"timed out waiting for {want - len(frames)} packet(s)")
        chunk = _recv(sock, remaining)
        if chunk == b"":
            raise BenchError("broker closed the connection")
        if chunk:
            buf += chunk


def mqtt_connect(
    host: str, port: int, client_id: str, version: int, credentials: Credentials | None,
    rcvbuf: int | None = None, timeout: float = _CONNECT_TIMEOUT,
) -> tuple[socket.socket, bytes]:
    """A connected, CONNACKed, non-blocking socket and any bytes that came after the CONNACK."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    deadline = time.perf_counter() + timeout
    _send_all(sock, wire.connect_packet(client_id, version, credentials), deadline)
    buf = b""
    while True:  # the CONNACK; what came behind it (a resumed session's PUBLISH packets) is handed back
        found, _used = wire.split_frames(buf)
        if found:
            first, start, end = found[0]
            body, rest = buf[start:end], buf[end:]
            break
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            sock.close()
            raise BenchError(f"timed out waiting for the CONNACK of {client_id!r}")
        chunk = _recv(sock, remaining)
        if chunk == b"":
            sock.close()
            raise BenchError("broker closed the connection")
        if chunk:
            buf += chunk
    if first >> 4 != wire.CONNACK or len(body) < 2 or body[1] != 0:
        sock.close()
        raise BenchError(f"CONNECT of {client_id!r} refused: {bytes(body[:2]).hex()}")
    return sock, rest


def _subscribe(sock: socket.socket, pending: bytes, filters: Sequence[str], qos: int, version: int,
               per_packet: int = 100, window: int = 50, timeout: float = 120.0) -> bytes:
    """Subscribe to `filters`, pipelining up to `window` SUBSCRIBE packets; return leftover bytes."""
    deadline = time.perf_counter() + timeout
    chunks = [list(filters[i:i + per_packet]) for i in range(0, len(filters), per_packet)]
    sent = acked = 0
    buf = pending
    while acked < len(chunks):
        batch = []
        while sent < len(chunks) and sent - acked < window:
            batch.append(wire.subscribe_packet(sent % 65535 + 1, chunks[sent], qos, version))
            sent += 1
        if batch and not _send_whole(sock, b"".join(batch), deadline):
            raise BenchError("timed out sending SUBSCRIBE")
        frames, buf = _read_frames(sock, buf, 1, deadline)
        for first, body in frames:
            if first >> 4 == wire.SUBACK:
                acked += 1
                codes = body[2:] if version != 5 else body[3 + body[2]:] if body[2] < 0x80 else b""
                if any(code >= 0x80 for code in codes):
                    raise BenchError(f"SUBSCRIBE refused: {bytes(codes).hex()}")
    return buf


# --- the process wrapper ----------------------------------------------------------------------------------

class _Failure:
    def __init__(self, text: str) -> None:
        self.text = text


def _worker_main(conn: Any, cls: type, args: tuple[Any, ...]) -> None:
    client = None
    try:
        client = cls(*args)
        while True:
            message = conn.recv()
            if message is None:
                break
            method, call_args = message
            try:
                conn.send(getattr(client, method)(*call_args))
            except Exception:  # reported to the harness, which raises it there
                conn.send(_Failure(traceback.format_exc()))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        if client is not None:
            client.close()


class Worker:
    """One client object living in its own process."""

    _context = multiprocessing.get_context("fork")

    def __init__(self, cls: type, *args: Any) -> None:
        self._conn, child = self._context.Pipe()
        self._process = self._context.Process(target=_worker_main, args=(child, cls, args), daemon=True)
        self._process.start()
        child.close()

    def send(self, method: str, *args: Any) -> None:
        self._conn.send((method, args))

    def result(self, timeout: float) -> Any:
        if not self._conn.poll(timeout):
            raise BenchError(f"worker {self._process.pid} did not answer within {timeout:.0f} s")
        answer = self._conn.recv()
        if isinstance(answer, _Failure):
            raise BenchError(f"worker {self._process.pid} failed:\n{answer.text}")
        return answer

    def close(self) -> None:
        try:
            self._conn.send(None)
        except OSError:
            pass
        self._process.join(5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(2)
        self._conn.close()


def gather(workers: Sequence[Worker], method: str, *args: Any, timeout: float = 60.0) -> list[Any]:
    """Call `method` on every worker at once and wait for all answers."""
    for worker in workers:
        worker.send(method, *args)
    deadline = time.perf_counter() + timeout
    return [worker.result(max(0.1, deadline - time.perf_counter())) for worker in workers]


# --- clients ----------------------------------------------------------------------------------------------

class _Client:
    def __init__(self, host: str, port: int, version: int, credentials: Credentials | None, name: str) -> None:
        self.host, self.port, self.version, self.credentials, self.name = host, port, version, credentials, name
        self.socks: list[socket.socket] = []
        self.pending: list[bytes] = []

    def connect(self, count: int = 1, rcvbuf: int | None = None) -> int:
        for i in range(count):
            sock, rest = mqtt_connect(self.host, self.port, f"{self.name}-{i}", self.version, self.credentials, rcvbuf)
            self.socks.append(sock)
            self.pending.append(rest)
        return len(self.socks)

    def close(self) -> None:
        for sock in self.socks:
            try:
                sock.close()
            except OSError:
                pass
        self.socks = []


class Publisher(_Client):
    """Writes pre-encoded PUBLISH packets: as fast as the broker reads, at a fixed rate, or QoS 1 windowed."""

    def blast(self, topics: list[str], payload_size: int, t_start: float, t_end: float) -> int:
        """QoS 0 as fast as the broker takes it, cycling over `topics`. Returns messages written."""
        sock = self.socks[0]
        payload = bytes(payload_size)
        one_round = [wire.publish_packet(topic, payload, 0, self.version) for topic in topics]
        batch_messages = max(1, 65536 // len(one_round[0]))
        rounds = max(1, batch_messages // len(one_round))
        batch = b"".join(one_round * rounds)
        per_batch = len(one_round) * rounds
        _sleep_until(t_start)
        sent = 0
        while time.perf_counter() < t_end:
            written = _send_all(sock, batch, t_end)
            if written < len(batch):
                # Cut at the deadline: finish the packet under way, so the connection stays usable.
                boundary = 0
                for packet in one_round * rounds:
                    if boundary >= written:
                        break
                    boundary += len(packet)
                    sent += 1
                _send_all(sock, batch[written:boundary], time.perf_counter() + 30)
                break
            sent += per_batch
        return sent

    def paced(self, topic: str, payload_size: int, rate: float, t_start: float, t_end: float) -> int:
        """QoS 0 at `rate` messages/s, each payload starting with a perf_counter_ns() stamp."""
        sock = self.socks[0]
        prefix = wire.publish_prefix(topic, payload_size, self.version)
        filler = bytes(max(0, payload_size - wire.TIMESTAMP_SIZE))
        pack, now_ns = wire.pack_stamp, time.perf_counter_ns
        _sleep_until(t_start)
        sent = 0
        limit = int(rate * (t_end - t_start)) + 1
        while sent < limit:
            now = time.perf_counter()
            if now >= t_end:
                break
            due = min(int((now - t_start) * rate) - sent, 1000)
            if due <= 0:
                time.sleep(min(0.0005, (sent + 1) / rate - (now - t_start)))
                continue
            data = b"".join([prefix + pack(now_ns()) + filler for _ in range(due)])
            if not _send_whole(sock, data, t_end):
                break
            sent += due
        return sent

    def windowed(
        self, topics: list[str], payload_size: int, window: int, t_start: float, t_end: float,
        count: int | None = None,
    ) -> int:
        """QoS 1 keeping up to `window` PUBLISH unacknowledged, cycling over `topics`: the broker's PUBACKs pace
        the publisher, so it never floods. Stops at `t_end`, or once `count` messages are acknowledged.
        Returns messages acknowledged."""
        sock = self.socks[0]
        payload = bytes(payload_size)
        ids = range(1, 4097)
        packets = {pid: wire.publish_packet(topics[pid % len(topics)], payload, 1, self.version, pid) for pid in ids}
        inflight: set[int] = set()
        next_index = sent = acked = 0
        limit = count if count is not None else float("inf")
        buf = self.pending[0]
        _sleep_until(t_start)
        while acked < limit and time.perf_counter() < t_end:
            batch = []
            while len(inflight) < window and sent < limit:
                pid = ids[next_index]
                next_index = (next_index + 1) % len(ids)
                if pid in inflight:
                    break
                inflight.add(pid)
                batch.append(packets[pid])
                sent += 1
            if batch and not _send_whole(sock, b"".join(batch), t_end):
                break
            chunk = _recv(sock, min(0.1, max(0.0, t_end - time.perf_counter())))
            if chunk == b"":
                raise BenchError("broker closed the publisher's connection")
            if not chunk:
                continue
            buf += chunk
            frames, used = wire.split_frames(buf)
            for first, start, _ in frames:
                if first >> 4 == wire.PUBACK:
                    inflight.discard((buf[start] << 8) | buf[start + 1])
                    acked += 1
            buf = buf[used:]
        self.pending[0] = buf
        return acked


class Subscriber(_Client):
    """Holds one or more subscribed connections and reads them with a selector."""

    def subscribe(self, filters: list[str], qos: int, connection: int | None = None) -> int:
        targets = range(len(self.socks)) if connection is None else (connection,)
        for index in targets:
            self.pending[index] = _subscribe(self.socks[index], self.pending[index], filters, qos, self.version)
        return len(filters)

    def receive(self, mode: str, t_start: float, t_end: float, t_stop: float) -> dict[str, Any]:
        """Read every connection until `t_stop`, counting what arrives in [t_start, t_end).

        mode "count": PUBLISH packets; "ack": also acknowledge QoS 1 ones; "latency": also collect the
        delay from each payload's stamp to its arrival, in microseconds; "text-latency": the same with the
        stamp written as decimal digits (`wire.text_stamp`), as a REST publish must send text.
        """
        selector = selectors.DefaultSelector()
        for index, sock in enumerate(self.socks):
            selector.register(sock, selectors.EVENT_READ, index)
        pending = self.pending
        counted = 0
        latencies: list[int] = []
        version = self.version
        ack_cache: dict[int, bytes] = {}
        last_arrival = t_start  # the longest silence within the window tells a stalled broker from a slow one
        max_gap = 0.0
        gap_at = (t_start, t_start)
        try:
            while True:
                now = time.perf_counter()
                if now >= t_stop:
                    break
                for key, _ in selector.select(min(0.1, t_stop - now)):
                    index = key.data
                    sock = self.socks[index]
                    try:
                        chunk = sock.recv(_RECV_SIZE)
                    except BlockingIOError:
                        continue
                    except ConnectionError:
                        chunk = b""
                    if not chunk:
                        selector.unregister(sock)
                        continue
                    arrived_ns = time.perf_counter_ns()
                    arrived = arrived_ns / 1e9
                    buf = pending[index] + chunk if pending[index] else chunk
                    in_window = t_start <= arrived < t_end
                    if in_window:
                        gap = arrived - last_arrival
                        if gap > max_gap:
                            max_gap = gap
                            gap_at = (last_arrival, arrived)
                        last_arrival = arrived
                    if mode == "count":
                        count, used = wire.count_publishes(buf)
                        if in_window:
                            counted += count
                    else:
                        frames, used = wire.split_frames(buf)
                        acks = []
                        for first, start, _ in frames:
                            if first >> 4 != wire.PUBLISH:
                                continue
                            if in_window:
                                counted += 1
                            packet_id, offset = wire.publish_fields(buf, first, start, version)
                            if packet_id:
                                ack = ack_cache.get(packet_id)
                                if ack is None:
                                    ack = ack_cache[packet_id] = wire.puback_packet(packet_id)
                                acks.append(ack)
                            if mode == "latency" and in_window:
                                latencies.append((arrived_ns - wire.read_stamp(buf, offset)) // 1000)
                            elif mode == "text-latency" and in_window:
                                latencies.append((arrived_ns - wire.read_text_stamp(buf, offset)) // 1000)
                        if acks and not _send_whole(sock, b"".join(acks), t_stop):
                            break
                    pending[index] = buf[used:]
        finally:
            selector.close()
        tail_end = min(t_end, time.perf_counter())
        if tail_end - last_arrival > max_gap:
            max_gap, gap_at = tail_end - last_arrival, (last_arrival, tail_end)
        return {"count": counted, "latencies_us": latencies, "max_gap_s": max_gap, "gap_at": gap_at}

    def drain(self, quiet: float, timeout: float) -> int:
        """Read and discard until nothing arrived for `quiet` s (at most `timeout` s): empties the backlog
        a broker still holds after the publishers stopped. Returns the bytes discarded."""
        deadline = time.perf_counter() + timeout
        total = 0
        for index, sock in enumerate(self.socks):
            buf = self.pending[index]
            while time.perf_counter() < deadline:
                chunk = _recv(sock, quiet)
                if not chunk:
                    break
                total += len(chunk)
                buf += chunk
                _, used = wire.count_publishes(buf)
                buf = buf[used:]
            self.pending[index] = buf
        return total

    def read_slowly(self, chunk: int, interval: float, t_stop: float) -> int:
        """Read at most `chunk` bytes every `interval` seconds until `t_stop`: a slow consumer."""
        sock = self.socks[0]
        total = 0
        while time.perf_counter() < t_stop:
            try:
                data = sock.recv(chunk)
            except BlockingIOError:
                data = None
            except ConnectionError:
                break
            if data == b"":
                break
            if data:
                total += len(data)
            time.sleep(interval)
        return total


class Pinger(_Client):
    def ping(self, interval: float, t_start: float, t_end: float, timeout: float = 5.0) -> list[float]:
        """PINGREQ every `interval` s; the round trips in ms (a lost PINGRESP counts as `timeout`)."""
        return [rtt for _, rtt in self.pings(interval, t_start, t_end, timeout)]

    def pings(self, interval: float, t_start: float, t_end: float, timeout: float = 5.0) -> list[tuple[float, float]]:
        """As `ping`, each round trip with the perf_counter() instant its PINGREQ was sent: what the probe
        inside the broker (bench/probe.py) needs to say what held each one."""
        sock = self.socks[0]
        request = wire.pingreq_packet(self.version)
        rtts: list[tuple[float, float]] = []
        _sleep_until(t_start)
        buf = self.pending[0]
        while time.perf_counter() < t_end and len(rtts) < 100_000:
            began = time.perf_counter()
            if not _send_whole(sock, request, began + timeout):
                rtts.append((began, timeout * 1000))
                break
            try:
                frames, buf = _read_frames(sock, buf, 1, began + timeout)
            except BenchError:
                rtts.append((began, timeout * 1000))
                break
            if frames[0][0] >> 4 != wire.PINGRESP:
                raise BenchError(f"expected PINGRESP, got packet type {frames[0][0] >> 4}")
            rtts.append((began, (time.perf_counter() - began) * 1000))
            _sleep_until(began + interval)
        return rtts


class IdleClients(_Client):
    """Opens many connections that then just sit there (keep alive 600 s, nothing sent)."""

    def open(self, count: int, batch: int, timeout: float) -> int:
        """Connect in pipelined batches (connect all, CONNECT all, await all CONNACKs); stop at `timeout`."""
        deadline = time.perf_counter() + timeout
        while len(self.socks) < count and time.perf_counter() < deadline:
            group = []
            try:
                for i in range(min(batch, count - len(self.socks))):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    group.append(sock)
                    sock.settimeout(_CONNECT_TIMEOUT)
                    sock.connect((self.host, self.port))
                    sock.sendall(wire.connect_packet(f"{self.name}-{len(self.socks) + i}", self.version,
                                                     self.credentials))
                for sock in group:
                    sock.setblocking(False)
                    frames, _ = _read_frames(sock, b"", 1, deadline)
                    if frames[0][0] >> 4 != wire.CONNACK:
                        raise BenchError("expected CONNACK")
            except (OSError, BenchError):
                for sock in group:
                    sock.close()
                break
            self.socks.extend(group)
        return len(self.socks)


class ConnectStorm(_Client):
    def storm(self, t_start: float, t_end: float, limit: int) -> int:
        """Connect, CONNECT, CONNACK, DISCONNECT, close (with RST, so no TIME_WAIT piles up), in a loop."""
        linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
        disconnect = wire.disconnect_packet(self.version)
        done = 0
        _sleep_until(t_start)
        while done < limit and time.perf_counter() < t_end:
            sock, _ = mqtt_connect(self.host, self.port, f"{self.name}-{done}", self.version, self.credentials,
                                   timeout=5.0)
            try:
                sock.send(disconnect)
            except OSError:
                pass
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            sock.close()
            done += 1
        return done


class ConnectRate(_Client):
    """Authenticated CONNECTs as fast as the broker answers them, with several connections in flight."""

    def run(self, in_flight: int, t_start: float, t_end: float, limit: int) -> dict[str, int]:
        """Keep `in_flight` connection attempts going (connect, CONNECT, CONNACK, DISCONNECT, close with RST)
        until `t_end`; count the accepted CONNACKs that arrive in [t_start, t_end) and any refusals."""
        linger = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")
        disconnect = wire.disconnect_packet(self.version)
        selector = selectors.DefaultSelector()
        state: dict[socket.socket, tuple[float, bytes]] = {}  # sock -> (started, bytes read so far)
        counter = 0
        done = refused = failed = 0

        def launch() -> None:
            nonlocal counter
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect_ex((self.host, self.port))
            selector.register(sock, selectors.EVENT_WRITE)
            state[sock] = (time.perf_counter(), b"")
            counter += 1

        def finish(sock: socket.socket) -> None:
            selector.unregister(sock)
            del state[sock]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            sock.close()

        _sleep_until(t_start - 0.2)  # a short warm-up before the window
        try:
            for _ in range(in_flight):
                launch()
            while time.perf_counter() < t_end and done < limit:
                for key, events in selector.select(0.05):
                    sock = key.fileobj  # type: ignore[assignment]
                    if events & selectors.EVENT_WRITE:
                        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            failed += 1
                            finish(sock)
                            launch()
                            continue
                        client_id = f"{self.name}-{counter}-{sock.fileno()}"
                        sock.send(wire.connect_packet(client_id, self.version, self.credentials))
                        selector.modify(sock, selectors.EVENT_READ)
                        continue
                    try:
                        chunk = sock.recv(4096)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except ConnectionError:
                        chunk = b""
                    started, buf = state[sock]
                    buf += chunk
                    frames, _ = wire.split_frames(buf)
                    if chunk and not frames:
                        state[sock] = (started, buf)
                        continue
                    now = time.perf_counter()
                    accepted = bool(frames) and frames[0][0] >> 4 == wire.CONNACK and buf[frames[0][1] + 1] == 0
                    if accepted:
                        _try_send(sock, disconnect)
                        if t_start <= now < t_end:
                            done += 1
                    elif t_start <= now < t_end:
                        refused += 1
                    finish(sock)
                    launch()
        finally:
            for sock in list(state):
                finish(sock)
            selector.close()
        return {"done": done, "refused": refused, "failed": failed}


def _try_send(sock: socket.socket, data: bytes) -> None:
    try:
        sock.send(data)
    except OSError:
        pass


class Holder(_Client):
    """Many connected clients, each with credentials of its own, watched for the moment the broker closes them
    (revocation). Clients are named by a label the harness chooses."""

    def __init__(self, host: str, port: int, version: int, credentials: Credentials | None, name: str) -> None:
        super().__init__(host, port, version, credentials, name)
        self.labels: list[str] = []

    def open_each(self, clients: list[tuple[str, str, str]], timeout: float = 120.0) -> int:
        """Connect one client per (label, username, password), the label as its client id."""
        deadline = time.perf_counter() + timeout
        for label, username, password in clients:
            if time.perf_counter() > deadline:
                raise BenchError(f"only {len(self.labels)} clients connected within {timeout:.0f} s")
            sock, rest = mqtt_connect(self.host, self.port, label, self.version, Credentials(username, password))
            self.socks.append(sock)
            self.pending.append(rest)
            self.labels.append(label)
        return len(self.socks)

    def watch(self, t_stop: float) -> list[tuple[str, float, str]]:
        """Until `t_stop`: each client the broker closed, as (label, perf_counter() when seen, how): how is
        "disconnect 0xNN" for a DISCONNECT packet, "eof" for a plain close. Closed clients are dropped."""
        selector = selectors.DefaultSelector()
        for index, sock in enumerate(self.socks):
            selector.register(sock, selectors.EVENT_READ, index)
        closed: list[tuple[str, float, str]] = []
        gone: set[int] = set()
        try:
            while time.perf_counter() < t_stop:
                for key, _ in selector.select(min(0.05, max(0.0, t_stop - time.perf_counter()))):
                    index = key.data
                    sock = self.socks[index]
                    try:
                        chunk = sock.recv(4096)
                    except BlockingIOError:
                        continue
                    except ConnectionError:
                        chunk = b""
                    seen = time.perf_counter()
                    how = "eof"
                    if chunk:
                        frames, _ = wire.split_frames(chunk)
                        packet = next((f for f in frames if f[0] >> 4 == wire.DISCONNECT), None)
                        if packet is None:
                            continue  # anything else (none expected) is not a close
                        first, start, end = packet
                        how = f"disconnect 0x{chunk[start]:02x}" if end > start else "disconnect 0x00"
                    closed.append((self.labels[index], seen, how))
                    selector.unregister(sock)
                    gone.add(index)
        finally:
            selector.close()
        for index in sorted(gone, reverse=True):
            self.socks[index].close()
            del self.socks[index], self.pending[index], self.labels[index]
        return closed

    def ping_all(self, timeout: float = 5.0) -> dict[str, int]:
        """PINGREQ on every client still held: how many answered with PINGRESP, and how many are closed."""
        request = wire.pingreq_packet(self.version)
        deadline = time.perf_counter() + timeout
        answered = closed = 0
        for sock in self.socks:
            try:
                sock.send(request)
            except OSError:
                closed += 1
        for index, sock in enumerate(self.socks):
            try:
                frames, self.pending[index] = _read_frames(sock, self.pending[index], 1, deadline)
            except (BenchError, OSError):
                closed += 1
                continue
            answered += any(first >> 4 == wire.PINGRESP for first, _ in frames)
        return {"answered": answered, "closed": closed, "held": len(self.socks)}


def _sleep_until(instant: float) -> None:
    delay = instant - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
