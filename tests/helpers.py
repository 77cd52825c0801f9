"""Test helpers: a Roost running in a background thread, paho-mqtt clients that wait on events, and a raw
MQTT client built on Roost's own codec for byte-exact protocol tests.

Everything here waits on readiness (an event, a packet, a closed socket) with a timeout; nothing sleeps and
hopes. Ports are chosen by the OS (port 0) and data lives in pytest's temporary folders.
"""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.packettypes import PacketTypes

from broker.codec import NEED_DATA, Connect, PacketReader, encode
from control.config import parse_config
from control.server import Roost

T = TypeVar("T")

TIMEOUT = 5.0


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed, as `roost serve` runs: tests exercise the loop users get."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def varint(value: int) -> bytes:
    """A Variable Byte Integer, minimally encoded (section 1.5.5), for tests that build packets by hand
    without trusting the codec under test."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class RoostThread:
    """A Roost instance served by its own event loop in a background thread.

    paho-mqtt and the mosquitto command-line clients are blocking, so the broker runs beside the test
    rather than inside its loop. `call()` runs a function on the broker's loop and returns its result.
    """

    def __init__(self, document: dict[str, Any]) -> None:
        self.config = parse_config(document)
        self.roost: Roost | None = None
        self.loop = _new_loop()
        # What the loop reported as an exception no code caught (a callback such as connection_lost that
        # raised): asyncio only logs these, so a test would not see them; the fixtures fail on any.
        self.loop_errors: list[str] = []
        self.loop.set_exception_handler(self._loop_error)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="roost", daemon=True)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exception = context.get("exception")
        self.loop_errors.append(f"{context.get('message')}: {exception!r}" if exception else str(context.get("message")))
        loop.default_exception_handler(context)

    def start(self) -> RoostThread:
        self._thread.start()
        if not self._ready.wait(TIMEOUT * 2):
            raise TimeoutError("Roost did not start")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            self.roost = Roost(self.config)
            await self.roost.start()
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.roost.stop()

    @property
    def mqtt_port(self) -> int:
        assert self.roost is not None
        return self.roost.mqtt_port

    @property
    def http_port(self) -> int:
        assert self.roost is not None
        return self.roost.http_port

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn()` on the broker's loop thread and return its result."""

        async def runner() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(runner(), self.loop).result(TIMEOUT)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT * 2)

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(TIMEOUT * 3)
        if not self.loop.is_closed() and not self._thread.is_alive():
            self.loop.close()


def roost_document(tmp_path: Path, **mqtt: Any) -> dict[str, Any]:
    """A config document on free ports in a temporary folder; keyword arguments go to [mqtt]."""
    anonymous = mqtt.pop("anonymous", None)
    section: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "allow_anonymous": True}
    section.update(mqtt)
    if anonymous is not None:
        section["anonymous"] = anonymous
    return {
        "data_dir": str(tmp_path / "data"),
        "mqtt": section,
        "http": {"host": "127.0.0.1", "port": 0},
        "tls": {"port": 0},  # off unless a test asks (its default, 8883, would collide between Roosts)
    }


# -- paho-mqtt -----------------------------------------------------------------------------------------------


@dataclass
class Received:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Any
    dup: bool = False


class PahoClient:
    """A paho-mqtt client whose callbacks feed events and queues the test can wait on."""

    def __init__(
        self,
        port: int,
        client_id: str = "",
        version: int = 5,
        clean: bool = True,
        username: str | None = None,
        password: str | None = None,
        keepalive: int = 60,
        properties: PahoProperties | None = None,
        will: tuple[str, bytes, int, bool] | None = None,
        will_properties: PahoProperties | None = None,
        transport: str = "tcp",
    ) -> None:
        protocol = {5: paho.MQTTv5, 4: paho.MQTTv311, 3: paho.MQTTv31}[version]
        kwargs: dict[str, Any] = {"client_id": client_id, "protocol": protocol, "transport": transport}
        if version != 5:
            kwargs["clean_session"] = clean
        self.version = version
        self.clean = clean
        self.port = port
        self.keepalive = keepalive
        self.connect_properties = properties
        self.client = paho.Client(CallbackAPIVersion.VERSION2, **kwargs)
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain, properties=will_properties)
        self.messages: queue.Queue[Received] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack: tuple[Any, Any, Any] | None = None  # (flags, reason_code, properties)
        self.disconnect_reason: Any = None
        self.subacks: queue.Queue[list[Any]] = queue.Queue()
        self.unsubacks: queue.Queue[Any] = queue.Queue()
        self.published: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_unsubscribe = self._on_unsubscribe
        c.on_publish = self._on_publish

    # callbacks (paho's network thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connack = (flags, reason_code, properties)
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.disconnect_reason = reason_code
        self.disconnected.set()
        self.connected.set()  # Also unblocks a wait for a refused CONNECT.

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        self.messages.put(Received(msg.topic, msg.payload, msg.qos, bool(msg.retain), props, bool(msg.dup)))

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        self.subacks.put(list(reason_codes))

    def _on_unsubscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        self.unsubacks.put(reason_codes)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            self.published.setdefault(mid, threading.Event()).set()

    # actions (test thread)
    def connect(self, expect_success: bool = True) -> PahoClient:
        kwargs: dict[str, Any] = {"keepalive": self.keepalive}
        if self.version == 5:
            kwargs["clean_start"] = self.clean
            kwargs["properties"] = self.connect_properties
        self.client.connect("127.0.0.1", self.port, **kwargs)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"
        if expect_success:
            assert self.connack is not None, f"connection failed: {self.disconnect_reason}"
            assert not self.connack[1].is_failure, f"connection refused: {self.connack[1]}"
        return self

    @property
    def session_present(self) -> bool:
        assert self.connack is not None
        return bool(self.connack[0].session_present)

    def subscribe(self, topic: str | list[tuple[str, Any]], qos: int = 0, **kwargs: Any) -> list[Any]:
        """Subscribe and wait for the SUBACK; return its reason codes."""
        if isinstance(topic, str) and self.version == 5:
            from paho.mqtt.subscribeoptions import SubscribeOptions

            options = SubscribeOptions(
                qos=qos,
                noLocal=kwargs.pop("no_local", False),
                retainAsPublished=kwargs.pop("retain_as_published", False),
                retainHandling=kwargs.pop("retain_handling", 0),
            )
            result, _ = self.client.subscribe(topic, options=options, **kwargs)
        elif isinstance(topic, str):
            result, _ = self.client.subscribe(topic, qos, **kwargs)
        else:
            result, _ = self.client.subscribe(topic, **kwargs)
        assert result == paho.MQTT_ERR_SUCCESS
        return self.subacks.get(timeout=TIMEOUT)

    def unsubscribe(self, topic: str | list[str]) -> Any:
        self.client.unsubscribe(topic)
        return self.unsubacks.get(timeout=TIMEOUT)

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0, retain: bool = False,
                properties: PahoProperties | None = None, wait: bool = True) -> paho.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos, retain, properties=properties)
        if wait:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published()
        return info

    def expect(self, timeout: float = TIMEOUT) -> Received:
        """The next message, or AssertionError after `timeout`."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message arrived") from None

    def expect_none(self) -> None:
        """Assert that nothing is queued. Callers first make sure anything in flight has arrived, for
        example with `sync()`, which round-trips a marker message through the broker."""
        assert self.messages.empty(), f"unexpected message: {self.messages.queue[0]}"

    def disconnect(self) -> None:
        self.client.disconnect()
        self.disconnected.wait(TIMEOUT)
        self.client.loop_stop()

    def close(self) -> None:
        """Stop without DISCONNECT (an abnormal close): the broker sees the socket go.

        paho's network thread polls with a one-second timeout, so this takes up to a second; tests that
        need many abnormal closes use `RawClient`."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()


def paho_properties(packet_type: int = PacketTypes.PUBLISH, **values: Any) -> PahoProperties:
    """Build paho Properties from keyword arguments named as paho names them (MessageExpiryInterval=...)."""
    props = PahoProperties(packet_type)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def sync(publisher: PahoClient, subscriber: PahoClient, topic: str = "sync/marker") -> None:
    """Round-trip a marker through the broker so that everything published before it has been routed.

    Messages on one topic from one publisher arrive in order [MQTT-4.6.0-5]; the subscriber must already be
    subscribed to `topic`. The marker is consumed; messages that came before it stay queued, in order.
    """
    marker = f"marker-{id(object())}".encode()
    publisher.publish(topic, marker, qos=1)
    before: list[Received] = []
    while True:
        message = subscriber.expect()
        if message.payload == marker:
            break
        before.append(message)
    # Put back what came before the marker, in order, ahead of anything that came after it.
    after: list[Received] = []
    while not subscriber.messages.empty():
        after.append(subscriber.messages.get_nowait())
    for message in before + after:
        subscriber.messages.put(message)


# -- a raw client built on Roost's codec ------------------------------------------------------------------


class RawClient:
    """A blocking socket speaking MQTT through Roost's codec: for byte-exact and malformed-input tests."""

    def __init__(self, port: int, version: int = 5) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.reader = PacketReader(version)
        self.version = version

    def send(self, packet: Any) -> None:
        self.sock.sendall(encode(packet, self.version))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def connect(self, client_id: str = "raw", **kwargs: Any) -> Any:
        self.send(Connect(client_id=client_id, protocol_version=self.version, **kwargs))
        return self.receive()

    def receive(self) -> Any:
        """The next packet from the broker; AssertionError if the connection closes or times out first."""
        while True:
            packet = self.reader.next_packet()
            if packet is not NEED_DATA:
                return packet
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("connection closed by the broker")
            self.reader.receive_data(data)

    def closed_by_broker(self) -> bool:
        """Wait until the broker closes the connection (skipping packets sent before); True if it did."""
        try:
            while True:
                packet = self.reader.next_packet()
                if packet is NEED_DATA:
                    data = self.sock.recv(65536)
                    if not data:
                        return True
                    self.reader.receive_data(data)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()
