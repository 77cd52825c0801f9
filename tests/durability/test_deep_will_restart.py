"""Issue 14, the restart loop: three durable v5 sessions with a 1 s will delay on a topic 2,001 levels deep,
a subscriber holding a filter 1,200 levels deep, SIGTERM, and `roost serve` exited with RecursionError once
per will at start-up (`resume_timers -> publish_will -> match`); under systemd's start limit, five such wills
left the unit stopped for good.

Run as the real process (tests/durability/process.py): with the limits raised far above the attack the
wills are kept, the process starts again and delivers them (the walks are iterative); with the default
limits the wills are refused at CONNECT (0x90) and the restart is uneventful; and wills kept under raised
limits that a restart with the default limits no longer allows are dropped and counted, not fatal.
"""

from __future__ import annotations

from broker.codec import Publish, Subscribe, Subscription
from tests.durability.process import RoostProcess
from tests.helpers import RawClient
from tests.session_helpers import disconnect, persistent, ping, raw_connect, will

DEEP_FILTER = "+/" * 1200 + "#"
DEEP_TOPIC = "/" * 2000
HIGH_LIMITS = "max_topic_levels = 5000\nmax_topic_length = 65535"
WILLS = 3


def _deep_subscriber(roost: RoostProcess) -> int:
    """A durable v5 session subscribed (QoS 1) to the deep filter, then disconnected; its SUBACK code."""
    client, _ = raw_connect(roost.mqtt_port, "deep-sub", 5, **persistent(5, expiry=600))
    client.send(Subscribe(1, (Subscription(DEEP_FILTER, 1),)))
    code = client.receive().reason_codes[0]
    disconnect(client)
    return code


def _durable_wills(roost: RoostProcess) -> tuple[list[RawClient], list[int]]:
    """Three durable v5 sessions (expiry 60 s) with a 1 s will delay on the deep topic, left connected."""
    clients, codes = [], []
    for n in range(WILLS):
        client, connack = raw_connect(roost.mqtt_port, f"will-{n}", 5, **persistent(5, expiry=60),
                                      will=will(DEEP_TOPIC, f"gone {n}".encode(), 1, will_delay_interval=1))
        clients.append(client)
        codes.append(connack.reason_code)
    return clients, codes


def _stop_with_sigterm(roost: RoostProcess, clients: list[RawClient]) -> None:
    roost.wait_committed()
    assert roost.terminate() == 0, roost.log_tail()
    for client in clients:
        client.close()


def _collect_wills(roost: RoostProcess) -> list[Publish]:
    """Resume the subscriber's session and take what it was sent (PUBACKing QoS 1), up to a PINGREQ."""
    client, connack = raw_connect(roost.mqtt_port, "deep-sub", 5, **persistent(5, expiry=600))
    assert connack.session_present
    received: list[Publish] = []
    while len(received) < WILLS:
        packet = client.receive()
        assert isinstance(packet, Publish), packet
        received.append(packet)
    received += [p for p in ping(client) if isinstance(p, Publish)]
    client.close()
    return received


def _deep_wills_kept_through_sigterm(roost_process) -> RoostProcess:
    """A Roost with raised limits: the deep subscriber and the three deep wills, then SIGTERM."""
    roost = roost_process("batched", HIGH_LIMITS)
    roost.start()
    assert _deep_subscriber(roost) == 1
    clients, codes = _durable_wills(roost)
    assert codes == [0] * WILLS
    _stop_with_sigterm(roost, clients)
    return roost


def test_deep_wills_survive_sigterm_and_restart_with_high_limits(roost_process) -> None:
    roost = _deep_wills_kept_through_sigterm(roost_process)

    roost.start()  # raised AssertionError ("did not start") when start-up died with RecursionError
    wills = _collect_wills(roost)
    assert sorted(p.payload for p in wills) == [b"gone 0", b"gone 1", b"gone 2"]
    assert all(p.topic == DEEP_TOPIC for p in wills)
    assert roost.running and "RecursionError" not in roost.log_path.read_text()
    roost.terminate()


def test_with_default_limits_the_deep_wills_are_refused_and_restart_is_clean(roost_process) -> None:
    roost = roost_process("batched")
    roost.start()
    assert _deep_subscriber(roost) == 0x8F
    clients, codes = _durable_wills(roost)
    assert codes == [0x90] * WILLS  # Topic Name invalid: the will topic is over max_topic_levels
    _stop_with_sigterm(roost, clients)
    roost.start()
    assert roost.running
    probe, _ = raw_connect(roost.mqtt_port, "probe", 5)
    assert ping(probe) == []
    probe.close()
    roost.terminate()


def test_wills_kept_under_raised_limits_are_dropped_when_the_limits_come_down(roost_process) -> None:
    """Run 1 keeps the deep wills (limits raised); run 2 starts with the default limits: it starts, the
    restored wills are over max_topic_levels, so they are dropped and counted, and nothing is delivered."""
    roost = _deep_wills_kept_through_sigterm(roost_process)

    roost.config.write_text(roost.config.read_text().replace(HIGH_LIMITS, ""))
    roost.start()
    roost.wait_metric('roost_mqtt_wills_dropped_total{reason="limit"}', lambda value: value == WILLS)
    client, connack = raw_connect(roost.mqtt_port, "deep-sub", 5, **persistent(5, expiry=600))
    assert connack.session_present
    assert ping(client) == []  # no will was delivered
    client.close()
    assert roost.running
    roost.terminate()
