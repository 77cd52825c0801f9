"""The collector policy (control/gc_policy.py): a closed connection is freed by reference counting alone, so
freezing what connected clients hold is safe; and the policy freezes, unfreezes and restores as documented.

Freezing is only sound if nothing of a closed connection waits for the collector: a frozen object in a
reference cycle is never freed until a backstop unfreezes it. The first test runs a real Roost (uvloop, TCP,
the storage hooks, WebSocket through uvicorn) with the collector disabled and ends connections in the ways
they end; afterwards, not one broker object of them is left among the objects the collector tracks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.broker.test_tls import tls_roost  # noqa: F401 - a fixture

from broker.codec import Connack, Connect, Disconnect, Publish, Puback, Subscribe, Subscription, Will, encode
from control.gc_policy import GCPolicy
from tests.helpers import TIMEOUT, RawClient, RoostThread, roost_document
from tests.ws_helpers import RawWebSocket

# What the broker makes per connection (the client's side here uses PacketReader too: not counted), over
# TCP and over WebSocket (uvicorn's protocol and Roost's transport over it).
_PER_CONNECTION = ("MQTTConnection", "Connection", "PublishEncoder", "Admission", "ClientInfo", "Session",
                   "TCPTransport", "AckOrder", "WebSocketTransport", "StreamingWSProtocol")


def _live() -> Counter[str]:
    """Instances of the per-connection types among what the collector tracks (frozen objects apart)."""
    return Counter(f"{type(o).__module__}.{name}" for o in gc.get_objects()
                   if (name := type(o).__name__) in _PER_CONNECTION)


@contextlib.contextmanager
def _collector_off() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for the broker to have done something the test cannot be told of by a packet."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "the broker did not get there in time"
        time.sleep(0.01)  # polling a condition on the broker's loop, not hoping


def _closed(raw: RawClient) -> None:
    assert raw.closed_by_broker()
    raw.close()


@pytest.fixture
def roost(tmp_path: Path) -> Iterator[RoostThread]:
    instance = RoostThread(roost_document(tmp_path)).start()
    yield instance
    instance.stop()


def test_closed_connections_are_freed_without_the_collector(roost: RoostThread) -> None:
    port = roost.mqtt_port
    server = roost.roost.server_state  # type: ignore[union-attr]

    def open_count() -> int:
        return roost.call(lambda: len(server.connections))

    with _collector_off():
        before = _live()
        # A subscriber that gets a QoS 1 message and never acknowledges it, then vanishes (its inflight
        # message, its subscription, its session go with it).
        subscriber = RawClient(port, version=5)
        subscriber.connect("subscriber")
        subscriber.send(Subscribe(1, (Subscription("t/#", 1),)))
        subscriber.receive()  # SUBACK
        publisher = RawClient(port, version=5)
        publisher.connect("publisher", will=Will("wills/publisher", b"gone", 1))
        publisher.send(Publish("t/1", b"x", 1, False, False, 7))
        assert isinstance(publisher.receive(), Puback)
        assert isinstance(subscriber.receive(), Publish)
        subscriber.close()  # abnormal close, message unacknowledged
        publisher.close()  # abnormal close: its will is published
        # DISCONNECT, 3.1.1 and 5.
        for version in (4, 5):
            polite = RawClient(port, version=version)
            polite.connect(f"polite{version}")
            polite.send(Disconnect())
            _closed(polite)
        # Taken over by a second connection with the same client id; then that one disconnects.
        first = RawClient(port, version=5)
        first.connect("twin")
        second = RawClient(port, version=5)
        second.connect("twin")
        _closed(first)
        second.send(Disconnect())
        _closed(second)
        # A protocol error after CONNECT (a reserved packet type), and a connection that never sends CONNECT.
        rude = RawClient(port, version=5)
        rude.connect("rude")
        rude.send_raw(b"\xf0\x00")
        _closed(rude)
        silent = RawClient(port, version=5)
        silent.close()
        # Silent past its keep alive (1 s, enforced at 1.5 s): dropped by the broker.
        sleepy = RawClient(port, version=4)
        sleepy.connect("sleepy", keep_alive=1)
        _closed(sleepy)
        # A persistent session (3.1.1, clean session 0): the session stays, its connection goes.
        durable = RawClient(port, version=4)
        durable.connect("durable", clean_start=False)
        durable.close()
        # Over WebSocket: closed by the client, and by the broker (a text message is not MQTT).
        for text in (False, True):
            socket_ = RawWebSocket(roost.http_port)
            socket_.send_frames(encode(Connect(client_id=f"ws{text}", protocol_version=5), 5))
            assert isinstance(socket_.receive(), Connack)
            if text:
                socket_.send_text("hello")
                assert socket_.wait_closed() == 1003
            socket_.close()
        del socket_  # the client's side (wsproto, h11) is not the broker's
        _until(lambda: open_count() == 0)
        left = _live() - before
        # durable's session stays, and its client's info with it; nothing else.
        assert left == Counter({"broker.session.Session": 1, "broker.hooks.ClientInfo": 1}), left

        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            cyclic = Counter(type(o).__name__ for o in gc.garbage if type(o).__name__ in _PER_CONNECTION)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
        assert not cyclic


class _Clocks:
    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def step(self, busy: float) -> None:
        """One second passes, `busy` of it on the CPU."""
        self.wall += 1.0
        self.cpu += busy


def _policy(clocks: _Clocks, **terms: Any) -> GCPolicy:
    return GCPolicy(clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu, **terms)


@pytest.fixture
def restore_gc() -> Iterator[None]:
    """Whatever a test does to the collector, the process gets it back (a backstop freezes everything)."""
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)


def test_the_backstop_waits_for_a_quiet_moment_and_frees_frozen_cycles(restore_gc: None) -> None:
    clocks = _Clocks()
    policy = _policy(clocks, full_interval=10, full_overdue=100, quiet_cpu=0.05, quiet_seconds=3)
    with _collector_off():
        policy.settle()
        # A frozen object that later ends in a cycle: only a backstop frees it.
        class Node:
            pass

        node = Node()
        gc.freeze()
        alive = weakref.ref(node)
        node.self = node  # type: ignore[attr-defined]
        del node
        gc.collect()
        # The collector does not see it. (Not the freeze count: other threads of a test process free frozen
        # objects by reference counting at any moment.)
        assert alive() is not None
        for _ in range(20):  # due after 10 s, but the process is busy
            clocks.step(0.5)
            assert not policy.tick()
        for second in range(3):  # quiet for 3 s: runs at the end of them
            clocks.step(0.01)
            assert policy.tick() == (second == 2)
        assert policy.backstops == 1
        assert alive() is None
        assert policy.backstop_collected >= 2  # the node and its __dict__
        assert gc.get_freeze_count() > 1_000  # frozen again afterwards


def test_the_backstop_runs_under_load_once_overdue(restore_gc: None) -> None:
    clocks = _Clocks()
    policy = _policy(clocks, full_interval=10, full_overdue=30)
    with _collector_off():
        policy.settle()
        ran = []
        for second in range(1, 61):
            clocks.step(0.9)
            if policy.tick():
                ran.append(second)
    assert ran == [30, 60]


def test_survivors_of_a_full_collection_are_frozen_once_they_are_many(restore_gc: None) -> None:
    policy = GCPolicy(young_limit=1_000)
    with _collector_off():
        policy.settle()
        kept = [[i] for i in range(500)]
        frozen = gc.get_freeze_count()
        policy.on_collection("start", {"generation": 2})
        gc.collect()
        policy.on_collection("stop", {"generation": 2, "collected": 0})
        assert policy.survivors_frozen == 0  # 500 are not many
        old = {id(item) for item in gc.get_objects(2)}
        assert all(id(item) in old for item in kept)  # still scanned: none was frozen
        kept += [[i] for i in range(2_000)]
        gc.collect()
        policy.on_collection("stop", {"generation": 2, "collected": 0})
        assert policy.survivors_frozen == 1
        assert gc.get_freeze_count() >= frozen + 2_500
        assert not gc.get_objects(2)
        del kept
        # Frozen objects are still freed by reference counting.
        assert gc.get_freeze_count() < frozen + 100


def test_run_hooks_into_the_collector_and_restores_it(restore_gc: None) -> None:
    policy = GCPolicy()
    thresholds = gc.get_threshold()

    async def scenario() -> None:
        task = asyncio.create_task(policy.run(interval=3600))
        await asyncio.sleep(0)  # the task starts
        assert policy.on_collection in gc.callbacks
        assert gc.get_threshold() == (thresholds[0], thresholds[1], 1)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert policy.on_collection not in gc.callbacks
    assert gc.get_threshold() == thresholds


def test_metrics_report_the_frozen_heap(roost: RoostThread) -> None:
    """`/metrics` carries the policy's figures; the frozen objects are a gauge that grows with the clients."""
    from tests.control.test_metrics import scrape, value

    samples = scrape(roost)
    assert value(samples, "roost_gc_frozen_objects") > 0
    assert value(samples, "roost_gc_backstops_total") == 0
    assert value(samples, "roost_gc_backstop_collected_objects_total") == 0
    assert ("roost_gc_survivors_frozen_total", frozenset()) in samples


def test_closed_tls_connections_are_freed_without_the_collector(tls_roost: Callable[..., RoostThread]) -> None:
    """Over TLS on uvloop (as `roost serve` runs), closed by the client with and without DISCONNECT."""
    from tests.broker.test_tls import ca_file, mqtt_connect_over, raw_tls

    roost = tls_roost(uvloop=True)
    server = roost.roost.server_state  # type: ignore[union-attr]
    tls_types = (*_PER_CONNECTION, "SSLProtocol", "_SSLProtocolTransport", "SSLObject")
    with _collector_off():
        before = Counter(type(o).__name__ for o in gc.get_objects() if type(o).__name__ in tls_types)
        for polite in (False, True):
            sock = raw_tls(roost, ca_file(roost))
            mqtt_connect_over(sock, f"tls{polite}")
            if polite:
                sock.sendall(encode(Disconnect(), 5))
            sock.close()
        del sock
        _until(lambda: roost.call(lambda: len(server.connections)) == 0)
        left = Counter(type(o).__name__ for o in gc.get_objects() if type(o).__name__ in tls_types) - before
        assert not left, left


def test_two_policies_in_one_process_restore_the_thresholds_once_both_stop(restore_gc: None) -> None:
    thresholds = gc.get_threshold()

    async def scenario() -> None:
        first = asyncio.create_task(GCPolicy().run(interval=3600))
        await asyncio.sleep(0)
        second = asyncio.create_task(GCPolicy().run(interval=3600))
        await asyncio.sleep(0)
        for task in (first, second):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert gc.get_threshold() == ((thresholds[0], thresholds[1], 1) if task is first else thresholds)

    asyncio.run(scenario())
