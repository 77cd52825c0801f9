"""Instructions per connection in the connect storm, counted by callgrind in the real `roost serve` process.

The storm's conn/s on the shared 2-core machine moves by more than the few percent to be measured (see
docs/benchmarks.md), so this counts the instructions the broker process runs instead, which do not depend
on what else the machine is doing:

    python -m bench.connect_cost [--rev REV] [--connections N] [--idle SECONDS]

starts Roost at git revision REV (default HEAD; `worktree`: the tree as it is), exported as `bench.run
--roost-rev` does, under `valgrind --tool=callgrind` with the benchmark's own config and tenant (the
storm's clients use that tenant's MQTT credentials). Counting starts after start-up and 20 warm-up
connections: first SECONDS of idle (what the background tasks cost a second), then N connections one after
another from this process, each as the storm's worker makes it: connect, CONNECT, CONNACK, DISCONNECT, then
(unlike the storm, so that every run handles the same packets) wait for the broker's close before closing
with a reset. It prints what one CONNECT + CONNACK + DISCONNECT costs the broker, everything included (the
accept, the asyncio shell and its timers, authentication, the session, the dashboard's events, logging,
the garbage collector), the kernel excepted, and the background's share of those seconds taken off.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import wire
from .brokers import HOST, Limits, RoostBroker, roost_revision
from .loadgen import mqtt_connect

_LINGER_RST = (1).to_bytes(4, "little") + (0).to_bytes(4, "little")


class _CallgrindRoost(RoostBroker):
    """Roost under callgrind, counting only when told (`instrument`); `dump` reads the count so far."""

    out_file = "/dev/null"

    def command(self) -> list[str]:
        return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={self.out_file}",
                *super().command()]

    def _control(self, *options: str) -> None:
        subprocess.run(["callgrind_control", *options, str(self.pid)], check=True, capture_output=True)

    def instrument(self, on: bool) -> None:
        """Count from now on (`on`) or stop counting: start-up and shutdown are not measured."""
        self._control("--instr=on" if on else "--instr=off")

    def dump(self) -> int:
        """The instructions counted since the last dump (callgrind writes them to `out_file.N`)."""
        before = set(Path(self.out_file).parent.glob(Path(self.out_file).name + ".*"))
        self._control("--dump")
        (written,) = set(Path(self.out_file).parent.glob(Path(self.out_file).name + ".*")) - before
        match = re.search(r"^totals: (\d+)", written.read_text(), re.MULTILINE)
        if match is None:
            raise SystemExit(f"no totals in {written}")
        return int(match.group(1))


def _connect_once(port: int, client_id: str, broker: RoostBroker, disconnect: bytes) -> None:
    sock, _ = mqtt_connect(HOST, port, client_id, 4, broker.credentials, timeout=60.0)
    try:
        sock.setblocking(True)
        sock.settimeout(60.0)
        sock.sendall(disconnect)
        while sock.recv(4096):  # the broker closes after a DISCONNECT [MQTT-3.14.4-1]
            pass
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        sock.close()


def instructions(connections: int, idle: float, keep: Path | None = None) -> tuple[float, int, float]:
    """(instructions per connection, the connections' instructions, the idle instructions per second) of
    one broker process serving `connections` connections one after another. What its background tasks do
    meanwhile (about 0.6 million instructions a second under callgrind: the access snapshot's watch, the
    usage meter, the history) is measured over `idle` seconds first and taken off in proportion to the
    connections' time."""
    with tempfile.TemporaryDirectory(prefix="bench-connect-cost-") as tmp:
        broker = _CallgrindRoost(Path(tmp), Limits())
        broker.out_file = str((keep or Path(tmp)) / "callgrind.out")
        disconnect = wire.disconnect_packet(4)
        try:
            broker.start(timeout=600.0)
            for i in range(20):  # warm-up: the first connections import and cache what later ones reuse
                _connect_once(broker.port, f"warm-{i}", broker, disconnect)
            broker.instrument(True)
            began = time.perf_counter()
            time.sleep(idle)
            background = broker.dump() / (time.perf_counter() - began)
            began = time.perf_counter()
            for i in range(connections):
                _connect_once(broker.port, f"storm-{i}", broker, disconnect)
            total = broker.dump()
            seconds = time.perf_counter() - began
            broker.instrument(False)
        finally:
            broker.stop()
    return (total - background * seconds) / connections, total, background


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD", help="git revision of Roost to measure ('worktree': as it is)")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle measured first")
    parser.add_argument("--keep", type=Path, help="a folder to keep callgrind's profiles in (callgrind_annotate "
                        "callgrind.out.2 is the connections')")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the broker inherits it: the same hashing in every run
    with roost_revision(args.rev) as version:
        per, total, background = instructions(args.connections, args.idle, args.keep)
    print(f"roost {version}: {per:,.0f} instructions per CONNECT+CONNACK+DISCONNECT ({total:,} over "
          f"{args.connections} connections, less {background:,.0f} a second in the background)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
