"""Issue 14, attack 2 over WebSocket (`/mqtt`): the pre-authentication budget covers MQTT over WebSocket as
it covers TCP. uvicorn used to gather a whole WebSocket message (up to 16 MiB, `ws_max_size`) before MQTT saw
a byte of it, so 300 WebSockets that each sent the start of a 1 MB message held 300 MB that no budget
counted. Now (control/ws_protocol.py) each piece of a frame's payload is pushed to the MQTT connection as
it is parsed: the CONNECT's fixed header is judged against `max_connect_size`, and what an unfinished
message holds counts against `max_pending_bytes`, shared with TCP. Behaviour here; memory and latency in
`python -m bench.attacks --cases ws`.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
from wsproto.events import AcceptConnection
from wsproto.extensions import PerMessageDeflate

from broker.codec import Connack, Connect, Will, encode
from tests.helpers import TIMEOUT, RoostThread, varint
from tests.preauth_helpers import MEGABYTE, broker_closed, budget_state, partial_connect
from tests.session_helpers import ping, raw_connect
from tests.storage.live_helpers import poll
from tests.ws_helpers import BINARY, CONTINUATION, RawWebSocket, frame_header, ws_ping


def _logged_in(roost: RoostThread, client_id: str) -> RawWebSocket:
    client = RawWebSocket(roost.http_port)
    client.send_frames(encode(Connect(client_id=client_id, protocol_version=5), 5))
    connack = client.receive()
    assert isinstance(connack, Connack) and connack.reason_code == 0
    return client


def test_300_websockets_starting_1mb_messages_are_closed_and_counted(roost: RoostThread) -> None:
    """Each opens a binary message announced as 1 MB whose payload starts a 1 MB CONNECT, and sends 16 KiB
    of it: every one is closed from the CONNECT's fixed header (reason `connect_size`, as over TCP), while
    a logged-in WebSocket client and a TCP one are answered during the flood and after it."""
    ws_client = _logged_in(roost, "ws-logged-in")
    tcp_client, _ = raw_connect(roost.mqtt_port, "tcp-logged-in", 5)
    start = b"\x10" + varint(MEGABYTE - 5)
    hostile = []
    for n in range(300):
        sock = RawWebSocket(roost.http_port)
        assert isinstance(sock.accepted, AcceptConnection)
        sock.send_raw(frame_header(BINARY, MEGABYTE) + start + bytes(16_384 - len(start)))
        hostile.append(sock)
        if n % 50 == 0:
            assert ws_ping(ws_client) == []  # served during the flood
            assert ping(tcp_client) == []
    assert all(sock.closed_within_timeout() for sock in hostile)
    for sock in hostile:
        sock.close()
    assert ws_ping(ws_client) == []
    assert ping(tcp_client) == []
    assert budget_state(roost)[2]["connect_size"] == 300
    assert poll(lambda: budget_state(roost)[:2] == (0, 0)), budget_state(roost)
    metrics = httpx.get(f"http://127.0.0.1:{roost.http_port}/metrics", timeout=TIMEOUT).text
    assert 'roost_mqtt_pending_refusals_total{reason="connect_size"} 300.0' in metrics
    assert "roost_mqtt_pending_connections 0.0" in metrics
    ws_client.close()
    tcp_client.close()


def test_an_unfinished_fragmented_message_counts_against_the_shared_budget(
        make_roost: Callable[..., RoostThread]) -> None:
    """`max_pending_bytes = 100000`: a WebSocket sends 60,000 bytes of a CONNECT in three fragments of a
    message it does not finish; they count in the budget at once, so a TCP connection that would take the
    total over is closed; the last fragment completes the CONNECT and the client logs in."""
    roost = make_roost(max_pending_bytes=100_000)
    whole = encode(Connect(client_id="big", protocol_version=5, will=Will("w", b"p" * 64_000)), 5)
    assert 60_000 < len(whole) <= 65_536
    first = RawWebSocket(roost.http_port)
    first.send_raw(frame_header(BINARY, 20_000, fin=False) + whole[:20_000])
    for at in (20_000, 40_000):
        first.send_raw(frame_header(CONTINUATION, 20_000, fin=False) + whole[at:at + 20_000])
    assert poll(lambda: budget_state(roost)[1] == 60_000), budget_state(roost)
    second = partial_connect(roost.mqtt_port, 64_000, 60_000)
    assert broker_closed(second)
    second.close()
    assert budget_state(roost)[2]["bytes"] == 1
    rest = whole[60_000:]
    first.send_raw(frame_header(CONTINUATION, len(rest)) + rest)
    connack = first.receive()
    assert isinstance(connack, Connack) and connack.reason_code == 0
    assert poll(lambda: budget_state(roost)[:2] == (0, 0)), budget_state(roost)
    first.close()


def test_beyond_max_pending_connections_a_websocket_is_closed_at_once(make_roost: Callable[..., RoostThread]) -> None:
    """TCP and WebSocket connections share `max_pending_connections = 4`: with 2 of each waiting for their
    CONNECT, a fifth WebSocket is closed as soon as its MQTT connection starts, and counted."""
    roost = make_roost(max_pending_connections=4)
    waiting = [RawWebSocket(roost.http_port) for _ in range(2)]
    idle = [socket.create_connection(("127.0.0.1", roost.mqtt_port), timeout=TIMEOUT) for _ in range(2)]
    assert poll(lambda: budget_state(roost)[0] == 4), budget_state(roost)
    late = RawWebSocket(roost.http_port)
    assert late.closed_within_timeout()
    assert budget_state(roost)[2]["connections"] == 1
    for sock in [late, *waiting]:
        sock.close()
    for tcp in idle:
        tcp.close()


def test_permessage_deflate_is_not_negotiated(roost: RoostThread) -> None:
    """A compressed frame inflates about 1000-fold before any limit could see it (wsproto inflates each
    read whole): the server accepts the WebSocket without the extension, and MQTT works uncompressed."""
    client = RawWebSocket(roost.http_port, extensions=[PerMessageDeflate()])
    try:
        assert isinstance(client.accepted, AcceptConnection) and client.accepted.extensions == []
        client.send_frames(encode(Connect(client_id="plain", protocol_version=5), 5))
        assert isinstance(client.receive(), Connack)
        assert ws_ping(client) == []
    finally:
        client.close()
