"""Issue 14, attack 2 through real sockets: memory before authentication. 300 connections that each sent the
start of a 1 MB CONNECT once took RSS from 81 to 380 MB until their connect timeout.

Now (broker/limits.py) a CONNECT may be at most `max_connect_size` bytes (refused from its fixed header), and
the connections that have not finished CONNECT may number `max_pending_connections` and hold
`max_pending_bytes` together; beyond that a new connection is closed as soon as it is accepted. Behaviour is
asserted here (who is closed, who is served); the memory and latency it saves are measured by
`python -m bench.attacks` (docs/benchmarks.md).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx

from broker.codec import Connack, Connect, Will, encode
from tests.helpers import TIMEOUT, RawClient, RoostThread
from tests.preauth_helpers import MEGABYTE, broker_closed, budget_state, partial_connect
from tests.session_helpers import ping, raw_connect
from tests.storage.live_helpers import poll

def test_300_connections_starting_1mb_connects_are_closed_and_a_client_is_served(roost: RoostThread) -> None:
    """Each announces a 1 MB CONNECT (over the 64 KiB max_connect_size) and sends 16 KiB of it: every one is
    closed from its fixed header, while a logged-in client's PINGREQ is answered during the flood and
    after it, and nothing stays pending."""
    client, connack = raw_connect(roost.mqtt_port, "logged-in", 5)
    assert connack.reason_code == 0
    hostile = []
    for n in range(300):
        hostile.append(partial_connect(roost.mqtt_port, MEGABYTE, 16_384))
        if n % 50 == 0:
            assert ping(client) == []  # served during the flood
    assert all(broker_closed(sock) for sock in hostile)
    for sock in hostile:
        sock.close()
    assert ping(client) == []
    pending, held, refused = budget_state(roost)
    assert refused["connect_size"] == 300
    assert poll(lambda: budget_state(roost)[:2] == (0, 0)), budget_state(roost)
    metrics = httpx.get(f"http://127.0.0.1:{roost.http_port}/metrics", timeout=TIMEOUT).text
    assert 'roost_mqtt_pending_refusals_total{reason="connect_size"} 300.0' in metrics
    assert "roost_mqtt_pending_connections 0.0" in metrics
    client.close()


def test_beyond_max_pending_connections_new_connections_are_closed_at_once(make_roost: Callable[..., RoostThread]) -> None:
    """20 idle connections fill `max_pending_connections = 20`; the 21st is closed at once (no CONNACK, it
    sent nothing). A client connected before is served throughout; once a pending connection goes, a new
    one is accepted and can log in."""
    roost = make_roost(max_pending_connections=20)
    client, _ = raw_connect(roost.mqtt_port, "logged-in", 5)
    idle = [socket.create_connection(("127.0.0.1", roost.mqtt_port), timeout=TIMEOUT) for _ in range(20)]
    assert poll(lambda: budget_state(roost)[0] == 20), budget_state(roost)
    late = socket.create_connection(("127.0.0.1", roost.mqtt_port), timeout=TIMEOUT)
    assert broker_closed(late)
    late.close()
    assert budget_state(roost)[2]["connections"] == 1
    assert ping(client) == []
    # One of the idle ones completes its CONNECT: it leaves the budget, and there is room again.
    idle[0].sendall(encode(Connect(client_id="was-idle", protocol_version=5), 5))
    assert poll(lambda: budget_state(roost)[0] == 19), budget_state(roost)
    newcomer, connack = raw_connect(roost.mqtt_port, "newcomer", 5)
    assert isinstance(connack, Connack) and connack.reason_code == 0
    for sock in idle:
        sock.close()
    newcomer.close()
    client.close()


def test_beyond_max_pending_bytes_the_connection_that_grows_is_closed(make_roost: Callable[..., RoostThread]) -> None:
    """`max_pending_bytes = 100000`: a first partial CONNECT holds 60,000 bytes; a second one that sends
    60,000 more would take the total over, so it is closed; the first completes its CONNECT and logs in."""
    roost = make_roost(max_pending_bytes=100_000)
    whole = encode(Connect(client_id="big", protocol_version=5, will=Will("w", b"p" * 64_000)), 5)
    assert 60_000 < len(whole) <= 65_536
    first = RawClient(roost.mqtt_port, 5)
    first.send_raw(whole[:60_000])
    assert poll(lambda: budget_state(roost)[1] == 60_000), budget_state(roost)
    second = partial_connect(roost.mqtt_port, 64_000, 60_000)
    assert broker_closed(second)
    second.close()
    assert budget_state(roost)[2]["bytes"] == 1
    first.send_raw(whole[60_000:])
    connack = first.receive()
    assert isinstance(connack, Connack) and connack.reason_code == 0
    assert poll(lambda: budget_state(roost)[:2] == (0, 0)), budget_state(roost)
    first.close()


def test_a_connect_at_max_connect_size_is_accepted_one_byte_more_is_not(make_roost: Callable[..., RoostThread]) -> None:
    roost = make_roost(max_connect_size=2048)
    for size, accepted in ((2048, True), (2049, False)):
        base = encode(Connect(client_id="c", protocol_version=5, will=Will("w", b"")), 5)
        # Grow the will payload until the packet is exactly `size` bytes (the remaining length is 2 bytes).
        packet = encode(Connect(client_id="c", protocol_version=5, will=Will("w", b"p" * (size - len(base) - 1))), 5)
        assert len(packet) == size
        raw = RawClient(roost.mqtt_port, 5)
        raw.send_raw(packet)
        if accepted:
            assert raw.receive().reason_code == 0
        else:
            assert broker_closed(raw.sock)
        raw.close()
