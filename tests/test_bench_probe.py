"""The benchmark's probe inside Roost (bench/probe.py) still loads and reports: `python -m bench.run --probe`
adds the broker's side of each window (its longest silence towards the subscribers, the longest call from
the loop and its CPU time, loop lag, GC pauses) to "Every run".

No figure is judged (speed is the benchmark's business); what this catches is a probe that no longer
patches the shell it measures, after broker/connection.py changed: then its figures are missing. Only
127.0.0.1 traffic, bounded by the harness's deadlines.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIGURES = ("b_write_gap_s", "b_call_max_ms", "b_call_max_cpu_ms", "b_lag_max_ms", "b_gc_max_ms", "b_cpu_share")


def test_the_probe_reports_the_brokers_side_of_each_window(tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    output.write_text("# Benchmarks\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--brokers", "roost", "--roost-rev", "worktree",
         "--scenarios", "fan_out,latency", "--probe", "--output", str(output)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = output.read_text()
    for scenario in ("fan_out", "latency"):
        for figure in FIGURES:
            assert f"| {scenario} | roost | {figure} |" in text, f"{scenario} {figure} missing:\n{text}"
    assert "probe: broker's longest silence" in done.stderr
