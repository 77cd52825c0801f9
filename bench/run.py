"""One command for the whole comparison: Roost and Mosquitto, alternated, medians, one table.

    python -m bench.run [--quick] [--runs 3] [--scenarios fan_in,latency] [--output docs/benchmarks.md]
                        [--protocol 4|5] [--profile SECONDS]

Each (run, scenario, broker) gets a fresh broker process; the order of the two brokers alternates from one
scenario and run to the next, so slow drift of a shared machine falls on both. `--quick` is the smoke
mode (one run, tiny sizes, a few seconds per broker): it only checks the harness works, and exits
non-zero if any scenario failed, so CI can call `python -m bench.run --quick` as it is.

With `--output`, the generated part of the Markdown file is replaced between the markers
`<!-- bench:begin -->` and `<!-- bench:end -->`; text outside them (the notes) is kept.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .brokers import BROKERS, Limits, ensure_mosquitto, mosquitto_version, roost_revision, start_broker
from .scenarios import METRICS, SCENARIOS, Plan, median

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
Results = dict[tuple[str, str], list[dict[str, float]]]


def raise_file_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit (inherited by the brokers and workers); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import uvloop
        uvloop_version = uvloop.__version__
    except ImportError:
        uvloop_version = "not installed"
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return {"nproc": nproc, "cpu": cpu, "python": platform.python_version(), "uvloop": uvloop_version,
            "mosquitto": mosquitto_version(), "kernel": platform.release()}


def run_all(names: list[str], scenarios: list[str], runs: int, plan: Plan, limits: Limits,
            roost_anonymous: bool = False, probe: bool = False) -> tuple[Results, list[str]]:
    results: Results = {(s, b): [] for s in scenarios for b in names}
    errors: list[str] = []
    for run in range(runs):
        for index, scenario in enumerate(scenarios):
            order = names if (run + index) % 2 == 0 else names[::-1]
            for name in order:
                began = time.perf_counter()
                try:
                    options: dict[str, bool] = {}
                    if name == "roost":
                        options = {"anonymous": roost_anonymous, "probe": probe}
                    with start_broker(name, limits, **options) as broker:
                        values = SCENARIOS[scenario](broker, plan)
                        if probe and name == "roost":
                            values |= _probed(broker, values)
                except Exception as exc:  # one failed measurement must not lose the others
                    values = {}
                    errors.append(f"run {run + 1}, {scenario}, {name}: {exc}")
                    traceback.print_exc(file=sys.stderr)
                results[(scenario, name)].append(values)
                shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items()) or "FAILED"
                print(f"[run {run + 1}/{runs}] {scenario:9} {name:10} {shown}  ({time.perf_counter() - began:.1f} s)",
                      file=sys.stderr, flush=True)
    return results, errors


def _probed(broker: Any, values: dict[str, float]) -> dict[str, float]:
    """The broker's side of the window just measured (bench/probe.py), read once the broker has exited."""
    from .probe import summarize
    from .scenarios import LAST

    broker.stop()
    if "window" not in LAST or not broker.probe_path.exists():
        return {}
    keep = os.environ.get("BENCH_PROBE_KEEP")  # a folder: keep each record, with its window, to read again
    if keep:
        import json
        import shutil

        Path(keep).mkdir(parents=True, exist_ok=True)
        stem = Path(keep) / time.strftime("%H%M%S")
        shutil.copyfile(broker.probe_path, f"{stem}.json")
        Path(f"{stem}.last.json").write_text(json.dumps(LAST))
    figures = summarize(broker.probe_path, *LAST["window"], LAST.get("gap"), LAST.get("pings"))
    for line in figures.pop("notes"):
        print(f"    probe: {line}", file=sys.stderr)
    return figures


def _fmt(value: float) -> str:
    if value != value:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _median_of(results: Results, scenario: str, broker: str, key: str) -> float:
    return median([run.get(key, float("nan")) for run in results.get((scenario, broker), [])])


def table(results: Results, scenarios: list[str]) -> str:
    rows = [
        "| scenario | unit | better | Roost | Mosquitto | ratio (>1 = Roost better) | target | met |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for metric in METRICS:
        if metric.scenario not in scenarios:
            continue
        roost = _median_of(results, metric.scenario, "roost", metric.key)
        mosq = _median_of(results, metric.scenario, "mosquitto", metric.key)
        if metric.higher_is_better:
            ratio = roost / mosq if mosq else float("nan")
        else:
            ratio = mosq / roost if roost else float("nan")
        met = metric.target.met(roost, mosq) if metric.target else None
        rows.append(
            f"| {metric.label} | {metric.unit} | {'higher' if metric.higher_is_better else 'lower'} | {_fmt(roost)} "
            f"| {_fmt(mosq)} | {_fmt(ratio)} | {metric.target.describe() if metric.target else ''} "
            f"| {'' if met is None else 'yes' if met else '**no**'} |"
        )
    return "\n".join(rows) + "\n"


def details(results: Results, scenarios: list[str], names: list[str]) -> str:
    """Every run's figures, including the diagnostic ones (max_gap_s, written_rate, connections)."""
    rows = ["| scenario | broker | figure | runs |", "| --- | --- | --- | --- |"]
    for scenario in scenarios:
        for name in names:
            runs = results[(scenario, name)]
            keys = sorted({k for run in runs for k in run})
            if not keys:
                rows.append(f"| {scenario} | {name} | (failed) | |")
            for key in keys:
                rows.append(f"| {scenario} | {name} | {key} | {', '.join(_fmt(run.get(key, float('nan'))) for run in runs)} |")
    return "\n".join(rows) + "\n"


def report(command: str, info: dict[str, str], plan: Plan, runs: int, fd_limit: int, body_table: str,
           detail: str, errors: list[str], profile: str | None, seconds: float) -> str:
    parts = [
        BEGIN,
        "",
        "## Command and machine",
        "",
        f"    {command}",
        "",
        f"- {info['nproc']} cores: {info['cpu']}; Linux {info['kernel']}; file descriptor limit raised to {fd_limit}",
        f"- Roost at {info['roost']}; Python {info['python']}, uvloop {info['uvloop']}; {info['mosquitto']}",
        f"- {runs} run(s) per broker and scenario, each on a fresh broker process, brokers alternated; medians; "
        f"MQTT protocol level {plan.version}; windows of {plan.duration:g} s after {plan.warmup:g} s of warm-up; "
        f"whole run {seconds / 60:.1f} min",
        "",
        "## Results (medians)",
        "",
        body_table,
        "## Every run",
        "",
        detail,
    ]
    if errors:
        parts += ["## Failed measurements", ""] + [f"- {line}" for line in errors] + [""]
    if profile:
        parts += ["## Profile of Roost during QoS 0 fan-in (py-spy)", "", profile]
    parts.append(END)
    return "\n".join(parts) + "\n"


def write_output(path: Path, generated: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace what lies between the `begin` and `end` markers (which `generated` carries itself); a file
    without them gets `generated` appended. Everything else in the file is kept."""
    if path.exists():
        text = path.read_text()
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            tail = rest.split(end, 1)[1]
            path.write_text(head + generated.rstrip("\n") + tail)
            return
        path.write_text(text.rstrip("\n") + "\n\n" + generated)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Benchmarks: Roost against Mosquitto\n\n" + generated)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description="Benchmark Roost against Mosquitto.")
    parser.add_argument("--quick", action="store_true", help="smoke mode: one run, tiny sizes; checks the harness")
    parser.add_argument("--runs", type=int, default=None, help="runs per broker and scenario (default 3; quick 1)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--brokers", default="roost,mosquitto", help="comma-separated, of: roost, mosquitto")
    parser.add_argument("--protocol", type=int, choices=(4, 5), default=4, help="MQTT 3.1.1 (4) or 5")
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                        help="also profile Roost with py-spy during fan-in for this long")
    parser.add_argument("--roost-rev", default="HEAD",
                        help="git revision of Roost to measure, exported to a temp dir so that edits to the working "
                             "tree during the run do not leak in (default HEAD); 'worktree' runs the tree as it is")
    parser.add_argument("--roost-anonymous", action="store_true",
                        help="Roost with anonymous clients (a bench/# ACL) instead of a tenant's credentials, "
                             "to see what authentication costs")
    parser.add_argument("--probe", action="store_true",
                        help="record inside Roost (bench/probe.py) when the loop was held, by what, GC pauses and "
                             "each write's time, and add the broker's side of every window to 'Every run'")
    parser.add_argument("--pin", action="store_true",
                        help="run each broker on CPU 0 and the harness and load generator on the other CPUs, so "
                             "that the generator never takes the broker's core (other programs still may)")
    parser.add_argument("--output", type=Path, help="write the results into this Markdown file")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _interrupt)  # unwind, so brokers and workers are stopped on the way out
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    names = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS] + [b for b in names if b not in BROKERS]
    if unknown:
        parser.error(f"unknown scenario or broker: {', '.join(unknown)}")
    runs = args.runs or (1 if args.quick else 3)
    plan = Plan.quick(args.protocol) if args.quick else Plan(version=args.protocol)
    if "mosquitto" in names:
        ensure_mosquitto()
    fd_limit = raise_file_limit()
    if fd_limit < plan.idle_connections + 200:  # the broker holds them all in one process
        count = max(100, (fd_limit - 200) // 100 * 100)
        print(f"bench: file descriptor limit {fd_limit} is too low for {plan.idle_connections} idle connections; "
              f"using {count}", file=sys.stderr)
        plan = Plan(**{**{f: getattr(plan, f) for f in plan.__dataclass_fields__}, "idle_connections": count})

    if args.pin:
        from . import brokers

        cpus = os.sched_getaffinity(0)
        if len(cpus) < 2:
            parser.error("--pin needs at least 2 CPUs")
        brokers.BROKER_CPUS = {min(cpus)}
        os.sched_setaffinity(0, cpus - brokers.BROKER_CPUS)  # inherited by the workers forked from here
    began = time.perf_counter()
    with roost_revision(args.roost_rev) as roost_version:
        results, errors = run_all(names, scenarios, runs, plan, Limits(), args.roost_anonymous, args.probe)
        profile = None
        if args.profile > 0:
            from .profile import profile_fan_in

            try:
                profile = profile_fan_in(plan, args.profile)
            except Exception as exc:
                errors.append(f"profile: {exc}")
    seconds = time.perf_counter() - began

    body = table(results, scenarios)
    print(body)
    if errors:
        print("failed:\n" + "\n".join(errors), file=sys.stderr)
    if args.output:
        command = "python -m bench.run " + shlex.join(sys.argv[1:] if argv is None else argv)
        info = machine() | {"roost": roost_version}
        write_output(args.output, report(command, info, plan, runs, fd_limit, body,
                                         details(results, scenarios, names), errors, profile, seconds))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
