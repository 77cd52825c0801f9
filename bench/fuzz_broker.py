"""A stateful fuzzer for the whole broker, not only the codec (issue 14): hypothesis drives random sequences of
packets, valid, mutated and from the codec's byte corpus, from several raw clients over real sockets to a
running `roost serve`, and after every step checks what a user would see:

- the process is still up (and its log holds no traceback or internal error: a bad client is closed, never
  a crash of the code that serves it);
- a separate well-behaved client, connected for the whole run, still gets its PINGRESP within 5 s;
- the broker's RSS stays below its idle RSS plus `--memory-budget` MB (default 64).

The clients are plain sockets speaking Roost's codec, as a hostile client would: CONNECT in each version
(clean or not, with or without a will, deep, long and `$` topics included), PUBLISH at each QoS, SUBSCRIBE
and UNSUBSCRIBE with shared, wildcard, deep and `$` filters, acknowledgements for packet identifiers that
do or do not exist, DISCONNECT with any reason code, partial CONNECTs announcing 1 MB, byte-flipped and
truncated packets, raw bytes from tests/broker/codec/corpus.py (its valid and malformed cases), random
bytes, and abrupt closes.

    python -m bench.fuzz_broker                         # 300 sequences of up to 50 steps
    python -m bench.fuzz_broker --examples 2000 --steps 80

Failures are kept: the example database is `bench/fuzz_db/` (hypothesis' DirectoryBasedExampleDatabase),
so a sequence that broke the broker once is replayed first by every later run, the long one here and the
short bounded one in the test suite (tests/test_fuzz_broker.py, which reads the database without writing
it). The seed corpus is tests/broker/codec/corpus.py. See docs/operations.md ("Fuzzing the broker").
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase, ReadOnlyDatabase
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from broker.codec import (
    NEED_DATA,
    Auth,
    Connect,
    Disconnect,
    PacketReader,
    Pingreq,
    Pingresp,
    Properties,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
    encode,
)
from broker.codec.encode import encode_varint
from tests.broker.codec.corpus import INVALID, VALID

from .brokers import Broker, start_broker

__all__ = ["DATABASE", "BrokerFuzz", "FuzzTarget", "fuzz", "main"]

DATABASE = Path(__file__).resolve().parent / "fuzz_db"
HOST = "127.0.0.1"
TIMEOUT = 5.0
SLOTS = 4
PROBE_ID = "fuzz-probe"

# Mostly what the anonymous ACL allows (`bench/#`), so that sessions live and messages are routed, acked and
# queued; then the odd (deep, long, `$`, shared, unicode) and the invalid, which close their connection.
_GOOD_TOPICS = st.sampled_from(["bench/a", "bench/b/c", "bench/", "bench//x", "bench/\u00e9\u6e29"])
_ODD_TOPICS = st.sampled_from(["other/t", "$SYS/broker/version", "$share/g/bench/a", "/" * 300,
                               "bench/" + "x" * 5000, "bench/" + "/" * 200, "+", "#", "bench/#", "bench/+/c"])
_TOPICS = st.one_of(_GOOD_TOPICS, _GOOD_TOPICS, _GOOD_TOPICS, _ODD_TOPICS,
                    st.text(alphabet="ab/+#$\x00\u00e9", min_size=0, max_size=12))
_GOOD_FILTERS = st.sampled_from(["bench/#", "bench/+", "bench/a", "bench/+/c", "$share/g/bench/#", "bench/b/#"])
_ODD_FILTERS = st.sampled_from(["#", "+/#", "$SYS/#", "$share/g/#", "$share//x", "+/" * 200 + "#",
                                "bench/" + "+/" * 150 + "#", "bench/a/#/b", "bench/a+"])
_FILTERS = st.one_of(_GOOD_FILTERS, _GOOD_FILTERS, _GOOD_FILTERS, _ODD_FILTERS,
                     st.text(alphabet="ab/+#$", min_size=0, max_size=10))
_PICK = st.integers(0, 15)  # which live client a step acts on (see BrokerFuzz._client)
_CLIENT_IDS = st.sampled_from(["", "c1", "c2", "c3", "same"])
_PACKET_IDS = st.integers(min_value=1, max_value=8)
_PAYLOADS = st.one_of(st.binary(max_size=64), st.sampled_from([b"x" * 70_000]))
_CORPUS = [case.raw for case in (*VALID, *INVALID)]


def _maybe(build: Any, *args: Any, **kwargs: Any) -> Any:
    """Build a packet, or None when its constructor refuses the values (packets validate when built)."""
    try:
        return build(*args, **kwargs)
    except (ValueError, TypeError):
        return None


class Client:
    """One raw socket, and a reader for what the broker sends back: read at once (so nothing backs up) and
    counted by packet type in `seen`, the evidence of what a run reached (CONNACK 0, SUBACK, PUBLISH...)."""

    def __init__(self, port: int, version: int, seen: Counter[str]) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
        self.sock.setblocking(False)
        self.version = version
        self.alive = True
        self.seen = seen
        self.reader: PacketReader | None = PacketReader(version)

    def send(self, data: bytes) -> None:
        if not self.alive:
            return
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(0.5)
            self.sock.sendall(data)
        except OSError:  # closed by the broker (as it should be, for much of what is sent), or backed up
            self.alive = False
        finally:
            with contextlib.suppress(OSError):
                self.sock.setblocking(False)
        self.drain()

    def send_packet(self, packet: Any, version: int | None = None) -> None:
        """Encode with Roost's codec and send; a packet the encoder refuses is simply not sent."""
        if packet is None:
            return
        try:
            data = encode(packet, version or self.version)
        except Exception:  # the encoder's own checks (e.g. a property the version cannot carry)
            return
        self.send(data)

    def drain(self) -> None:
        while self.alive:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                self.alive = False
                return
            if not data:
                self.alive = False
                return
            self._count(data)

    def _count(self, data: bytes) -> None:
        reader = self.reader
        if reader is None:
            return
        try:
            reader.receive_data(data)
            while (packet := reader.next_packet()) is not NEED_DATA:
                name = type(packet).__name__
                if name == "Connack":
                    name += " accepted" if packet.reason_code == 0 else " refused"  # type: ignore[attr-defined]
                self.seen[name] += 1
        except Exception:  # e.g. a v3 CONNACK read as v5: stop counting this client, it is only evidence
            self.reader = None

    def close(self) -> None:
        self.alive = False
        with contextlib.suppress(OSError):
            self.sock.close()


class Probe:
    """The well-behaved client: connected for the whole run, it must keep getting PINGRESP."""

    def __init__(self, broker: Broker) -> None:
        self.sock = socket.create_connection((HOST, broker.port), timeout=TIMEOUT)
        self.reader = PacketReader(5)
        credentials = broker.credentials
        self.sock.sendall(encode(Connect(
            client_id=PROBE_ID, protocol_version=5, keep_alive=0,
            username=credentials.username if credentials else None,
            password=credentials.password.encode() if credentials else None,
        ), 5))
        connack = self._next()
        assert getattr(connack, "reason_code", None) == 0, f"probe refused: {connack!r}"

    def _next(self) -> Any:
        deadline = time.monotonic() + TIMEOUT
        while True:
            packet = self.reader.next_packet()
            if packet is not NEED_DATA:
                return packet
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the broker closed the well-behaved client's connection")
            self.reader.receive_data(data)

    def ping(self) -> float:
        """Seconds for a PINGREQ round trip; AssertionError if no PINGRESP came within TIMEOUT."""
        started = time.perf_counter()
        self.sock.sendall(encode(Pingreq(), 5))
        try:
            while not isinstance(self._next(), Pingresp):
                pass
        except TimeoutError:
            raise AssertionError(f"no PINGRESP within {TIMEOUT} s") from None
        return time.perf_counter() - started

    def close(self) -> None:
        self.sock.close()


class FuzzTarget:
    """The broker process under fuzzing, its probe, and the memory bound."""

    def __init__(self, broker: Broker, memory_budget_mb: int) -> None:
        self.broker = broker
        self.probe = Probe(broker)
        self.idle_rss_kb = broker.rss_kb()
        self.limit_kb = self.idle_rss_kb + memory_budget_mb * 1024
        self.peak_rss_kb = self.idle_rss_kb
        self.slowest_ping = 0.0
        self.steps = 0
        self.seen: Counter[str] = Counter()  # packets the fuzzing clients received, by type

    def check(self) -> None:
        broker = self.broker
        assert broker.alive(), f"the broker exited:\n{broker.log_tail(40)}"
        self.slowest_ping = max(self.slowest_ping, self.probe.ping())
        rss = broker.rss_kb()
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        assert rss <= self.limit_kb, f"RSS {rss} kB above the bound {self.limit_kb} kB (idle {self.idle_rss_kb} kB)"
        log = broker.log_path.read_text(errors="replace")
        assert "Traceback" not in log and "internal error" not in log, f"the broker logged an error:\n{log[-4000:]}"


class BrokerFuzz(RuleBasedStateMachine):
    """Random packet sequences from up to four raw clients; `target` is set by `fuzz()`."""

    target: ClassVar[FuzzTarget]

    def __init__(self) -> None:
        super().__init__()
        self.clients: dict[int, Client] = {}

    def _client(self, pick: int) -> Client | None:
        """A live client, chosen by `pick` among those alive (so that most steps reach one), or None."""
        live = [client for _, client in sorted(self.clients.items()) if client.alive]
        return live[pick % len(live)] if live else None

    def _send(self, pick: int, data: bytes) -> None:
        client = self._client(pick)
        if client is not None:
            client.send(data)

    @rule(slot=st.integers(0, SLOTS - 1), version=st.sampled_from([3, 4, 5]), client_id=_CLIENT_IDS,
          clean=st.booleans(), expiry=st.sampled_from([None, 0, 5, 0xFFFFFFFF]),
          will=st.none() | st.tuples(_TOPICS, _PAYLOADS, st.integers(0, 2), st.booleans(),
                                     st.sampled_from([None, 0, 1, 3600])),
          keep_alive=st.sampled_from([0, 1, 60]))
    def connect(self, slot: int, version: int, client_id: str, clean: bool, expiry: int | None,
                will: tuple[str, bytes, int, bool, int | None] | None, keep_alive: int) -> None:
        old = self.clients.pop(slot, None)
        if old is not None:
            old.close()
        will_packet = None
        if will is not None:
            topic, payload, qos, retain, delay = will
            props = Properties(will_delay_interval=delay) if version == 5 and delay is not None else Properties()
            will_packet = _maybe(Will, topic, payload, qos, retain, props)
        props = Properties(session_expiry_interval=expiry) if version == 5 and expiry is not None else Properties()
        packet = _maybe(Connect, client_id=client_id, protocol_version=version, clean_start=clean,
                        keep_alive=keep_alive, will=will_packet, properties=props)
        client = self.clients[slot] = Client(self.target.broker.port, version, self.target.seen)
        client.send_packet(packet)

    @rule(pick=_PICK, topic=_TOPICS, payload=_PAYLOADS, qos=st.integers(0, 2),
          retain=st.booleans(), packet_id=_PACKET_IDS, alias=st.sampled_from([None, 1, 2, 100]))
    def publish(self, pick: int, topic: str, payload: bytes, qos: int, retain: bool, packet_id: int,
                alias: int | None) -> None:
        client = self._client(pick)
        if client is None:
            return
        props = Properties(topic_alias=alias) if client.version == 5 and alias is not None else Properties()
        client.send_packet(_maybe(Publish, topic, payload, qos, retain, False, packet_id if qos else None, props))

    @rule(pick=_PICK, filters=st.lists(st.tuples(_FILTERS, st.integers(0, 2), st.booleans(),
                                                                  st.integers(0, 2)), min_size=1, max_size=4),
          packet_id=_PACKET_IDS)
    def subscribe(self, pick: int, filters: list[tuple[str, int, bool, int]], packet_id: int) -> None:
        client = self._client(pick)
        if client is None:
            return
        v5 = client.version == 5
        subscriptions = [_maybe(Subscription, f, qos, no_local and v5, False, handling if v5 else 0)
                         for f, qos, no_local, handling in filters]
        client.send_packet(_maybe(Subscribe, packet_id, tuple(s for s in subscriptions if s is not None)))

    @rule(pick=_PICK, filters=st.lists(_FILTERS, min_size=1, max_size=3), packet_id=_PACKET_IDS)
    def unsubscribe(self, pick: int, filters: list[str], packet_id: int) -> None:
        client = self._client(pick)
        if client is not None:
            client.send_packet(_maybe(Unsubscribe, packet_id, tuple(filters)))

    @rule(pick=_PICK, kind=st.sampled_from([Puback, Pubrec, Pubrel, Pubcomp]), packet_id=_PACKET_IDS)
    def acknowledge(self, pick: int, kind: type, packet_id: int) -> None:
        client = self._client(pick)
        if client is not None:
            client.send_packet(kind(packet_id))

    @rule(pick=_PICK, what=st.sampled_from(["ping", "disconnect", "disconnect-will", "auth"]))
    def control(self, pick: int, what: str) -> None:
        client = self._client(pick)
        if client is None:
            return
        packet = {"ping": Pingreq(), "disconnect": Disconnect(), "disconnect-will": Disconnect(0x04),
                  "auth": Auth()}[what]
        client.send_packet(packet, 5 if what in ("auth", "disconnect-will") else client.version)

    @rule(pick=_PICK, kind=st.sampled_from(["corpus", "mutated", "garbage", "partial"]), data=st.data())
    def hostile(self, pick: int, kind: str, data: st.DataObject) -> None:
        """Bytes a broken or hostile client sends. One rule for all of them, so that well-formed traffic (the
        other rules) keeps most of the steps and sessions live long enough to reach routing and acks."""
        if kind == "partial":
            self._partial_connect(pick % SLOTS, data.draw(st.sampled_from([100, 60_000, 1_048_576, 268_435_455]),
                                                  label="announced"), data.draw(st.integers(0, 2048), label="sent"))
            return
        if kind == "garbage":
            self._send(pick, data.draw(st.binary(min_size=1, max_size=256), label="garbage"))
            return
        raw = bytearray(_CORPUS[data.draw(st.integers(0, len(_CORPUS) - 1), label="corpus case")])
        if kind == "mutated":
            for _ in range(data.draw(st.integers(1, 4), label="mutations")):
                how = data.draw(st.sampled_from(["flip", "truncate", "insert", "duplicate"]), label="how")
                at = data.draw(st.integers(0, max(0, len(raw) - 1)), label="at")
                if how == "flip" and raw:
                    raw[at] ^= data.draw(st.integers(1, 255), label="bits")
                elif how == "truncate":
                    del raw[at:]
                elif how == "insert":
                    raw[at:at] = data.draw(st.binary(min_size=1, max_size=8), label="inserted")
                else:
                    raw = raw + raw
        self._send(pick, bytes(raw))

    def _partial_connect(self, slot: int, announced: int, sent: int) -> None:
        """A new connection that starts a CONNECT and stops (its first bytes only, or a fixed header)."""
        old = self.clients.pop(slot, None)
        if old is not None:
            old.close()
        client = self.clients[slot] = Client(self.target.broker.port, 5, self.target.seen)
        client.send(b"\x10" + encode_varint(announced) + bytes(sent))

    @rule(slot=st.integers(0, SLOTS - 1))
    def close(self, slot: int) -> None:
        client = self.clients.pop(slot, None)
        if client is not None:
            client.close()

    @invariant()
    def broker_serves_others(self) -> None:
        for client in self.clients.values():
            client.drain()
        self.target.steps += 1
        self.target.check()

    def teardown(self) -> None:
        for client in self.clients.values():
            client.close()
        self.clients.clear()


def fuzz(broker: Broker, *, examples: int, steps: int, database: ExampleDatabase | None,
         memory_budget_mb: int = 64) -> FuzzTarget:
    """Run the state machine against a running broker; raises what hypothesis found (shrunk)."""
    target = FuzzTarget(broker, memory_budget_mb)
    BrokerFuzz.target = target
    try:
        run_state_machine_as_test(BrokerFuzz, settings=settings(
            max_examples=examples, stateful_step_count=steps, deadline=None, database=database,
            suppress_health_check=list(HealthCheck), print_blob=True,
        ))
    finally:
        target.probe.close()
    return target


@contextlib.contextmanager
def fuzzed_roost() -> Iterator[Broker]:
    """A fresh `roost serve` for fuzzing: anonymous clients with a `bench/#` ACL (bench/brokers.py)."""
    with start_broker("roost", anonymous=True) as broker:
        yield broker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_broker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=300, help="packet sequences to try (default 300)")
    parser.add_argument("--steps", type=int, default=50, help="steps per sequence at most (default 50)")
    parser.add_argument("--memory-budget", type=int, default=64, help="MB above idle RSS allowed (default 64)")
    parser.add_argument("--database", type=Path, default=DATABASE, help=f"example database (default {DATABASE})")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with fuzzed_roost() as broker:
        target = fuzz(broker, examples=args.examples, steps=args.steps,
                      database=DirectoryBasedExampleDatabase(str(args.database)), memory_budget_mb=args.memory_budget)
    print(f"{args.examples} sequences, {target.steps} steps in {time.perf_counter() - started:.0f} s: the broker "
          f"stayed up; slowest PINGREQ of the well-behaved client {target.slowest_ping * 1000:.1f} ms; RSS idle "
          f"{target.idle_rss_kb / 1024:.1f} MB, peak {target.peak_rss_kb / 1024:.1f} MB")
    print("packets the fuzzing clients received: " + ", ".join(f"{n} {k}" for k, n in target.seen.most_common()))
    return 0


def suite_database() -> ExampleDatabase:
    """What the test suite replays: the failures kept by long runs, read-only."""
    return ReadOnlyDatabase(DirectoryBasedExampleDatabase(str(DATABASE)))


if __name__ == "__main__":
    sys.exit(main())
