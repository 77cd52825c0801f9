"""Start-up time to an accepting MQTT port, and idle RSS, of a command that serves MQTT.

    python scripts/startup.py --runs 5 -- ./dist/roost-x86_64.pyz serve --config roost.toml
    python scripts/startup.py --port 18830 --runs 5 -- mosquitto -p 18830

The command must listen on --port (default 1883). Each run starts the command, tries to connect to the
port every millisecond until it accepts, reads the process's VmRSS after --idle seconds, then stops it with
SIGTERM. Prints the median and every run. Used for docs/benchmarks.md's "Single file" section.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import time
from pathlib import Path


def _accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.05):
            return True
    except OSError:
        return False


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_once(command: list[str], port: int, idle: float) -> tuple[float, int]:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not _accepting(port):
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {process.returncode} before accepting")
            if time.perf_counter() - started > 60:
                raise TimeoutError("not accepting after 60 s")
            time.sleep(0.001)
        ready = time.perf_counter() - started
        time.sleep(idle)  # idle: nothing connected
        return ready, _rss_kib(process.pid)
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds after start-up before RSS is read")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    results = [run_once(command, args.port, args.idle) for _ in range(args.runs)]
    times = [round(ready * 1000) for ready, _ in results]
    rss = [round(kib / 1024, 1) for _, kib in results]
    print(f"start-up to accepting MQTT: median {statistics.median(times)} ms  runs {times}")
    print(f"idle RSS: median {statistics.median(rss)} MiB  runs {rss}")


if __name__ == "__main__":
    main()
