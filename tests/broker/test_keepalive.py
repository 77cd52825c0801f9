"""Keep alive through real sockets: PINGREQ/PINGRESP, closing silent clients (and publishing their wills),
and the server's keep-alive ceiling (`max_keepalive`).

These tests let real time pass, so they use the smallest keep alives (1-2 s) and run the 3.1.1 and v5
clients side by side in one test rather than one after the other. Numbering is MQTT 5.0's unless a test
says "3.1.1".
"""

from __future__ import annotations

import time

import pytest

from broker.codec import Disconnect, Publish
from tests.session_helpers import ping, raw_connect, read_until_closed, will


@pytest.mark.parametrize("version", [pytest.param(4, id="v311"), pytest.param(5, id="v5")])
def test_pingreq_is_answered_with_pingresp(roost, version: int) -> None:
    """[MQTT-3.12.4-1]: the server answers PINGREQ with PINGRESP (and nothing else)."""
    client, _ = raw_connect(roost.mqtt_port, "pinger", version)
    for _ in range(3):
        assert ping(client) == []
    client.close()


def test_silent_client_is_closed_after_one_and_a_half_keep_alives_and_its_will_is_published(
    roost, client_factory
) -> None:
    """[MQTT-3.1.2-22] (3.1.1: [MQTT-3.1.2-24]): no packet within 1.5 x keep alive (1 s here) -> the server
    closes the connection as if the network had failed (v5 hears DISCONNECT 0x8D Keep Alive timeout first),
    and so the will is published [MQTT-3.1.2-8]."""
    watcher = client_factory("ka-watcher", version=5)
    watcher.subscribe("will/ka/#", qos=1)
    clients = {
        version: raw_connect(
            roost.mqtt_port, f"silent-{version}", version, keep_alive=1, will=will(f"will/ka/{version}", b"timed out", 1)
        )[0]
        for version in (4, 5)
    }
    started = time.monotonic()
    assert read_until_closed(clients[4]) == []
    elapsed = time.monotonic() - started
    v5_packets = read_until_closed(clients[5])
    assert [(type(p), p.reason_code) for p in v5_packets] == [(Disconnect, 0x8D)]
    assert 1.3 <= elapsed < 3.0, elapsed
    wills = sorted(watcher.expect().topic for _ in range(2))
    assert wills == ["will/ka/4", "will/ka/5"]


def test_client_sending_packets_stays_connected(roost) -> None:
    """[MQTT-3.1.2-22] (3.1.1: [MQTT-3.1.2-24]): any control packet within the keep alive resets it: a
    3.1.1 client sending PINGREQ and a v5 client sending PUBLISH every 0.6 s (keep alive 1 s) outlive
    1.5 keep-alive periods."""
    pinger, _ = raw_connect(roost.mqtt_port, "ka-pinger", 4, keep_alive=1)
    talker, _ = raw_connect(roost.mqtt_port, "ka-talker", 5, keep_alive=1)
    for _ in range(3):
        time.sleep(0.6)  # a keep-alive test: real time must pass between packets
        assert ping(pinger) == []
        talker.send(Publish("ka/chatter", b"still here"))
    assert ping(talker) == []  # still connected: no DISCONNECT, no close
    pinger.close()
    talker.close()


# -- the server's keep-alive ceiling ------------------------------------------------------------------------


def test_v5_keep_alive_above_max_keepalive_gets_server_keep_alive(make_roost) -> None:
    """[MQTT-3.2.2-21]: with max_keepalive = 2, a v5 client asking for more (or for 0, "no keep alive") is
    told Server Keep Alive 2 in CONNACK; one asking for 2 or less keeps its own value and hears nothing
    [MQTT-3.2.2-22]."""
    roost = make_roost(max_keepalive=2)
    for asked, told in [(60, 2), (0, 2), (2, None), (1, None)]:
        client, connack = raw_connect(roost.mqtt_port, f"asks-{asked}", 5, keep_alive=asked)
        assert connack.reason_code == 0
        assert connack.properties.server_keep_alive == told, asked
        client.close()


def test_v5_server_keep_alive_is_enforced(make_roost) -> None:
    """[MQTT-3.2.2-21][MQTT-3.1.2-22]: the Server Keep Alive is the keep alive the server enforces: a client
    that asked for 60 s but was told 2 s is closed after about 3 s of silence (DISCONNECT 0x8D), while a
    client that asked for 1 s is held to its own value (about 1.5 s)."""
    roost = make_roost(max_keepalive=2)
    capped, connack = raw_connect(roost.mqtt_port, "capped", 5, keep_alive=60)
    assert connack.properties.server_keep_alive == 2
    own, _ = raw_connect(roost.mqtt_port, "own", 5, keep_alive=1)
    started = time.monotonic()
    assert [(type(p), p.reason_code) for p in read_until_closed(own)] == [(Disconnect, 0x8D)]
    own_elapsed = time.monotonic() - started
    assert [(type(p), p.reason_code) for p in read_until_closed(capped)] == [(Disconnect, 0x8D)]
    capped_elapsed = time.monotonic() - started
    assert 1.3 <= own_elapsed < 2.5, own_elapsed
    assert 2.8 <= capped_elapsed < 4.5, capped_elapsed


def test_v311_keep_alive_above_max_keepalive_is_refused(make_roost) -> None:
    """3.1.1 cannot tell a client another keep alive, so with max_keepalive = 2 a client asking for more
    (or for 0) is refused with return code 2, then closed [MQTT-3.2.2-5 (3.1.1)], as Mosquitto does; one
    asking for 2 is accepted."""
    roost = make_roost(max_keepalive=2)
    for asked in (60, 0):
        client, connack = raw_connect(roost.mqtt_port, f"v311-asks-{asked}", 4, keep_alive=asked)
        assert (connack.reason_code, connack.session_present) == (2, False), asked
        assert read_until_closed(client) == []
    client, connack = raw_connect(roost.mqtt_port, "v311-asks-2", 4, keep_alive=2)
    assert connack.reason_code == 0
    assert ping(client) == []
    client.close()
