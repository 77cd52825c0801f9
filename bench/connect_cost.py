"""Instructions per connection in the connect storm, counted by callgrind in the real `roost serve` process.

The storm's conn/s on the shared 2-core machine moves by more than the few percent to be measured (see
docs/benchmarks.md), so this counts the instructions the broker process runs instead, which do not depend
on what else the machine is doing:

    python -m bench.connect_cost [--rev REV] [--connections N]

starts Roost at git revision REV (default HEAD; `worktree`: the tree as it is), exported as `bench.run
--roost-rev` does, under `valgrind --tool=callgrind` with the benchmark's own config and tenant (the
storm's clients use that tenant's MQTT credentials), then runs N connections one after another from this
process, each as the storm's worker does it: connect, CONNECT, CONNACK, DISCONNECT, then (unlike the
storm, so every run handles the same packets) wait for the broker's close before closing with a reset.
It does the same with no connection, and prints (instructions with N - instructions with 0) / N: what one
CONNECT + CONNACK + DISCONNECT costs the broker, everything included (the accept, the asyncio shell and its
timers, authentication, the session, the dashboard's events, logging), the kernel excepted.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
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
    """Roost under callgrind: the count is printed at exit into the broker's log."""

    def command(self) -> list[str]:
        return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={self.out_file}",
                *super().command()]

    out_file = "/dev/null"

    def instrument(self, on: bool) -> None:
        """Count from now on (`on`) or stop counting: only the connections are measured, not start-up."""
        subprocess.run(["callgrind_control", "--instr=on" if on else "--instr=off", str(self.pid)],
                       check=True, capture_output=True)

    def stop_and_count(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(600)  # callgrind makes shutdown slow too
        match = re.search(r"Collected : (\d+)", self.log_path.read_text(errors="replace"))
        if match is None:
            raise SystemExit(f"no callgrind count in the broker's log:\n{self.log_tail()}")
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


def instructions(connections: int, out_file: str = "/dev/null") -> int:
    """Instructions of the broker process while it served `connections` connections one after another."""
    with tempfile.TemporaryDirectory(prefix="bench-connect-cost-") as tmp:
        broker = _CallgrindRoost(Path(tmp), Limits())
        broker.out_file = out_file
        disconnect = wire.disconnect_packet(4)
        try:
            broker.start(timeout=600.0)
            for i in range(20):  # warm-up: the first connections import and cache what later ones reuse
                _connect_once(broker.port, f"warm-{i}", broker, disconnect)
            broker.instrument(True)
            for i in range(connections):
                _connect_once(broker.port, f"storm-{i}", broker, disconnect)
            broker.instrument(False)
            return broker.stop_and_count()
        finally:
            if broker.process is not None and broker.process.poll() is None:
                broker.process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD", help="git revision of Roost to measure ('worktree': as it is)")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--out-file", default="/dev/null", help="keep callgrind's profile (callgrind_annotate)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")  # the broker inherits it: the same hashing in every run
    with roost_revision(args.rev) as version:
        total = instructions(args.connections, args.out_file)
    print(f"roost {version}: {total / args.connections:,.0f} instructions per CONNECT+CONNACK+DISCONNECT "
          f"({total:,} over {args.connections} connections)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
