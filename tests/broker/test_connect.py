"""CONNECT and CONNACK through real sockets: session present, client identifiers, CONNACK properties,
protocol levels, refusals, the connect timeout, and graceful shutdown (in-process and `roost serve`).

Numbering is MQTT 5.0's unless a test is about 3.1.1 behaviour, where it says "3.1.1".
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from broker.codec import Connect, Disconnect, Properties, Publish, Subscribe, Subscription
from tests.helpers import TIMEOUT, RawClient
from tests.session_helpers import (
    connect_bytes,
    disconnect,
    free_port,
    persistent,
    ping,
    raw_connect,
    read_until_closed,
    receive_raw_until_closed,
)

VERSIONS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]
REPO = Path(__file__).resolve().parents[2]


# -- session present ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_clean_start_gives_session_present_0_even_if_a_session_existed(roost, version: int) -> None:
    """[MQTT-3.2.2-2] (3.1.1: [MQTT-3.2.2-1]): clean start 1 -> Session Present 0."""
    client, connack = raw_connect(roost.mqtt_port, "sp-clean", version, **persistent(version))
    assert connack.reason_code == 0
    disconnect(client)
    client, connack = raw_connect(roost.mqtt_port, "sp-clean", version, clean_start=True)
    assert (connack.reason_code, connack.session_present) == (0, False)
    client.close()


@pytest.mark.parametrize("version", VERSIONS)
def test_session_present_0_for_a_new_session_and_1_when_resumed(roost, version: int) -> None:
    """[MQTT-3.2.2-3] (3.1.1: [MQTT-3.2.2-2]): clean start 0 -> Session Present says whether state existed."""
    client, connack = raw_connect(roost.mqtt_port, "sp-resume", version, **persistent(version))
    assert (connack.reason_code, connack.session_present) == (0, False)
    disconnect(client)
    client, connack = raw_connect(roost.mqtt_port, "sp-resume", version, **persistent(version))
    assert (connack.reason_code, connack.session_present) == (0, True)
    client.close()


# -- client identifiers -------------------------------------------------------------------------------------


def test_v311_empty_client_id_with_clean_session_is_accepted(roost) -> None:
    """3.1.1 [MQTT-3.1.3-6]: a zero-byte client id with clean session 1 gets a unique id assigned, so two
    such clients do not take each other over."""
    first, connack1 = raw_connect(roost.mqtt_port, "", 4, clean_start=True)
    second, connack2 = raw_connect(roost.mqtt_port, "", 4, clean_start=True)
    assert (connack1.reason_code, connack1.session_present) == (0, False)
    assert (connack2.reason_code, connack2.session_present) == (0, False)
    assert ping(first) == [] and ping(second) == []
    first.close()
    second.close()


@pytest.mark.parametrize("version", [pytest.param(4, id="v311"), pytest.param(3, id="v31")])
def test_v3_empty_client_id_with_persistent_session_is_refused(roost, version: int) -> None:
    """3.1.1 [MQTT-3.1.3-8]: zero-byte client id with clean session 0 -> CONNACK return code 2 (identifier
    rejected), then the connection is closed [MQTT-3.2.2-5 (3.1.1)]."""
    client, connack = raw_connect(roost.mqtt_port, "", version, clean_start=False)
    assert (connack.reason_code, connack.session_present) == (2, False)
    assert read_until_closed(client) == []


def test_v5_empty_client_id_gets_an_assigned_client_identifier(roost) -> None:
    """[MQTT-3.2.2-16]: the CONNACK carries the Assigned Client Identifier, unique per connection, and the
    session can be resumed under that identifier [MQTT-3.1.3-7]."""
    first, connack1 = raw_connect(roost.mqtt_port, "", 5, **persistent(5))
    second, connack2 = raw_connect(roost.mqtt_port, "", 5)
    assigned = connack1.properties.assigned_client_identifier
    assert connack1.reason_code == 0 and assigned
    assert connack2.properties.assigned_client_identifier not in (None, "", assigned)
    disconnect(first)
    again, connack = raw_connect(roost.mqtt_port, assigned, 5, **persistent(5))
    assert (connack.reason_code, connack.session_present) == (0, True)
    assert connack.properties.assigned_client_identifier is None  # only for an empty client id
    again.close()
    second.close()


def test_v5_client_with_an_id_gets_no_assigned_client_identifier(client_factory) -> None:
    """[MQTT-3.2.2-16] applies to zero-length client ids only: paho's view of a normal CONNACK."""
    client = client_factory("named", version=5)
    properties = client.connack[2]
    assert not hasattr(properties, "AssignedClientIdentifier")


# -- CONNACK properties -------------------------------------------------------------------------------------


def test_v5_connack_properties_with_default_settings(client_factory) -> None:
    """What a paho v5 client sees in CONNACK: Receive Maximum [MQTT-3.2.2-?  3.2.2.3.3], Maximum Packet
    Size [MQTT-3.2.2-15 context], Topic Alias Maximum, and Retain Available absent or 1 (3.2.2.3.5)."""
    client = client_factory("props", version=5)
    properties = client.connack[2]
    assert properties.ReceiveMaximum == 1024
    assert properties.MaximumPacketSize == 1_048_576
    assert properties.TopicAliasMaximum == 64
    assert getattr(properties, "RetainAvailable", 1) == 1
    assert not hasattr(properties, "ServerKeepAlive")  # no ceiling configured [MQTT-3.2.2-22]
    assert not hasattr(properties, "SessionExpiryInterval")  # the requested one (0) is used as is


def test_v5_connack_properties_follow_the_settings(make_roost) -> None:
    """The CONNACK announces configured limits; a Session Expiry Interval above the server's maximum is
    answered with the granted value (3.2.2.3.2); Topic Alias Maximum 0 is sent as absent (3.2.2.3.8)."""
    roost = make_roost(receive_maximum=10, max_packet_size=4096, topic_alias_maximum=0, max_session_expiry=30)
    client, connack = raw_connect(roost.mqtt_port, "limits", 5, properties=Properties(session_expiry_interval=100))
    props = connack.properties
    assert connack.reason_code == 0
    assert props.receive_maximum == 10
    assert props.maximum_packet_size == 4096
    assert props.topic_alias_maximum in (None, 0)
    assert props.retain_available in (None, 1)
    assert props.session_expiry_interval == 30
    client.close()


def test_v311_connack_has_no_properties(roost) -> None:
    """3.1.1 section 3.2: CONNACK is exactly four bytes (return code 0 here)."""
    client = RawClient(roost.mqtt_port, 4)
    client.send(Connect("v311-bytes", 4))
    data = client.sock.recv(16)
    assert data == b"\x20\x02\x00\x00"
    client.close()


# -- protocol name and level --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "level", "answer"),
    [
        pytest.param("MQTT", 6, b"\x20\x02\x00\x01", id="MQTT-level-6"),
        pytest.param("MQTT", 3, b"\x20\x02\x00\x01", id="MQTT-level-3"),
        pytest.param("MQTT", 0, b"\x20\x02\x00\x01", id="MQTT-level-0"),
        pytest.param("MQIsdp", 4, b"\x20\x02\x00\x01", id="MQIsdp-level-4"),
        pytest.param("MQIsdp", 5, b"\x20\x03\x00\x84\x00", id="MQIsdp-level-5"),
    ],
)
def test_unsupported_protocol_level_is_refused_then_closed(roost, name: str, level: int, answer: bytes) -> None:
    """[MQTT-3.1.2-2] (3.1.1: [MQTT-3.1.2-2]): an unsupported protocol name/level is answered with CONNACK
    0x84 in v5 form for a level-5 client, return code 0x01 in 3.1.1 form otherwise, then closed."""
    client = RawClient(roost.mqtt_port, 4)
    client.send_raw(connect_bytes(name, level))
    assert receive_raw_until_closed(client) == answer
    client.close()


def test_mqtt31_mqisdp_level_3_is_accepted(roost) -> None:
    """MQTT 3.1: protocol name "MQIsdp", level 3 is accepted and works for publish/subscribe."""
    client, connack = raw_connect(roost.mqtt_port, "old-timer", 3)
    assert (connack.reason_code, connack.session_present) == (0, False)
    client.send(Subscribe(1, (Subscription("old/t", 1),)))
    assert client.receive().reason_codes == (1,)
    client.send(Publish("old/t", b"3.1 works", qos=1, packet_id=2))
    packets = [client.receive(), client.receive()]
    publishes = [p for p in packets if isinstance(p, Publish)]
    assert [(p.topic, p.payload, p.qos) for p in publishes] == [("old/t", b"3.1 works", 1)]
    client.close()


def test_mqtt31_with_paho(client_factory) -> None:
    """MQTT 3.1 as paho speaks it ("MQIsdp", level 3): a round trip with a 3.1.1 client."""
    old = client_factory("paho31", version=3)
    old.subscribe("mixed/t", qos=1)
    new = client_factory("paho311", version=4)
    new.publish("mixed/t", b"hi", qos=1)
    assert old.expect().payload == b"hi"


# -- packet order -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_second_connect_closes_the_connection(roost, version: int) -> None:
    """[MQTT-3.1.0-2]: a second CONNECT is a Protocol Error; v5 hears DISCONNECT 0x82 first."""
    client, connack = raw_connect(roost.mqtt_port, "twice", version)
    assert connack.reason_code == 0
    client.send(Connect("twice", version))
    packets = read_until_closed(client)
    if version == 5:
        assert [(type(p), p.reason_code) for p in packets] == [(Disconnect, 0x82)]
    else:
        assert packets == []


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(b"\xc0\x00", id="PINGREQ"),
        pytest.param(b"\x30\x05\x00\x01tab", id="PUBLISH"),
        pytest.param(b"\x82\x06\x00\x01\x00\x01t\x00", id="SUBSCRIBE"),
        pytest.param(b"\xe0\x00", id="DISCONNECT"),
    ],
)
def test_first_packet_not_connect_closes_the_connection(roost, first: bytes) -> None:
    """[MQTT-3.1.0-1]: the first packet must be CONNECT; anything else closes the connection unanswered."""
    client = RawClient(roost.mqtt_port, 4)
    client.send_raw(first)
    assert receive_raw_until_closed(client) == b""
    client.close()


# -- refusals -----------------------------------------------------------------------------------------------


def test_v5_authentication_method_is_refused_with_0x8c(roost) -> None:
    """[MQTT-4.12.0-1]: an unsupported Authentication Method -> CONNACK 0x8C, then the connection closes."""
    client, connack = raw_connect(
        roost.mqtt_port, "scram", 5, properties=Properties(authentication_method="SCRAM-SHA-256")
    )
    assert (connack.reason_code, connack.session_present) == (0x8C, False)
    assert read_until_closed(client) == []


def test_refused_when_anonymous_access_is_off(make_roost) -> None:
    """With allow_anonymous = false and no other auth: anonymous -> not authorized (3.1.1 return code 5,
    v5 0x87); a user name nobody knows -> bad user name or password (4 / 0x86). Then the connection
    closes [MQTT-3.2.2-7 (v5)] / [MQTT-3.2.2-5 (3.1.1)]."""
    roost = make_roost(allow_anonymous=False)
    cases = [(4, None, 5), (5, None, 0x87), (4, "alice", 4), (5, "alice", 0x86)]
    for version, username, code in cases:
        password = b"secret" if username else None
        client, connack = raw_connect(roost.mqtt_port, "nobody", version, username=username, password=password)
        assert (connack.reason_code, connack.session_present) == (code, False), (version, username)
        assert read_until_closed(client) == []


def test_silent_connection_is_closed_after_connect_timeout(make_roost) -> None:
    """A connection that never sends CONNECT is closed after `connect_timeout` (here 0.5 s)
    [MQTT-3.1.4-1 context: the server may close a connection that does not send CONNECT]."""
    roost = make_roost(connect_timeout=0.5)
    client = RawClient(roost.mqtt_port, 4)
    started = time.monotonic()
    assert client.closed_by_broker()
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 3.0, elapsed
    client.close()


def test_connect_timeout_does_not_apply_after_connect(make_roost) -> None:
    """Once CONNECT has arrived the connect timeout is cancelled: the connection outlives it."""
    roost = make_roost(connect_timeout=0.3)
    client, connack = raw_connect(roost.mqtt_port, "quick", 5)
    assert connack.reason_code == 0
    time.sleep(0.6)  # let the connect timeout pass (a timer test: real time must pass)
    assert ping(client) == []
    client.close()


# -- graceful shutdown --------------------------------------------------------------------------------------


def test_shutdown_sends_v5_clients_disconnect_0x8b(make_roost) -> None:
    """Stopping the broker: v5 clients hear DISCONNECT 0x8B (Server shutting down) before the close;
    3.1.1 clients (no server DISCONNECT in 3.1.1) just see the close."""
    roost = make_roost()
    v5, _ = raw_connect(roost.mqtt_port, "stop-v5", 5)
    v311, _ = raw_connect(roost.mqtt_port, "stop-v311", 4)
    roost.stop()
    assert [(type(p), p.reason_code) for p in read_until_closed(v5)] == [(Disconnect, 0x8B)]
    assert read_until_closed(v311) == []


def _write_config(tmp_path: Path, mqtt_extra: str = "") -> tuple[Path, int]:
    mqtt_port, http_port = free_port(), free_port()
    config = tmp_path / "roost.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        f"[mqtt]\nhost = \"127.0.0.1\"\nport = {mqtt_port}\nallow_anonymous = true\nsys_interval = 0\n{mqtt_extra}"
        f"[http]\nhost = \"127.0.0.1\"\nport = {http_port}\n"
    )
    return config, mqtt_port


def _roost_command() -> list[str]:
    script = REPO / ".venv" / "bin" / "roost"
    return [str(script)] if script.exists() else [sys.executable, "-m", "control.cli"]


def test_roost_serve_sigterm_disconnects_v5_clients_and_exits_0(tmp_path: Path) -> None:
    """`roost serve`: SIGTERM shuts down gracefully: a connected v5 client hears DISCONNECT 0x8B and the
    process exits with status 0."""
    config, port = _write_config(tmp_path)
    process = subprocess.Popen(
        [*_roost_command(), "serve", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
        lines.put("")  # EOF

    threading.Thread(target=pump, daemon=True).start()
    try:
        log: list[str] = []
        deadline = time.monotonic() + TIMEOUT * 2
        while not any("started" in line for line in log):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line, f"roost serve exited early: {''.join(log)}"
            log.append(line)
        client, connack = raw_connect(port, "sigterm", 5)
        assert connack.reason_code == 0
        process.send_signal(signal.SIGTERM)
        assert [(type(p), p.reason_code) for p in read_until_closed(client)] == [(Disconnect, 0x8B)]
        assert process.wait(timeout=TIMEOUT) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT)


def test_roost_serve_refuses_an_unknown_config_key(tmp_path: Path) -> None:
    """A typo in the config stops start-up with a non-zero status and a message naming the key."""
    config, _ = _write_config(tmp_path, mqtt_extra="max_keepalivee = 10\n")
    result = subprocess.run(
        [*_roost_command(), "serve", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 4,
    )
    assert result.returncode != 0
    assert "mqtt.max_keepalivee" in result.stderr
