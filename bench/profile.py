"""Where Roost spends its time during QoS 0 fan-in: py-spy samples the broker process, we rank functions.

    python -m bench.profile [--seconds 8] [--quick]

py-spy (PyPI: `pip install py-spy`; installed on demand here) attaches to the running broker from outside,
so Roost runs unmodified. Samples are taken with `--nonblocking` (the broker is never paused) and with
`--idle`, so a sample whose innermost Python frame is the event loop's `run` is time spent in uvloop's C
code, the kernel (socket reads and writes) or waiting. "Own" time is the leaf frame of a sample; "total"
counts a function once per sample it appears in. The broker's CPU use over the same seconds comes from
/proc, to tell busy from idle.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .brokers import HOST, start_broker
from .loadgen import Publisher, Subscriber, Worker, gather
from .scenarios import Plan

__all__ = ["profile_fan_in"]

_RATE = 200  # samples per second
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if Path(found).exists():
        return found
    print("bench: installing py-spy from PyPI", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=True)
    return shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("/site-packages/", "/lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            path = path.split("/", 1)[1] if marker == "/lib/python3." else path
    if "/work/" in path or path.startswith("/"):
        for package in ("broker/", "control/", "storage/"):
            if package in path:
                path = package + path.split(package, 1)[1]
    return f"{match['function']} ({path})"


def summarize(raw: str, seconds: float, cpu: float, top: int = 18) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        if not frames[0].startswith("<module>"):
            continue  # another thread (aiosqlite's worker): only the event loop's thread matters here
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    if not samples:
        return "py-spy collected no samples.\n"
    lines = [
        f"{samples} samples of the broker's main thread over {seconds:g} s at {_RATE} Hz; the broker used "
        f"{100 * cpu / seconds:.0f}% of a core meanwhile. A leaf `run (uvloop/__init__.py)` or `Runner.run` is "
        "time outside Python: uvloop's C code, socket system calls, or waiting in epoll.",
        "",
        "| own % | total % | function (file) |",
        "| ---: | ---: | --- |",
    ]
    for frame, count in own.most_common(top):
        lines.append(f"| {100 * count / samples:.1f} | {100 * total[frame] / samples:.1f} | `{frame}` |")
    lines += ["", "Largest inclusive (total) shares, for the call paths:", "", "| total % | function (file) |",
              "| ---: | --- |"]
    for frame, count in total.most_common(top + 8):
        if frame.startswith(("<module>", "main ", "_run ", "_serve ", "run ", "Runner.run")):
            continue
        lines.append(f"| {100 * count / samples:.1f} | `{frame}` |")
    return "\n".join(lines) + "\n"


def profile_fan_in(plan: Plan, seconds: float) -> str:
    """Run fan-in against a fresh Roost for `seconds` + warm-up while py-spy samples it; a Markdown summary."""
    py_spy = _py_spy()
    with start_broker("roost") as broker, tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        workers: list[Worker] = []
        try:
            sub = [Worker(Subscriber, HOST, broker.port, plan.version, broker.credentials, "prof-sub")]
            pubs = [Worker(Publisher, HOST, broker.port, plan.version, broker.credentials, f"prof-pub{i}")
                    for i in range(plan.fan_in_publishers)]
            workers += sub + pubs
            gather(workers, "connect")
            gather(sub, "subscribe", ["bench/#"], 0)
            t0 = time.perf_counter() + 0.3
            t_end = t0 + plan.warmup + seconds + 1.0
            sub[0].send("receive", "count", t0, t_end, t_end + 0.3)
            for index, worker in enumerate(pubs):
                worker.send("blast", [f"bench/in/{index}"], plan.payload, t0, t_end)
            time.sleep(max(0.0, t0 + plan.warmup - time.perf_counter()))
            out = Path(tmp) / "roost.txt"
            cpu_before = broker.cpu_seconds()
            subprocess.run(
                [py_spy, "record", "--pid", str(broker.pid), "--rate", str(_RATE), "--duration", str(int(seconds)),
                 "--format", "raw", "--nonblocking", "--idle", "--output", str(out)],
                check=True, capture_output=True, timeout=seconds + 60,
            )
            cpu = broker.cpu_seconds() - cpu_before
            for worker in workers:
                worker.result(seconds + 60)
            return summarize(out.read_text(), int(seconds), cpu)
        finally:
            for worker in workers:
                worker.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--quick", action="store_true", help="tiny run, to check that profiling works")
    args = parser.parse_args()
    plan = Plan.quick() if args.quick else Plan()
    print(profile_fan_in(plan, 1.0 if args.quick else args.seconds))


if __name__ == "__main__":
    main()
