"""What an access change in one tenant costs the others, and its own clients (issue 14, attack 3): the stall.

    python -m bench.access_change [--quick] [--subscriptions 400000] [--changes 20] [--roost-rev HEAD]
                                  [--same-tenant] [--rules 50] [--output docs/benchmarks.md]

Tenant B (`bench`, enterprise plan) holds `--subscriptions` subscriptions: devices of one of its projects,
whose topic rule `s/#` allows them, each with 1,000 (the default `max_subscriptions_per_client`), over 4
worker processes. The project has a second rule, `x/#`, that none of them subscribes under. Tenant A
(`alice`) has a project, a topic `cmd` and a device subscribed to it. A client of B (its MQTT instance)
sends a PINGREQ every millisecond from its own process. Four windows of the same length:

- `idle`: nothing else happens;
- `changes`: A toggles `can_subscribe` of its topic `--changes` times with `PUT /api/v1/topics/{id}`, one
  every 150 ms (each one is an access change: Roost reloads access and enforces it on A's clients);
- `own`: B toggles `can_subscribe` of its rule `x/#` as often: a change of the subscribe rules of the
  project its devices belong to, so every one of B's 400,000 subscriptions is re-checked each time (in
  time slices that let the loop turn), and none is removed, since `s/#` still allows them all;
- `own_publish`: B toggles `can_publish` of `s/#` as often: no subscription depends on it, so none is
  re-checked (publish decisions are asked again at the next PUBLISH).

`--same-tenant`: the pinger is one of B's devices instead, in the changed project, with 1,000 subscriptions
of its own among those re-checked: the changed tenant's own clients, whose wait the re-check decides.
`--rules N`: B's project has N more subscribe rules (`r{n}/#`), made before `s/#`, so that every check walks
them all before the rule that allows it: a check then costs ~25 times more, which a re-check stepped by
count (500 subscriptions) turns into longer steps and one stepped by time does not.

Reported per window: the pinger's PINGREQ round trips (p50, p99, max, in ms); for the changes, each PUT's
response time. The stall of a change is what the PINGREQ round trip max shows beyond the idle one. The
target (issue 14): no client waits more than 20 ms. Roost is exported from git (`--roost-rev`, default
HEAD) as `bench.run` does, so `--roost-rev main` measures the code before the change.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .brokers import HOST, Limits, RoostBroker, roost_revision
from .http import api_client
from .loadgen import BenchError, Pinger, Worker, _Client, _subscribe, gather, mqtt_connect
from .run import _fmt, _interrupt, machine, raise_file_limit, write_output
from .scenarios import _percentile
from .wire import Credentials

BEGIN, END = "<!-- bench:access-change:begin -->", "<!-- bench:access-change:end -->"
SAME_BEGIN, SAME_END = "<!-- bench:access-change-same-tenant:begin -->", "<!-- bench:access-change-same-tenant:end -->"
PER_CONNECTION = 1_000  # the default max_subscriptions_per_client
HOLDERS = 4  # worker processes holding tenant B's connections


@dataclass(frozen=True, slots=True)
class Plan:
    subscriptions: int = 400_000
    changes: int = 20
    spacing: float = 0.15  # seconds between two changes
    ping_interval: float = 0.001
    same_tenant: bool = False  # the pinger is a device of B's changed project, not B's MQTT instance
    rules: int = 0  # more subscribe rules in B's project, ahead of `s/#`: each check walks them all


class SubscriptionHolder(_Client):
    """Connections that each subscribe to `per_connection` distinct filters, and then hold them."""

    def hold(self, passwords: list[str], per_connection: int) -> int:
        """Connect device `{name}-{i}` with `passwords[i]` (a device's client id is its device id) and
        subscribe it to `per_connection` filters under `s/`."""
        for index, password in enumerate(passwords):
            device = f"{self.name}-{index}"
            sock, rest = mqtt_connect(self.host, self.port, device, self.version, Credentials(device, password))
            self.socks.append(sock)
            filters = [f"s/{device}/{n}/#" for n in range(per_connection)]
            self.pending.append(_subscribe(sock, rest, filters, 0, self.version))
        return len(passwords) * per_connection

    def subscribe(self, filters: list[str]) -> None:
        """Subscribe the first connection to `filters` (a SUBACK refusing one is an error)."""
        self.pending[0] = _subscribe(self.socks[0], self.pending[0], filters, 1, self.version)


class SubscribedPinger(Pinger):
    """A pinger that is one of B's devices, holding `per_connection` subscriptions of its own under `s/`."""

    def subscribe_many(self, per_connection: int) -> int:
        filters = [f"s/{self.name}/{n}/#" for n in range(per_connection)]
        self.pending[0] = _subscribe(self.socks[0], self.pending[0], filters, 0, self.version)
        return per_connection


def _tenant_a(broker: RoostBroker) -> tuple[str, int, Credentials]:
    """Tenant A: its API key, its topic's id, and its device's credentials (client id `alice-dev-0`)."""
    (user,) = broker.cli(["user", "add", "alice", "--plan", "enterprise"])
    with api_client(broker.http_port, user["api_key"]) as client:
        project = client.post("/api/v1/projects", json={"name": "a"}).json()["data"]["id"]
        topic = client.post("/api/v1/topics", json={"project_id": project, "name": "cmd"})
        device = client.post("/api/v1/devices", json={"project_id": project, "name": "dev", "device_id": "alice-dev-0"})
        if topic.status_code != 201 or device.status_code != 201:
            raise BenchError(f"tenant A set-up: {topic.status_code} {device.status_code}")
        mqtt = device.json()["data"]["mqtt_credentials"]
    return user["api_key"], topic.json()["data"]["id"], Credentials(mqtt["username"], mqtt["password"])


def _tenant_b_devices(broker: RoostBroker, counts: list[int], rules: int) -> tuple[int, int, list[list[str]], str]:
    """Tenant B's project with the topics `r{n}/#` (`rules` of them, made first, so a check meets them before
    the rule that allows it), `s/#` and `x/#`, and devices `hold{w}-{i}` and `pinger-0`: the ids of `s/#`
    and `x/#`, the passwords for each holder process, and the pinger device's password."""
    assert broker.tenant is not None
    with api_client(broker.http_port, broker.tenant.api_key) as client:
        project = client.post("/api/v1/projects", json={"name": "b"}).json()["data"]["id"]
        topic_ids = []
        for name in [*(f"r{n}/#" for n in range(rules)), "s/#", "x/#"]:
            topic = client.post("/api/v1/topics", json={"project_id": project, "name": name})
            if topic.status_code != 201:
                raise BenchError(f"tenant B's topic: {topic.status_code} {topic.text[:200]}")
            topic_ids.append(topic.json()["data"]["id"])

        def device(name: str, device_id: str) -> str:
            made = client.post("/api/v1/devices", json={"project_id": project, "name": name, "device_id": device_id})
            if made.status_code != 201:
                raise BenchError(f"tenant B's device: {made.status_code} {made.text[:200]}")
            return str(made.json()["data"]["mqtt_credentials"]["password"])

        passwords = [[device(f"h{holder}-{index}", f"hold{holder}-{index}") for index in range(count)]
                     for holder, count in enumerate(counts)]
        pinger = device("pinger", "pinger-0")
    return topic_ids[-2], topic_ids[-1], passwords, pinger


def _summary(rtts: list[float]) -> dict[str, float]:
    return {"p50": _percentile(rtts, 0.5), "p99": _percentile(rtts, 0.99), "max": max(rtts) if rtts else float("nan"),
            "count": len(rtts)}


def measure(plan: Plan, workdir: Path) -> dict[str, object]:
    broker = RoostBroker(workdir, Limits())
    broker.start(timeout=60)
    workers: list[Worker] = []
    try:
        assert broker.credentials is not None
        api_key, topic_id, device = _tenant_a(broker)
        a_device = Worker(SubscriptionHolder, HOST, broker.port, 5, device, "alice-dev")
        workers.append(a_device)
        gather([a_device], "connect", 1)
        gather([a_device], "subscribe", ["cmd"])  # the first change removes it: enforcement has work in A
        connections = max(1, plan.subscriptions // PER_CONNECTION)
        began = time.perf_counter()
        shares = [connections // HOLDERS + (i < connections % HOLDERS) for i in range(HOLDERS)]
        b_topic, b_other_topic, passwords, pinger_password = _tenant_b_devices(broker, shares, plan.rules)
        holders = [Worker(SubscriptionHolder, HOST, broker.port, 5, None, f"hold{i}") for i in range(HOLDERS)]
        workers += holders
        for holder, share in zip(holders, passwords):
            holder.send("hold", share, PER_CONNECTION)
        held = sum(holder.result(600) for holder in holders)
        if plan.same_tenant:
            pinger = Worker(SubscribedPinger, HOST, broker.port, 5, Credentials("pinger-0", pinger_password), "pinger")
            workers.append(pinger)
            gather([pinger], "connect", 1)
            held += gather([pinger], "subscribe_many", PER_CONNECTION)[0]
        else:
            pinger = Worker(Pinger, HOST, broker.port, 5, broker.credentials, "pinger")
            workers.append(pinger)
            gather([pinger], "connect", 1)
        setup_s = time.perf_counter() - began
        broker.wait_idle()
        rss_mb = broker.rss_kb() / 1024
        window = plan.changes * plan.spacing + 0.5

        start = time.perf_counter() + 0.3
        pinger.send("ping", plan.ping_interval, start, start + window)
        idle = _summary(pinger.result(window + 30))

        assert broker.tenant is not None
        b_key = broker.tenant.api_key
        windows: dict[str, dict[str, float]] = {}
        for name, key, path, bodies in (
            ("changes", api_key, f"/api/v1/topics/{topic_id}", ({"can_subscribe": False}, {"can_subscribe": True})),
            ("own", b_key, f"/api/v1/topics/{b_other_topic}", ({"can_subscribe": False}, {"can_subscribe": True})),
            ("own_publish", b_key, f"/api/v1/topics/{b_topic}", ({"can_publish": False}, {"can_publish": True})),
        ):
            put_ms: list[float] = []
            with api_client(broker.http_port, key) as client:
                client.get("/api/v1/users/me")  # the keep-alive connection is open before the window
                start = time.perf_counter() + 0.3
                pinger.send("ping", plan.ping_interval, start, start + window)
                time.sleep(max(0.0, start + 0.25 - time.perf_counter()))  # the pinger is under way
                for n in range(plan.changes):
                    sent = time.perf_counter()
                    response = client.put(path, json=bodies[n % 2])
                    put_ms.append((time.perf_counter() - sent) * 1000)
                    if response.status_code != 200:
                        raise BenchError(f"PUT {path}: {response.status_code} {response.text[:200]}")
                    time.sleep(max(0.0, sent + plan.spacing - time.perf_counter()))
                windows[name] = _summary(pinger.result(window + 30))
                windows[f"{name}_put"] = _summary(put_ms)
        return {"subscriptions": held, "connections": connections, "setup_s": setup_s, "rss_mb": rss_mb,
                "idle": idle, **windows}
    finally:
        for worker in workers:
            worker.close()
        broker.stop()


def report(command: str, info: dict[str, str], plan: Plan, result: dict[str, object]) -> str:
    rows = {name: result[name] for name in ("idle", "changes", "own", "own_publish")}
    puts = {name: result[f"{name}_put"] for name in ("changes", "own", "own_publish")}
    assert all(isinstance(row, dict) for row in (*rows.values(), *puts.values()))
    changes, own, own_publish = rows["changes"], rows["own"], rows["own_publish"]
    assert isinstance(changes, dict) and isinstance(own, dict) and isinstance(own_publish, dict)
    pinger = ("one of B's devices in the changed project, with 1,000 subscriptions of its own among those "
              "re-checked," if plan.same_tenant else "a client of B (its MQTT instance)")
    out = [
        SAME_BEGIN if plan.same_tenant else BEGIN,
        "## Access changes beside a tenant with many subscriptions (issue 14)"
        + (": the changed tenant's own clients" if plan.same_tenant else ""),
        "",
        f"Command: `{command}`",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
        f"Tenant B holds {result['subscriptions']:,} subscriptions on {result['connections']:,} devices "
        f"(set up in {_fmt(float(result['setup_s']))} s; Roost's RSS then {_fmt(float(result['rss_mb']))} MB). "
        f"Tenant A toggles `can_subscribe` of its topic {plan.changes} times (`PUT /api/v1/topics/{{id}}`, one "
        f"every {plan.spacing * 1000:.0f} ms) while {pinger} sends a PINGREQ every "
        f"{plan.ping_interval * 1000:.0f} ms. Then B toggles `can_subscribe` of a second rule of the project "
        "its devices belong to (`x/#`) as often: every one of B's subscriptions is re-checked each time, "
        "none removed. Then B toggles `can_publish` of the rule they subscribe under (`s/#`): no "
        "subscription is re-checked. "
        + (f"B's project has {plan.rules} more subscribe rules (`r{{n}}/#`), which each check meets before "
           "`s/#`. " if plan.rules else "")
        + "Target: no PINGREQ waits more than 20 ms.",
        "",
        "| window | PINGREQs | round trip p50 (ms) | p99 (ms) | max (ms) | PUT median / max (ms) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    labels = (("idle", "idle"), ("changes", "A's topic changes"), ("own", "B's own subscribe-rule changes"),
              ("own_publish", "B's own publish-rule changes"))
    for name, label in labels:
        row, put = rows[name], puts.get(name)
        assert isinstance(row, dict)
        timing = f"{_fmt(put['p50'])} / {_fmt(put['max'])}" if isinstance(put, dict) else ""
        out.append(f"| {label} | {row['count']:,} | {_fmt(row['p50'])} | {_fmt(row['p99'])} | {_fmt(row['max'])} "
                   f"| {timing} |")
    worst_own = max(own["max"], own_publish["max"])
    out += [
        "",
        f"Targets: a change in another tenant stalls no one for more than 20 ms (issue 14): "
        f"{'met' if changes['max'] <= 20 else '**not met**'} (max {_fmt(changes['max'])} ms); nor does one in "
        f"the pinger's own tenant: {'met' if worst_own <= 20 else '**not met**'} (max {_fmt(worst_own)} ms).",
        "",
        SAME_END if plan.same_tenant else END,
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.access_change", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: 20,000 subscriptions, 4 changes")
    parser.add_argument("--subscriptions", type=int, default=None, help="tenant B's subscriptions (default 400,000)")
    parser.add_argument("--changes", type=int, default=None, help="topic changes (default 20)")
    parser.add_argument("--roost-rev", default="HEAD", help="git revision of Roost (default HEAD); 'worktree' for the tree")
    parser.add_argument("--same-tenant", action="store_true",
                        help="the pinger is a device of the changed project of B (default: B's MQTT instance)")
    parser.add_argument("--rules", type=int, default=0,
                        help="more subscribe rules in B's project, each met by every check first (default 0)")
    parser.add_argument("--output", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    plan = Plan(20_000, 4) if args.quick else Plan()
    if args.subscriptions is not None or args.changes is not None:
        plan = Plan(args.subscriptions or plan.subscriptions, args.changes or plan.changes)
    plan = replace(plan, same_tenant=args.same_tenant, rules=args.rules)
    raise_file_limit()
    with roost_revision(args.roost_rev) as version, tempfile.TemporaryDirectory(prefix="bench-access-") as folder:
        result = measure(plan, Path(folder))
    command = "python -m bench.access_change " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = report(command, machine() | {"roost": version}, plan, result)
    print(text)
    if args.output:
        write_output(args.output, text, *((SAME_BEGIN, SAME_END) if plan.same_tenant else (BEGIN, END)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
