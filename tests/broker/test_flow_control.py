"""Flow control and backpressure: a slow or silent client costs the broker bounded memory and never stalls
anyone else.

- A QoS 0 subscriber that stops reading: once its write buffer passes `write_buffer_high`, QoS 0 messages to
  it are dropped and counted; the broker answers everyone else at once and its memory stays bounded.
- A QoS 1 subscriber that stops acknowledging: `max_inflight` messages in flight [MQTT-4.9.0-2 context],
  then up to `max_queued_messages` queued, then dropped; acknowledging releases the queue in order
  [MQTT-4.6.0-6].
- A client that floods without reading anything back (its PUBACKs and its own echoes pile up) is paused:
  the broker stops reading it, so its socket send buffer fills; every PUBLISH it managed to send is still
  acknowledged once it reads again.

The broker runs in this process, so its memory is this process's RSS (/proc/self/status). Times are
measured against generous timeouts (1 s for a PINGRESP), not asserted as performance.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from broker.codec import Puback, Publish, Pingreq, Pingresp, Suback, Subscribe, Subscription, encode
from tests.helpers import TIMEOUT, PahoClient, RawClient, RoostThread

MB = 1 << 20
RCVBUF = 256 * 1024


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def raw_client(roost: RoostThread, client_id: str, version: int = 4, rcvbuf: int | None = None) -> RawClient:
    raw = RawClient(roost.mqtt_port, version)
    if rcvbuf is not None:
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    assert raw.connect(client_id).reason_code == 0
    return raw


def subscribe(raw: RawClient, topic_filter: str, qos: int) -> None:
    raw.send(Subscribe(1, (Subscription(topic_filter, qos),)))
    ack = raw.receive()
    assert isinstance(ack, Suback) and ack.reason_codes == (qos,)


def ping(raw: RawClient, timeout: float = 1.0) -> float:
    """PINGREQ / PINGRESP round trip [MQTT-3.12.4-1] within `timeout` seconds; returns the time it took.
    Packets that arrive before the PINGRESP are skipped."""
    raw.sock.settimeout(timeout)
    start = time.monotonic()
    try:
        raw.send(Pingreq())
        while not isinstance(raw.receive(), Pingresp):
            pass
    finally:
        raw.sock.settimeout(TIMEOUT)
    return time.monotonic() - start


def dropped(roost: RoostThread) -> int:
    return roost.call(lambda: roost.roost.broker.stats.messages_dropped)  # type: ignore[union-attr]


def test_slow_qos0_subscriber_does_not_stall_the_broker(make_roost: Callable[..., RoostThread]) -> None:
    """20 MB of QoS 0 towards a subscriber that stopped reading: the excess is dropped and counted, another
    client's PINGREQ is answered within 1 s throughout, memory stays bounded, and the slow subscriber gets
    new messages again once it reads."""
    roost = make_roost(write_buffer_high=65_536)
    # A fixed, modest receive buffer: the kernel cannot absorb the whole flood, and reading the backlog later
    # stays fast (a tiny window would crawl over loopback because of delayed ACKs).
    slow = raw_client(roost, "slow", rcvbuf=RCVBUF)
    subscribe(slow, "flood/#", 0)
    pinger = raw_client(roost, "pinger", version=5)
    publisher = raw_client(roost, "publisher")
    dropped_before = dropped(roost)
    rss_before = rss_bytes()

    one = encode(Publish("flood/data", b"x" * (64 * 1024 - 16)), 4)
    chunk = one * 16  # about 1 MB
    total = 20 * MB
    errors: list[BaseException] = []

    def flood() -> None:
        try:
            for _ in range(total // len(chunk) + 1):
                publisher.send_raw(chunk)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    while True:
        ping(pinger)  # TimeoutError if the broker does not answer within a second
        if not thread.is_alive():
            break
    thread.join(TIMEOUT)
    assert not errors, errors
    ping(publisher)  # the publisher's own packets were all handled
    assert time.monotonic() - started < 10

    assert dropped(roost) > dropped_before
    assert rss_bytes() - rss_before < 100 * MB

    # The slow subscriber is still connected: it reads its backlog, and new messages reach it again.
    ping(slow, timeout=TIMEOUT)
    publisher.send(Publish("flood/after", b"after"))
    while True:
        message = slow.receive()
        if isinstance(message, Publish) and message.topic == "flood/after":
            break
    for raw in (slow, pinger, publisher):
        raw.close()


def test_slow_qos1_subscriber_queues_then_drops(make_roost: Callable[..., RoostThread]) -> None:
    """5 in flight, 10 queued, the remaining 15 dropped; acknowledgements release the queue in order."""
    roost = make_roost(max_inflight=5, max_queued_messages=10)
    sub = raw_client(roost, "slow-qos1", version=5)
    subscribe(sub, "q/#", 1)
    pub = PahoClient(roost.mqtt_port, client_id="pub-qos1", version=5).connect()
    dropped_before = dropped(roost)
    try:
        for i in range(30):
            pub.publish("q/t", str(i).encode(), qos=1)
        received: list[Publish] = []

        def take(count: int) -> None:
            for _ in range(count):
                message = sub.receive()
                assert isinstance(message, Publish), message
                received.append(message)

        take(5)  # the in-flight window
        ping(sub)  # nothing else comes before the PINGRESP: the rest waits in the queue
        for _ in range(3):
            for message in received[-5:]:
                sub.send(Puback(message.packet_id))  # type: ignore[arg-type]
            if len(received) < 15:
                take(5)
        ping(sub)  # after the queue: nothing more, the last 15 were dropped
        assert [m.payload for m in received] == [str(i).encode() for i in range(15)]
        assert all(m.qos == 1 for m in received)
        assert dropped(roost) - dropped_before == 15
    finally:
        pub.client.disconnect()
        pub.client.loop_stop()
        sub.close()


def test_flooding_client_that_does_not_read_is_paused(make_roost: Callable[..., RoostThread]) -> None:
    """A client that sends QoS 1 PUBLISHes and reads nothing back (PUBACKs, and the echoes of its own
    subscription) fills its write buffer; the broker stops reading it, so its own sends block. Others are
    answered meanwhile, and once it reads again every PUBLISH it sent is acknowledged."""
    roost = make_roost(write_buffer_high=65_536)
    flooder = raw_client(roost, "flooder", rcvbuf=RCVBUF)
    subscribe(flooder, "echo/#", 0)
    other = raw_client(roost, "other", version=5)

    count = 1000
    packets = [encode(Publish("echo/x", b"e" * (64 * 1024), qos=1, packet_id=i), 4) for i in range(1, count + 1)]
    stream = b"".join(packets)
    del packets[1:]
    rss_before = rss_bytes()
    flooder.sock.settimeout(0.5)
    sent = 0
    started = time.monotonic()
    blocked = False
    while sent < len(stream):
        try:
            sent += flooder.sock.send(stream[sent : sent + MB])
        except TimeoutError:
            blocked = True
            break
    assert blocked, f"the flooder sent all {sent} bytes without being paused"
    assert sent < len(stream)
    assert time.monotonic() - started < 10
    assert ping(other) < 1.0
    assert rss_bytes() - rss_before < 100 * MB

    # Finish the packet cut in the middle, then read: every complete PUBLISH gets its PUBACK.
    size = len(packets[0])
    complete = -(-sent // size)  # the partial one too, once finished
    flooder.sock.settimeout(TIMEOUT)
    remainder = stream[sent : complete * size]
    writer = threading.Thread(target=flooder.sock.sendall, args=(remainder,), daemon=True)
    writer.start()
    acked: set[int] = set()
    while len(acked) < complete:
        packet = flooder.receive()
        if isinstance(packet, Puback):
            acked.add(packet.packet_id)
    writer.join(TIMEOUT)
    assert acked == set(range(1, complete + 1))
    ping(flooder, timeout=TIMEOUT)
    flooder.close()
    other.close()
