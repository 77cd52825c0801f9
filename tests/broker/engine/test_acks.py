"""Acknowledgements that wait, in memory: a receiver's hold (a bridge's outbox commit, broker/ack_holds.py)
and strict durability share one queue (broker/engine/acks.py), so a PUBACK/PUBREC never leaves before what
it waits for, and never overtakes one that waits [MQTT-4.6.0-2]."""

from __future__ import annotations

from collections.abc import Callable

from broker.codec import Puback, Pubcomp, Publish, Pubrec, Pubrel, Subscribe, Subscription, Will
from broker.persistence import Persistence
from broker.session import Message, Session, SubscriptionRecord
from tests.broker.engine.helpers import World


class HoldingReceiver:
    """A DeliveryReceiver that, like a bridge, holds the publisher's acknowledgement of every QoS 1/2
    message until the test calls `commit()` (its outbox on disk)."""

    client = None
    congested = False
    inflight_limit = 0
    held_sends = 0
    plain_form = None

    def __init__(self, world: World, topic_filter: str, safe: bool = False) -> None:
        self.broker = world.broker
        self.safe = safe  # the message is on disk at once: the wait calls back when handed over
        self.pending: list[Callable[[], None]] = []
        self.got: list[str] = []
        key = "\x00hold\x00test"
        session = Session(key)
        self.broker.sessions[key] = session
        self.broker.connections[key] = self
        self.broker.subscribe(session, SubscriptionRecord(topic_filter, 0))

    def send_message(self, message: Message, qos: int, retain: bool, sub_ids: tuple[int, ...],
                     packet_id: int | None, dup: bool = False) -> bool:
        self.got.append(message.topic)
        if message.qos:
            self.broker.ack_holds.hold((lambda done: done()) if self.safe else self.pending.append)
        return True

    def send_plain(self, data: bytes) -> bool:
        raise AssertionError("no plain form")

    def taken_over(self) -> Will | None:
        return None

    def close_for_admin(self) -> None:
        pass

    def commit(self) -> None:
        pending, self.pending = self.pending, []
        for callback in pending:
            callback()


class StrictDisk(Persistence):
    """Strict durability whose commits the test completes by hand (`flush()`)."""

    enabled = True
    strict = True

    def __init__(self) -> None:
        self.waiting: list[Callable[[], None]] = []

    def when_durable(self, callback: Callable[[], None]) -> bool:
        self.waiting.append(callback)
        return True

    def flush(self) -> None:
        waiting, self.waiting = self.waiting, []
        for callback in waiting:
            callback()


def test_a_held_puback_waits_for_the_commit_and_later_acks_wait_behind_it() -> None:
    world = World()
    holder = HoldingReceiver(world, "up/#")
    publisher = world.peer()
    publisher.connect("pub")
    publisher.send(Publish("up/1", b"a", qos=1, packet_id=1))
    assert publisher.ping() == []  # routed, held: no PUBACK before the outbox has it on disk
    assert holder.got == ["up/1"]
    publisher.send(Publish("local/x", b"b", qos=1, packet_id=2))  # nobody holds this one...
    assert publisher.ping() == []  # ...but it may not overtake the held one [MQTT-4.6.0-2]
    holder.commit()
    assert publisher.received() == [Puback(1), Puback(2)]
    publisher.send(Publish("local/y", b"c", qos=1, packet_id=3))
    assert publisher.ping() == [Puback(3)]  # nothing waits any more: at once


def test_qos2_pubrec_is_held_and_the_pubcomp_goes_behind_it() -> None:
    world = World()
    holder = HoldingReceiver(world, "up/#")
    publisher = world.peer()
    publisher.connect("pub")
    publisher.send(Publish("up/2", b"x", qos=2, packet_id=7), Pubrel(7))
    assert publisher.ping() == []
    holder.commit()
    assert publisher.received() == [Pubrec(7), Pubcomp(7)]


def test_a_wait_that_is_already_safe_does_not_hold_nor_reorder() -> None:
    """A hold whose message is already on disk calls back at once: PUBACK goes now, before the copy
    routed back to a publisher that subscribes (the engine's order)."""
    world = World()
    HoldingReceiver(world, "up/#", safe=True)
    world.broker.ack_holds.hold(lambda done: None)  # outside routing (a will, REST): ignored
    publisher = world.peer()
    publisher.connect("pub")
    publisher.send(Subscribe(1, (Subscription("up/#", qos=1),)))
    publisher.received()  # SUBACK
    publisher.send(Publish("up/3", b"z", qos=1, packet_id=4))
    first, second = publisher.ping()
    assert first == Puback(4)
    assert isinstance(second, Publish) and second.topic == "up/3"


def test_strict_durability_and_a_hold_together() -> None:
    """The PUBACK waits for both the broker state's commit and the receiver's, in either order (a
    retained message changes recorded state, so strict durability holds its PUBACK too)."""
    disk = StrictDisk()
    world = World()
    world.broker.persistence = disk
    holder = HoldingReceiver(world, "up/#")
    publisher = world.peer()
    publisher.connect("pub")
    publisher.send(Publish("up/1", b"a", qos=1, retain=True, packet_id=1))
    publisher.send(Publish("up/2", b"b", qos=1, retain=True, packet_id=2))
    assert publisher.ping() == []
    holder.commit()
    assert publisher.received() == []  # the broker's state is not on disk yet
    disk.flush()
    assert publisher.received() == [Puback(1), Puback(2)]
    publisher.send(Publish("up/3", b"c", qos=1, retain=True, packet_id=3))
    disk.flush()
    assert publisher.received() == []  # on the broker's disk, not yet in the receiver's outbox
    holder.commit()
    assert publisher.received() == [Puback(3)]


def test_a_connection_whose_acknowledgements_never_waited_closes_cleanly() -> None:
    """Its queue is the shared empty placeholder (no deque per idle connection): closing must leave it be,
    or connection_lost raises and the client's end (its events, its clean session) is never handled."""
    world = World()
    peer = world.peer()
    peer.connect("c1")
    peer.send(Publish("local/x", b"a", qos=1, packet_id=1))
    assert peer.ping() == [Puback(1)]  # sent at once: its queue exists and never held anything
    assert world.broker.connections
    peer.drop()
    assert not world.broker.connections and not world.broker.sessions  # the clean session is gone


def test_a_hold_that_completes_after_the_connection_is_gone_writes_nothing() -> None:
    world = World()
    holder = HoldingReceiver(world, "up/#")
    publisher = world.peer()
    publisher.connect("pub")
    publisher.send(Publish("up/1", b"a", qos=1, packet_id=1))
    assert publisher.ping() == []
    publisher.drop()
    holder.commit()  # the outbox has it now; the PUBACK has nowhere to go (the client resends it)
    assert publisher.received() == []
