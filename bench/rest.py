"""REST publish (issue 4): `POST /api/v1/messages` requests per second, and REST-to-MQTT delivery latency.

    python -m bench.rest [--quick] [--runs 3] [--rate 200] [--output docs/benchmarks.md]

Roost only (Mosquitto has no REST API). A tenant with an unlimited plan (`bench.brokers`) gets a project and
a topic `bench/rest` through REST; an MQTT instance client of the same tenant subscribes to `bench/rest`.

- Throughput: 3 processes x 8 keep-alive connections (raw sockets, `bench.http`), each sending the next
  request as soon as the previous response arrived; 201 responses per second over the window, the
  responses' latency, and the deliveries the subscriber counted.
- Latency: requests at a fixed, moderate rate (`--rate`, default 200/s) from 4 keep-alive connections;
  each payload carries the send instant (`perf_counter_ns`, as text); the subscriber computes arrival -
  send. Also the HTTP response time of the same requests.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from .brokers import HOST, Broker, RoostBroker, roost_revision, start_broker
from .http import RestLoad, api_client, encode_request
from .loadgen import Subscriber, Worker, gather
from .run import _fmt, _interrupt, machine, raise_file_limit, write_output
from .scenarios import _percentile, median
from .wire import text_stamp

BEGIN, END = "<!-- bench:rest:begin -->", "<!-- bench:rest:end -->"


@dataclass(frozen=True, slots=True)
class RestPlan:
    duration: float = 4.0
    warmup: float = 0.5
    processes: int = 3
    connections: int = 8
    rate: float = 200.0
    paced_connections: int = 4

    @classmethod
    def quick(cls) -> RestPlan:
        return cls(duration=0.5, warmup=0.2, processes=1, connections=2, rate=50.0)


def _setup(broker: Broker) -> tuple[int, int]:
    """A project and its topic `bench/rest`: (project id, topic id)."""
    assert isinstance(broker, RoostBroker) and broker.tenant is not None
    with api_client(broker.http_port, broker.tenant.api_key) as client:
        project = client.post("/api/v1/projects", json={"name": "bench"}).json()["data"]["id"]
        topic = client.post("/api/v1/topics", json={"project_id": project, "name": "bench/rest"})
        if topic.status_code != 201:
            raise RuntimeError(f"POST /api/v1/topics: {topic.status_code} {topic.text[:200]}")
        return project, topic.json()["data"]["id"]


def measure(broker: Broker, plan: RestPlan) -> dict[str, float]:
    assert isinstance(broker, RoostBroker) and broker.tenant is not None
    project, topic = _setup(broker)
    key = broker.tenant.api_key
    body = {"project_id": project, "topic_id": topic, "payload": text_stamp(0), "qos": 0}
    request = encode_request("POST", "/api/v1/messages", HOST, key, body)
    sub = Worker(Subscriber, HOST, broker.port, 4, broker.credentials, "restsub")
    workers = [sub]
    try:
        gather([sub], "connect")
        gather([sub], "subscribe", ["bench/rest"], 0)
        # Throughput.
        loads = [Worker(RestLoad, HOST, broker.http_port, key, plan.connections) for _ in range(plan.processes)]
        workers += loads
        t_start = time.perf_counter() + 0.8 + plan.warmup
        t_end = t_start + plan.duration
        sub.send("receive", "count", t_start, t_end, t_end + 0.5)
        for load in loads:
            load.send("blast", request, t_start, t_end)
        _sleep_until(t_start)
        cpu0 = broker.cpu_seconds()
        _sleep_until(t_end)
        cpu1 = broker.cpu_seconds()
        answers = [load.result(plan.duration + 60) for load in loads]
        delivered = sub.result(30)["count"]
        for load in loads:
            load.close()
        workers = [sub]
        statuses: dict[int, int] = {}
        for answer in answers:
            for status, count in answer["statuses"].items():
                statuses[status] = statuses.get(status, 0) + count
        if set(statuses) - {201}:
            raise RuntimeError(f"REST publish answered {statuses}")
        response_ms = [ms for answer in answers for ms in answer["latencies_ms"]]
        broker.wait_idle(timeout=30)
        # Latency at a fixed rate.
        paced = Worker(RestLoad, HOST, broker.http_port, key, plan.paced_connections)
        workers.append(paced)
        template = encode_request("POST", "/api/v1/messages", HOST, key, body)
        stamp_at = template.index(text_stamp(0).encode())
        t_start = time.perf_counter() + 0.5
        t_end = t_start + plan.duration
        sub.send("receive", "text-latency", t_start, t_end + 1.0, t_end + 1.5)
        paced.send("paced", template, stamp_at, plan.rate, t_start, t_end)
        sent = paced.result(plan.duration + 60)
        latencies = [us / 1000 for us in sub.result(30)["latencies_us"]]
    finally:
        for worker in workers:
            worker.close()
    if len(latencies) < 0.9 * sent["sent"]:
        raise RuntimeError(f"only {len(latencies)} of {sent['sent']} paced REST publishes reached the subscriber")
    return {
        "rate": statuses.get(201, 0) / plan.duration,
        "delivered_rate": delivered / plan.duration,
        "response_p50_ms": _percentile(response_ms, 0.5),
        "response_p99_ms": _percentile(response_ms, 0.99),
        "broker_cpu": (cpu1 - cpu0) / plan.duration,
        "delivery_p50_ms": _percentile(latencies, 0.5),
        "delivery_p99_ms": _percentile(latencies, 0.99),
        "paced_response_p50_ms": _percentile(sent["latencies_ms"], 0.5),
        "paced_response_p99_ms": _percentile(sent["latencies_ms"], 0.99),
        "late": float(sent["late"]),
    }


def _sleep_until(instant: float) -> None:
    delay = instant - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


ROWS = [
    ("rate", "REST publish, as fast as answered", "requests/s (201)"),
    ("delivered_rate", "  of which delivered to the MQTT subscriber in the window", "msg/s"),
    ("response_p50_ms", "  HTTP response time p50 at that load", "ms"),
    ("response_p99_ms", "  HTTP response time p99 at that load", "ms"),
    ("broker_cpu", "  Roost's CPU use at that load", "cores"),
    ("delivery_p50_ms", "REST publish -> MQTT delivery p50, at {rate} req/s", "ms"),
    ("delivery_p99_ms", "REST publish -> MQTT delivery p99, at {rate} req/s", "ms"),
    ("paced_response_p50_ms", "  HTTP response time p50 at {rate} req/s", "ms"),
    ("paced_response_p99_ms", "  HTTP response time p99 at {rate} req/s", "ms"),
]


def report(command: str, info: dict[str, str], runs: list[dict[str, float]], plan: RestPlan, errors: list[str],
           seconds: float) -> str:
    out = [
        BEGIN, "", "## REST publish (issue 4)", "", f"    {command}", "",
        f"- {info['nproc']} cores: {info['cpu']}; Roost at {info['roost']}; Python {info['python']}, "
        f"uvloop {info['uvloop']}",
        f"- {len(runs)} run(s), each on a fresh Roost; medians; throughput from {plan.processes} processes x "
        f"{plan.connections} keep-alive connections, latency from {plan.paced_connections} connections at "
        f"{plan.rate:g} requests/s; windows of {plan.duration:g} s; whole run {seconds / 60:.1f} min", "",
        "| figure | unit | median | runs |", "| --- | --- | ---: | --- |",
    ]
    for key, label, unit in ROWS:
        values = [run[key] for run in runs]
        out.append(f"| {label.format(rate=f'{plan.rate:g}')} | {unit} | {_fmt(median(values))} "
                   f"| {', '.join(_fmt(v) for v in values)} |")
    if errors:
        out += ["", "Failed measurements:", ""] + [f"- {e}" for e in errors]
    out += ["", END]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: one short run")
    parser.add_argument("--runs", type=int, default=None, help="runs (default 3; quick 1)")
    parser.add_argument("--rate", type=float, default=None, help="requests/s for the latency part (default 200)")
    parser.add_argument("--roost-rev", default="HEAD", help="git revision of Roost (default HEAD); 'worktree' for the tree")
    parser.add_argument("--output", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    plan = RestPlan.quick() if args.quick else RestPlan()
    if args.rate:
        plan = RestPlan(**{**{f: getattr(plan, f) for f in plan.__dataclass_fields__}, "rate": args.rate})
    runs = args.runs or (1 if args.quick else 3)
    raise_file_limit()
    began = time.perf_counter()
    results: list[dict[str, float]] = []
    errors: list[str] = []
    with roost_revision(args.roost_rev) as roost_version:
        for run in range(runs):
            started = time.perf_counter()
            try:
                with start_broker("roost") as broker:
                    value = measure(broker, plan)
                results.append(value)
                print(f"[run {run + 1}/{runs}] {json.dumps({k: round(v, 3) for k, v in value.items()})} "
                      f"({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
            except Exception as exc:
                errors.append(f"run {run + 1}: {exc}")
                traceback.print_exc(file=sys.stderr)
    command = "python -m bench.rest " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = report(command, machine() | {"roost": roost_version}, results, plan, errors, time.perf_counter() - began)
    print(text)
    if args.output:
        write_output(args.output, text, BEGIN, END)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
