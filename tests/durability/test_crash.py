"""Crash tests (issue 8): `roost serve` killed with SIGKILL and started again on the same data directory,
with real clients on 127.0.0.1 (paho-mqtt, and raw clients on Roost's codec where packets matter).

What survives is what `[storage] durability` promises (storage/broker_state.py):

- "strict": a PUBACK/PUBREC to a publisher, a PUBREL to a subscriber and a PUBCOMP go out only once what
  they acknowledge is committed, so nothing acknowledged is lost and an acknowledged QoS 2 message is never
  delivered twice;
- "batched": group commits about every 100 ms, and acknowledgements do not wait, so a kill may lose what was
  acknowledged in the last window, and nothing older.

1. A deterministic crash: offline persistent subscribers (3.1.1 and 5.0), acknowledged QoS 1/2 messages, a
   retained message and pending wills survive a kill (batched: once roost_state_pending_changes reads 0).
   Exchanges open at the kill resume where they stood, packet by packet; with strict durability a message
   sent just before the kill comes back under its packet identifier.
2. Random kills under a steady QoS 1 and QoS 2 load: losses and duplicates are counted and printed (run
   with pytest -s), with the seed of the kill moments; ROOST_CRASH_SEED=<seed> replays them.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import pytest

from broker.codec import Connack, Puback, Pubcomp, Publish, Pubrec, Pubrel, Subscribe, Subscription
from tests.durability.load import BrokerGate, LoadPublisher, LoadSubscriber, Outcome, Stream, summarise, wait_for
from tests.durability.process import CommitWatch
from tests.helpers import PahoClient, RawClient, Received
from tests.session_helpers import collect_until_synced, disconnect, persistent, ping, raw_connect, session_properties, will

MODES = [pytest.param("strict", id="strict"), pytest.param("batched", id="batched")]
VERSIONS = {4: "3.1.1", 5: "5.0"}

N = 20  # messages per QoS in the deterministic test
DROPPED_WILL_DELAY = 5  # seconds; longer than a kill and a restart on a busy machine
LIVE_WILL_DELAY = 2
CLOCK_SLACK = 0.05  # Roost dates disconnections with time.time(), the test with time.monotonic()


class TimedPaho(PahoClient):
    """A PahoClient that stamps each message with time.monotonic() as paho's thread receives it."""

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        received = Received(msg.topic, msg.payload, msg.qos, bool(msg.retain), getattr(msg, "properties", None),
                            bool(msg.dup))
        received.at = time.monotonic()  # type: ignore[attr-defined]
        self.messages.put(received)


def receive_deliveries(client: RawClient, count: int) -> tuple[list[Publish], list[Any]]:
    """Read until `count` PUBLISH packets have arrived and every QoS 2 one among them is complete, answering
    as a well-behaved client does (PUBACK; PUBREC, then PUBCOMP for the PUBREL). Returns the PUBLISH packets
    in arrival order and any other packet that came (a PUBREL for an unknown packet id, ...)."""
    publishes: list[Publish] = []
    other: list[Any] = []
    awaiting_release: set[int] = set()
    while len(publishes) < count or awaiting_release:
        packet = client.receive()
        if isinstance(packet, Publish):
            publishes.append(packet)
            if packet.qos == 1:
                client.send(Puback(packet.packet_id))
            elif packet.qos == 2:
                awaiting_release.add(packet.packet_id)
                client.send(Pubrec(packet.packet_id))
        elif isinstance(packet, Pubrel) and packet.packet_id in awaiting_release:
            awaiting_release.discard(packet.packet_id)
            client.send(Pubcomp(packet.packet_id))
        else:
            other.append(packet)
    return publishes, other


def subscribe(client: RawClient, *subscriptions: tuple[str, int]) -> None:
    client.send(Subscribe(1, tuple(Subscription(topic, qos) for topic, qos in subscriptions)))
    suback = client.receive()
    assert suback.reason_codes == tuple(qos for _, qos in subscriptions), suback


# -- 1. a deterministic crash ------------------------------------------------------------------------------


@pytest.mark.parametrize("durability", MODES)
def test_sigkill_keeps_sessions_queued_messages_retained_messages_and_wills(roost_process, paho, durability: str) -> None:
    """Persistent subscribers (3.1.1 and 5.0, each subscribed at QoS 1 and QoS 2) are offline; a publisher
    publishes N QoS 1 and N QoS 2 messages and a retained one, each acknowledged; one client with a will
    delay dropped its connection (its will pending), another is connected at the crash. SIGKILL, restart:
    each subscriber resumes its session and gets every message once, in order, at its QoS; a new
    subscriber gets the retained message; both wills come, neither before its delay."""
    roost = roost_process(durability)
    roost.start()
    port = roost.mqtt_port

    for version in VERSIONS:
        subscriber, connack = raw_connect(port, f"sub-v{version}", version, **persistent(version, expiry=3600))
        subscribe(subscriber, ("crash/q1", 1), ("crash/q2", 2))
        disconnect(subscriber)
    watcher = paho(port, "watcher", 5, cls=TimedPaho, **session_properties(5, expiry=3600))
    watcher.subscribe("will/#", qos=1)
    watcher.disconnect()
    live, _ = raw_connect(port, "will-live", 5, **persistent(5, expiry=60),
                          will=will("will/live", b"connected at the crash", 1, will_delay_interval=LIVE_WILL_DELAY))
    dropped, _ = raw_connect(port, "will-dropped", 5, **persistent(5, expiry=60),
                             will=will("will/dropped", b"dropped", 1, will_delay_interval=DROPPED_WILL_DELAY))
    dropped_at = time.monotonic()
    dropped.close()  # no DISCONNECT: the will is pending for DROPPED_WILL_DELAY seconds
    roost.wait_clients(1)  # only will-live is left
    # What no acknowledgement covers (subscriptions, sessions, wills) is on disk before the messages go.
    roost.wait_committed()

    publisher = paho(port, "publisher", 5)
    for number in range(N):
        publisher.publish("crash/q1", str(number), qos=1)  # each waits for its PUBACK / PUBCOMP
        publisher.publish("crash/q2", str(number), qos=2)
    publisher.publish("crash/retained", b"kept", qos=1, retain=True)
    publisher.disconnect()
    if durability == "batched":
        roost.wait_committed()  # acknowledgements did not wait for the disk: the test does
    # strict: the acknowledgements came after the commits; kill at once.
    roost.kill()
    live.close()

    restarted_at = roost.start()
    assert time.monotonic() < dropped_at + DROPPED_WILL_DELAY - 1, "the restart took too long to test the will delay"
    watcher = paho(port, "watcher", 5, cls=TimedPaho, **session_properties(5, expiry=3600))
    assert watcher.session_present, "the watcher's session was lost"

    for version, name in VERSIONS.items():
        subscriber, connack = raw_connect(port, f"sub-v{version}", version, **persistent(version, expiry=3600))
        assert isinstance(connack, Connack) and connack.reason_code == 0 and connack.session_present, (name, connack)
        publishes, other = receive_deliveries(subscriber, 2 * N)
        assert other == [], f"{name}: unexpected packets {other}"
        assert ping(subscriber) == [], f"{name}: more than {2 * N} messages"
        numbers = [str(n).encode() for n in range(N)]
        for topic, qos in (("crash/q1", 1), ("crash/q2", 2)):
            got = [p for p in publishes if p.topic == topic]
            assert [p.payload for p in got] == numbers, f"{name} {topic}: {[p.payload for p in got]}"
            assert {(p.qos, p.dup, p.retain) for p in got} == {(qos, False, False)}, f"{name} {topic}"
        disconnect(subscriber)

    fresh = paho(port, "fresh", 5)
    fresh.subscribe("crash/retained", qos=1)
    retained = fresh.expect()
    assert (retained.topic, retained.payload, retained.retain) == ("crash/retained", b"kept", True)
    fresh.disconnect()

    wills: dict[str, Received] = {}
    deadline = dropped_at + DROPPED_WILL_DELAY + 10
    while len(wills) < 2 and time.monotonic() < deadline:
        message = watcher.expect(timeout=max(0.1, deadline - time.monotonic()))
        assert message.topic not in wills, f"will {message.topic} published twice"
        wills[message.topic] = message
    assert set(wills) == {"will/dropped", "will/live"}
    assert wills["will/dropped"].payload == b"dropped"
    assert wills["will/live"].payload == b"connected at the crash"
    early = dropped_at + DROPPED_WILL_DELAY - CLOCK_SLACK - wills["will/dropped"].at  # type: ignore[attr-defined]
    assert early <= 0, f"the dropped client's will came {early:.2f} s before its delay had passed"
    # will-live's connection ended with the process; Roost counts its will delay from the restart.
    early = restarted_at + LIVE_WILL_DELAY - CLOCK_SLACK - wills["will/live"].at  # type: ignore[attr-defined]
    assert early <= 0, f"the will of the client connected at the crash came {early:.2f} s early"
    prober = paho(port, "prober", 5)
    assert collect_until_synced(prober, watcher, "will/sync") == [], "a will came twice"
    prober.disconnect()
    watcher.disconnect()


# -- 1b. exchanges cut by the crash ------------------------------------------------------------------------


def _shape(packet: Any) -> tuple[Any, ...]:
    if isinstance(packet, Publish):
        return ("PUBLISH", packet.topic, packet.payload, packet.qos, packet.dup, packet.packet_id)
    return (type(packet).__name__.upper(), getattr(packet, "packet_id", None), getattr(packet, "reason_code", None))


@pytest.mark.parametrize("durability", MODES)
def test_sigkill_mid_exchange_resumes_each_exchange_where_it_stood(roost_process, durability: str) -> None:
    """QoS 1 and 2 exchanges in both directions are open when Roost is killed (once their state is on
    disk). After the restart each resumes where it stood [MQTT-4.4.0-1]: unacknowledged PUBLISHes to the
    subscriber come again with DUP set and the same packet identifiers, in their original order
    [MQTT-4.6.0-1]; a QoS 2 message whose PUBREC came is resumed with PUBREL, not sent again; an acknowledged
    QoS 1 message is not sent again; a QoS 2 PUBLISH that the publisher resends before its PUBREL is
    acknowledged without being routed twice [MQTT-4.3.3-9], and its PUBREL completes normally."""
    roost = roost_process(durability)
    roost.start()
    port = roost.mqtt_port
    subscriber, _ = raw_connect(port, "mid-sub", 5, **persistent(5, expiry=3600))
    subscribe(subscriber, ("mid/q1", 1), ("mid/q2", 2))
    publisher, _ = raw_connect(port, "mid-pub", 5, **persistent(5, expiry=3600))

    for packet_id, payload in enumerate((b"m1", b"m2", b"m3"), start=1):
        publisher.send(Publish("mid/q1", payload, 1, packet_id=packet_id))
        assert _shape(publisher.receive()) == ("PUBACK", packet_id, 0)
    publisher.send(Publish("mid/q2", b"q1", 2, packet_id=11))
    assert _shape(publisher.receive()) == ("PUBREC", 11, 0)  # the publisher's PUBREL for q1 is withheld
    publisher.send(Publish("mid/q2", b"q2", 2, packet_id=12))
    assert _shape(publisher.receive()) == ("PUBREC", 12, 0)
    publisher.send(Pubrel(12))
    assert _shape(publisher.receive()) == ("PUBCOMP", 12, 0)

    delivered = [subscriber.receive() for _ in range(5)]
    assert [(p.payload, p.qos, p.dup) for p in delivered] == [
        (b"m1", 1, False), (b"m2", 1, False), (b"m3", 1, False), (b"q1", 2, False), (b"q2", 2, False)]
    ids = {p.payload: p.packet_id for p in delivered}
    subscriber.send(Puback(ids[b"m1"]))  # m2, m3: PUBACK withheld; q1: PUBREC withheld
    subscriber.send(Pubrec(ids[b"q2"]))
    assert _shape(subscriber.receive()) == ("PUBREL", ids[b"q2"], 0)  # q2: PUBCOMP withheld
    assert ping(subscriber) == [] and ping(publisher) == []  # everything sent so far has been handled
    roost.wait_committed()
    roost.kill()
    subscriber.close()
    publisher.close()

    roost.start()
    subscriber, connack = raw_connect(port, "mid-sub", 5, **persistent(5, expiry=3600))
    assert connack.reason_code == 0 and connack.session_present
    resumed = [subscriber.receive() for _ in range(4)]
    assert [_shape(p) for p in resumed if isinstance(p, Publish)] == [
        ("PUBLISH", "mid/q1", b"m2", 1, True, ids[b"m2"]),
        ("PUBLISH", "mid/q1", b"m3", 1, True, ids[b"m3"]),
        ("PUBLISH", "mid/q2", b"q1", 2, True, ids[b"q1"]),
    ], resumed
    assert [_shape(p) for p in resumed if not isinstance(p, Publish)] == [("PUBREL", ids[b"q2"], 0)], resumed
    subscriber.send(Puback(ids[b"m2"]))
    subscriber.send(Puback(ids[b"m3"]))
    subscriber.send(Pubcomp(ids[b"q2"]))
    subscriber.send(Pubrec(ids[b"q1"]))
    assert _shape(subscriber.receive()) == ("PUBREL", ids[b"q1"], 0)
    subscriber.send(Pubcomp(ids[b"q1"]))
    assert ping(subscriber) == [], "m1 (acknowledged before the crash) or another message came again"

    publisher, connack = raw_connect(port, "mid-pub", 5, **persistent(5, expiry=3600))
    assert connack.reason_code == 0 and connack.session_present
    # A publisher that missed the PUBREC would send the PUBLISH again: acknowledged, not routed again.
    publisher.send(Publish("mid/q2", b"q1", 2, dup=True, packet_id=11))
    assert _shape(publisher.receive()) == ("PUBREC", 11, 0)
    publisher.send(Pubrel(11))
    assert _shape(publisher.receive()) == ("PUBCOMP", 11, 0)  # not 0x92: the exchange was remembered
    publisher.send(Publish("mid/q1", b"end", 1, packet_id=13))
    assert _shape(publisher.receive()) == ("PUBACK", 13, 0)
    after = subscriber.receive()
    assert (after.topic, after.payload) == ("mid/q1", b"end"), f"expected only the end marker, got {after}"
    subscriber.send(Puback(after.packet_id))
    assert ping(subscriber) == []
    disconnect(subscriber)
    disconnect(publisher)


def test_strict_a_message_sent_from_the_queue_keeps_its_packet_identifier_across_a_kill(roost_process) -> None:
    """A persistent subscriber completes "first" (QoS 2), goes offline, and "second" (QoS 2, acknowledged
    to its publisher, so on disk) waits in its queue. It comes back, Roost sends it "second" from the queue
    and is killed a moment later. On resumption "second" must come again as the unacknowledged PUBLISH it
    is: DUP set, its original packet identifier."""
    roost = roost_process("strict")
    roost.start()
    port = roost.mqtt_port
    subscriber, _ = raw_connect(port, "queue-sub", 5, **persistent(5, expiry=3600))
    subscribe(subscriber, ("queue/q2", 2))
    publisher, _ = raw_connect(port, "queue-pub", 5)

    def publish(packet_id: int, payload: bytes) -> None:
        publisher.send(Publish("queue/q2", payload, 2, packet_id=packet_id))
        assert _shape(publisher.receive()) == ("PUBREC", packet_id, 0)
        publisher.send(Pubrel(packet_id))
        assert _shape(publisher.receive()) == ("PUBCOMP", packet_id, 0)

    publish(1, b"first")
    first = subscriber.receive()
    subscriber.send(Pubrec(first.packet_id))
    assert _shape(subscriber.receive()) == ("PUBREL", first.packet_id, 0)
    subscriber.send(Pubcomp(first.packet_id))
    disconnect(subscriber)
    publish(2, b"second")  # queued for the offline subscriber
    roost.wait_committed()

    subscriber, connack = raw_connect(port, "queue-sub", 5, **persistent(5, expiry=3600))
    connected_at = time.monotonic()
    second = subscriber.receive()  # sent from the queue as the session resumed
    roost.kill()
    if time.monotonic() - connected_at > 0.05:  # a commit may have landed meanwhile: nothing to see
        pytest.skip("the kill came too late after the send to catch it uncommitted")
    assert _shape(second)[2:5] == (b"second", 2, False)
    subscriber.close()
    publisher.close()

    roost.start()
    subscriber, connack = raw_connect(port, "queue-sub", 5, **persistent(5, expiry=3600))
    assert connack.session_present
    again = subscriber.receive()
    assert _shape(again) == ("PUBLISH", "queue/q2", b"second", 2, True, second.packet_id), (
        f"before the kill: {_shape(second)}; after the restart: {_shape(again)}")


# -- 2. random kills under load ----------------------------------------------------------------------------

KILLS = int(os.environ.get("ROOST_CRASH_KILLS", "3"))  # kills per test, each at a random moment of the load
KILL_AFTER = (0.3, 1.2)  # seconds of flowing load before each kill, drawn from the seeded generator
RATE = 300  # messages per second per stream
WINDOW = 20  # unacknowledged messages per publisher
# batched: what was acknowledged longer than this before a kill must survive it. A change is reported before
# its acknowledgement goes out and waits for the next commit: up to 100 ms, plus, when it came while a commit
# was being written, the rest of that write (the next window opens when a write ends), plus its own write;
# each write is a hop to the database thread and an fsync, tens of ms on a busy machine. Measured: up to
# 0.17 s on an idle 2-core machine, 0.25 s with a load average of 5.
BATCHED_LOSS_WINDOW = 0.3


@pytest.mark.parametrize("durability", MODES)
async def test_random_sigkills_under_qos1_and_qos2_load(roost_process, durability: str) -> None:
    """A QoS 1 stream (3.1.1 publisher) and a QoS 2 stream (5.0 publisher) flow to two online persistent
    subscribers (3.1.1 and 5.0) and one offline (5.0, back once the load is over) while Roost is SIGKILLed
    KILLS times at random moments; the clients resume their sessions and resend what is unacknowledged.
    Once the load has drained: strict loses nothing acknowledged and delivers no QoS 2 message twice;
    batched loses only what was acknowledged within BATCHED_LOSS_WINDOW before a kill. QoS 1 duplicates
    are allowed (at least once) and counted."""
    seed = int(os.environ.get("ROOST_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\n[{durability}] seed {seed} (ROOST_CRASH_SEED={seed} replays these kill moments)")
    rng = random.Random(seed)
    roost = roost_process(durability)
    await asyncio.to_thread(roost.start)
    port = roost.mqtt_port
    gate = BrokerGate()
    gate.open()
    progress = asyncio.Event()
    streams = [Stream("qos1", "load/qos1", 1), Stream("qos2", "load/qos2", 2)]
    subscribers = [LoadSubscriber("load-sub-v5", 5, streams, progress),
                   LoadSubscriber("load-sub-v311", 4, streams, progress)]
    publishers = [LoadPublisher("load-pub-qos1", 4, streams[0], progress, RATE, WINDOW),
                  LoadPublisher("load-pub-qos2", 5, streams[1], progress, RATE, WINDOW)]
    # The third subscriber is offline during the load: everything it gets waits in its session's queue
    # through the kills (the online ones acknowledge most messages within the commit window).
    offline = LoadSubscriber("load-sub-offline", 5, streams, progress)
    clients = [*subscribers, *publishers]
    tasks = [asyncio.ensure_future(client.run(port, gate)) for client in [*clients, offline]]
    kills: list[float] = []
    watch = CommitWatch(roost)  # when each run's commits landed, as seen from outside

    def flowing() -> bool:
        """Every client is connected and has handled a few packets on this connection."""
        return all(client.link is not None and client.since_connect >= 10 for client in clients)

    try:
        await wait_for(lambda: all(s.subscribed for s in [*subscribers, offline]) and all(p.link for p in publishers),
                       progress, 20, "the clients to connect and subscribe", tasks)
        offline.finish(offline.link)
        await asyncio.to_thread(roost.wait_clients, len(clients))
        await asyncio.to_thread(roost.wait_committed)  # sessions and subscriptions are on disk
        watch.start()
        for publisher in publishers:
            publisher.go.set()
        for _ in range(KILLS):
            await wait_for(flowing, progress, 20, "the load to flow", tasks)
            await asyncio.sleep(rng.uniform(*KILL_AFTER))  # the kill's random moment (a stimulus, not a wait)
            gate.close()
            kills.append(time.monotonic())
            roost.signal_kill()  # the clients' loop goes on reading, so acknowledgements keep honest times

            def restart() -> None:
                roost.reap()
                roost.snapshot()  # the state as the kill left it, kept for a failure's evidence
                roost.start()

            await asyncio.to_thread(restart)
            gate.open()
        await wait_for(flowing, progress, 20, "the load to flow after the last restart", tasks)
        for publisher in publishers:
            publisher.stop()
        await wait_for(lambda: all(p.drained for p in publishers), progress, 30,
                       "every published message to be acknowledged", tasks)
        offline = LoadSubscriber("load-sub-offline", 5, streams, progress, resume=True)
        tasks.append(asyncio.ensure_future(offline.run(port, gate)))
        clients.append(offline)
        subscribers.append(offline)
        await wait_for(lambda: all(p.last in s.delivered[p.stream.topic] for p in publishers for s in subscribers),
                       progress, 30, "the subscribers to receive the last messages", tasks)
        await asyncio.to_thread(roost.wait_metric, "roost_mqtt_inflight_messages", lambda v: v == 0, 30)
        await asyncio.to_thread(roost.wait_metric, "roost_mqtt_queued_messages", lambda v: v == 0, 30)
        metrics = await asyncio.to_thread(roost.metrics)
    finally:
        watch.stop()
        for client in clients:
            client.finish(client.link)
        done, _ = await asyncio.wait(tasks, timeout=10)
        for task in tasks:
            task.cancel()
    for task in done:
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    outcomes = [summarise(p, s, kills) for p in publishers for s in subscribers]
    report(durability, outcomes, publishers, subscribers, metrics)
    stalls = {run: watch.longest_gap(run) for run in range(1, len(kills) + 1)}
    print(f"[{durability}] longest time without a commit, per killed run: "
          + ", ".join(f"{gap:.2f} s" for gap in stalls.values()))
    for client in clients:
        assert client.sessions_lost == 0, f"{client.client_id} lost its session in a restart (seed {seed})"
        assert client.refusals == [] and client.unexpected == [], (client.client_id, client.refusals, client.unexpected)
    for publisher in publishers:
        assert publisher.errors == [], (publisher.client_id, publisher.errors[:5])
        assert set(publisher.acked) == set(publisher.sent), "drained, yet not every message was acknowledged"
    dropped = {name: value for name, value in metrics.items() if name.startswith("roost_mqtt_messages_dropped") and value}
    assert not dropped, f"messages dropped outside any crash: {dropped}"
    for outcome in outcomes:
        name = f"{outcome.subscriber} QoS {outcome.stream.qos}"
        publisher = next(p for p in publishers if p.stream == outcome.stream)
        assert outcome.phantoms == [], f"{name}: delivered numbers never published: {outcome.phantoms[:10]}"
        if durability == "strict":
            assert outcome.losses == [], f"{name}: acknowledged and lost: {outcome.losses[:20]} (seed {seed})"
            if outcome.stream.qos == 2:
                assert outcome.duplicates == 0, f"{name}: {outcome.duplicates} QoS 2 duplicates (seed {seed})"
            continue
        # batched: a loss is a bug if a commit that must have carried it landed before the kill; otherwise
        # it must be recent (BATCHED_LOSS_WINDOW), unless that run's commits stalled longer than that.
        carried, old = [], []
        for number, age in zip(outcome.losses, outcome.loss_ages):
            run = publisher.acked_in[number]
            durable_before = watch.durable_before(run)
            if durable_before is not None and publisher.acked[number] < durable_before:
                carried.append((number, run, round(durable_before - publisher.acked[number], 3)))
            if age > BATCHED_LOSS_WINDOW and stalls.get(run, 0) <= BATCHED_LOSS_WINDOW:
                old.append((number, round(age, 3)))
        assert carried == [], f"{name}: lost although acknowledged before a commit that landed before the kill " \
                              f"(number, run, seconds before that commit began at the latest): {carried[:20]} (seed {seed})"
        assert old == [], f"{name}: lost messages acknowledged more than {BATCHED_LOSS_WINDOW} s before the kill " \
                          f"(number, seconds before): {old[:20]} (seed {seed})"


def report(durability: str, outcomes: list[Outcome], publishers: list[LoadPublisher],
           subscribers: list[LoadSubscriber], metrics: dict[str, float]) -> None:
    """Print the counts (pytest -s shows them), to be quoted in the documentation."""
    tag = f"[{durability}]"
    for outcome in outcomes:
        print(tag, outcome.line())
    for publisher in publishers:
        print(tag, f"{publisher.client_id}: {publisher.resent} resent after reconnects, "
              f"{publisher.not_found} PUBCOMP 0x92 (PUBREL for an exchange the broker had finished)")
    for subscriber in subscribers:
        print(tag, f"{subscriber.client_id}: {subscriber.publishes} PUBLISH packets, {subscriber.dup_flags} with DUP; "
              f"QoS 2: {subscriber.renumbered} resent under a new packet id, {subscriber.stale} PUBREC'd and never "
              f"released, {subscriber.replaced} packet ids reused before their PUBREL")
    commits = metrics.get("roost_state_commits_total", 0)
    seconds = metrics.get("roost_state_commit_seconds_total")
    mean = f", {seconds / commits * 1000:.1f} ms per commit" if seconds is not None and commits else ""
    print(tag, f"last run: {commits:.0f} commits, {metrics.get('roost_state_rows_written_total', 0):.0f} rows "
          f"written{mean}")
