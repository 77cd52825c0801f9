"""The dashboard's broker console under a large broker (issue 19): do its lists stall the broker?

    python -m bench.console [--clients 10000] [--subscriptions 10] [--duration 5] [--output docs/benchmarks.md]

Roost only. One tenant's MQTT instance opens `--clients` idle connections (4 processes, pipelined
CONNECTs), each holding `--subscriptions` subscriptions (10,000 x 10 = 100,000). A pinger, another client
of the same tenant, sends PINGREQ every 20 ms and records the round trips: first for `--duration` seconds
with nothing else going on; then as long while an HTTP client sends cheap requests back to back (one event:
the control, what the machine and HTTP cost); then as long while it lists the console's views as fast as
Roost answers them (one request after the other, more than any browser: the pages poll every 5 s), with
the tenant's API key, so every request walks the tenant's 10,000 clients / 100,000 subscriptions:

    GET /api/v1/clients?page=P&per_page=50            P random over every page
    GET /api/v1/clients?q=bench-idle1-77              a filter: every client is looked at
    GET /api/v1/subscriptions?page=P&per_page=50
    GET /api/v1/subscriptions?q=bench/s/7/3           a filter: every subscription is looked at
    GET /api/v1/shared-subscriptions
    GET /api/v1/retained?filter=%23

It reports the pinger's p50/p99 in each phase and each request kind's response time: what a view costs
the other clients is the difference between the last phase and the control.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .brokers import HOST, RoostBroker, start_broker
from .http import api_client
from .loadgen import IdleClients, Pinger, Worker, _subscribe, gather
from .run import _fmt, machine, raise_file_limit, write_output
from .scenarios import _percentile

BEGIN, END = "<!-- bench:console:begin -->", "<!-- bench:console:end -->"
PROCESSES = 4


class SubscribedIdle(IdleClients):
    """Idle connections that each hold `n` subscriptions (their own topics, `bench/s/{conn}/{i}`)."""

    def subscribe_each(self, n: int, tag: int) -> int:
        for k, sock in enumerate(self.socks):
            filters = [f"bench/s/{tag}-{k}/{i}" for i in range(n)]
            _subscribe(sock, b"", filters, 0, self.version, per_packet=n, window=1)
        return len(self.socks) * n


@dataclass(frozen=True, slots=True)
class Plan:
    clients: int = 10_000
    subscriptions: int = 10
    duration: float = 5.0


def _requests(clients: int, per_page: int = 50) -> list[tuple[str, str]]:
    pages = max(1, clients // per_page)
    return [
        ("clients page", f"/api/v1/clients?per_page={per_page}&page={random.randint(1, pages)}"),
        ("clients filter", "/api/v1/clients?q=bench-idle1-77"),
        ("subscriptions page", f"/api/v1/subscriptions?per_page={per_page}&page={random.randint(1, pages * 10)}"),
        ("subscriptions filter", "/api/v1/subscriptions?q=bench/s/7/3"),
        ("shared groups", "/api/v1/shared-subscriptions"),
        ("retained", "/api/v1/retained?filter=%23"),
    ]


def measure(broker: RoostBroker, plan: Plan) -> dict[str, float]:
    assert broker.tenant is not None
    workers: list[Worker] = []
    try:
        holders = [Worker(SubscribedIdle, HOST, broker.port, 4, broker.credentials, f"bench-idle{i}")
                   for i in range(PROCESSES)]
        pinger = Worker(Pinger, HOST, broker.port, 4, broker.credentials, "bench-pinger")
        workers += [*holders, pinger]
        opened = sum(gather(holders, "open", plan.clients // PROCESSES, 100, 300.0, timeout=330))
        if opened < plan.clients:
            raise RuntimeError(f"only {opened} of {plan.clients} connections opened")
        subscribed = sum(worker.result(600) for worker in _send_each(holders, plan.subscriptions))
        gather([pinger], "connect")
        # Phase one: nothing but the pinger.
        t_start = time.perf_counter() + 0.3
        pinger.send("ping", 0.02, t_start, t_start + plan.duration)
        quiet = pinger.result(plan.duration + 30)
        with api_client(broker.http_port, broker.tenant.api_key) as client:
            client.get("/api/v1/clients?per_page=1").raise_for_status()  # connection made, outside the window
            # Phase two, the control: requests as fast, that look at almost nothing (one event), so that
            # what the machine and HTTP cost is told apart from what walking the broker costs.
            cheap, _ = _phase(client, pinger, plan, lambda: [("one event", "/api/v1/events?per_page=1")])
            # Phase three: the console's lists, one after the other, while the pinger pings.
            busy, timings = _phase(client, pinger, plan, lambda: _requests(plan.clients))
            total = client.get("/api/v1/subscriptions?per_page=1").json()["pagination"]["total"]
    finally:
        for worker in workers:
            worker.close()
    result = {"clients": float(opened), "subscriptions": float(subscribed), "listed_subscriptions": float(total),
              "quiet_p50": _percentile(quiet, 0.5), "quiet_p99": _percentile(quiet, 0.99),
              "cheap_p50": _percentile(cheap, 0.5), "cheap_p99": _percentile(cheap, 0.99),
              "busy_p50": _percentile(busy, 0.5), "busy_p99": _percentile(busy, 0.99),
              "busy_max": max(busy) if busy else float("nan"),
              "requests_per_s": sum(len(v) for v in timings.values()) / plan.duration}
    for name, values in timings.items():
        result[f"{name} p50"] = _percentile(values, 0.5)
        result[f"{name} p99"] = _percentile(values, 0.99)
    return result


def _phase(client: Any, pinger: Worker, plan: Plan,
           requests: Callable[[], list[tuple[str, str]]]) -> tuple[list[float], dict[str, list[float]]]:
    """Requests back to back for `plan.duration` while the pinger pings: its round trips, and the response
    times by request kind."""
    timings: dict[str, list[float]] = {}
    t_start = time.perf_counter() + 0.3
    t_end = t_start + plan.duration
    pinger.send("ping", 0.02, t_start, t_end)
    while time.perf_counter() < t_start:
        time.sleep(0.001)
    while time.perf_counter() < t_end:
        for name, path in requests():
            began = time.perf_counter()
            response = client.get(path)
            if response.status_code != 200:
                raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")
            timings.setdefault(name, []).append((time.perf_counter() - began) * 1000)
    return pinger.result(plan.duration + 30), timings


def _send_each(holders: list[Worker], n: int) -> list[Worker]:
    for tag, worker in enumerate(holders):
        worker.send("subscribe_each", n, tag)
    return holders


def render(result: dict[str, float], plan: Plan, command: str) -> str:
    info = machine()
    rows = [
        ("Connected clients (one tenant)", f"{result['clients']:.0f}"),
        ("Subscriptions held (as the console counts them)", f"{result['listed_subscriptions']:.0f}"),
        ("Other client's PINGREQ round trip, quiet: p50 / p99", f"{_fmt(result['quiet_p50'])} / {_fmt(result['quiet_p99'])} ms"),
        ("Same during cheap requests back to back (the control): p50 / p99",
         f"{_fmt(result['cheap_p50'])} / {_fmt(result['cheap_p99'])} ms"),
        ("Same while the console lists, non-stop: p50 / p99 / max",
         f"{_fmt(result['busy_p50'])} / {_fmt(result['busy_p99'])} / {_fmt(result['busy_max'])} ms"),
        ("Console requests answered", f"{_fmt(result['requests_per_s'])} /s"),
    ]
    for name in ("clients page", "clients filter", "subscriptions page", "subscriptions filter", "shared groups",
                 "retained"):
        if f"{name} p50" in result:
            rows.append((f"  GET {name}: p50 / p99", f"{_fmt(result[f'{name} p50'])} / {_fmt(result[f'{name} p99'])} ms"))
    table = "\n".join(f"| {label} | {value} |" for label, value in rows)
    return f"""{BEGIN}
## Dashboard console under a large broker (issue 19)

`{command}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {info['nproc']} cores ({info['cpu']}),
Python {info['python']}, uvloop {info['uvloop']}. {plan.clients} idle clients of one tenant with
{plan.subscriptions} subscriptions each; a pinger of the same tenant sends PINGREQ every 20 ms, {plan.duration:.0f} s
quiet, {plan.duration:.0f} s while one HTTP client sends cheap requests back to back (the control: the machine's and
HTTP's share), then {plan.duration:.0f} s while it requests the console's lists back to back with the tenant's API
key (see bench/console.py for the request mix). Load average at the start: {os.getloadavg()[0]:.1f}.

| | |
|---|---|
{table}
{END}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=Plan.clients)
    parser.add_argument("--subscriptions", type=int, default=Plan.subscriptions)
    parser.add_argument("--duration", type=float, default=Plan.duration)
    parser.add_argument("--output", type=Path, default=None, help="write the section into this Markdown file")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 15_000 or not 1 <= args.subscriptions <= 100 or not 1 <= args.duration <= 60:
        parser.error("--clients 1..15000, --subscriptions 1..100, --duration 1..60 (bounded load on 127.0.0.1)")
    raise_file_limit()
    plan = Plan(args.clients - args.clients % PROCESSES or PROCESSES, args.subscriptions, args.duration)
    with start_broker("roost") as broker:
        assert isinstance(broker, RoostBroker)
        result = measure(broker, plan)
    command = "python -m bench.console " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = render(result, plan, command.strip())
    print(text)
    if args.output is not None:
        write_output(args.output, text, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
