"""Helpers for the pre-authentication budget tests (TCP and WebSocket): a hostile partial CONNECT, whether
the broker closed a socket, and the budget's counts read on the broker's loop."""

from __future__ import annotations

import socket

from tests.helpers import TIMEOUT, RoostThread, varint

__all__ = ["MEGABYTE", "broker_closed", "budget_state", "partial_connect"]

MEGABYTE = 1_000_000  # "1 MB": just under the default max_packet_size (1 MiB), so only max_connect_size refuses it


def partial_connect(port: int, announced: int, sent: int) -> socket.socket:
    """A connection that sends the fixed header of a CONNECT announcing `announced` body bytes, and `sent`
    bytes of that body (zeros), then waits."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(b"\x10" + varint(announced) + bytes(sent))
    return sock


def broker_closed(sock: socket.socket) -> bool:
    """Whether the broker closed the connection (EOF or reset) within TIMEOUT; False if it kept it open."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def budget_state(roost: RoostThread) -> tuple[int, int, dict[str, int]]:
    server = roost.roost.server_state  # type: ignore[union-attr]
    return roost.call(lambda: (len(server.preauth), server.preauth.bytes, dict(server.preauth.refused)))
