"""The bridges' state in `/metrics`, read at scrape time from the bridges' plain counters (as
control/metrics.py's BrokerCollector reads the broker's): nothing on the message path calls Prometheus.

Series are labelled by bridge name (bounded by the config). Why a link is down is free text, so it is in
`GET /api/v1/bridges` (`last_error`), not in a label; here it is the state (one of a fixed set) and the time
of the last error.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.manager import Bridges

__all__ = ["BridgeCollector"]

_STATES = ("connected", "connecting", "backoff", "stopped")


class BridgeCollector(Collector):
    def __init__(self, bridges: Bridges) -> None:
        self.bridges = bridges

    def collect(self) -> Iterator[Metric]:
        label = ("bridge",)
        connected = GaugeMetricFamily("roost_bridge_connected", "1 while the bridge's upstream link is up", labels=label)
        state = GaugeMetricFamily("roost_bridge_state", "The bridge's link state (1 for the current one)",
                                  labels=("bridge", "state"))
        backlog = GaugeMetricFamily("roost_bridge_backlog_messages", "QoS 1/2 messages in the outbox (on disk)",
                                    labels=label)
        backlog_bytes = GaugeMetricFamily("roost_bridge_backlog_bytes", "Bytes of topic and payload in the outbox",
                                          labels=label)
        oldest = GaugeMetricFamily("roost_bridge_backlog_oldest_age_seconds",
                                   "Age of the oldest message in the outbox (0 when empty)", labels=label)
        in_flight = GaugeMetricFamily("roost_bridge_in_flight", "Messages sent upstream and not acknowledged yet",
                                      labels=label)
        qos0_queued = GaugeMetricFamily("roost_bridge_qos0_queued", "QoS 0 messages waiting in memory for the link",
                                        labels=label)
        messages = CounterMetricFamily(
            "roost_bridge_messages",
            "QoS 1/2 messages by what happened: queued (into the outbox), sent, resent (DUP), acknowledged, "
            "rejected (acknowledged with a failure code), dropped (a cap or expiry), refused (0x97, policy refuse)",
            labels=("bridge", "event"),
        )
        qos0 = CounterMetricFamily("roost_bridge_qos0_messages", "QoS 0 messages sent or dropped",
                                   labels=("bridge", "event"))
        commands = CounterMetricFamily("roost_bridge_commands", "Messages brought down and published locally",
                                       labels=label)
        looped = CounterMetricFamily("roost_bridge_looped", "Messages brought down that had passed through this "
                                     "Roost already (roost-via): acknowledged, not published", labels=label)
        connects = CounterMetricFamily("roost_bridge_connects", "Upstream links made", labels=label)
        commits = CounterMetricFamily("roost_bridge_outbox_commits", "Outbox commits (one fsync each)", labels=label)
        failures = CounterMetricFamily("roost_bridge_outbox_commit_failures", "Outbox commits the disk refused",
                                       labels=label)
        error_at = GaugeMetricFamily("roost_bridge_last_error_timestamp_seconds",
                                     "When the link last failed (Unix time; 0: never)", labels=label)
        for bridge in self.bridges.bridges:
            name = (bridge.config.name,)
            status = bridge.status()
            outbox = bridge.outbox
            connected.add_metric(name, 1 if status["connected"] else 0)
            for value in _STATES:
                state.add_metric((bridge.config.name, value), 1 if status["state"] == value else 0)
            queue = status["backlog"]
            backlog.add_metric(name, queue["messages"])
            backlog_bytes.add_metric(name, queue["bytes"])
            oldest.add_metric(name, queue["oldest_age"] or 0)
            in_flight.add_metric(name, queue["in_flight"])
            qos0_queued.add_metric(name, queue["qos0_queued"])
            counters = status["counters"]
            for event in ("queued", "sent", "resent", "acknowledged", "rejected", "dropped", "refused"):
                messages.add_metric((bridge.config.name, event), counters[event])
            qos0.add_metric((bridge.config.name, "sent"), counters["qos0_sent"])
            qos0.add_metric((bridge.config.name, "dropped"), counters["qos0_dropped"])
            commands.add_metric(name, counters["commands"])
            looped.add_metric(name, counters["looped"])
            connects.add_metric(name, status["connects"])
            commits.add_metric(name, outbox.commits if outbox is not None else 0)
            failures.add_metric(name, outbox.failures if outbox is not None else 0)
            error_at.add_metric(name, status["last_error_at"] or 0)
        yield from (connected, state, backlog, backlog_bytes, oldest, in_flight, qos0_queued, messages, qos0,
                    commands, looped, connects, commits, failures, error_at)
