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

- every call from the loop over 20 us and every collection over 20 us (`trace`), every read of at most
  64 bytes (`reads`), the run delay at each tick (`ticks`), and, from a thread, the loop thread's stack
  whenever the loop has not ticked for 4 ms (`stalls`): with the pinger's send instants, each PINGREQ's
  round trip splits into to-read / to-write / back, with what the loop did meanwhile (`b_ping_*`).

`BENCH_PROBE_KEEP=DIR` (bench/run.py) keeps every record with its window, to be read again.

At exit (Roost stops on SIGTERM and exits normally) it writes all of it as JSON to the file named by
`ROOST_PROBE`. `summarize()` reads it back for one measuring window, in the harness.
"""

from __future__ import annotations

import bisect
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

__all__ = ["install", "summarize", "sitecustomize"]

# Calls from the loop into a connection that are timed (each is a way the loop enters Roost's code).
_ENTRIES = ("data_received", "_flush", "deadline_passed", "resume_writing", "pause_writing", "connection_made",
            "connection_lost", "_end_yield")
_SLOW_CALL = 0.001
# Every call and collection at least this long goes to the trace, and every read this small to `reads`:
# what the loop did while a PINGREQ waited (`summarize(pings=...)`), which the slow calls alone do not say.
_TRACED = 0.00002
_SMALL_READ = 64
# A thread looks at the loop every millisecond; when the loop has not ticked for this long it records the
# loop thread's stack (at most `_STALLS` samples): a stall outside the traced calls (a periodic task, a
# timer) then says where it was.
_STALL = 0.004
_STALLS = 5000
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
    import threading
    import time

    clock = time.perf_counter
    cpu_clock = time.thread_time  # the loop thread's CPU time: wall time minus this is time without a CPU
    record: dict[str, list[Any]] = {"writes": [], "calls": [], "gcs": [], "lags": [], "sockets": [], "peers": [],
                                    "cpu": [], "trace": [], "reads": [], "ticks": [], "stalls": []}
    writes, calls, gcs, lags, sockets, peers = (record[k] for k in ("writes", "calls", "gcs", "lags", "sockets",
                                                                    "peers"))
    trace, reads, ticks = record["trace"], record["reads"], record["ticks"]
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
        if took >= _TRACED:
            trace.append((gc_began[0], took, f"gc{info['generation']}", -1, 0, took))

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
        last_tick = [clock()]
        loop_thread = threading.get_ident()

        def watch() -> None:
            stalls = record["stalls"]
            while len(stalls) < _STALLS:
                time.sleep(_LAG_STEP)
                since = clock() - last_tick[0]
                if since < _STALL:
                    continue
                frame = sys._current_frames().get(loop_thread)
                stack = []
                while frame is not None and len(stack) < 14:
                    code = frame.f_code
                    stack.append(f"{code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} {code.co_name}")
                    frame = frame.f_back
                stalls.append((clock(), since, stack))

        threading.Thread(target=watch, name="probe-watch", daemon=True).start()

        def tick() -> None:
            now = clock()
            last_tick[0] = now
            late = now - due[0]
            waited = run_delay()
            if late >= _LAG_SHOWN:
                # How much of the lag the loop's thread spent runnable but without a CPU (the kernel's
                # run delay since the last tick): the machine's share of it, not Roost's.
                lags.append((due[0], late, waited - last_delay[0]))
            if waited > last_delay[0]:
                ticks.append((now, waited - last_delay[0]))  # run delay since the last tick, up to `now`
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
                    if took >= _TRACED:
                        size = len(args[0]) if name == "data_received" else 0
                        row = (began, took, name, keys.get(id(self), -1), size, cpu_clock() - cpu)
                        trace.append(row)
                        if took >= _SLOW_CALL:
                            calls.append(row)
                    if name == "data_received" and len(args[0]) <= _SMALL_READ:
                        reads.append((began, keys.get(id(self), -1), len(args[0])))
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
        write_waiting = getattr(module, "_write_waiting", None)
        if write_waiting is not None:  # the one callback a turn that writes the coalesced outputs
            def timed_waiting(*args: Any) -> Any:
                began, cpu, waiting = clock(), cpu_clock(), len(args[0].coalescing)
                try:
                    return write_waiting(*args)
                finally:
                    took = clock() - began
                    if took >= _TRACED:
                        row = (began, took, "_write_waiting", -1, waiting, cpu_clock() - cpu)
                        trace.append(row)
                        if took >= _SLOW_CALL:
                            calls.append(row)
            module._write_waiting = timed_waiting

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

def summarize(path: Path, t_start: float, t_end: float, gap: tuple[float, float] | None = None,
              pings: list[tuple[float, float]] | None = None) -> dict[str, Any]:
    """The broker's side of one measuring window [t_start, t_end): figures for the "Every run" table (keys
    starting `b_`) and `notes`, a few lines naming the longest events. `gap`: the client's longest silence
    (start, end), to say what the broker did meanwhile. `pings`: each PINGREQ's send instant and round trip
    (ms), to say where each one's time went (`_pings`)."""
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
    # The same silences less the time the loop's thread was runnable without a CPU meanwhile (the kernel's
    # run delay, summed from the ticks): the longest is the broker's own part of a silence, at most.
    ticks = sorted(data.get("ticks", []))
    tick_at = [row[0] for row in ticks]
    delays = list(itertools.accumulate((row[1] for row in ticks), initial=0.0))

    def run_delay(a: float, b: float) -> float:
        return delays[bisect.bisect_right(tick_at, b + 0.001)] - delays[bisect.bisect_right(tick_at, a)]

    own_gap = max((b - a - run_delay(a, b) for a, b in zip(edges, edges[1:])), default=0.0)
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
        "b_write_gap_own_s": own_gap,
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
    if pings:
        _pings(data, pings, t_start, t_end, figures, notes)
    figures["notes"] = notes
    return figures


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else float("nan")


def _pings(data: dict[str, Any], pings: list[tuple[float, float]], t_start: float, t_end: float,
           figures: dict[str, Any], notes: list[str]) -> None:
    """Each PINGREQ's round trip in three parts, on the one clock: sent -> read by the broker (the loop was
    elsewhere, or the broker had no CPU), read -> PINGRESP written (the broker's turn), written -> received
    (the kernel and the pinger's process). For the slowest, what the loop did from the send to the write:
    the calls from the loop by kind (wall and CPU time), collections, and the run delay meanwhile."""
    reads = [row for row in data.get("reads", []) if t_start <= row[0] < t_end + 0.1]
    if not reads:
        return
    counts: dict[int, int] = {}
    for row in reads:
        counts[row[1]] = counts.get(row[1], 0) + 1
    key = max(counts, key=counts.__getitem__)  # the pinger: the connection with most small reads
    read_at = sorted(row[0] for row in reads if row[1] == key)
    write_at = sorted(row[0] for row in data["writes"] if row[1] == key)
    parts: list[tuple[float, float, float, float, float]] = []  # sent, rtt, to read, to write, back (s)
    for sent, rtt_ms in pings:
        received = sent + rtt_ms / 1000
        i = bisect.bisect_left(read_at, sent)
        if i == len(read_at) or read_at[i] > received:
            continue
        j = bisect.bisect_left(write_at, read_at[i])
        if j == len(write_at) or write_at[j] > received:
            continue
        parts.append((sent, rtt_ms / 1000, read_at[i] - sent, write_at[j] - read_at[i], received - write_at[j]))
    if not parts:
        return
    figures["b_ping_to_read_p99_ms"] = _p99([row[2] for row in parts]) * 1000
    figures["b_ping_to_write_p99_ms"] = _p99([row[3] for row in parts]) * 1000
    figures["b_ping_back_p99_ms"] = _p99([row[4] for row in parts]) * 1000
    figures["b_ping_broker_p99_ms"] = _p99([row[2] + row[3] for row in parts]) * 1000
    trace = sorted(data.get("trace", []))
    began_at = [row[0] for row in trace]
    longest = max((row[1] for row in trace), default=0.0)

    def loop_cpu(a: float, b: float) -> float:
        """CPU of the calls from the loop into other connections (and collections) during [a, b)."""
        total = 0.0
        for row in trace[bisect.bisect_left(began_at, a - longest):bisect.bisect_left(began_at, b)]:
            if row[0] + row[1] > a and row[3] != key:
                total += row[5] * (min(b, row[0] + row[1]) - max(a, row[0])) / row[1]
        return total

    # Roost's own part of each PINGREQ's wait: what its loop spent on others from the send to the write.
    figures["b_ping_loop_cpu_p99_ms"] = _p99([loop_cpu(row[0], row[0] + row[2] + row[3]) for row in parts]) * 1000
    ticks = data.get("ticks", [])
    for sent, rtt, to_read, to_write, back in sorted(parts, key=lambda row: -row[1])[:3]:
        end = sent + to_read + to_write
        kinds: dict[str, list[float]] = {}
        for began, took, name, other, size, cpu in trace:
            if began < end and began + took > sent and other != key:
                kind = kinds.setdefault(name, [0, 0.0, 0.0])
                kind[0] += 1
                kind[1] += min(end, began + took) - max(sent, began)
                kind[2] += cpu
        delay = sum(waited for at, waited in ticks if sent < at <= end + 0.001)
        held = ", ".join(f"{name} x{int(n)} {wall * 1000:.2f} ms ({cpu * 1000:.2f} CPU)"
                         for name, (n, wall, cpu) in sorted(kinds.items(), key=lambda item: -item[1][1]))
        notes.append(f"PINGREQ at +{(sent - t_start) * 1000:.0f} ms: {rtt * 1000:.2f} ms = {to_read * 1000:.2f} to "
                     f"read + {to_write * 1000:.2f} to write + {back * 1000:.2f} back; run delay "
                     f"{delay * 1000:.2f} ms; loop meanwhile: {held or 'nothing traced'}")
