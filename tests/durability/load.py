"""A steady QoS 1/2 load through a broker that gets killed: asyncio MQTT clients built on Roost's codec.

`LoadPublisher` sends numbered messages (payload: the number) with at most `window` unacknowledged, at a
steady rate, and records when each number was first acknowledged (PUBACK, or PUBREC for QoS 2: from then on
the broker owns the message). When its connection ends it waits for the broker to be up again, resumes its
session and resends what is unacknowledged, as MQTT asks [MQTT-4.4.0-1]: the PUBLISH again with DUP set, or
the PUBREL for a QoS 2 message whose PUBREC came.

`LoadSubscriber` keeps a persistent session subscribed to every stream and records each number its
application would see. For QoS 2 it delivers on PUBREL, keeping the message by packet identifier until then
(the receiver's "method A" of MQTT 5.0 figure 4.3, what paho does), so a PUBLISH resent with DUP before the
PUBREL is not delivered twice. It also counts what a receiver delivering on PUBLISH ("method B") would see
twice: a QoS 2 message arriving again under a new packet identifier.

Both wait on asyncio events set by the test, never on time; a shared `progress` event wakes `wait_for`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

from broker.codec import (
    NEED_DATA,
    Connack,
    Connect,
    Disconnect,
    PacketReader,
    Properties,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    encode,
)

SESSION_EXPIRY = 3600
PACKET_ID_NOT_FOUND = 0x92


@dataclass(frozen=True)
class Stream:
    """One numbered stream: its own publisher, topic and QoS."""

    name: str
    topic: str
    qos: int


class Link:
    """One MQTT network connection from the test's side, on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: int, run: int) -> None:
        self.reader = reader
        self.writer = writer
        self.version = version
        self.run = run  # which run of the broker process this connection is to
        self.decoder = PacketReader(version)

    @classmethod
    async def open(cls, port: int, connect: Connect, run: int) -> tuple[Link, Connack]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        link = cls(reader, writer, connect.protocol_version, run)
        link.send(connect)
        connack = await anext(link.packets())
        assert isinstance(connack, Connack), connack
        return link, connack

    def send(self, packet: object) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(packet, self.version))  # type: ignore[arg-type]

    async def packets(self) -> AsyncIterator[object]:
        """Each packet the broker sends, until it closes the connection (or the process dies)."""
        while True:
            packet = self.decoder.next_packet()
            if packet is not NEED_DATA:
                yield packet
                continue
            try:
                data = await self.reader.read(65536)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                raise ConnectionError("connection closed")
            self.decoder.receive_data(data)

    def close(self) -> None:
        self.writer.close()


def _connect(client_id: str, version: int, first: bool) -> Connect:
    """A persistent session: v5 clean start only the first time, with a session expiry; 3.1.1 clean 0."""
    if version == 5:
        return Connect(client_id, 5, clean_start=first, properties=Properties(session_expiry_interval=SESSION_EXPIRY))
    return Connect(client_id, version, clean_start=False)


class BrokerGate:
    """What the test tells the clients about the broker: whether it is up, and which run of its process
    (1, 2, ...) it is. The test closes the gate before it kills the process and opens it once the next run
    accepts connections, so a client that lost its connection waits for that instead of retrying blindly."""

    def __init__(self) -> None:
        self.up = asyncio.Event()
        self.run = 0

    def open(self) -> None:
        self.run += 1
        self.up.set()

    def close(self) -> None:
        self.up.clear()


class _Client:
    """What publishers and subscribers share: a supervisor that reconnects whenever the broker is up."""

    def __init__(self, client_id: str, version: int, progress: asyncio.Event, resume: bool = False) -> None:
        self.client_id = client_id
        self.version = version
        self.progress = progress
        self.resume = resume  # the session exists already: even the first CONNECT resumes it
        self.connections = 0
        self.sessions_lost = 0  # reconnections whose CONNACK said "session present: 0"
        self.refusals: list[int] = []
        self.unexpected: list[object] = []
        self.since_connect = 0  # packets handled on the current connection (the load is flowing)
        self.finished = asyncio.Event()
        self.link: Link | None = None

    async def run(self, port: int, gate: BrokerGate) -> None:
        while not self.finished.is_set():
            await _first(gate.up.wait(), self.finished.wait())
            if self.finished.is_set():
                break
            try:
                first = not (self.connections or self.resume)
                link, connack = await Link.open(port, _connect(self.client_id, self.version, first), gate.run)
            except (ConnectionError, OSError, StopAsyncIteration):
                # Refused or cut before CONNACK: the broker went down meanwhile (the test closes the gate
                # before it kills), or the connection is retried at once.
                await _first(asyncio.sleep(0.05), self.finished.wait())
                continue
            if connack.reason_code:
                self.refusals.append(connack.reason_code)
                link.close()
                await _first(asyncio.sleep(0.05), self.finished.wait())
                continue
            if not first and not connack.session_present:
                self.sessions_lost += 1
            self.connections += 1
            self.since_connect = 0
            self.link = link
            try:
                await self.on_connected(link, connack)
                self.progress.set()
                reading = asyncio.ensure_future(self._read(link))
                await _first(reading, self.finished.wait())
                reading.cancel()
            except ConnectionError:
                pass
            finally:
                link.close()
                self.link = None
                self.progress.set()

    async def _read(self, link: Link) -> None:
        try:
            async for packet in link.packets():
                self.since_connect += 1
                self.handle(link, packet)
                self.progress.set()
        except ConnectionError:
            pass

    async def on_connected(self, link: Link, connack: Connack) -> None:
        raise NotImplementedError

    def handle(self, link: Link, packet: object) -> None:
        raise NotImplementedError

    def finish(self, link: Link | None) -> None:
        if link is not None:
            link.send(Disconnect())
            link.close()
        self.finished.set()


class LoadPublisher(_Client):
    def __init__(self, client_id: str, version: int, stream: Stream, progress: asyncio.Event,
                 rate: float, window: int = 20) -> None:
        super().__init__(client_id, version, progress)
        self.stream = stream
        self.rate = rate
        self.window = window
        self.sent: dict[int, float] = {}  # number -> when first sent (time.monotonic())
        self.acked: dict[int, float] = {}  # number -> when first acknowledged (PUBACK / PUBREC)
        self.acked_in: dict[int, int] = {}  # number -> the broker's run (1, 2, ...) that acknowledged it
        self.inflight: dict[int, list[int | bool]] = {}  # packet id -> [number, PUBREC came], in send order
        self.resent = 0
        self.not_found = 0  # PUBCOMP 0x92 (v5): a PUBREL for an exchange the broker no longer knew
        self.errors: list[object] = []
        self.go = asyncio.Event()  # set by the test: start sending
        self.stopping = False  # set by the test: send no new numbers, finish what is in flight
        self._next_number = 1
        self._packet_id = 0
        self._room = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    @property
    def last(self) -> int:
        return self._next_number - 1

    @property
    def drained(self) -> bool:
        return self.stopping and not self.inflight

    def finish(self, link: Link | None) -> None:
        if self._sender is not None:
            self._sender.cancel()
        super().finish(link)

    def stop(self) -> None:
        self.stopping = True
        self._room.set()
        if self.drained:
            self.finish(self.link)

    async def on_connected(self, link: Link, connack: Connack) -> None:
        for packet_id, (number, released) in list(self.inflight.items()):
            self.resent += 1
            if released:
                link.send(Pubrel(packet_id))
            else:
                link.send(Publish(self.stream.topic, str(number).encode(), self.stream.qos, dup=True,
                                  packet_id=packet_id))
        self._room.set()  # a sender that waited for a connection goes on
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._send_steadily())

    async def _send_steadily(self) -> None:
        """New numbers at `rate` per second while there is room in the window and a connection."""
        await self.go.wait()
        started = time.monotonic()
        count = 0
        while not self.stopping:
            link = self.link
            if link is None or len(self.inflight) >= self.window:
                self._room.clear()
                await self._room.wait()
                continue
            due = started + count / self.rate
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)  # pacing: the stream's rate, not a wait for an event
                continue
            if due < now - 1:  # a pause (a restart): go on from here rather than bursting to catch up
                started, count = now, 0
            number = self._next_number
            self._next_number += 1
            packet_id = self._new_packet_id()
            self.inflight[packet_id] = [number, False]
            self.sent[number] = now
            count += 1
            link.send(Publish(self.stream.topic, str(number).encode(), self.stream.qos, packet_id=packet_id))

    def _new_packet_id(self) -> int:
        while True:
            self._packet_id = self._packet_id % 65_535 + 1
            if self._packet_id not in self.inflight:
                return self._packet_id

    def handle(self, link: Link, packet: object) -> None:
        now = time.monotonic()
        if isinstance(packet, Puback):
            entry = self.inflight.pop(packet.packet_id, None)
            if entry is not None:
                self.acked.setdefault(int(entry[0]), now)
                self.acked_in.setdefault(int(entry[0]), link.run)
            if packet.reason_code >= 0x80 or entry is None:
                self.errors.append(packet)
        elif isinstance(packet, Pubrec):
            entry = self.inflight.get(packet.packet_id)
            if entry is None or packet.reason_code >= 0x80:
                self.errors.append(packet)
                return
            entry[1] = True
            self.acked.setdefault(int(entry[0]), now)
            self.acked_in.setdefault(int(entry[0]), link.run)
            link.send(Pubrel(packet.packet_id))
            return  # no room made: the exchange goes on until PUBCOMP
        elif isinstance(packet, Pubcomp):
            if self.inflight.pop(packet.packet_id, None) is None:
                self.errors.append(packet)
            elif packet.reason_code == PACKET_ID_NOT_FOUND:
                self.not_found += 1
            elif packet.reason_code:
                self.errors.append(packet)
        else:
            self.unexpected.append(packet)
            return
        self._room.set()
        if self.drained:
            self.finish(link)


class LoadSubscriber(_Client):
    def __init__(self, client_id: str, version: int, streams: list[Stream], progress: asyncio.Event,
                 resume: bool = False) -> None:
        super().__init__(client_id, version, progress, resume)
        self.streams = {stream.topic: stream for stream in streams}
        self.delivered: dict[str, list[int]] = {stream.topic: [] for stream in streams}
        self.subscribed = resume
        self.publishes = 0  # PUBLISH packets received
        self.dup_flags = 0  # ... with DUP set
        self.replaced = 0  # a QoS 2 PUBLISH reused a packet id whose PUBREL had not come, for another message
        self._stored: dict[int, tuple[str, int]] = {}  # QoS 2: packet id -> (topic, number) until PUBREL
        self._packet_ids: dict[tuple[str, int], set[int]] = {}  # QoS 2: packet ids each message came under

    async def on_connected(self, link: Link, connack: Connack) -> None:
        if self.subscribed:
            return
        subscriptions = tuple(Subscription(s.topic, s.qos) for s in self.streams.values())
        link.send(Subscribe(1, subscriptions))
        suback = await anext(link.packets())
        assert isinstance(suback, Suback) and suback.reason_codes == tuple(s.qos for s in subscriptions), suback
        self.subscribed = True

    def handle(self, link: Link, packet: object) -> None:
        if isinstance(packet, Publish):
            self.publishes += 1
            self.dup_flags += packet.dup
            number = int(packet.payload)
            if packet.qos == 1:
                self.delivered[packet.topic].append(number)
                link.send(Puback(packet.packet_id))  # type: ignore[arg-type]
            elif packet.qos == 2:
                packet_id: int = packet.packet_id  # type: ignore[assignment]
                previous = self._stored.get(packet_id)
                if previous is not None and previous != (packet.topic, number):
                    self.replaced += 1
                self._stored[packet_id] = (packet.topic, number)
                self._packet_ids.setdefault((packet.topic, number), set()).add(packet_id)
                link.send(Pubrec(packet_id))
            else:
                self.unexpected.append(packet)
        elif isinstance(packet, Pubrel):
            entry = self._stored.pop(packet.packet_id, None)
            if entry is not None:
                self.delivered[entry[0]].append(entry[1])
            link.send(Pubcomp(packet.packet_id))
        else:
            self.unexpected.append(packet)

    @property
    def renumbered(self) -> int:
        """QoS 2 messages that came again under a new packet identifier: a receiver that delivers on PUBLISH
        ("method B") would have delivered each of them twice."""
        return sum(1 for ids in self._packet_ids.values() if len(ids) > 1)

    @property
    def stale(self) -> int:
        """QoS 2 messages received whose PUBREL never came."""
        return len(self._stored)


async def _first(*awaitables: object) -> None:
    """Wait until the first of the awaitables is done; cancel the rest."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]  # type: ignore[arg-type]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]


async def wait_for(predicate: Callable[[], bool], progress: asyncio.Event, timeout: float, what: str,
                   tasks: Iterable[asyncio.Future[None]] = ()) -> None:
    """Wait until `predicate()` holds, looking again each time a client makes progress; AssertionError
    after `timeout` seconds. A client task that failed meanwhile raises its error at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        progress.clear()
        try:
            await asyncio.wait_for(progress.wait(), remaining)
        except TimeoutError:
            pass


@dataclass
class Outcome:
    """What one subscriber saw of one stream."""

    subscriber: str
    stream: Stream
    published: int  # numbers sent (all acknowledged once the load drained)
    delivered: int  # deliveries to the application, duplicates included
    losses: list[int] = field(default_factory=list)  # acknowledged, never delivered
    loss_ages: list[float] = field(default_factory=list)  # per loss: how long before its run's kill it was acknowledged
    duplicates: int = 0  # deliveries beyond the first of a number
    phantoms: list[int] = field(default_factory=list)  # delivered, never sent
    out_of_order: int = 0  # first deliveries of a number lower than one delivered before it

    def line(self) -> str:
        age = f", acknowledged {min(self.loss_ages) * 1000:.0f}-{max(self.loss_ages) * 1000:.0f} ms before a kill" \
            if self.loss_ages else ""
        return (f"{self.subscriber:>14} QoS {self.stream.qos}: {self.published} published, {self.delivered} delivered, "
                f"{len(self.losses)} lost{age}, {self.duplicates} duplicates, {self.out_of_order} out of order")


def summarise(publisher: LoadPublisher, subscriber: LoadSubscriber, kills: list[float]) -> Outcome:
    """Losses, duplicates and order of one stream as one subscriber saw it."""
    stream = publisher.stream
    delivered = subscriber.delivered[stream.topic]
    counts = Counter(delivered)
    outcome = Outcome(subscriber.client_id, stream, len(publisher.sent), len(delivered))
    for number, acked_at in sorted(publisher.acked.items()):
        if not counts[number]:
            outcome.losses.append(number)
            # The kill that ended the run that acknowledged it. An acknowledgement read just after the kill
            # (it was in the socket buffer) has age 0: it left the broker before the kill.
            run = publisher.acked_in[number]
            kill = kills[run - 1] if run <= len(kills) else None
            outcome.loss_ages.append(float("inf") if kill is None else max(0.0, kill - acked_at))
    outcome.duplicates = sum(count - 1 for count in counts.values())
    outcome.phantoms = sorted(set(counts) - set(publisher.sent))
    highest = 0
    seen: set[int] = set()
    for number in delivered:
        if number in seen:
            continue
        seen.add(number)
        if number < highest:
            outcome.out_of_order += 1
        highest = max(highest, number)
    return outcome
