"""The dashboard's two rings, sans-IO: the event log keeps the newest `limit` events and counts what it
pushed out; the metrics history keeps one hour of samples and gives rates between them."""

from __future__ import annotations

import pytest

from broker.events import CONNECTED, DISCONNECTED, REFUSED, EventLog, reason_text
from broker.history import MetricsHistory, TenantHistory
from broker.stats import Stats


def test_the_event_log_keeps_the_newest_and_counts_the_rest() -> None:
    log = EventLog(limit=3)
    for n in range(5):
        log.record(CONNECTED, f"c{n}", None, "", "127.0.0.1:1")
    assert [e.client_id for e in log.newest_first()] == ["c4", "c3", "c2"]
    assert len(log) == 3 and log.dropped == 2
    with pytest.raises(ValueError):
        EventLog(limit=0)


def test_reason_codes_are_given_in_words() -> None:
    log = EventLog()
    log.record(REFUSED, "x", "u", "", "a", 0x86)
    log.record(DISCONNECTED, "x", "u", "", "a", 0x8D)
    log.record(DISCONNECTED, "x", "u", "", "a", None)
    assert [e.reason for e in log.newest_first()] == ["connection lost", "keep alive timeout",
                                                      "bad user name or password"]
    assert reason_text(0x98) == "administrative action"
    assert reason_text(0x9F) == "connection rate exceeded"  # from the enum when not in the table
    assert reason_text(0x7E) == "reason 0x7e"


def test_the_history_keeps_an_hour_of_rates() -> None:
    history = MetricsHistory(interval=10, span=60)
    stats = Stats()
    for n in range(20):
        stats.messages_received = 100 * n
        stats.messages_sent = 50 * n
        stats.clients_connected = n
        history.sample(stats, now=1000.0 + 10 * n)
    points = history.points()
    assert len(history) == 7 and len(points) == 6  # 60 s at 10 s: seven samples, six intervals
    assert points[-1].time == 1190.0 and points[-1].messages_in == 10.0 and points[-1].messages_out == 5.0
    assert points[-1].connections == 19 and points[0].time == 1140.0
    with pytest.raises(ValueError):
        MetricsHistory(interval=10, span=5)


def test_tenant_histories_are_bounded_and_let_go_when_idle() -> None:
    history = TenantHistory(interval=10, span=30, max_tenants=2)
    history.sample({"$u1/": (0, 0, 1), "$u2/": (0, 0, 0), "$u3/": (0, 0, 1), "$u4/": (0, 0, 1)}, now=0)
    assert len(history) == 2  # $u2/ has nothing connected; $u4/ found no room
    history.sample({"$u1/": (50, 20, 1), "$u3/": (0, 0, 0)}, now=10)
    [point] = history.points("$u1/")
    assert (point.messages_in, point.messages_out, point.connections, point.dropped) == (5.0, 2.0, 1, None)
    assert history.points("$u4/") == []
    for now in (20, 30, 40):
        history.sample({"$u1/": (50, 20, 1), "$u3/": (0, 0, 0)}, now=now)
    assert len(history) == 1 and history.points("$u3/") == []  # idle for a whole span: let go
