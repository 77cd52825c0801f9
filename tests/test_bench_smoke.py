"""The benchmark harness still works against the Roost in this tree: `python -m bench.run --quick` runs every
scenario once, with tiny sizes, on a real `roost serve` and its load generator processes.

Only Roost is run (Mosquitto, the broker it is compared with, is not a test dependency), and no figure is
judged: speed is measured by the benchmark itself (docs/benchmarks.md), never by a timed test. What this
catches is a harness that no longer runs, or a Roost that no longer serves what the harness sends: then a
scenario fails and `--quick` exits non-zero, or a figure is missing from the table. All traffic goes to
127.0.0.1, and every loop of the harness is bounded by a deadline.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCENARIO_ROWS = (
    "QoS 0 fan-in", "QoS 0 fan-out", "QoS 1 end to end", "latency p99", "routing: rate with 100k subs / with 1",
    "idle RSS", "RSS per idle connection", "overload: peak RSS", "overload: PINGREQ RTT p99", "connect storm",
)


def test_the_quick_benchmark_runs_every_scenario_against_roost(tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    output.write_text("# Benchmarks\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--brokers", "roost", "--roost-rev", "worktree",
         "--output", str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=150,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in done.stdout.splitlines() if line.startswith("| ")}
    for name in SCENARIO_ROWS:
        row = next((line for label, line in rows.items() if label.startswith(name)), None)
        assert row is not None, f"no row for {name!r} in:\n{done.stdout}"
        roost_figure = row.split(" | ")[3]
        assert roost_figure.replace(",", "").replace(".", "", 1).isdigit(), row
    written = output.read_text()
    assert "<!-- bench:begin -->" in written and "QoS 0 fan-in" in written  # the results went into the file


def test_the_quick_jetstream_benchmark_runs(tmp_path: Path) -> None:
    """`python -m bench.jetstream --quick`: one small run of the gateway into a three-node cluster."""
    from bench.nats_cluster import nats_server_binary

    if nats_server_binary() is None:
        pytest.skip("nats-server not installed (the test extra has it)")
    done = subprocess.run([sys.executable, "-m", "bench.jetstream", "--quick"], cwd=REPO, capture_output=True,
                          text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for row in ("forward into the stream", "taken from the publisher", "backlog drain", "first message drained"):
        line = next((line for line in done.stdout.splitlines() if row in line), None)
        assert line is not None, f"no row for {row!r} in:\n{done.stdout}"
        assert line.rstrip(" |").split("| ")[-1].split()[0].replace(",", "").replace(".", "", 1).isdigit(), line
