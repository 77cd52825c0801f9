"""A probe inside the Roost process under test: when the loop was held, by what, and when each write left.

    python -m bench.run --scenarios fan_out --brokers roost --probe      # adds the broker's side to "Every run"

Opt-in, for benchmarks only: `RoostBroker(probe=True)` puts a `sitecustomize` on the broker's PYTHONPATH that
calls `install()` before Roost is imported, and nothing of it exists in a broker started any other way. It
patches `broker.connection.MQTTConnection` from outside (an import hook), so Roost's own code carries no
timing calls. What it records, all on `time.perf_counter()` (CLOCK_MONOTONIC, the clock the load generator
stamps with, so broker and client instants compare directly):

- every write to a client (`_flush`): when, to which connection, how many bytes, and the transport's buffer
  after it. A silence the subscriber sees while the broker kept writing to it is the generator's (or the
  kernel's), not the broker's;
- every call from the loop into a connection (`data_received`, `_flush`, timers, resumes) that took over
  1 ms: what held the loop, and for how long;
- every garbage collection over 0.5 ms (`gc.callbacks`), with its generation;
- loop lag: a callback due every millisecond, and how late it ran when over 2 ms, with the time the loop's
  thread spent runnable but without a CPU meanwhile (the kernel's run delay, /proc/thread-self/schedstat):
  on 2 cores shared with the load generator, a lag can be the machine's, not Roost's; every slow call also
  carries its CPU time (`time.thread_time()`) for the same reason;
- every 10 ms, the bytes waiting on each connection active since the last sample: in the transport's
  buffer (user space), in the
  kernel's send queue (`TIOCOUTQ`, what the client has not read yet) and in its receive queue (`FIONREAD`,
  what the broker has not read yet).

At exit (Roost stops on SIGTERM and exits normally) it writes all of it as JSON to the file named by
`ROOST_PROBE`. `summarize()` reads it back for one measuring window, in the harness.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

__all__ = ["install", "summarize", "sitecustomize"]

# Calls from the loop into a connection that are timed (each is a way the loop enters Roost's code).
_ENTRIES = ("data_received", "_flush", "deadline_passed", "resume_writing", "pause_writing", "connection_made",
            "connection_lost")
_SLOW_CALL = 0.001
_SLOW_GC = 0.0005
_LAG_STEP = 0.001
_LAG_SHOWN = 0.002
_SAMPLE_EVERY = 10  # lag ticks between two socket samples


def sitecustomize(out: Path) -> str:
    """The text of a `sitecustomize.py` that loads this file by path and installs the probe."""
    return (
        "import importlib.util as _u\n"
        f"_s = _u.spec_from_file_location('_roost_probe', {str(Path(__file__).resolve())!r})\n"
        "_m = _u.module_from_spec(_s)\n"
        "_s.loader.exec_module(_m)\n"
        f"_m.install({str(out)!r})\n"
    )


def install(out: str) -> None:  # noqa: C901 - one closure per thing recorded, kept together
    import atexit
    import fcntl
    import gc
    import importlib.abc
    import importlib.machinery
    import os
    import sys
    import termios
    import time

    clock = time.perf_counter
    cpu_clock = time.thread_time  # the loop thread's CPU time: wall time minus this is time without a CPU
    record: dict[str, list[Any]] = {"writes": [], "calls": [], "gcs": [], "lags": [], "sockets": [], "peers": [],
                                    "cpu": []}
    writes, calls, gcs, lags, sockets, peers = (record[k] for k in ("writes", "calls", "gcs", "lags", "sockets",
                                                                    "peers"))
    gc_began = [0.0]
    open_connections: dict[int, Any] = {}  # key -> MQTTConnection
    # The connections read from or written to since the last socket sample: only those are sampled, so
    # that 10,000 idle connections cost the probe nothing.
    active: set[int] = set()

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_began[0] = clock()
            return
        took = clock() - gc_began[0]
        if took >= _SLOW_GC or info["generation"] == 2:
            gcs.append((gc_began[0], took, info["generation"], info.get("collected", 0)))

    gc.callbacks.append(on_gc)

    def ticker(loop: Any) -> None:
        due = [clock() + _LAG_STEP]
        count = [0]
        out_q = getattr(termios, "TIOCOUTQ", 0x5411)
        in_q = getattr(termios, "FIONREAD", 0x541B)
        zero = bytes(4)
        try:
            schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            schedstat = -1

        def run_delay() -> float:
            if schedstat < 0:
                return 0.0
            return int(os.pread(schedstat, 128, 0).split()[1]) / 1e9

        last_delay = [run_delay()]

        def tick() -> None:
            now = clock()
            late = now - due[0]
            waited = run_delay()
            if late >= _LAG_SHOWN:
                # How much of the lag the loop's thread spent runnable but without a CPU (the kernel's
                # run delay since the last tick): the machine's share of it, not Roost's.
                lags.append((due[0], late, waited - last_delay[0]))
            last_delay[0] = waited
            count[0] += 1
            if count[0] % _SAMPLE_EVERY == 0:
                record["cpu"].append((now, time.process_time()))
                for key in list(active):
                    connection = open_connections.get(key)
                    transport = connection.transport if connection is not None else None
                    if transport is None or transport.is_closing():
                        continue
                    sock = transport.get_extra_info("socket")
                    try:
                        fd = sock.fileno()
                        outq = int.from_bytes(fcntl.ioctl(fd, out_q, zero), "little")
                        inq = int.from_bytes(fcntl.ioctl(fd, in_q, zero), "little")
                    except (OSError, AttributeError, ValueError):
                        continue
                    buffered = transport.get_write_buffer_size()
                    if outq or inq or buffered:
                        sockets.append((now, key, buffered, outq, inq))
                active.clear()
            due[0] = clock() + _LAG_STEP
            loop.call_later(_LAG_STEP, tick)

        loop.call_later(_LAG_STEP, tick)

    def patch(module: Any) -> None:
        cls = module.MQTTConnection
        keys: dict[int, int] = {}
        started = [False]

        def timed(name: str, method: Any) -> Any:
            def wrapper(self: Any, *args: Any) -> Any:
                active.add(keys.get(id(self), -1))
                began, cpu = clock(), cpu_clock()
                try:
                    return method(self, *args)
                finally:
                    took = clock() - began
                    if took >= _SLOW_CALL:
                        size = len(args[0]) if name == "data_received" else 0
                        calls.append((began, took, name, keys.get(id(self), -1), size, cpu_clock() - cpu))
            wrapper.__name__ = method.__name__
            return wrapper

        made, lost, flush = cls.connection_made, cls.connection_lost, cls._flush

        def connection_made(self: Any, transport: Any) -> None:
            key = keys[id(self)] = len(peers)
            peer = transport.get_extra_info("peername")
            peers.append(peer[1] if isinstance(peer, tuple) and len(peer) >= 2 else 0)
            open_connections[key] = self
            if not started[0]:
                started[0] = True
                ticker(self._loop)
            made(self, transport)

        def connection_lost(self: Any, exc: Any) -> None:
            open_connections.pop(keys.get(id(self), -1), None)
            lost(self, exc)

        def _flush(self: Any) -> None:
            stats = self.engine.broker.stats
            before = stats.bytes_sent
            began = clock()
            flush(self)
            sent = stats.bytes_sent - before
            if sent:
                transport = self.transport
                buffered = transport.get_write_buffer_size() if transport is not None else 0
                writes.append((began, keys.get(id(self), -1), sent, buffered))

        cls.connection_made, cls.connection_lost, cls._flush = connection_made, connection_lost, _flush
        for name in _ENTRIES:
            if hasattr(cls, name):
                setattr(cls, name, timed(name, getattr(cls, name)))

    class Finder(importlib.abc.MetaPathFinder):
        """Lets `broker.connection` be imported as usual, then patches it."""

        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            if name != "broker.connection":
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            execute = loader.exec_module

            def exec_module(module: Any) -> None:
                execute(module)
                patch(module)

            loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, Finder())

    def dump() -> None:
        Path(out).write_text(json.dumps(record))

    atexit.register(dump)


# --- the harness side -------------------------------------------------------------------------------------

def summarize(path: Path, t_start: float, t_end: float, gap: tuple[float, float] | None = None) -> dict[str, Any]:
    """The broker's side of one measuring window [t_start, t_end): figures for the "Every run" table (keys
    starting `b_`) and `notes`, a few lines naming the longest events. `gap`: the client's longest silence
    (start, end), to say what the broker did meanwhile."""
    data = json.loads(path.read_text())
    inside = [row for row in data["writes"] if t_start <= row[0] < t_end]
    per_key: dict[int, int] = {}
    for row in inside:
        per_key[row[1]] = per_key.get(row[1], 0) + row[2]
    # The subscribers: the connections the broker wrote most bytes to (at least a tenth of the busiest's, and
    # 64 KB: a pinger gets 2 bytes a time).
    top = max(per_key.values(), default=0)
    subscribers = {key for key, sent in per_key.items() if sent >= max(65536, top // 10)}
    times = sorted(row[0] for row in inside if row[1] in subscribers)
    edges = [t_start, *times, t_end]
    write_gap, gap_at = max(((b - a, a) for a, b in zip(edges, edges[1:])), default=(0.0, t_start))
    calls = [row for row in data["calls"] if t_start <= row[0] < t_end]
    gcs = [row for row in data["gcs"] if t_start <= row[0] < t_end]
    lags = [row for row in data["lags"] if t_start <= row[0] < t_end]
    samples = [row for row in data["sockets"] if t_start <= row[0] < t_end]
    out_q = [row[3] for row in samples if row[1] in subscribers]
    in_q = [row[4] for row in samples if row[1] not in subscribers]
    cpu = [row for row in data.get("cpu", []) if t_start <= row[0] < t_end]
    figures: dict[str, Any] = {
        # The process's CPU time per second of the window (1.0: one core busy all the time).
        "b_cpu_share": (cpu[-1][1] - cpu[0][1]) / (cpu[-1][0] - cpu[0][0]) if len(cpu) > 1 else float("nan"),
        "b_write_gap_s": write_gap,
        "b_call_max_ms": max((row[1] for row in calls), default=0.0) * 1000,
        "b_call_max_cpu_ms": max((row[5] for row in calls), default=0.0) * 1000,
        "b_lag_max_ms": max((row[1] for row in lags), default=0.0) * 1000,
        # The longest lag less the time the loop's thread waited for a CPU meanwhile: Roost's own part.
        "b_lag_own_max_ms": max((row[1] - row[2] for row in lags), default=0.0) * 1000,
        "b_gc_max_ms": max((row[1] for row in gcs), default=0.0) * 1000,
        "b_gc_full": float(sum(1 for row in gcs if row[2] == 2)),
        "b_sub_outq_max_kb": max(out_q, default=0) / 1024,
        "b_pub_inq_max_kb": max(in_q, default=0) / 1024,
    }
    notes = [f"broker's longest silence towards the subscribers: {write_gap * 1000:.1f} ms from "
             f"+{(gap_at - t_start) * 1000:.0f} ms"]
    for began, took, name, key, size, cpu in sorted(calls, key=lambda row: -row[1])[:3]:
        notes.append(f"loop held {took * 1000:.1f} ms ({cpu * 1000:.1f} ms of CPU) by {name} (connection {key}, "
                     f"{size} B) at +{(began - t_start) * 1000:.0f} ms")
    for began, took, name, key, size, cpu in sorted(calls, key=lambda row: -row[5])[:1]:
        notes.append(f"most CPU in one call: {cpu * 1000:.1f} ms by {name} (connection {key}, {size} B) at "
                     f"+{(began - t_start) * 1000:.0f} ms, {took * 1000:.1f} ms of wall time")
    for due, late, waited in sorted(lags, key=lambda row: -row[1])[:2]:
        notes.append(f"loop lag {late * 1000:.1f} ms at +{(due - t_start) * 1000:.0f} ms, of which "
                     f"{waited * 1000:.1f} ms runnable without a CPU")
    for began, took, generation, collected in sorted(gcs, key=lambda row: -row[1])[:2]:
        notes.append(f"gc generation {generation}: {took * 1000:.1f} ms at +{(began - t_start) * 1000:.0f} ms")
    if gap is not None:
        a, b = gap
        during = [row for row in data["writes"] if a <= row[0] < b and row[1] in subscribers]
        sampled = [row[3] for row in data["sockets"] if a - 0.01 <= row[0] < b and row[1] in subscribers]
        held = [row[1] for row in data["calls"] if row[0] < b and row[0] + row[1] > a]
        notes.append(
            f"client's longest silence {(b - a) * 1000:.1f} ms at +{(a - t_start) * 1000:.0f} ms: meanwhile the "
            f"broker wrote {len(during)} times ({sum(row[2] for row in during) / 1024:.0f} KB) to the subscribers, "
            f"kernel send queue up to {max(sampled, default=0) / 1024:.0f} KB, loop held by calls of "
            f"{sum(held) * 1000:.1f} ms in all")
        figures["b_writes_in_client_gap"] = float(len(during))
    if len(times) > 1:
        figures["b_write_gap_median_ms"] = statistics.median(b - a for a, b in zip(times, times[1:])) * 1000
    figures["notes"] = notes
    return figures
