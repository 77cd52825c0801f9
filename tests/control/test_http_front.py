"""The HTTP port accepts from start-up and loads the HTTP stack at the first request (control/http_front.py).

MQTT over WebSocket through the front is tests/broker/test_websocket.py; HTTPS (the scheme uvicorn
sees, the Secure cookie), tests/dashboard/test_http.py and tests/certs/test_first_start.py."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest

import control.http_front
from tests.helpers import TIMEOUT, RoostThread


def _loaded(roost: RoostThread) -> bool:
    return roost.call(lambda: roost.roost is not None and roost.roost.http_front is not None
                      and roost.roost.http_front.loaded)


def _health(roost: RoostThread) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{roost.http_port}/health", timeout=TIMEOUT) as response:
        assert response.status == 200
        return json.loads(response.read())  # type: ignore[no-any-return]


def _raw_request(roost: RoostThread) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", roost.http_port), timeout=TIMEOUT)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: roost\r\nConnection: close\r\n\r\n")
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_port_check_loads_nothing_and_the_first_request_is_answered(roost: RoostThread) -> None:
    assert not _loaded(roost)
    # A port check: connect, send nothing, end. The server closing its side is the barrier that it saw it.
    with socket.create_connection(("127.0.0.1", roost.http_port), timeout=TIMEOUT) as check:
        check.shutdown(socket.SHUT_WR)
        assert check.recv(1) == b""
    assert not _loaded(roost)
    assert _health(roost)["status"] == "ok"
    assert _loaded(roost)
    assert _health(roost)["status"] == "ok"  # later connections are handed over at once


def test_requests_that_arrive_before_the_stack_is_loaded_are_all_answered(roost: RoostThread) -> None:
    socks = [_raw_request(roost) for _ in range(8)]
    try:
        answers = [_read_all(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), answer[:200]
        assert json.loads(body)["status"] == "ok"


def test_a_failed_load_closes_the_waiting_request_and_the_next_one_tries_again(
    roost: RoostThread, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(control.http_front, "STACK_MODULE", "control.no_such_http_stack")
    with _raw_request(roost) as sock:
        assert _read_all(sock) == b""  # closed without an answer
    assert "could not load the HTTP stack" in caplog.text
    assert not _loaded(roost)
    monkeypatch.setattr(control.http_front, "STACK_MODULE", "control.http_stack")
    assert _health(roost)["status"] == "ok"
    assert _loaded(roost)
