"""What `GET /metrics` reports, built with `prometheus-client` (control/metrics.py says what and why).

Imported by `Metrics` when it is first needed (a scrape, an HTTP request, a SQLite batch write), not at
start-up: prometheus-client and what it imports (http.server, wsgiref, urllib.request) cost an idle
broker about 2 MB (docs/benchmarks.md, "Memory (issue 20)").
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from broker.codec import ReasonCode
from broker.service import BrokerService, BrokerSnapshot, SessionSnapshot
from broker.settings import VERSION
from broker.tenants import CLIENT_SUBSCRIPTIONS, TENANT_CONNECTIONS, TENANT_SUBSCRIPTIONS
from control.config import MetricsConfig

if TYPE_CHECKING:
    from storage.access import StorageAuthHook
    from storage.recorder import MessageRecorder
    from storage.usage import UsageMeter

__all__ = ["BrokerCollector", "Instruments", "choose_encoder"]

_QOS = ("0", "1", "2")
LIMITS = (CLIENT_SUBSCRIPTIONS, TENANT_SUBSCRIPTIONS, TENANT_CONNECTIONS)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
_ROWS_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class Instruments:
    """The registry of one Roost, and the few metrics observed directly (HTTP, SQLite writes)."""

    def __init__(self, collectors: Iterable[Any]) -> None:
        disable_created_metrics()  # no `_created` series beside every counter: half the lines, no information
        registry = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)  # RSS, CPU seconds, open files
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self.http_requests = Counter(
            "roost_http_requests", "HTTP requests answered, by route template and status",
            ("method", "route", "status"), registry=registry,
        )
        self.http_latency = Histogram(
            "roost_http_request_duration_seconds",
            "Time from receiving an HTTP request to starting its response, by route template",
            ("method", "route"), buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.sqlite_write = Histogram(
            "roost_sqlite_write_duration_seconds", "Time to write one batch to SQLite (waiting for the lock included)",
            ("writer",), buckets=_WRITE_BUCKETS, registry=registry,
        )
        self.sqlite_batch = Histogram(
            "roost_sqlite_write_batch_rows", "Rows written per SQLite batch", ("writer",),
            buckets=_ROWS_BUCKETS, registry=registry,
        )
        for collector in collectors:
            registry.register(collector)


class BrokerCollector(Collector):
    """Reads the broker's plain counters (and storage's) at scrape time."""

    def __init__(
        self,
        broker: BrokerService,
        *,
        auth_hook: StorageAuthHook | None,
        usage: UsageMeter | None,
        recorder: MessageRecorder | None,
        config: MetricsConfig,
    ) -> None:
        self.broker = broker
        self.auth_hook = auth_hook
        self.usage = usage
        self.recorder = recorder
        self.config = config

    def collect(self) -> Iterator[Metric]:
        snapshot = self.broker.snapshot()
        stats = snapshot.stats
        info = GaugeMetricFamily("roost_info", "Roost's version", labels=("version",))
        info.add_metric((VERSION,), 1)
        yield info
        yield GaugeMetricFamily("roost_uptime_seconds", "Seconds since Roost started", time.time() - snapshot.started_at)

        yield GaugeMetricFamily("roost_mqtt_clients_connected", "MQTT clients connected now", stats.clients_connected)
        yield CounterMetricFamily("roost_mqtt_connections_opened", "MQTT network connections accepted",
                                  stats.connections_opened)
        refused = CounterMetricFamily("roost_mqtt_connections_refused", "CONNECTs refused, by CONNACK reason",
                                      labels=("reason",))
        for code, count in sorted(stats.refused_by_reason.items()):
            refused.add_metric((_reason_name(code),), count)
        yield refused
        yield CounterMetricFamily("roost_mqtt_auth_failures", "CONNECTs refused by authentication", stats.auth_failures)
        yield CounterMetricFamily("roost_mqtt_protocol_errors", "Connections closed for a protocol error",
                                  stats.protocol_errors)

        yield from _limit_families(snapshot)

        yield _by_qos("roost_mqtt_messages_received", "Application messages published into the broker",
                      stats.messages_in_by_qos())
        yield _by_qos("roost_mqtt_messages_sent", "Application messages sent to subscribers",
                      stats.messages_out_by_qos())
        # QoS 1 and 2 only: counting QoS 0 payloads would cost every QoS 0 message a second counter.
        yield _by_qos("roost_mqtt_payload_received_bytes",
                      "Payload bytes of the QoS 1 and 2 messages published into the broker",
                      stats.received_bytes_by_qos, first=1)
        yield _by_qos("roost_mqtt_payload_sent_bytes", "Payload bytes of the QoS 1 and 2 messages sent to subscribers",
                      stats.sent_bytes_by_qos, first=1)
        yield CounterMetricFamily("roost_mqtt_network_received_bytes", "Bytes read from MQTT clients",
                                  stats.bytes_received)
        yield CounterMetricFamily("roost_mqtt_network_sent_bytes", "Bytes written to MQTT clients", stats.bytes_sent)
        dropped = CounterMetricFamily("roost_mqtt_messages_dropped", "Messages dropped, by reason", labels=("reason",))
        for reason, count in stats.dropped_by_reason().items():
            dropped.add_metric((reason,), count)
        yield dropped
        yield CounterMetricFamily("roost_mqtt_messages_unrouted", "Messages that matched no subscription",
                                  stats.messages_unrouted)
        yield CounterMetricFamily("roost_mqtt_messages_expired", "Queued messages that expired before delivery",
                                  stats.messages_expired)

        yield GaugeMetricFamily("roost_mqtt_retained_messages", "Retained messages stored", snapshot.retained)
        yield GaugeMetricFamily("roost_mqtt_subscriptions", "Subscriptions", stats.subscriptions)
        sessions = snapshot.sessions
        yield GaugeMetricFamily("roost_mqtt_sessions", "Sessions, connected or not", len(sessions))
        yield GaugeMetricFamily("roost_mqtt_queued_messages", "Messages waiting in session queues",
                                sum(s.queued for s in sessions))
        yield GaugeMetricFamily("roost_mqtt_inflight_messages", "QoS 1 and 2 deliveries awaiting acknowledgement",
                                sum(s.inflight for s in sessions))

        hits = CounterMetricFamily("roost_limit_hits", "SUBSCRIBEs and CONNECTs refused for going over a limit "
                                   "(client_subscriptions, tenant_subscriptions, tenant_connections)",
                                   labels=("limit",))
        for limit in LIMITS:
            hits.add_metric((limit,), stats.limit_hits[limit])
        yield hits
        if self.auth_hook is not None and self.auth_hook.usage is not None:
            yield CounterMetricFamily("roost_quota_rejections",
                                      "Messages refused by the hourly quota: MQTT (0x97) and REST (429)",
                                      self.auth_hook.usage.rejections)
        state = snapshot.persistence
        if state.enabled:
            yield CounterMetricFamily("roost_state_commits", "Commits of the broker's durable state (sessions, "
                                      "their QoS 1/2 messages, retained messages)", state.commits)
            yield CounterMetricFamily("roost_state_rows_written", "Rows written or deleted by those commits",
                                      state.rows_written)
            yield CounterMetricFamily("roost_state_commit_seconds", "Seconds spent in those commits (with "
                                      "roost_state_commits_total: the mean commit time)", state.commit_seconds)
            yield CounterMetricFamily("roost_state_commit_failures", "Commits of the broker's state that failed "
                                      "(retried)", state.failures)
            yield GaugeMetricFamily("roost_state_pending_changes", "Changes to the broker's durable state not "
                                    "on disk yet", state.pending_changes)
        if self.recorder is not None:
            yield CounterMetricFamily("roost_history_messages_written", "Messages written to the message history",
                                      self.recorder.written)
            yield CounterMetricFamily("roost_history_messages_dropped",
                                      "History records dropped because the disk did not keep up",
                                      self.recorder.dropped)
        if self.config.per_tenant:
            yield from self._per_tenant(sessions)

    def _per_tenant(self, sessions: tuple[SessionSnapshot, ...]) -> Iterator[Metric]:
        """Bounded: the `max_tenants` busiest tenants by name (user id), the rest as `other`."""
        rows: dict[int, list[int]] = {}  # user id -> [clients connected, sessions, queued, messages this hour]
        for session in sessions:
            user_id = session.user_id
            if not isinstance(user_id, int):
                continue
            row = rows.setdefault(user_id, [0, 0, 0, 0])
            row[0] += session.connected
            row[1] += 1
            row[2] += session.queued
        if self.usage is not None:
            for user_id, used in self.usage.counts_this_hour().items():
                rows.setdefault(user_id, [0, 0, 0, 0])[3] = used
        ranked = sorted(rows.items(), key=lambda item: (item[1][3], item[1][1], -item[0]), reverse=True)
        limit = self.config.max_tenants
        labelled: list[tuple[str, list[int]]] = [(str(user_id), row) for user_id, row in ranked[:limit]]
        if len(ranked) > limit:
            other = [sum(values) for values in zip(*(row for _, row in ranked[limit:]))]
            labelled.append(("other", other))
        families = (
            GaugeMetricFamily("roost_tenant_clients_connected", "MQTT clients connected, by tenant", labels=("tenant",)),
            GaugeMetricFamily("roost_tenant_sessions", "Sessions, by tenant", labels=("tenant",)),
            GaugeMetricFamily("roost_tenant_queued_messages", "Messages waiting in session queues, by tenant",
                              labels=("tenant",)),
            GaugeMetricFamily("roost_tenant_messages_this_hour", "Messages counted against the hourly quota, by tenant",
                              labels=("tenant",)),
        )
        for tenant, row in labelled:
            for family, value in zip(families, row):
                family.add_metric((tenant,), value)
        yield from families


def _by_qos(name: str, documentation: str, values: list[int], first: int = 0) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=("qos",))
    for qos in range(first, 3):
        family.add_metric((_QOS[qos],), values[qos])
    return family


def _limit_families(snapshot: BrokerSnapshot) -> Iterator[Metric]:
    """The limits of broker/limits.py: topics over max_topic_levels/max_topic_length, wills dropped, and the
    budget of connections that have not finished CONNECT."""
    stats = snapshot.stats
    topics = CounterMetricFamily("roost_mqtt_topic_limit_refusals",
                                 "Topics over max_topic_levels or max_topic_length, by where they came",
                                 labels=("where",))
    for where in ("subscribe", "publish", "will", "rest"):
        topics.add_metric((where,), stats.topic_limit_refused[where])
    yield topics
    wills = CounterMetricFamily("roost_mqtt_wills_dropped", "Wills not published, by reason", labels=("reason",))
    for reason in ("acl", "quota", "limit"):
        wills.add_metric((reason,), stats.wills_dropped[reason])
    yield wills
    yield GaugeMetricFamily("roost_mqtt_pending_connections", "Connections that have not finished CONNECT",
                            snapshot.pending_connections)
    yield GaugeMetricFamily("roost_mqtt_pending_bytes", "Bytes buffered for connections that have not "
                            "finished CONNECT", snapshot.pending_bytes)
    refused = CounterMetricFamily("roost_mqtt_pending_refusals", "Connections closed before CONNECT by the "
                                  "pre-authentication budget, by reason", labels=("reason",))
    for reason in ("connections", "bytes", "connect_size"):
        refused.add_metric((reason,), stats.pending_refused[reason])
    yield refused


def _reason_name(code: int) -> str:
    try:
        return ReasonCode(code).name.lower()
    except ValueError:
        return f"0x{code:02x}"
