"""The NATS JetStream upstream link: an `UpstreamLink` (bridge/link.py) spoken through nats-py.

A bridge whose url is `nats://...` keeps the same outbox, caps, counters and local side as an MQTT
bridge; only this link differs. What it does on the wire, and why:

- **Connect** to one of the configured servers (tried in random order, each within `connect_timeout`),
  with username/password, a creds file (user JWT + nkey) or an nkey seed (bridge/nkeys.py), and TLS
  verified against `ca_file` when given. nats-py's own reconnect is off: when the link is lost the
  bridge reconnects with its backoff and resends what was in flight, as for MQTT, and the next connect
  may pick another server of the cluster. Dead links are found by NATS PINGs every `keep_alive` seconds
  (two unanswered: the connection is closed).
- **The stream** named by `stream` is created when missing: subjects `remote_prefix.>`, `replicas`
  copies, file storage, the configured `duplicate_window` (bridge/nats_config.py says why an hour).
  A stream that exists is used as it is (its owner may have set other limits).
- **Forward** (outbox messages, QoS 1 and 2): a JetStream publish, i.e. a core NATS publish with a reply
  subject, carrying `Nats-Msg-Id` (stable per outbox entry: `client_id:seq:enqueued-microseconds`, so a
  resend after a lost link or a `kill -9` is dropped by the stream as a duplicate) and
  `Nats-Expected-Stream`. The entry leaves the outbox (`handler.acked`) only when the PubAck comes. A
  PubAck carrying an error (a stream with `discard: new` that is full, a message over its size limit) is
  final for that message: it is reported as refused (0x97 for a limit, 0x80 otherwise), dropped and
  counted by the bridge (`rejected`), as an MQTT PUBACK with a failure code is. "Expected stream does not
  match" (the subject belongs to another stream) is configuration, not the message's fault: the link
  closes and the message stays in the outbox. No PubAck within `ack_timeout`, or "no responders" (no
  stream takes the subject, or the cluster has no leader for it), closes the link: the bridge reconnects
  and resends, and the message id keeps that from storing it twice. QoS 2 needs no second phase: the
  PubAck with de-duplication is already exactly once into the stream, so `received`/`release` are not
  used.
- **QoS 0** goes as a core NATS publish with no reply: the stream still stores it (its subject is under
  the stream's), but nothing is acknowledged or resent: at most once, as QoS 0 promises, and no round
  trip per message.
- **Down**: the `subscribe` filters (under the prefix) become one durable pull consumer on the stream
  (`consumer`, default `roost-NAME`), so commands sent while the gateway is offline or Roost is down wait
  in the stream and arrive after it reconnects. A message is acknowledged (`+ACK`) only after the bridge
  published it locally (`done()`); one not acknowledged within `ack_timeout` is delivered again (at least
  once: a crash between the local publish and the ack publishes it twice). With `qos = 0` the filters are
  core subscriptions instead (nothing kept while offline).
- **No loop**: every forwarded message carries `Roost-Origin: client_id`; a message that comes down with
  our own origin (a `subscribe` filter overlapping a `forward` one) is acknowledged and not published.

MQTT properties travel as headers (bridge/nats_headers.py). No task per message: one sender task writes
queued publishes and acknowledgements, PubAcks come to one inbox subscription, and one ticker checks
acknowledgement deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from bridge.errors import LinkError
from bridge.link import Command, LinkHandler
from bridge.config import BridgeConfig
from bridge.nats_config import NatsSettings, server_address
from bridge.nats_headers import MSG_ID, ORIGIN, headers_to_properties, properties_to_headers
from bridge.nats_subjects import SubjectError, filter_to_subjects, stream_subjects, subject_to_topic, topic_to_subject
from bridge.nkeys import NkeyClient
from broker.codec import Properties
from storage.outbox import OutboxEntry

__all__ = ["NATSLink", "message_id"]

log = logging.getLogger("roost.bridge")

_EXPECTED_STREAM = "Nats-Expected-Stream"
_LIMIT_ERRORS = frozenset({10077, 10078, 10027})  # max messages / bytes exceeded, and per-subject max
_WRONG_STREAM = 10060  # the subject is in another stream than `stream`: configuration, not this message
_REFUSED_LIMIT = 0x97  # Quota exceeded
_REFUSED_OTHER = 0x80  # Unspecified error
_REFUSED_TOPIC = 0x90  # Topic Name invalid: the topic has no NATS subject
_FETCH_WAIT = 1.0  # how long one pull request waits for commands before asking again


def message_id(client_id: str, entry: OutboxEntry) -> str:
    """The `Nats-Msg-Id` of an outbox entry: the same every time it is sent (seq and enqueued_at are on
    disk), different for every entry of this gateway (client_id), and not reused by an outbox file made
    anew (enqueued_at)."""
    return f"{client_id}:{entry.seq}:{int(entry.enqueued_at * 1_000_000)}"


class NATSLink:
    """An `UpstreamLink` to a NATS server or cluster with JetStream."""

    def __init__(self, config: BridgeConfig, settings: NatsSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.settings = settings
        self.window = config.inflight
        self.congested = False
        self.on_writable: Callable[[], None] = lambda: None
        self.subscribe_failures: tuple[str, ...] = ()  # NATS refuses a bad subscription by failing connect()
        self.subscribed = False  # the consumer (or core subscriptions) for `subscribe` set up at least once
        self.connected_url: str | None = None  # the server of the cluster the last link was made to
        self.stream_created = False
        self._clock = clock
        self._origin = config.client_id
        self._client: NkeyClient | None = None
        self._handler: LinkHandler | None = None
        self._inflight: dict[int, tuple[OutboxEntry, float]] = {}
        self._queue: deque[tuple[str, bytes, str, dict[str, str] | None]] = deque()
        self._wake = asyncio.Event()
        self._ack_prefix = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._gone: asyncio.Future[str] | None = None
        self._last_error = ""

    # -- UpstreamLink -------------------------------------------------------------------------------------------

    async def connect(self, handler: LinkHandler) -> bool:
        loop = asyncio.get_running_loop()
        self._handler = handler
        self._inflight.clear()
        self._queue.clear()
        self.congested = False
        self._gone = loop.create_future()
        client = await self._open()
        self._client = client
        try:
            kept = await asyncio.wait_for(self._prepare(client), self.config.connect_timeout)
        except (nats.errors.Error, asyncio.TimeoutError, OSError, SubjectError) as exc:
            await self._abandon(client)
            raise LinkError(f"NATS {self.connected_url}: {_describe(exc)}") from exc
        except LinkError:
            await self._abandon(client)
            raise
        self._tasks.append(loop.create_task(self._sender(client), name=f"nats-send-{self.config.name}"))
        self._tasks.append(loop.create_task(self._ticker(client), name=f"nats-tick-{self.config.name}"))
        return kept

    def send(self, entry: OutboxEntry) -> None:
        client, handler = self._client, self._handler
        if client is None or handler is None or self._gone is None or self._gone.done():
            return
        try:
            subject = topic_to_subject(entry.topic, self.config.remote_prefix)
        except SubjectError as exc:
            log.warning("bridge %s: %s; the message is refused", self.config.name, exc)
            asyncio.get_running_loop().call_soon(handler.acked, entry, _REFUSED_TOPIC)
            return
        headers = properties_to_headers(entry.properties, entry.retain)
        headers[MSG_ID] = message_id(self._origin, entry)
        headers[ORIGIN] = self._origin
        headers[_EXPECTED_STREAM] = self.settings.stream
        self._inflight[entry.seq] = (entry, self._clock())
        self._push(subject, entry.payload, self._ack_prefix + str(entry.seq), headers)

    def send_qos0(self, topic: str, payload: bytes, retain: bool, properties: Properties) -> bool:
        if self._client is None or self._gone is None or self._gone.done() or self.congested:
            return False
        try:
            subject = topic_to_subject(topic, self.config.remote_prefix)
        except SubjectError as exc:
            # Taken (True) and dropped: it will never have a subject, and a False would keep it at the head
            # of the bridge's QoS 0 queue, in front of everything after it.
            log.debug("bridge %s: %s; QoS 0 message dropped", self.config.name, exc)
            return True
        headers = properties_to_headers(properties, retain)
        headers[ORIGIN] = self._origin
        self._push(subject, payload, "", headers)
        return True

    def release(self, entry: OutboxEntry) -> None:
        """Not used: JetStream's PubAck completes a QoS 2 message (see the module docstring). A bridge that
        calls it anyway gets the entry resent, which the message id makes harmless."""
        if self._client is not None and entry.seq not in self._inflight:
            self.send(entry)

    def close(self, reason: str) -> None:
        self._lost(reason)

    async def closed(self) -> str:
        assert self._gone is not None
        return await asyncio.shield(self._gone)

    @property
    def up(self) -> bool:
        return self._client is not None and self._gone is not None and not self._gone.done()

    @property
    def connected_to(self) -> str | None:
        """The server (of those configured) the link is connected to now; None while it is down."""
        return self.connected_url if self.up else None

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    # -- connecting -----------------------------------------------------------------------------------------

    async def _open(self) -> NkeyClient:
        """Connect to the first server that answers, in random order (spreading a fleet over the cluster)."""
        config, settings = self.config, self.settings
        servers = list(settings.servers)
        random.shuffle(servers)
        failures: list[str] = []
        for server in servers:
            client = NkeyClient()
            on_error, on_disconnected = self._callbacks(client)
            options: dict[str, Any] = {
                "servers": [server],
                "name": config.client_id,
                "connect_timeout": config.connect_timeout,
                "allow_reconnect": False,
                # nats-py retries a server it could not reach (60 times, 2 s apart, by default) even
                # without reconnects: one more quick try, then the next server.
                "max_reconnect_attempts": 1,
                "reconnect_time_wait": 0,
                "ping_interval": config.keep_alive,
                "max_outstanding_pings": 2,
                "error_cb": on_error,
                "disconnected_cb": on_disconnected,
                "closed_cb": on_disconnected,
                "pending_size": 8 * 1024 * 1024,
            }
            if settings.tls:
                options["tls"] = config.ssl_context()
                options["tls_hostname"] = server_address(server)[0]
            if settings.creds_file is not None:
                options["user_credentials"] = str(settings.creds_file)
            elif settings.nkey_seed_file is not None:
                options["nkeys_seed"] = str(settings.nkey_seed_file)
            elif config.username is not None:
                options["user"] = config.username
                options["password"] = config.password or ""
            self._last_error = ""
            try:
                await asyncio.wait_for(client.connect(**options), 2 * config.connect_timeout + 1)
            except (nats.errors.Error, OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
                failures.append(f"{server}: {self._last_error or _describe(exc)}")
                await _close_quietly(client)
                continue
            self.connected_url = server
            self._last_error = ""
            return client
        raise LinkError("cannot connect to NATS (" + "; ".join(failures) + ")")

    async def _prepare(self, client: NkeyClient) -> bool:
        """The stream, the PubAck inbox, the way down. True when the durable consumer was there already."""
        js = client.jetstream(timeout=self.config.connect_timeout)
        await self._ensure_stream(js)
        inbox = client.new_inbox()
        self._ack_prefix = inbox + "."
        await client.subscribe(inbox + ".*", cb=self._on_pub_ack)
        if not self.config.subscribe:
            return True
        prefix = self.config.remote_prefix
        subjects = sorted({s for f in self.config.subscribe for s in filter_to_subjects(f, prefix)})
        if self.config.qos == 0:
            for subject in subjects:
                await client.subscribe(subject, cb=self._on_core_command)
            self.subscribed = True
            return False
        kept = await self._ensure_consumer(js, subjects)
        subscription = await js.pull_subscribe_bind(durable=self.settings.consumer, stream=self.settings.stream)
        self._tasks.append(asyncio.get_running_loop().create_task(
            self._puller(client, subscription), name=f"nats-pull-{self.config.name}"))
        self.subscribed = True
        return kept

    async def _ensure_stream(self, js: Any) -> None:
        settings = self.settings
        try:
            await js.stream_info(settings.stream)
            return
        except nats.js.errors.NotFoundError:
            pass
        subjects = list(stream_subjects(self.config.remote_prefix))
        try:
            await js.add_stream(StreamConfig(
                name=settings.stream, subjects=subjects, num_replicas=settings.replicas,
                duplicate_window=settings.duplicate_window, storage=StorageType.FILE,
            ))
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10058:  # 10058: created meanwhile by another gateway of the fleet, fine
                raise LinkError(f"cannot create the stream {settings.stream!r}: {exc.description}") from exc
        self.stream_created = True
        await self._wait_stream_leader(js)
        log.info("bridge %s: created the JetStream stream %s (subjects %s, replicas %d)", self.config.name,
                 settings.stream, ", ".join(subjects), settings.replicas)

    async def _wait_stream_leader(self, js: Any) -> None:
        """A stream just created elects its leader among its replicas; until then a publish goes
        unanswered. Wait for it (bounded by connect_timeout, which covers all of `_prepare`)."""
        while True:
            info = await js.stream_info(self.settings.stream)
            if info.cluster is None or info.cluster.leader:
                return
            await asyncio.sleep(0.05)  # no event for a leader election: ask again

    async def _ensure_consumer(self, js: Any, subjects: list[str]) -> bool:
        settings = self.settings
        try:
            info = await js.consumer_info(settings.stream, settings.consumer)
        except nats.js.errors.NotFoundError:
            info = None
        if info is not None:
            current = info.config
            have = sorted(current.filter_subjects or ([current.filter_subject] if current.filter_subject else []))
            if have == subjects:
                return True
            current.filter_subject = None
            current.filter_subjects = subjects
            await js.add_consumer(settings.stream, current)  # same durable name: an update
            return True
        await js.add_consumer(settings.stream, ConsumerConfig(
            durable_name=settings.consumer,
            filter_subjects=subjects if len(subjects) > 1 else None,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW,  # a new gateway does not replay the stream's history
            ack_wait=self.config.ack_timeout,
            max_ack_pending=max(self.window, 256),
        ))
        return False

    async def _abandon(self, client: NkeyClient) -> None:
        self._client = None
        await _close_quietly(client)
        if self._gone is not None and not self._gone.done():
            self._gone.set_result("closed")

    # -- running --------------------------------------------------------------------------------------------

    def _push(self, subject: str, payload: bytes, reply: str, headers: dict[str, str] | None) -> None:
        self._queue.append((subject, payload, reply, headers or None))
        self._wake.set()
        if len(self._queue) > max(self.window * 4, self.config.qos0_queue):
            self.congested = True

    async def _sender(self, client: NkeyClient) -> None:
        """Write queued publishes and acknowledgements in order; nats-py buffers and flushes them."""
        queue = self._queue
        try:
            while self._client is client:
                if not queue:
                    if self.congested:
                        self.congested = False
                        self.on_writable()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                subject, payload, reply, headers = queue.popleft()
                await client.publish(subject, payload, reply=reply, headers=headers)
        except (nats.errors.Error, OSError) as exc:
            self._lost(f"NATS publish failed: {_describe(exc)}")
        except Exception as exc:  # a bug must not leave a link that looks up and sends nothing
            log.exception("bridge %s: the NATS sender failed", self.config.name)
            self._lost(f"NATS sender failed: {_describe(exc)}")

    async def _ticker(self, client: NkeyClient) -> None:
        """Close the link when a PubAck is overdue: the bridge then reconnects and resends."""
        interval = max(0.05, min(1.0, self.config.ack_timeout / 4))
        while self._client is client:
            await asyncio.sleep(interval)  # a clock tick: deadlines are checked once per interval
            if self._inflight:
                oldest = min(sent for _, sent in self._inflight.values())
                if self._clock() - oldest >= self.config.ack_timeout:
                    self._lost(f"no PubAck from JetStream within {self.config.ack_timeout:g} s")
                    return

    async def _on_pub_ack(self, msg: Msg) -> None:
        handler = self._handler
        if handler is None:
            return
        try:
            seq = int(msg.subject[len(self._ack_prefix):])
        except ValueError:
            return
        held = self._inflight.get(seq)
        if held is None:
            return  # answered after a timeout closed the link, or a duplicate answer
        if msg.headers and msg.headers.get("Status") == "503":
            self._lost(f"no JetStream stream answered for {held[0].topic!r} (no responders): is the stream "
                       f"{self.settings.stream!r} there and does it take {self.config.remote_prefix}...?")
            return
        del self._inflight[seq]
        try:
            answer = json.loads(msg.data)
        except ValueError:
            answer = {"error": {"description": "an answer that is not JSON", "err_code": 0}}
        error = answer.get("error") if isinstance(answer, dict) else None
        if error:
            code = error.get("err_code", 0)
            if code == _WRONG_STREAM:
                # Not acknowledged: it stays in the outbox; the link closes and the bridge retries with backoff.
                self._lost(f"JetStream: {error.get('description')} (the subject {held[0].topic!r} is not in "
                           f"the stream {self.settings.stream!r})")
                return
            log.warning("bridge %s: JetStream refused %r: %s (%s)", self.config.name, held[0].topic,
                        error.get("description"), code)
            self._last_error = f"JetStream refused a message: {error.get('description')}"
            handler.acked(held[0], _REFUSED_LIMIT if code in _LIMIT_ERRORS else _REFUSED_OTHER)
            return
        handler.acked(held[0], 0)

    async def _puller(self, client: NkeyClient, subscription: Any) -> None:
        batch = max(1, min(self.window, 256))
        try:
            while self._client is client:
                try:
                    messages = await subscription.fetch(batch=batch, timeout=_FETCH_WAIT)
                except nats.errors.TimeoutError:
                    continue
                for message in messages:
                    self._command(message, client)
        except (nats.errors.Error, OSError) as exc:
            if self._client is client:
                self._lost(f"NATS consumer failed: {_describe(exc)}")
        except Exception as exc:  # as for the sender: never a silent stall
            log.exception("bridge %s: the NATS consumer loop failed", self.config.name)
            self._lost(f"NATS consumer failed: {_describe(exc)}")

    async def _on_core_command(self, msg: Msg) -> None:
        client = self._client
        if client is not None:
            self._command(msg, client)

    def _command(self, msg: Msg, client: NkeyClient) -> None:
        handler = self._handler
        assert handler is not None
        headers = msg.headers
        reply = msg.reply if msg.reply and msg.reply.startswith("$JS.ACK.") else ""

        def done() -> None:
            if reply and self._client is client:
                self._push(reply, b"+ACK", "", None)

        if headers and headers.get(ORIGIN) == self._origin:
            done()  # our own forwarded message, come back through an overlapping filter: not a command
            return
        topic = subject_to_topic(msg.subject, self.config.remote_prefix)
        if topic is None:
            done()
            return
        properties, retain = headers_to_properties(headers)
        qos = 1 if reply else 0
        if not handler.command(Command(topic, msg.data, qos, retain, properties, None), done):
            done()  # refused locally (e.g. not a valid topic here): acknowledged, not redelivered forever

    # -- losing the link ------------------------------------------------------------------------------------

    def _callbacks(self, client: NkeyClient) -> tuple[Callable[[Exception], Any], Callable[[], Any]]:
        """nats-py's error and disconnect callbacks for one client. Bound to it: a client of an earlier
        link, still closing in the background, must not close the link that replaced it."""

        async def on_error(exc: Exception) -> None:
            if self._client is None or self._client is client:
                self._last_error = _describe(exc)
                log.debug("bridge %s: NATS error: %s", self.config.name, self._last_error)

        async def on_disconnected() -> None:
            if self._client is client:
                self._lost(f"NATS connection lost{': ' + self._last_error if self._last_error else ''}")

        return on_error, on_disconnected

    def _lost(self, reason: str) -> None:
        client, self._client = self._client, None
        if client is not None:
            log.info("bridge %s: NATS link to %s lost: %s", self.config.name, self.connected_url, reason)
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(reason)
        self._inflight.clear()
        self._queue.clear()
        self._wake.set()
        tasks, self._tasks = self._tasks, []
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        if client is not None and not client.is_closed:
            asyncio.get_running_loop().create_task(_close_quietly(client))


async def _close_quietly(client: NkeyClient) -> None:
    """Close, within a bound: nats-py's close can wait on a connection that a peer left half open."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.close(), 5)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, nats.js.errors.APIError) and exc.description:
        return str(exc.description)
    return str(exc) or type(exc).__name__
