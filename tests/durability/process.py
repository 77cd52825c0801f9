"""`roost serve` as a real process that a test can kill with SIGKILL and start again, on the same ports and
the same data directory, and read the metrics of over HTTP.

Readiness is awaited, not slept: `start()` returns when Roost logs that both ports accept connections
(the log line comes after the listeners opened), and `wait_metric()` polls GET /metrics in a bounded
deadline loop. Every run's log goes to `roost.log` beside the config, for the evidence a failure needs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.session_helpers import free_port

ROOST = str(Path(sys.executable).with_name("roost"))
START_TIMEOUT = 30.0  # a busy 2-core machine starts Roost in 1-2 s
READY_LINE = b" started: MQTT on "  # control/server.py logs it once both ports accept connections


class RoostProcess:
    """One Roost configuration (ports, data_dir, durability) run as a process any number of times."""

    def __init__(self, folder: Path, durability: str, mqtt: str = "", extra_config: str = "") -> None:
        """`mqtt`: extra `[mqtt]` lines (e.g. raised limits); `extra_config`: more tables (`[log]`,
        `[plans.x]`); both appended as they are."""
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.durability = durability
        self.mqtt_port = free_port()
        self.http_port = free_port()
        self.config = folder / "roost.toml"
        self.config.write_text(
            f'data_dir = "{folder / "data"}"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {self.mqtt_port}\nallow_anonymous = true\nsys_interval = 0\n'
            # Queues hold a whole test's load for an offline subscriber: what a crash loses is not
            # mixed up with what a full queue drops (the tests check that nothing was dropped).
            "max_queued_messages = 100000\n"
            f"{mqtt}\n"
            f'[http]\nhost = "127.0.0.1"\nport = {self.http_port}\n'
            "[tls]\nport = 0\n"
            f'[storage]\ndurability = "{durability}"\n'
            + extra_config  # more tables (`[log]`, `[plans.x]`), appended as they are
        )
        self.log_path = folder / "roost.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self._reader: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> float:
        """Start `roost serve` and return once it accepts connections; returns the time.monotonic() at which
        the process was spawned (everything it restores is dated after that)."""
        assert self.process is None, "already running"
        self.runs += 1
        ready = threading.Event()
        log = self.log_path.open("ab")
        log.write(f"----- run {self.runs} ({self.durability}) -----\n".encode())
        log.flush()
        spawned = time.monotonic()
        process = self.process = subprocess.Popen(
            [ROOST, "serve", "--config", str(self.config)], cwd=self.folder,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.PIPE,
        )

        def pump() -> None:  # the log, line by line, into roost.log; the ready line sets the event
            assert process.stderr is not None
            with log:
                for line in process.stderr:
                    log.write(line)
                    log.flush()
                    if READY_LINE in line:
                        ready.set()
            ready.set()  # the process ended: start() looks at its exit code

        self._reader = threading.Thread(target=pump, name=f"roost-log-{self.runs}", daemon=True)
        self._reader.start()
        if not ready.wait(START_TIMEOUT) or process.poll() is not None:
            self.kill()
            raise AssertionError(f"roost serve did not start (run {self.runs}); log:\n{self.log_tail()}")
        return spawned

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last commit, like a power cut for the process (not for the disk)."""
        self.signal_kill()
        self.reap()

    def terminate(self) -> int:
        """SIGTERM, as systemd stops a unit: Roost shuts down in order. Returns the exit code."""
        process = self.process
        assert process is not None
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        self.reap()
        return code

    def signal_kill(self) -> None:
        """Send SIGKILL and return at once (`reap()` waits for the process to be gone)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)

    def reap(self) -> None:
        """Wait until the killed process is gone (its ports and data free for the next run)."""
        process, self.process = self.process, None
        if process is None:
            return
        process.wait(timeout=15)
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None

    def snapshot(self) -> Path:
        """Copy the state database as the killed process left it (evidence when a test fails), before the
        next run changes it. Only while stopped."""
        assert self.process is None
        target = self.folder / f"state-after-run-{self.runs}"
        target.mkdir()
        for path in (self.folder / "data").glob("broker-state.db*"):
            shutil.copy2(path, target / path.name)
        return target

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- metrics ---------------------------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """GET /metrics: every sample by name, labels included (`name{label="value"}`)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def wait_metric(self, name: str, condition: Callable[[float], bool], timeout: float = 10.0) -> float:
        """Poll GET /metrics until `condition(value of name)` holds; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.metrics().get(name)
            if value is not None and condition(value):
                return value
            time.sleep(0.02)  # a metric has no event to wait on: poll it, bounded by the deadline
        raise AssertionError(f"{name} = {value} did not reach the expected value within {timeout} s")

    def wait_committed(self, timeout: float = 10.0) -> None:
        """Wait until every change reported so far is on disk (roost_state_pending_changes reads 0).

        A change is reported before the acknowledgement that follows it goes out, so once a client has its
        acknowledgement, this returns only after the change it acknowledges was committed."""
        self.wait_metric("roost_state_pending_changes", lambda value: value == 0, timeout)

    def wait_clients(self, count: int, timeout: float = 10.0) -> None:
        """Wait until Roost counts exactly `count` connected MQTT clients (e.g. it noticed a dropped one)."""
        self.wait_metric("roost_mqtt_clients_connected", lambda value: value == count, timeout)


class CommitWatch:
    """Samples roost_state_commits_total about every `interval` seconds from a thread, run by run, so that a
    test can tell which changes a commit must have carried: a change reported before commit K-1 of a run
    completed was taken by commit K-1 or K (each commit takes everything pending when it starts, and starts
    after the one before it ended), so if commit K completed before a kill, that change survived it."""

    def __init__(self, roost: RoostProcess, interval: float = 0.05) -> None:
        self.roost = roost
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (time.monotonic() before the request, run, commits)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="commit-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _sample(self) -> None:
        while not self._stop.is_set():
            run, asked = self.roost.runs, time.monotonic()
            try:
                commits = self.roost.metrics().get("roost_state_commits_total")
            except OSError:  # down between a kill and the next start
                commits = None
            if commits is not None and self.roost.runs == run:
                self.samples.append((asked, run, int(commits)))
            self._stop.wait(self.interval)

    def durable_before(self, run: int) -> float | None:
        """A time before which every change of `run` was committed by the last commit seen in that run: the
        last sample that still counted at most K-2 commits, K being the last count seen. None without two
        commits seen."""
        counts = [(asked, commits) for asked, r, commits in self.samples if r == run]
        if not counts or counts[-1][1] < 2:
            return None
        last = counts[-1][1]
        before = [asked for asked, commits in counts if commits <= last - 2]
        return before[-1] if before else None

    def longest_gap(self, run: int) -> float:
        """The longest time in `run` between two samples with the same commit count (commits stalled)."""
        counts = [(asked, commits) for asked, r, commits in self.samples if r == run]
        longest, since = 0.0, None
        for index, (asked, commits) in enumerate(counts):
            if index == 0 or commits != counts[index - 1][1]:
                since = asked
            longest = max(longest, asked - since)  # type: ignore[operator]
        return longest
