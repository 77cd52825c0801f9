"""Garbage collection pauses with many clients: 10,000 idle connections, then the latency scenario, with the
probe (bench/probe.py) inside Roost recording every collection.

    python -m bench.gc_pauses [--connections 10000] [--roost-rev HEAD] [--brokers roost,mosquitto]

Prints, per broker, the latency p50/p99 with the idle clients connected and, for Roost, the longest
collections of the whole run (generation, milliseconds, objects collected) and those inside the window.
A full collection scans every object the collector tracks, so its pause grows with the clients connected:
this is where to see it (docs/benchmarks.md, "Tail latency (issue 20)").
"""

from __future__ import annotations

import argparse
import json

from .brokers import Limits, roost_revision, start_broker
from .loadgen import IdleClients, gather
from .probe import summarize
from .run import raise_file_limit
from .scenarios import LAST, Plan, _spawn, _workers, latency


def measure(name: str, connections: int, plan: Plan) -> None:
    options = {"probe": True} if name == "roost" else {}
    with start_broker(name, Limits(), **options) as broker, _workers() as started:
        holders = _spawn(started, broker, plan, IdleClients, "idle", 2)
        opened = sum(gather(holders, "open", connections // 2, 50, 60.0, timeout=120))
        values = latency(broker, plan)
        print(f"{name}: {opened} idle connections, RSS {broker.rss_kb() / 1024:.1f} MB; latency p50 "
              f"{values['p50']:.3f} ms, p99 {values['p99']:.3f} ms")
        if name != "roost":
            return
        broker.stop()
        collections = json.loads(broker.probe_path.read_text())["gcs"]  # type: ignore[attr-defined]
        full = [row for row in collections if row[2] == 2]
        print(f"  {len(full)} full collections in the whole run; the longest:")
        for began, took, generation, collected in sorted(collections, key=lambda row: -row[1])[:6]:
            print(f"    generation {generation}: {took * 1000:.1f} ms, {collected} objects collected")
        window = summarize(broker.probe_path, *LAST["window"], LAST.get("gap"))  # type: ignore[attr-defined]
        print(f"  inside the latency window: longest collection {window['b_gc_max_ms']:.1f} ms, "
              f"{window['b_gc_full']:.0f} full")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gc_pauses", description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--brokers", default="roost,mosquitto")
    parser.add_argument("--roost-rev", default="HEAD")
    args = parser.parse_args()
    raise_file_limit()
    with roost_revision(args.roost_rev):
        for name in args.brokers.split(","):
            measure(name.strip(), args.connections, Plan())


if __name__ == "__main__":
    main()
