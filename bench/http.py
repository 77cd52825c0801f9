"""A minimal HTTP/1.1 client on raw sockets, for driving Roost's REST API hard without becoming the bottleneck.

Requests are pre-encoded bytes (`encode_request`); a `Connection` is one keep-alive socket that sends a
request and reads one response (status line, headers, a `Content-Length` body: what Starlette's
`JSONResponse` sends). No redirects, no chunked bodies, no TLS: it talks to 127.0.0.1 only. Set-up calls
that need no speed use httpx instead (`api_client`).
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

__all__ = ["Connection", "HTTPError", "Response", "RestLoad", "Revoker", "api_client", "encode_request", "read_response"]


class HTTPError(RuntimeError):
    """A response that could not be read (peer closed, timeout, no Content-Length)."""


Response = tuple[int, bytes]  # (status, body)


def encode_request(method: str, path: str, host: str, api_key: str, body: Any = None) -> bytes:
    """One keep-alive request with `Authorization: Bearer`; `body` is JSON-encoded when given."""
    data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Authorization: Bearer {api_key}"]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    elif method in ("POST", "PUT"):
        head.append("Content-Length: 0")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def read_response(buf: bytes) -> tuple[Response | None, bytes]:
    """Parse one complete response off the front of `buf`: (response or None if incomplete, rest)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None, buf
    head = buf[:end].decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    length = None
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding":
            raise HTTPError("chunked responses are not supported")
    if length is None:
        raise HTTPError("response without Content-Length")
    if len(buf) < end + 4 + length:
        return None, buf
    return (status, buf[end + 4:end + 4 + length]), buf[end + 4 + length:]


class Connection:
    """One blocking keep-alive connection: `send(request)`, then `receive()` its response."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, request: bytes) -> None:
        self.sock.sendall(request)

    def receive(self, timeout: float = 10.0) -> Response:
        deadline = time.perf_counter() + timeout
        while True:
            response, self.buf = read_response(self.buf)
            if response is not None:
                return response
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise HTTPError("timed out waiting for a response")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise HTTPError("server closed the connection")
            self.buf += chunk

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def api_client(port: int, api_key: str) -> Any:
    """An httpx client on Roost's HTTP port with the API key, for set-up calls."""
    import httpx

    return httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {api_key}"},
                        timeout=30.0)


# --- workers (each runs in its own process through `loadgen.Worker`) ---------------------------------------

class Revoker:
    """Holds keep-alive connections open ahead of time, then issues a batch of requests at once, one per
    connection, so the batch leaves within a fraction of a millisecond."""

    def __init__(self, host: str, port: int, connections: int) -> None:
        self.conns = [Connection(host, port) for _ in range(connections)]

    def fire(self, requests: list[bytes], timeout: float = 30.0) -> dict[str, Any]:
        """Send request i on connection i, all at once; then read every response. `t_issue` is the instant
        just before the first byte was written; each response comes with its status and arrival instant."""
        if len(requests) > len(self.conns):
            raise ValueError(f"{len(requests)} requests for {len(self.conns)} connections")
        t_issue = time.perf_counter()
        for conn, request in zip(self.conns, requests):
            conn.send(request)
        t_sent = time.perf_counter()
        answers = []
        for conn, _ in zip(self.conns, requests):
            status, _body = conn.receive(timeout)
            answers.append((status, time.perf_counter()))
        return {"t_issue": t_issue, "t_sent": t_sent, "answers": answers}

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


class RestLoad:
    """Keep-alive connections that POST as fast as the server answers (`blast`) or at a fixed rate (`paced`)."""

    def __init__(self, host: str, port: int, api_key: str, connections: int) -> None:
        self.host, self.port, self.api_key = host, port, api_key
        self.conns = [Connection(host, port) for _ in range(connections)]
        for conn in self.conns:
            conn.sock.setblocking(False)

    def blast(self, request: bytes, t_start: float, t_end: float, timeout: float = 30.0) -> dict[str, Any]:
        """Each connection sends `request`, awaits the response, sends again, until `t_end`. Counts the
        responses that arrive in [t_start, t_end), by status, and their latencies (ms)."""
        import selectors

        selector = selectors.DefaultSelector()
        sent_at: dict[int, float] = {}
        statuses: dict[int, int] = {}
        latencies: list[float] = []
        for index, conn in enumerate(self.conns):
            selector.register(conn.sock, selectors.EVENT_READ, index)
        _sleep_until(t_start - 0.5)
        for index, conn in enumerate(self.conns):
            sent_at[index] = time.perf_counter()
            conn.sock.sendall(request)
        try:
            stop = t_end + timeout
            while sent_at and time.perf_counter() < stop:
                for key, _ in selector.select(0.05):
                    index = key.data
                    conn = self.conns[index]
                    try:
                        chunk = conn.sock.recv(65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        raise HTTPError("server closed a connection")
                    conn.buf += chunk
                    response, conn.buf = read_response(conn.buf)
                    if response is None:
                        continue
                    now = time.perf_counter()
                    if t_start <= now < t_end:
                        statuses[response[0]] = statuses.get(response[0], 0) + 1
                        latencies.append((now - sent_at[index]) * 1000)
                    if now < t_end:
                        sent_at[index] = time.perf_counter()
                        conn.sock.sendall(request)
                    else:
                        del sent_at[index]
                        selector.unregister(conn.sock)
        finally:
            selector.close()
        return {"statuses": statuses, "latencies_ms": latencies}

    def paced(self, template: bytes, stamp_at: int, rate: float, t_start: float, t_end: float,
              timeout: float = 30.0) -> dict[str, Any]:
        """POST `template` at `rate` requests/s from `t_start` to `t_end`, writing each request's send instant
        (`perf_counter_ns`, 20 digits, see `wire.text_stamp`) at byte `stamp_at`, on whichever connection is
        free. A request that is due while every connection is busy waits (counted as `late`)."""
        import selectors

        selector = selectors.DefaultSelector()
        free = list(range(len(self.conns)))
        sent_at: dict[int, float] = {}
        statuses: dict[int, int] = {}
        latencies: list[float] = []
        late = sent = 0
        for index, conn in enumerate(self.conns):
            selector.register(conn.sock, selectors.EVENT_READ, index)
        head, tail = template[:stamp_at], template[stamp_at + 20:]
        _sleep_until(t_start)
        total = int(rate * (t_end - t_start))
        try:
            stop = t_end + timeout
            while (sent < total or sent_at) and time.perf_counter() < stop:
                now = time.perf_counter()
                while sent < total and t_start + sent / rate <= now and free:
                    if now - (t_start + sent / rate) > 0.001:
                        late += 1
                    index = free.pop()
                    stamp = time.perf_counter_ns()
                    sent_at[index] = stamp / 1e9
                    self.conns[index].sock.sendall(head + f"{stamp:020d}".encode() + tail)
                    sent += 1
                    now = time.perf_counter()
                wait = 0.05 if sent >= total else max(0.0, min(0.05, t_start + sent / rate - now))
                for key, _ in selector.select(wait if free else 0.05):
                    index = key.data
                    conn = self.conns[index]
                    try:
                        chunk = conn.sock.recv(65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        raise HTTPError("server closed a connection")
                    conn.buf += chunk
                    response, conn.buf = read_response(conn.buf)
                    if response is None:
                        continue
                    latencies.append((time.perf_counter() - sent_at.pop(index)) * 1000)
                    statuses[response[0]] = statuses.get(response[0], 0) + 1
                    free.append(index)
        finally:
            selector.close()
        return {"sent": sent, "late": late, "statuses": statuses, "latencies_ms": latencies}

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


def _sleep_until(instant: float) -> None:
    delay = instant - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
