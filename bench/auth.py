"""What authentication and access control cost Roost (issue 3): three measurements, one command.

    python -m bench.auth [--quick] [--runs 3] [--parts connect,revoke,acl] [--profile] [--output docs/benchmarks.md]

- `connect`: authenticated CONNECTs per second. Roost checks a stored MQTT instance's password (salted
  SHA-256) and Mosquitto a `password_file` entry (`mosquitto_passwd`, PBKDF2-SHA512); 4 processes each keep
  8 connection attempts in flight (connect, CONNECT, CONNACK, DISCONNECT, close with RST). Also the
  broker's CPU use over the window, to tell a broker-bound figure from a client-bound one.
- `revoke` (Roost only): 1,000 connected MQTT 5 clients, each on an MQTT instance of its own; 100 instances
  are deleted with 100 concurrent `DELETE /v1/mqtt/{id}` (one keep-alive connection each, all written
  within a fraction of a millisecond). Per revoked client: from the first request's write to the client
  seeing DISCONNECT 0x98 or EOF. Then one call revoking 100 clients: 100 new clients on 100 instances of a
  second user, deactivated by an admin's `PUT /api/v1/users/{id}` `{"is_active": false}`. After each, every
  one of the other 900 clients must still answer a PINGREQ.
- `acl` (Roost only): QoS 0 fan-in, 4 publishers to 1 subscriber, with the publishers as (a) anonymous
  clients under the `[mqtt.anonymous]` ACL, (b) MQTT-instance clients (any topic in the tenant: no
  per-topic rule), (c) devices publishing on their project's registered topic `bench/in/+` (per-topic rule,
  plus the project's message history that Roost records for such publishes). Phase 1 paces the publishers
  at a fixed total rate and reads the broker's CPU time per PUBLISH; phase 2 floods, for throughput.

`--profile` adds one more run of `connect` and `revoke` on Roost with py-spy sampling the broker (as
`bench.profile` does for fan-in), to show where the time goes.

Each run of each part gets a fresh broker; medians over runs. Roost is exported from git (`--roost-rev`,
default HEAD), as `bench.run` does.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .brokers import HOST, Broker, RoostBroker, ensure_mosquitto, roost_revision, start_broker
from .http import Revoker, api_client, encode_request
from .loadgen import ConnectRate, Holder, Publisher, Subscriber, Worker, gather
from .run import _fmt, _interrupt, machine, raise_file_limit, write_output
from .profile import _RATE, _py_spy, summarize
from .scenarios import _percentile, median
from .wire import Credentials

BEGIN, END = "<!-- bench:auth:begin -->", "<!-- bench:auth:end -->"
PARTS = ("connect", "revoke", "acl")
ACL_VARIANTS = ("anonymous", "instance", "device")


@dataclass(frozen=True, slots=True)
class AuthPlan:
    duration: float = 4.0
    warmup: float = 0.5
    connect_workers: int = 4
    connect_in_flight: int = 8
    clients: int = 1000
    revoked: int = 100
    acl_publishers: int = 4
    acl_rate: float = 8_000.0  # messages/s in total, phase 1: one an authenticated Roost keeps up with
    payload: int = 64

    @classmethod
    def quick(cls) -> AuthPlan:
        return cls(duration=0.5, warmup=0.2, connect_workers=2, clients=100, revoked=10, acl_rate=2000.0)


# --- connect ----------------------------------------------------------------------------------------------

class Spy:
    """py-spy sampling a broker from outside for `seconds`, from `start()` on; `summary()` ranks functions."""

    def __init__(self, broker: Broker, seconds: float, folder: Path) -> None:
        self.broker, self.seconds, self.out = broker, seconds, folder / f"spy-{time.monotonic_ns()}.txt"
        self.process: subprocess.Popen[bytes] | None = None
        self.cpu = 0.0

    def start(self) -> None:
        self.cpu = self.broker.cpu_seconds()
        self.process = subprocess.Popen(
            [_py_spy(), "record", "--pid", str(self.broker.pid), "--rate", str(_RATE), "--duration",
             str(int(self.seconds)), "--format", "raw", "--nonblocking", "--idle", "--output", str(self.out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def summary(self) -> str:
        assert self.process is not None
        self.process.wait(self.seconds + 60)
        cpu = self.broker.cpu_seconds() - self.cpu
        return summarize(self.out.read_text(), int(self.seconds), cpu, top=12) if self.out.exists() else "no samples\n"


def connect_rate(broker: Broker, plan: AuthPlan, spy: Spy | None = None) -> dict[str, float]:
    workers = [Worker(ConnectRate, HOST, broker.port, 4, broker.credentials, f"conn{i}")
               for i in range(plan.connect_workers)]
    try:
        t_start = time.perf_counter() + 0.5 + plan.warmup
        t_end = t_start + plan.duration
        for worker in workers:
            worker.send("run", plan.connect_in_flight, t_start, t_end, 10_000_000)
        _sleep_until(t_start)
        cpu0 = broker.cpu_seconds()
        if spy is not None:
            spy.start()
        _sleep_until(t_end)
        cpu1 = broker.cpu_seconds()
        answers = [worker.result(plan.duration + 30) for worker in workers]
    finally:
        for worker in workers:
            worker.close()
    done = sum(a["done"] for a in answers)
    refused = sum(a["refused"] + a["failed"] for a in answers)
    if refused:
        raise RuntimeError(f"{refused} CONNECTs refused or failed ({answers})")
    return {"rate": done / plan.duration, "broker_cpu": (cpu1 - cpu0) / plan.duration,
            "cpu_us": (cpu1 - cpu0) / max(1, done) * 1e6}


# --- revoke -----------------------------------------------------------------------------------------------

def _instances(client: Any, count: int) -> list[dict[str, Any]]:
    made = []
    for _ in range(count):
        response = client.post("/v1/mqtt")
        if response.status_code != 201:
            raise RuntimeError(f"POST /v1/mqtt: {response.status_code} {response.text[:200]}")
        made.append(response.json())
    return made


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts)]


def _revocation(holders: list[Worker], requests: list[bytes], port: int, expected: set[str],
                watch: float = 2.0, spy: Spy | None = None) -> dict[str, Any]:
    """Watch every held client, fire `requests` at once, and time each expected close."""
    revoker = Worker(Revoker, HOST, port, len(requests))
    try:
        t_stop = time.perf_counter() + 0.5 + watch
        for holder in holders:
            holder.send("watch", t_stop)
        time.sleep(0.3)  # the holders are in their select loop
        if spy is not None:
            spy.start()
            time.sleep(0.2)  # py-spy attached
        revoker.send("fire", requests)
        fired = revoker.result(30)
    finally:
        revoker.close()
    closed = [item for holder in holders for item in holder.result(watch + 30)]
    t_issue = fired["t_issue"]
    latencies = [(seen - t_issue) * 1000 for label, seen, _ in closed if label in expected]
    statuses = sorted({status for status, _ in fired["answers"]})
    hows = sorted({how for label, _, how in closed if label in expected})
    alive = gather(holders, "ping_all", 5.0, timeout=30)
    return {
        "p50_ms": _percentile(latencies, 0.5), "p99_ms": _percentile(latencies, 0.99),
        "max_ms": max(latencies, default=float("nan")),
        "revoked_closed": float(len(latencies)), "others_closed": float(sum(1 for c in closed if c[0] not in expected)),
        "others_answering": float(sum(a["answered"] for a in alive)),
        "last_response_ms": (max(t for _, t in fired["answers"]) - t_issue) * 1000,
        "send_ms": (fired["t_sent"] - t_issue) * 1000,
        "statuses": ",".join(map(str, statuses)), "how": ",".join(hows),
        "samples": latencies,
    }


def revoke(broker: Broker, plan: AuthPlan, spy: Spy | None = None) -> dict[str, Any]:
    assert isinstance(broker, RoostBroker) and broker.tenant is not None
    admin, victim = broker.cli(["user", "add", "admin", "--plan", "enterprise", "--admin"],
                               ["user", "add", "victim", "--plan", "enterprise"])
    keep_count, revoked = plan.clients - plan.revoked, plan.revoked
    began = time.perf_counter()
    with api_client(broker.http_port, broker.tenant.api_key) as client:
        keep = _instances(client, keep_count)
        doomed = _instances(client, revoked)
    with api_client(broker.http_port, victim["api_key"]) as client:
        victims = _instances(client, revoked)
    setup_s = time.perf_counter() - began
    holders = [Worker(Holder, HOST, broker.port, 5, None, f"hold{i}") for i in range(2)]
    try:
        clients = [(f"keep-{i}", m["user"], m["password"]) for i, m in enumerate(keep)]
        clients += [(f"rev-{i}", m["user"], m["password"]) for i, m in enumerate(doomed)]
        for holder, share in zip(holders, _split(clients, len(holders))):
            holder.send("open_each", share)
        for holder in holders:
            holder.result(180)
        deletes = [encode_request("DELETE", f"/v1/mqtt/{m['_id']}", HOST, broker.tenant.api_key) for m in doomed]
        by_instance = _revocation(holders, deletes, broker.http_port, {f"rev-{i}" for i in range(revoked)}, spy=spy)

        clients = [(f"vic-{i}", m["user"], m["password"]) for i, m in enumerate(victims)]
        for holder, share in zip(holders, _split(clients, len(holders))):
            holder.send("open_each", share)
        for holder in holders:
            holder.result(60)
        deactivate = encode_request("PUT", f"/api/v1/users/{victim['id']}", HOST, admin["api_key"], {"is_active": False})
        by_user = _revocation(holders, [deactivate], broker.http_port, {f"vic-{i}" for i in range(revoked)})
    finally:
        for holder in holders:
            holder.close()
    return {"instances": by_instance, "user": by_user, "setup_s": setup_s}


# --- acl --------------------------------------------------------------------------------------------------

def _acl_clients(broker: Broker, variant: str, plan: AuthPlan) -> tuple[Credentials | None, list[Credentials | None]]:
    """(subscriber's credentials, each publisher's) for a variant; devices are made through REST."""
    if variant == "anonymous":
        return None, [None] * plan.acl_publishers
    assert isinstance(broker, RoostBroker) and broker.tenant is not None
    if variant == "instance":
        return broker.credentials, [broker.credentials] * plan.acl_publishers
    with api_client(broker.http_port, broker.tenant.api_key) as client:
        project = client.post("/api/v1/projects", json={"name": "bench"}).json()["data"]["id"]
        topic = client.post("/api/v1/topics", json={"project_id": project, "name": "bench/in/+",
                                                    "can_publish": True, "can_subscribe": True})
        if topic.status_code != 201:
            raise RuntimeError(f"POST /api/v1/topics: {topic.status_code} {topic.text[:200]}")
        publishers: list[Credentials | None] = []
        for i in range(plan.acl_publishers):
            # A device connects with its device_id as client id: the Publisher's first client is "aclpub{i}-0".
            made = client.post("/api/v1/devices", json={"project_id": project, "name": f"pub{i}",
                                                        "device_id": f"aclpub{i}-0"})
            if made.status_code != 201:
                raise RuntimeError(f"POST /api/v1/devices: {made.status_code} {made.text[:200]}")
            mqtt = made.json()["data"]["mqtt_credentials"]
            publishers.append(Credentials(mqtt["username"], mqtt["password"]))
    return broker.credentials, publishers


def acl_cost(broker: Broker, variant: str, plan: AuthPlan) -> dict[str, float]:
    sub_credentials, pub_credentials = _acl_clients(broker, variant, plan)
    sub = Worker(Subscriber, HOST, broker.port, 4, sub_credentials, "aclsub")
    pubs = [Worker(Publisher, HOST, broker.port, 4, c, f"aclpub{i}") for i, c in enumerate(pub_credentials)]
    workers = [sub, *pubs]
    try:
        gather(workers, "connect")
        gather([sub], "subscribe", ["bench/#"], 0)
        # Phase 1: a fixed rate the broker keeps up with; its CPU time per message delivered.
        t0 = time.perf_counter() + 0.3
        t_start, t_end = t0 + plan.warmup, t0 + plan.warmup + plan.duration
        sub.send("receive", "count", t_start, t_end, t_end + 0.3)
        for i, pub in enumerate(pubs):
            pub.send("paced", f"bench/in/{i}", plan.payload, plan.acl_rate / len(pubs), t0, t_end)
        _sleep_until(t_start)
        cpu0 = broker.cpu_seconds()
        _sleep_until(t_end)
        cpu1 = broker.cpu_seconds()
        paced_sent = sum(pub.result(30) for pub in pubs)
        paced = sub.result(30)
        broker.wait_idle(timeout=30)
        # Phase 2: flood, for throughput.
        t0 = time.perf_counter() + 0.3
        t_start, t_end = t0 + plan.warmup, t0 + plan.warmup + plan.duration
        sub.send("receive", "count", t_start, t_end, t_end + 0.3)
        for i, pub in enumerate(pubs):
            pub.send("blast", [f"bench/in/{i}"], plan.payload, t0, t_end)
        written = sum(pub.result(plan.duration + 30) for pub in pubs)
        flood = sub.result(30)
    finally:
        for worker in workers:
            worker.close()
    delivered = paced["count"]
    if delivered < 0.5 * plan.acl_rate * plan.duration:
        raise RuntimeError(f"{variant}: only {delivered} of ~{plan.acl_rate * plan.duration:.0f} paced messages "
                           f"arrived ({paced_sent} sent)")
    return {
        "kept_up": delivered / (plan.acl_rate * plan.duration),
        "cpu_us": (cpu1 - cpu0) / delivered * 1e6,
        "cpu_share": (cpu1 - cpu0) / plan.duration,
        "rate": flood["count"] / plan.duration,
        "written_rate": written / (plan.warmup + plan.duration),
        "max_gap_s": flood["max_gap_s"],
    }


# --- running and reporting --------------------------------------------------------------------------------

def _sleep_until(instant: float) -> None:
    delay = instant - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def _attempt(label: str, errors: list[str], action: Any) -> Any:
    began = time.perf_counter()
    try:
        value = action()
    except Exception as exc:  # one failed measurement must not lose the others
        errors.append(f"{label}: {exc}")
        traceback.print_exc(file=sys.stderr)
        value = None
    shown = {k: v for k, v in value.items() if not isinstance(v, (dict, list))} if isinstance(value, dict) else value
    print(f"[{label}] {shown}  ({time.perf_counter() - began:.1f} s)", file=sys.stderr, flush=True)
    return value


def profile_parts(parts: list[str], plan: AuthPlan, errors: list[str]) -> dict[str, str]:
    """One extra run of `connect` and `revoke` on Roost under py-spy: part -> Markdown summary."""
    found: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-auth-spy-") as tmp:
        if "connect" in parts:
            def measure() -> dict[str, float]:
                with start_broker("roost") as broker:
                    spy = Spy(broker, plan.duration, Path(tmp))
                    value = connect_rate(broker, plan, spy)
                    found["connect"] = spy.summary()
                    return value
            _attempt("profile connect roost", errors, measure)
        if "revoke" in parts:
            def measure_revoke() -> dict[str, Any]:
                with start_broker("roost") as broker:
                    spy = Spy(broker, 2, Path(tmp))
                    value = revoke(broker, plan, spy)
                    found["revoke"] = spy.summary()
                    return value
            _attempt("profile revoke", errors, measure_revoke)
    return found


def run_parts(parts: list[str], runs: int, plan: AuthPlan, errors: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {"connect": {"roost": [], "mosquitto": []}, "revoke": [],
                               "acl": {v: [] for v in ACL_VARIANTS}}
    for run in range(runs):
        if "connect" in parts:
            order = ("roost", "mosquitto") if run % 2 == 0 else ("mosquitto", "roost")
            for name in order:
                def measure(name: str = name) -> dict[str, float]:
                    with start_broker(name) as broker:
                        return connect_rate(broker, plan)
                value = _attempt(f"run {run + 1}/{runs} connect {name}", errors, measure)
                if value:
                    results["connect"][name].append(value)
        if "revoke" in parts:
            def measure_revoke() -> dict[str, Any]:
                with start_broker("roost") as broker:
                    return revoke(broker, plan)
            value = _attempt(f"run {run + 1}/{runs} revoke", errors, measure_revoke)
            if value:
                print(f"    instances: { {k: v for k, v in value['instances'].items() if k != 'samples'} }\n"
                      f"    user: { {k: v for k, v in value['user'].items() if k != 'samples'} }", file=sys.stderr)
                results["revoke"].append(value)
        if "acl" in parts:
            variants = ACL_VARIANTS if run % 2 == 0 else ACL_VARIANTS[::-1]
            for variant in variants:
                def measure_acl(variant: str = variant) -> dict[str, float]:
                    with start_broker("roost", anonymous=variant == "anonymous") as broker:
                        return acl_cost(broker, variant, plan)
                value = _attempt(f"run {run + 1}/{runs} acl {variant}", errors, measure_acl)
                if value:
                    results["acl"][variant].append(value)
    return results


def _med(rows: list[dict[str, Any]], key: str) -> float:
    return median([row[key] for row in rows if isinstance(row.get(key), (int, float))])


def _runs(rows: list[dict[str, Any]], key: str) -> str:
    return ", ".join(_fmt(row[key]) for row in rows)


def report(command: str, info: dict[str, str], parts: list[str], runs: int, plan: AuthPlan,
           results: dict[str, Any], errors: list[str], seconds: float, profiles: dict[str, str]) -> str:
    out = [
        BEGIN, "", "## Authentication and access control (issue 3)", "",
        f"    {command}", "",
        f"- {info['nproc']} cores: {info['cpu']}; Linux {info['kernel']}; Roost at {info['roost']}; "
        f"Python {info['python']}, uvloop {info['uvloop']}; {info['mosquitto']}",
        f"- {runs} run(s), each on a fresh broker; medians; windows of {plan.duration:g} s after {plan.warmup:g} s "
        f"of warm-up; whole run {seconds / 60:.1f} min", "",
    ]
    if "connect" in parts:
        roost, mosq = results["connect"]["roost"], results["connect"]["mosquitto"]
        rate = _med(roost, "rate")
        out += [
            f"### Authenticated CONNECTs per second ({plan.connect_workers} processes x {plan.connect_in_flight} "
            "in flight)", "",
            "| broker | CONNACKs/s (median) | runs | broker CPU (cores) | broker CPU per CONNECT (µs) | target | met |",
            "| --- | ---: | --- | ---: | ---: | --- | --- |",
            f"| Roost (stored MQTT instance credentials) | {_fmt(rate)} | {_runs(roost, 'rate')} | "
            f"{_fmt(_med(roost, 'broker_cpu'))} | {_fmt(_med(roost, 'cpu_us'))} | >= 3,000/s | {_met(rate >= 3000, rate)} |",
            f"| Mosquitto (password_file) | {_fmt(_med(mosq, 'rate'))} | {_runs(mosq, 'rate')} | "
            f"{_fmt(_med(mosq, 'broker_cpu'))} | {_fmt(_med(mosq, 'cpu_us'))} | | |", "",
        ]
    if "revoke" in parts and results["revoke"]:
        rows = results["revoke"]
        out += [
            f"### Revoke to disconnect ({plan.clients:,} connected MQTT 5 clients, {plan.revoked} revoked at once)", "",
            "| revocation | p50 ms | p99 ms | max ms | p99 per run | last HTTP response ms | revoked clients closed "
            "| other clients closed | others answering PINGREQ | closed by | target p99 < 20 ms |",
            "| --- | ---: | ---: | ---: | --- | ---: | --- | --- | --- | --- | --- |",
        ]
        for mode, label in (("instances", f"{plan.revoked} concurrent `DELETE /v1/mqtt/{{id}}`, 1 client each"),
                            ("user", f"1 `PUT /api/v1/users/{{id}}` is_active false, user with {plan.revoked} clients")):
            samples = [s for row in rows for s in row[mode]["samples"]]
            p99 = _percentile(samples, 0.99)
            per = [row[mode] for row in rows]
            out.append(
                f"| {label} | {_fmt(_percentile(samples, 0.5))} | {_fmt(p99)} | {_fmt(max(samples, default=float('nan')))} "
                f"| {_runs(per, 'p99_ms')} | {_runs(per, 'last_response_ms')} "
                f"| {', '.join(str(int(r['revoked_closed'])) for r in per)} of {plan.revoked} "
                f"| {', '.join(str(int(r['others_closed'])) for r in per)} "
                f"| {', '.join(str(int(r['others_answering'])) for r in per)} of {plan.clients - plan.revoked} "
                f"| {per[0]['how']} (HTTP {per[0]['statuses']}) | {_met(p99 < 20, p99)} |"
            )
        out += ["", f"p50/p99/max over all runs' samples pooled ({len(rows)} x {plan.revoked}); time from the "
                "first byte of the first request to the client seeing its connection closed. Setting up 1,100 "
                f"instances through REST took {_fmt(median([r['setup_s'] for r in rows]))} s per run.", ""]
    if "acl" in parts:
        acl = results["acl"]
        cost = {v: _med(acl[v], "cpu_us") for v in ACL_VARIANTS}
        rate = {v: _med(acl[v], "rate") for v in ACL_VARIANTS}
        out += [
            f"### ACL cost per PUBLISH (QoS 0 fan-in, {plan.acl_publishers} publishers -> 1 subscriber, Roost)", "",
            f"| publishers | broker CPU per PUBLISH at {plan.acl_rate:,.0f} msg/s (µs) | runs | added vs instance "
            "| delivered at that rate | flood: delivered msg/s | runs | flood: publishers wrote msg/s |",
            "| --- | ---: | --- | ---: | ---: | ---: | --- | ---: |",
        ]
        labels = {"anonymous": "anonymous (`[mqtt.anonymous]` ACL)", "instance": "MQTT instance (no per-topic rule)",
                  "device": "devices, registered topic `bench/in/+`"}
        for variant in ACL_VARIANTS:
            out.append(
                f"| {labels[variant]} | {_fmt(cost[variant])} | {_runs(acl[variant], 'cpu_us')} "
                f"| {_fmt(cost[variant] - cost['instance'])} | {_fmt(100 * _med(acl[variant], 'kept_up'))}% "
                f"| {_fmt(rate[variant])} | {_runs(acl[variant], 'rate')} "
                f"| {_fmt(_med(acl[variant], 'written_rate'))} |"
            )
        added = cost["device"] - cost["instance"]
        out += ["", f"Device rule vs instance: {_fmt(added)} µs added per PUBLISH (target < 2 µs: "
                f"{_met(added < 2, added)}); instance vs anonymous: {_fmt(cost['instance'] - cost['anonymous'])} µs. "
                "CPU per PUBLISH is the broker process's user + system time over the window divided by the "
                "messages the subscriber received in it (all of them: the rate is one the broker keeps up with).", ""]
    titles = {"connect": "Profile of Roost during the authenticated CONNECT rate (py-spy, an extra run)",
              "revoke": f"Profile of Roost during the {plan.revoked} concurrent DELETEs (py-spy, 2 s from just "
                        "before the requests, an extra run)"}
    for part, summary in profiles.items():
        out += [f"### {titles[part]}", "", summary]
    if errors:
        out += ["### Failed measurements", ""] + [f"- {e}" for e in errors] + [""]
    out.append(END)
    return "\n".join(out) + "\n"


def _met(ok: bool, value: float) -> str:
    if value != value:
        return "n/a"
    return "yes" if ok else "**no**"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.auth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: one run, tiny sizes")
    parser.add_argument("--runs", type=int, default=None, help="runs (default 3; quick 1)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}")
    parser.add_argument("--roost-rev", default="HEAD", help="git revision of Roost (default HEAD); 'worktree' for the tree")
    parser.add_argument("--profile", action="store_true", help="one more run of connect and revoke under py-spy")
    parser.add_argument("--output", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if unknown := [p for p in parts if p not in PARTS]:
        parser.error(f"unknown part: {', '.join(unknown)}")
    runs = args.runs or (1 if args.quick else 3)
    plan = AuthPlan.quick() if args.quick else AuthPlan()
    if "connect" in parts:
        ensure_mosquitto()
    raise_file_limit()
    began = time.perf_counter()
    errors: list[str] = []
    with roost_revision(args.roost_rev) as roost_version:
        results = run_parts(parts, runs, plan, errors)
        profiles = profile_parts(parts, plan, errors) if args.profile else {}
    command = "python -m bench.auth " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = report(command, machine() | {"roost": roost_version}, parts, runs, plan, results, errors,
                  time.perf_counter() - began, profiles)
    print(text)
    if args.output:
        write_output(args.output, text, BEGIN, END)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
