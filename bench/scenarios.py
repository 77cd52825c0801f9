"""The benchmark scenarios. Each takes a started broker and a `Plan`, drives workers, returns its metrics.

A scenario never starts brokers itself (the runner gives each run a fresh process) and closes every
worker it started. Times are absolute perf_counter() instants handed to the workers: clients start
together at `t0`, counting begins after a warm-up and ends at `t_end`.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .brokers import HOST, Broker
from .loadgen import ConnectStorm, IdleClients, Pinger, Publisher, Subscriber, Worker, gather

__all__ = ["LAST", "METRICS", "SCENARIOS", "Metric", "Plan", "Target"]


@dataclass(frozen=True, slots=True)
class Plan:
    """Sizes and durations; `Plan.quick()` is the smoke mode that only checks the harness works."""

    version: int = 4
    duration: float = 4.0
    warmup: float = 0.5
    payload: int = 64
    fan_in_publishers: int = 4
    fan_out_subscribers: int = 100
    qos1_publishers: int = 4
    qos1_window: int = 100
    latency_rate: float = 10_000.0
    routing_subscriptions: int = 100_000
    idle_connections: int = 10_000
    overload_payload: int = 1024
    storm_workers: int = 4

    @classmethod
    def quick(cls, version: int = 4) -> Plan:
        # routing_subscriptions above Roost's default max_subscriptions_per_client (1,000), so that the smoke
        # test sees the harness's config lift it, as the full run needs.
        return cls(version=version, duration=0.4, warmup=0.1, fan_out_subscribers=10, latency_rate=2000.0,
                   routing_subscriptions=1200, idle_connections=200, storm_workers=2)


@dataclass(frozen=True, slots=True)
class Target:
    """`subject` "ratio" compares Roost / Mosquitto (not oriented); "roost" compares Roost's own value."""

    subject: str
    op: str  # ">=", "<=", "<"
    value: float

    def met(self, roost: float, mosquitto: float) -> bool | None:
        subject = roost if self.subject == "roost" else (roost / mosquitto if mosquitto else float("nan"))
        if subject != subject:  # NaN: no figure
            return None
        return {">=": subject >= self.value, "<=": subject <= self.value, "<": subject < self.value}[self.op]

    def describe(self) -> str:
        return f"{'Roost/Mosq' if self.subject == 'ratio' else 'Roost'} {self.op} {self.value:g}"


@dataclass(frozen=True, slots=True)
class Metric:
    scenario: str
    key: str
    label: str
    unit: str
    higher_is_better: bool
    target: Target | None = None


METRICS: list[Metric] = [
    Metric("fan_in", "rate", "QoS 0 fan-in, 4 pub -> 1 sub", "msg/s", True, Target("ratio", ">=", 1.5)),
    Metric("fan_out", "rate", "QoS 0 fan-out, 1 pub -> 100 subs", "deliveries/s", True, Target("ratio", ">=", 1.0)),
    Metric("qos1", "rate", "QoS 1 end to end, 4 pub (window 100) -> 1 sub", "msg/s", True,
           Target("ratio", ">=", 1.0)),
    Metric("latency", "p50", "latency p50 at 10,000 msg/s", "ms", False),
    Metric("latency", "p99", "latency p99 at 10,000 msg/s", "ms", False, Target("ratio", "<=", 2.0)),
    Metric("routing", "ratio", "routing: rate with 100k subs / with 1", "fraction", True, Target("roost", ">=", 0.8)),
    Metric("routing", "rate_1", "routing: rate with 1 sub (QoS 1 pub, window 100)", "msg/s", True),
    Metric("routing", "rate_many", "routing: rate with 100k subs (QoS 1 pub, window 100)", "msg/s", True),
    Metric("routing", "subscribe_s", "routing: time to make 100k subs", "s", False),
    # Issue 20's targets (a Raspberry Pi with 1 GB beside Home Assistant); they were 45 MB and 15 KB.
    Metric("idle", "idle_mb", "idle RSS, no clients", "MB", False, Target("roost", "<=", 30)),
    Metric("idle", "per_conn_kb", "RSS per idle connection (10k)", "KB", False, Target("roost", "<=", 4)),
    Metric("overload", "growth_mb", "overload: peak RSS - idle", "MB", False, Target("roost", "<", 100)),
    Metric("overload", "ping_p99", "overload: PINGREQ RTT p99", "ms", False),
    Metric("storm", "rate", "connect storm, CONNECT/CONNACK", "conn/s", True),
]


@contextlib.contextmanager
def _workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.close()


def _spawn(started: list[Worker], broker: Broker, plan: Plan, cls: type, name: str, n: int = 1) -> list[Worker]:
    workers = [Worker(cls, HOST, broker.port, plan.version, broker.credentials, f"{name}{i}") for i in range(n)]
    started.extend(workers)
    return workers


# The last measuring window and the longest silence a subscriber saw in it, both as perf_counter() instants,
# and (overload) each PINGREQ's send instant and round trip: what `bench.probe.summarize` needs to read the
# broker's side of the same seconds (`run.py --probe`).
LAST: dict[str, Any] = {}


def _window(plan: Plan, lead: float = 0.3) -> tuple[float, float, float]:
    """(t0: clients start, t_start: counting starts, t_end: counting and sending stop)."""
    t0 = time.perf_counter() + lead
    t_start = t0 + plan.warmup
    LAST.clear()
    LAST["window"] = (t_start, t_start + plan.duration)
    return t0, t_start, t_start + plan.duration


def _timeout(plan: Plan) -> float:
    return plan.warmup + plan.duration + 30


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


Publish = Callable[[Worker, int, float, float], tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Flow:
    rate: float  # messages/s delivered to the subscribers within the window
    max_gap_s: float  # the longest silence any subscriber saw within the window
    written_rate: float  # messages/s the publishers wrote (QoS 1: had acknowledged), warm-up included
    cpu_share: float  # the broker's CPU seconds per second of the window (1.0: one core all the time)

    def metrics(self) -> dict[str, float]:
        # CPU per message delivered: what a message costs the broker, which the machine's noise (the load
        # generator and other jobs on the same cores) moves much less than it moves the rate.
        per_message = self.cpu_share / self.rate * 1e6 if self.rate else float("nan")
        return {"rate": self.rate, "max_gap_s": self.max_gap_s, "written_rate": self.written_rate,
                "cpu_us_per_msg": per_message}


def _throughput(broker: Broker, sub: list[Worker], pubs: list[Worker], plan: Plan, mode: str,
                publish: Publish) -> Flow:
    """Start subscribers and publishers over one window and measure the flow."""
    t0, t_start, t_end = _window(plan)
    for worker in sub:
        worker.send("receive", mode, t_start, t_end, t_end + 0.3)
    for index, worker in enumerate(pubs):
        worker.send(*publish(worker, index, t0, t_end))
    time.sleep(max(0.0, t_start - time.perf_counter()))
    cpu_start = broker.cpu_seconds()
    time.sleep(max(0.0, t_end - time.perf_counter()))
    cpu_share = (broker.cpu_seconds() - cpu_start) / plan.duration
    deadline = _timeout(plan)
    written = sum(worker.result(deadline) for worker in pubs)
    answers = [worker.result(deadline) for worker in sub]
    LAST["gap"] = tuple(max(answers, key=lambda a: a["max_gap_s"])["gap_at"])  # type: ignore[assignment]
    return Flow(sum(a["count"] for a in answers) / plan.duration, max(a["max_gap_s"] for a in answers),
                written / (plan.warmup + plan.duration), cpu_share)


def fan_in(broker: Broker, plan: Plan) -> dict[str, float]:
    with _workers() as started:
        sub = _spawn(started, broker, plan, Subscriber, "fanin-sub")
        pubs = _spawn(started, broker, plan, Publisher, "fanin-pub", plan.fan_in_publishers)
        gather(sub + pubs, "connect")
        gather(sub, "subscribe", ["bench/#"], 0)
        flow = _throughput(broker, sub, pubs, plan, "count",
                           lambda w, i, t0, t_end: ("blast", [f"bench/in/{i}"], plan.payload, t0, t_end))
    return flow.metrics()


def fan_out(broker: Broker, plan: Plan) -> dict[str, float]:
    with _workers() as started:
        subs = _spawn(started, broker, plan, Subscriber, "fanout-sub", 2)
        pubs = _spawn(started, broker, plan, Publisher, "fanout-pub")
        per_process = plan.fan_out_subscribers // len(subs)
        gather(subs, "connect", per_process, timeout=60)
        gather(subs, "subscribe", ["bench/out"], 0, timeout=60)
        gather(pubs, "connect")
        flow = _throughput(broker, subs, pubs, plan, "count",
                           lambda w, i, t0, t_end: ("blast", ["bench/out"], plan.payload, t0, t_end))
    return flow.metrics()


def qos1(broker: Broker, plan: Plan) -> dict[str, float]:
    with _workers() as started:
        sub = _spawn(started, broker, plan, Subscriber, "qos1-sub")
        pubs = _spawn(started, broker, plan, Publisher, "qos1-pub", plan.qos1_publishers)
        gather(sub + pubs, "connect")
        gather(sub, "subscribe", ["bench/#"], 1)
        flow = _throughput(broker, sub, pubs, plan, "ack",
                           lambda w, i, t0, t_end: ("windowed", [f"bench/q1/{i}"], plan.payload, plan.qos1_window,
                                                    t0, t_end))
    return flow.metrics()


def latency(broker: Broker, plan: Plan) -> dict[str, float]:
    with _workers() as started:
        sub = _spawn(started, broker, plan, Subscriber, "lat-sub")
        pub = _spawn(started, broker, plan, Publisher, "lat-pub")
        gather(sub + pub, "connect")
        gather(sub, "subscribe", ["bench/lat"], 0)
        t0, t_start, t_end = _window(plan)
        sub[0].send("receive", "latency", t_start, t_end, t_end + 0.5)
        pub[0].send("paced", "bench/lat", plan.payload, plan.latency_rate, t0, t_end)
        pub[0].result(_timeout(plan))
        answer = sub[0].result(_timeout(plan))
        samples = [us / 1000 for us in answer["latencies_us"]]
        LAST["gap"] = tuple(answer["gap_at"])  # type: ignore[assignment]
    expected = plan.latency_rate * plan.duration
    if len(samples) < 0.5 * expected:
        raise RuntimeError(f"only {len(samples)} of ~{expected:.0f} messages arrived: the paced rate was not held")
    return {"p50": _percentile(samples, 0.50), "p99": _percentile(samples, 0.99)}


def routing(broker: Broker, plan: Plan) -> dict[str, float]:
    """Fan-in to one subscriber holding 1 subscription, then (same connections) 1 + (n - 1) distinct topics.

    The publishers send QoS 1 with a window of 100 to a QoS 0 subscription: the brokers' PUBACKs pace them,
    so the figure is the routing rate and not how a broker copes with a flood (that is fan-in's business).
    Phase two cycles over 1,000 of the subscribed topics."""
    n = plan.routing_subscriptions
    topic = "bench/r/{:06d}".format
    with _workers() as started:
        sub = _spawn(started, broker, plan, Subscriber, "route-sub")
        pubs = _spawn(started, broker, plan, Publisher, "route-pub", plan.fan_in_publishers)
        gather(sub + pubs, "connect")
        gather(sub, "subscribe", [topic(0)], 0)
        one = _throughput(broker, sub, pubs, plan, "count", lambda w, i, t0, t_end: (
            "windowed", [topic(0)], plan.payload, plan.qos1_window, t0, t_end))
        # Let the broker work off what the publishers left in socket buffers, so it does not count as
        # subscribing time, then empty what it still had queued for the subscriber.
        broker.wait_idle(timeout=30)
        gather(sub, "drain", 0.3, 30.0, timeout=60)
        began = time.perf_counter()
        gather(sub, "subscribe", [topic(i) for i in range(1, n)], 0, timeout=300)
        subscribe_s = time.perf_counter() - began
        step = max(1, n // 1000)
        spread = [[topic(j) for j in range(1 + i, n, step * len(pubs))] for i in range(len(pubs))]
        many = _throughput(broker, sub, pubs, plan, "count", lambda w, i, t0, t_end: (
            "windowed", spread[i], plan.payload, plan.qos1_window, t0, t_end))
    return {"ratio": many.rate / one.rate if one.rate else float("nan"), "rate_1": one.rate,
            "rate_many": many.rate, "subscribe_s": subscribe_s, "max_gap_s": max(one.max_gap_s, many.max_gap_s)}


def idle(broker: Broker, plan: Plan) -> dict[str, float]:
    time.sleep(0.5)
    idle_kb = broker.rss_kb()
    with _workers() as started:
        holders = _spawn(started, broker, plan, IdleClients, "idle", 2)
        opened = sum(gather(holders, "open", plan.idle_connections // 2, 50, 60.0, timeout=90))
        time.sleep(1.0)
        loaded_kb = broker.rss_kb()
    if opened < plan.idle_connections:
        print(f"bench: {broker.name}: only {opened} of {plan.idle_connections} idle connections opened")
    return {"idle_mb": idle_kb / 1024, "per_conn_kb": (loaded_kb - idle_kb) / max(1, opened),
            "connections": float(opened)}


def overload(broker: Broker, plan: Plan) -> dict[str, float]:
    with _workers() as started:
        slow = _spawn(started, broker, plan, Subscriber, "slow-sub")
        pinger = _spawn(started, broker, plan, Pinger, "pinger")
        pubs = _spawn(started, broker, plan, Publisher, "flood-pub", 2)
        gather(slow, "connect", 1, 16384)
        gather(slow, "subscribe", ["bench/flood"], 0)
        gather(pinger + pubs, "connect")
        time.sleep(0.3)
        idle_kb = broker.rss_kb()
        t0, t_start, t_end = _window(plan)
        slow[0].send("read_slowly", 4096, 0.01, t_end + 0.5)
        pinger[0].send("pings", 0.02, t_start, t_end)
        for worker in pubs:
            worker.send("blast", ["bench/flood"], plan.overload_payload, t0, t_end)
        peak_kb = idle_kb
        while time.perf_counter() < t_end + 0.5 and broker.alive():
            peak_kb = max(peak_kb, broker.rss_kb())
            time.sleep(0.05)
        if not broker.alive():
            raise RuntimeError(f"{broker.name} died under overload:\n{broker.log_tail()}")
        peak_kb = max(peak_kb, broker.peak_rss_kb())
        pings = pinger[0].result(_timeout(plan))
        LAST["pings"] = pings
        rtts = [rtt for _, rtt in pings]
        for worker in pubs + slow:
            worker.result(_timeout(plan))
    return {"growth_mb": (peak_kb - idle_kb) / 1024, "ping_p99": _percentile(rtts, 0.99)}


def storm(broker: Broker, plan: Plan) -> dict[str, float]:
    with _workers() as started:
        stormers = _spawn(started, broker, plan, ConnectStorm, "storm", plan.storm_workers)
        t0, t_start, t_end = _window(plan, lead=0.5)
        done = gather(stormers, "storm", t0, t0 + plan.duration, 200_000, timeout=_timeout(plan))
    return {"rate": sum(done) / plan.duration}


SCENARIOS: dict[str, Callable[[Broker, Plan], dict[str, float]]] = {
    "fan_in": fan_in, "fan_out": fan_out, "qos1": qos1, "latency": latency, "routing": routing, "idle": idle,
    "overload": overload, "storm": storm,
}


def median(values: list[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")
