"""The broker's state on disk (storage/broker_state.py), in-process: the store's public methods and the
`broker-state.db` file are the interface.

Each test reports changes the way the broker does (naming live `Session`, `Delivery`, `Message` and
`SubscriptionRecord` objects), commits with `flush()`, closes, opens the file again with
`open_broker_state` and checks what `load()` gives back, or what rows the file holds (read with the
standard `sqlite3` module, beside the store's own connection).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from broker.codec import EMPTY_PROPERTIES, Properties, Will
from broker.hooks import ClientInfo
from broker.session import Delivery, Message, Session, SubscriptionRecord
from storage.broker_state import STATE_FILE_NAME, BrokerStateStore, open_broker_state
from storage.errors import StorageError

TIMEOUT = 5.0


# -- fixtures and helpers ---------------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


@pytest.fixture
async def opened(data_dir: Path) -> AsyncIterator[list[BrokerStateStore]]:
    """Every store a test opens (batched mode first), closed at the end. `reopen` appends to it."""
    stores = [await _open(data_dir, "batched")]
    yield stores
    for store in stores:
        await store.close()


@pytest.fixture
def store(opened: list[BrokerStateStore]) -> BrokerStateStore:
    return opened[0]


async def _open(data_dir: Path, durability: str) -> BrokerStateStore:
    store = await open_broker_state(data_dir, durability)
    assert store is not None
    return store


async def reopen(
    opened: list[BrokerStateStore], data_dir: Path, now: float | None = None, durability: str = "batched"
) -> tuple[BrokerStateStore, dict[str, Session], dict[str, Message]]:
    """Close the last store (committing what is pending), open the file again and load it. Returns the new
    store, the sessions by key and the retained messages by topic."""
    await opened[-1].close()
    store = await _open(data_dir, durability)
    opened.append(store)
    sessions, retained = await store.load(now)
    return store, {s.key: s for s in sessions}, {m.topic: m for m in retained}


def rows(data_dir: Path, sql: str) -> list[tuple]:
    """Rows as another process sees the committed file."""
    connection = sqlite3.connect(data_dir / STATE_FILE_NAME)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def count(data_dir: Path, table: str) -> int:
    return rows(data_dir, f"SELECT count(*) FROM {table}")[0][0]


def tenant_client(client_id: str = "sensor-1", **overrides: object) -> ClientInfo:
    """A client as the storage auth hook describes a tenant's MQTT instance login."""
    values: dict[str, object] = {
        "client_id": client_id,
        "username": "inst-abc",
        "protocol_version": 5,
        "is_admin": False,
        "anonymous": False,
        "mount": "$u7/",
        "attributes": {"user_id": 7, "project_id": None, "instance_id": 3, "secret_hash": "scrypt$xyz"},
    }
    values.update(overrides)
    return ClientInfo(**values)  # type: ignore[arg-type]


def durable_session(
    client: ClientInfo | None = None, expiry: int = 300, disconnected_at: float | None = 1_000.0
) -> Session:
    client = client or tenant_client()
    return Session(client.session_key, expiry_interval=expiry, client=client, durable=True,
                   disconnected_at=disconnected_at)


def message(topic: str = "$u7/room/temp", payload: bytes = b"21.5", qos: int = 1, **kwargs: object) -> Message:
    return Message(topic, payload, qos, False, **kwargs)  # type: ignore[arg-type]


def queue(store: BrokerStateStore, session: Session, delivery: Delivery) -> Delivery:
    """Queue a delivery as `Broker.deliver` does for an offline client."""
    session.enqueue(delivery)
    store.delivery_changed(session, delivery)
    return delivery


def send(store: BrokerStateStore, session: Session, delivery: Delivery, packet_id: int) -> Delivery:
    """Put a delivery in flight as `Broker._send_inflight` does."""
    delivery.packet_id = packet_id
    session.inflight[packet_id] = delivery
    store.delivery_changed(session, delivery)
    return delivery


def acknowledge(store: BrokerStateStore, session: Session, delivery: Delivery) -> None:
    """The client acknowledged (or the delivery ended otherwise)."""
    if delivery.packet_id is not None:
        del session.inflight[delivery.packet_id]
    else:
        session.queue.remove(delivery)
    store.delivery_removed(session, delivery)


async def wait_for(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Poll `condition` on the loop until it holds (AssertionError after `timeout`)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# -- sessions -----------------------------------------------------------------------------------------------------


async def test_a_session_comes_back_with_its_client_and_expiry(store, opened, data_dir) -> None:
    client = tenant_client(is_admin=True, protocol_version=4, username="inst-abc")
    session = durable_session(client, expiry=3_600, disconnected_at=1_234.5)
    store.session_changed(session)

    _, sessions, _ = await reopen(opened, data_dir)

    back = sessions["$u7/\x00sensor-1"]
    assert back.key == session.key == client.session_key
    assert back.expiry_interval == 3_600
    assert back.disconnected_at == 1_234.5
    assert back.durable
    assert back.client == client  # client id, user name, version, admin, anonymous, mount
    assert back.client.attributes == client.attributes
    assert back.pending_will is None and back.armed_will is None
    assert (back.subscriptions, dict(back.inflight), list(back.queue), back.awaiting_release) == ({}, {}, [], set())


async def test_an_anonymous_client_without_mount_and_a_never_expiring_session(store, opened, data_dir) -> None:
    client = ClientInfo("plain", None, 4, anonymous=True)
    store.session_changed(durable_session(client, expiry=0xFFFFFFFF))

    _, sessions, _ = await reopen(opened, data_dir)

    assert list(sessions) == ["plain"]
    assert sessions["plain"].client == client
    assert sessions["plain"].client.username is None
    assert sessions["plain"].expiry_interval == 0xFFFFFFFF


async def test_the_latest_state_of_a_session_is_what_is_written(store, opened, data_dir) -> None:
    session = durable_session(expiry=60, disconnected_at=None)
    store.session_changed(session)
    await store.flush()
    session.expiry_interval = 120
    session.disconnected_at = 2_000.0
    store.session_changed(session)

    _, sessions, _ = await reopen(opened, data_dir)

    assert sessions[session.key].expiry_interval == 120
    assert sessions[session.key].disconnected_at == 2_000.0


async def test_a_removed_session_is_gone(store, opened, data_dir) -> None:
    kept, removed = durable_session(tenant_client("kept")), durable_session(tenant_client("removed"))
    store.session_changed(kept)
    store.session_changed(removed)
    await store.flush()
    store.session_removed(removed)

    _, sessions, _ = await reopen(opened, data_dir)

    assert list(sessions) == [kept.key]


# -- subscriptions --------------------------------------------------------------------------------------------------


async def test_subscriptions_come_back_with_every_option(store, opened, data_dir) -> None:
    session = durable_session()
    store.session_changed(session)
    records = [
        SubscriptionRecord("$u7/room/+/temp", 1),
        SubscriptionRecord("$u7/alerts/#", 2, no_local=True, retain_as_published=True, retain_handling=2,
                           subscription_id=268_435_455),
        SubscriptionRecord("$share/workers/$u7/jobs/#", 1, retain_handling=1, subscription_id=7),
        SubscriptionRecord("$u7/once", 0, retain_as_published=True, retain_handling=1),
    ]
    for record in records:
        store.subscription_added(session, record)

    _, sessions, _ = await reopen(opened, data_dir)

    back = sessions[session.key].subscriptions
    assert back == {record.topic_filter: record for record in records}


async def test_a_replaced_subscription_keeps_its_last_options_and_a_removed_one_is_gone(store, opened, data_dir) -> None:
    session = durable_session()
    store.session_changed(session)
    store.subscription_added(session, SubscriptionRecord("$u7/a", 0))
    store.subscription_added(session, SubscriptionRecord("$u7/b", 1))
    await store.flush()
    store.subscription_added(session, SubscriptionRecord("$u7/a", 2, subscription_id=9))
    store.subscription_removed(session, "$u7/b")
    # Added and removed within one window.
    store.subscription_added(session, SubscriptionRecord("$u7/c", 1))
    store.subscription_removed(session, "$u7/c")

    _, sessions, _ = await reopen(opened, data_dir)

    assert sessions[session.key].subscriptions == {"$u7/a": SubscriptionRecord("$u7/a", 2, subscription_id=9)}


# -- deliveries -----------------------------------------------------------------------------------------------------


async def test_queued_and_inflight_deliveries_come_back_in_order(store, opened, data_dir) -> None:
    session = durable_session()
    store.session_changed(session)
    messages = [message(payload=f"m{i}".encode(), qos=2 if i % 2 else 1) for i in range(5)]
    first = send(store, session, Delivery(messages[0], 1, False, (3,)), packet_id=41)
    second = send(store, session, Delivery(messages[1], 2, True, (3, 5)), packet_id=42)
    second.released = True  # PUBREC came, PUBREL sent
    store.delivery_changed(session, second)
    third = send(store, session, Delivery(messages[2], 1, False), packet_id=43)
    for queued in messages[3:]:
        queue(store, session, Delivery(queued, queued.qos, False, (3,)))

    _, sessions, _ = await reopen(opened, data_dir)

    back = sessions[session.key]
    assert [(pid, d.message.payload, d.qos, d.retain, d.subscription_ids, d.packet_id, d.released)
            for pid, d in back.inflight.items()] == [
        (41, b"m0", 1, False, (3,), 41, False),
        (42, b"m1", 2, True, (3, 5), 42, True),
        (43, b"m2", 1, False, (), 43, False),
    ]
    assert [(d.message.payload, d.qos, d.packet_id, d.released) for d in back.queue] == [
        (b"m3", 2, None, False), (b"m4", 1, None, False),
    ]
    assert all(d.message.topic == "$u7/room/temp" for d in (*back.inflight.values(), *back.queue))
    # The next packet identifier does not collide with one still in flight [MQTT-2.2.1-3].
    assert back.allocate_packet_id() not in (41, 42, 43)
    del first, third


async def test_a_queued_delivery_put_in_flight_later_comes_back_in_flight(store, opened, data_dir) -> None:
    session = durable_session()
    store.session_changed(session)
    delivery = queue(store, session, Delivery(message(), 1, False))
    await store.flush()
    session.queue.popleft()
    send(store, session, delivery, packet_id=7)

    _, sessions, _ = await reopen(opened, data_dir)

    back = sessions[session.key]
    assert list(back.queue) == []
    assert list(back.inflight) == [7]


async def test_a_message_comes_back_with_its_v5_properties_sender_and_origin(store, opened, data_dir) -> None:
    session = durable_session()
    store.session_changed(session)
    properties = Properties(
        payload_format_indicator=1,
        message_expiry_interval=600,
        content_type="application/json",
        response_topic="$u7/replies",
        correlation_data=b"\x00\x01req",
        user_properties=(("a", "1"), ("a", "2"), ("b", "x")),
    )
    expires_at = time.time() + 600
    original = message(payload=b'{"t": 21}', qos=2, properties=properties, expires_at=expires_at,
                       sender="$u7/\x00publisher", origin="inst-abc")
    queue(store, session, Delivery(original, 2, False))

    _, sessions, _ = await reopen(opened, data_dir)

    back = sessions[session.key].queue[0].message
    assert (back.topic, back.payload, back.qos, back.properties, back.sender, back.origin) == (
        original.topic, original.payload, 2, properties, "$u7/\x00publisher", "inst-abc",
    )
    assert back.expires_at == pytest.approx(expires_at)


async def test_one_message_for_three_sessions_is_stored_once_and_goes_with_the_last_delivery(
    store, opened, data_dir
) -> None:
    shared = message(payload=b"fan-out")
    sessions = [durable_session(tenant_client(f"s{i}")) for i in range(3)]
    deliveries = []
    for session in sessions:
        store.session_changed(session)
        deliveries.append(queue(store, session, Delivery(shared, 1, False)))
    await store.flush()
    assert count(data_dir, "messages") == 1
    assert count(data_dir, "deliveries") == 3

    acknowledge(store, sessions[0], deliveries[0])
    acknowledge(store, sessions[1], deliveries[1])
    await store.flush()
    assert count(data_dir, "messages") == 1
    assert count(data_dir, "deliveries") == 1

    acknowledge(store, sessions[2], deliveries[2])
    await store.flush()
    assert count(data_dir, "messages") == 0
    assert count(data_dir, "deliveries") == 0


async def test_sessions_sharing_a_message_share_it_after_loading(store, opened, data_dir) -> None:
    shared = message(payload=b"fan-out")
    sessions = [durable_session(tenant_client(f"s{i}")) for i in range(2)]
    for session in sessions:
        store.session_changed(session)
        queue(store, session, Delivery(shared, 1, False))

    store, loaded, _ = await reopen(opened, data_dir)

    first, second = (loaded[s.key].queue[0] for s in sessions)
    assert first.message.payload == second.message.payload == b"fan-out"
    # The row goes with the last delivery after a restart too.
    acknowledge(store, loaded[sessions[0].key], first)
    await store.flush()
    assert count(data_dir, "messages") == 1
    acknowledge(store, loaded[sessions[1].key], second)
    await store.flush()
    assert (count(data_dir, "messages"), count(data_dir, "deliveries")) == (0, 0)


async def test_a_delivery_added_and_removed_within_one_window_writes_no_row(store, opened, data_dir) -> None:
    session = durable_session()
    store.session_changed(session)
    await store.flush()
    written = store.rows_written

    delivery = send(store, session, Delivery(message(), 1, False), packet_id=1)
    acknowledge(store, session, delivery)
    queued = queue(store, session, Delivery(message(payload=b"b"), 2, False))
    acknowledge(store, session, queued)
    await store.flush()

    assert store.rows_written == written
    assert count(data_dir, "deliveries") == 0
    assert count(data_dir, "messages") == 0


async def test_a_removed_delivery_that_was_on_disk_is_deleted(store, opened, data_dir) -> None:
    session = durable_session()
    store.session_changed(session)
    delivery = send(store, session, Delivery(message(), 1, False), packet_id=1)
    await store.flush()
    assert count(data_dir, "deliveries") == 1
    acknowledge(store, session, delivery)
    await store.flush()
    assert (count(data_dir, "deliveries"), count(data_dir, "messages")) == (0, 0)


async def test_new_rows_after_a_load_do_not_overwrite_loaded_ones(store, opened, data_dir) -> None:
    session = durable_session()
    store.session_changed(session)
    queue(store, session, Delivery(message(payload=b"before"), 1, False))
    queue(store, session, Delivery(message(payload=b"before 2"), 1, False))

    store, loaded, _ = await reopen(opened, data_dir)
    back = loaded[session.key]
    queue(store, back, Delivery(message(payload=b"after"), 1, False))
    # A loaded message handed to another session (the way a restored retained or queued message is shared).
    other = durable_session(tenant_client("other"))
    store.session_changed(other)
    queue(store, other, Delivery(back.queue[0].message, 1, False))

    _, loaded, _ = await reopen(opened, data_dir)

    assert [d.message.payload for d in loaded[session.key].queue] == [b"before", b"before 2", b"after"]
    assert [d.message.payload for d in loaded[other.key].queue] == [b"before"]
    assert count(data_dir, "messages") == 3


# -- awaited releases -----------------------------------------------------------------------------------------------


async def test_awaited_releases_come_back_and_a_done_one_does_not(store, opened, data_dir) -> None:
    session = durable_session()
    store.session_changed(session)
    for packet_id in (1, 2, 65_535):
        session.await_release(packet_id)
        store.release_awaited(session, packet_id)
    await store.flush()
    session.awaiting_release.discard(2)
    store.release_done(session, 2)
    # Awaited and released within one window.
    store.release_awaited(session, 9)
    store.release_done(session, 9)

    store, loaded, _ = await reopen(opened, data_dir)
    assert loaded[session.key].awaiting_release == {1, 65_535}

    # Released after a restart: the loaded row goes.
    store.release_done(loaded[session.key], 1)
    _, loaded, _ = await reopen(opened, data_dir)
    assert loaded[session.key].awaiting_release == {65_535}


# -- retained messages ----------------------------------------------------------------------------------------------


async def test_retained_messages_come_back_with_v5_properties_and_expiry(store, opened, data_dir) -> None:
    properties = Properties(
        message_expiry_interval=3_600,
        content_type="text/plain",
        correlation_data=b"corr",
        response_topic="$u7/answer",
        user_properties=(("unit", "C"), ("room", "kitchen")),
    )
    expires_at = time.time() + 3_600
    with_properties = Message("$u7/kitchen/temp", b"21", 1, True, properties, expires_at, "$u7/\x00pub", "inst-abc")
    plain = Message("plain/topic", b"on", 0, True)
    store.retained_set(with_properties)
    store.retained_set(plain)

    _, _, retained = await reopen(opened, data_dir)

    back = retained["$u7/kitchen/temp"]
    assert (back.topic, back.payload, back.qos, back.retain, back.properties, back.origin) == (
        "$u7/kitchen/temp", b"21", 1, True, properties, "inst-abc",
    )
    assert back.expires_at == pytest.approx(expires_at)
    assert retained["plain/topic"].properties is EMPTY_PROPERTIES
    assert retained["plain/topic"].expires_at is None
    assert (retained["plain/topic"].payload, retained["plain/topic"].qos) == (b"on", 0)


async def test_a_replaced_retained_message_keeps_the_last_and_a_removed_one_is_gone(store, opened, data_dir) -> None:
    store.retained_set(Message("a", b"1", 0, True))
    store.retained_set(Message("b", b"1", 0, True))
    await store.flush()
    store.retained_set(Message("a", b"2", 1, True))
    store.retained_removed("b")
    store.retained_set(Message("c", b"1", 0, True))
    store.retained_removed("c")

    _, _, retained = await reopen(opened, data_dir)

    assert {topic: (m.payload, m.qos) for topic, m in retained.items()} == {"a": (b"2", 1)}


# -- wills ----------------------------------------------------------------------------------------------------------


async def test_the_armed_will_of_a_connected_session_comes_back_pending_from_load_time(store, opened, data_dir) -> None:
    """A client connected when the process stopped lost its connection then, without DISCONNECT: its will is
    pending, and the session's and the will's clocks run from the restart [MQTT-3.1.2-8]."""
    armed = Will("$u7/status", b"offline", 1, True,
                 Properties(will_delay_interval=30, content_type="text/plain", user_properties=(("k", "v"),)))
    session = durable_session(disconnected_at=None)
    session.armed_will = armed
    store.session_changed(session)

    loaded_at = time.time() + 1_000
    _, sessions, _ = await reopen(opened, data_dir, now=loaded_at)

    back = sessions[session.key]
    assert back.pending_will == armed
    assert back.armed_will is None
    assert back.disconnected_at == loaded_at


async def test_the_load_time_of_a_connected_session_is_kept_for_the_next_start(store, opened, data_dir) -> None:
    """The restart time becomes the session's disconnect time on disk: a second restart before any client
    came back does not reset its expiry clock."""
    session = durable_session(disconnected_at=None)
    session.armed_will = Will("$u7/status", b"offline", 0, False, Properties(will_delay_interval=30))
    store.session_changed(session)

    first_load = time.time()
    await reopen(opened, data_dir, now=first_load)
    _, sessions, _ = await reopen(opened, data_dir, now=first_load + 50)

    back = sessions[session.key]
    assert back.disconnected_at == first_load
    assert back.pending_will is not None and back.pending_will.payload == b"offline"


async def test_the_pending_will_of_a_disconnected_session_comes_back_as_it_was(store, opened, data_dir) -> None:
    pending = Will("$u7/status", b"gone", 2, False, Properties(will_delay_interval=120, message_expiry_interval=10))
    session = durable_session(disconnected_at=5_000.0)
    session.pending_will = pending
    session.armed_will = Will("ignored/when/disconnected", b"x")
    store.session_changed(session)

    _, sessions, _ = await reopen(opened, data_dir, now=9_999.0)

    back = sessions[session.key]
    assert back.pending_will == pending
    assert back.disconnected_at == 5_000.0


async def test_a_will_published_or_cancelled_is_not_pending_after_a_restart(store, opened, data_dir) -> None:
    session = durable_session(disconnected_at=5_000.0)
    session.pending_will = Will("$u7/status", b"gone", 0, False, Properties(will_delay_interval=120))
    store.session_changed(session)
    await store.flush()
    session.pending_will = None  # its delay ended (published) or the client came back
    store.session_changed(session)

    _, sessions, _ = await reopen(opened, data_dir)

    assert sessions[session.key].pending_will is None


# -- session_removed purges -----------------------------------------------------------------------------------------


async def _session_with_everything(store: BrokerStateStore, client_id: str = "sensor-1") -> Session:
    session = durable_session(tenant_client(client_id))
    store.session_changed(session)
    store.subscription_added(session, SubscriptionRecord("$u7/a/#", 1, subscription_id=1))
    store.subscription_added(session, SubscriptionRecord("$share/g/$u7/b", 2))
    send(store, session, Delivery(message(payload=b"inflight"), 1, False), packet_id=1)
    queue(store, session, Delivery(message(payload=b"queued"), 2, False))
    session.await_release(5)
    store.release_awaited(session, 5)
    return session


async def test_session_removed_purges_its_subscriptions_deliveries_and_releases(store, opened, data_dir) -> None:
    session = await _session_with_everything(store)
    await store.flush()
    store.session_removed(session)
    await store.flush()

    for table in ("sessions", "subscriptions", "deliveries", "messages", "awaiting_release"):
        assert count(data_dir, table) == 0, table


async def test_session_removed_purges_even_when_the_key_is_recreated_in_the_same_window(
    store, opened, data_dir
) -> None:
    old = await _session_with_everything(store)
    await store.flush()
    # Changes of the old session still waiting when it ends are overtaken too.
    store.subscription_added(old, SubscriptionRecord("$u7/late", 0))
    old.await_release(6)
    store.release_awaited(old, 6)
    store.session_removed(old)
    new = durable_session(tenant_client(), expiry=60)
    store.session_changed(new)
    store.subscription_added(new, SubscriptionRecord("$u7/new", 1))
    new.await_release(5)
    store.release_awaited(new, 5)

    _, sessions, _ = await reopen(opened, data_dir)

    back = sessions[new.key]
    assert back.expiry_interval == 60
    assert list(back.subscriptions) == ["$u7/new"]
    assert (dict(back.inflight), list(back.queue)) == ({}, [])
    assert back.awaiting_release == {5}
    assert count(data_dir, "messages") == 0


async def test_session_removed_in_the_window_it_was_written_leaves_nothing(store, opened, data_dir) -> None:
    session = await _session_with_everything(store)
    store.session_removed(session)
    await store.flush()

    for table in ("sessions", "subscriptions", "deliveries", "messages", "awaiting_release"):
        assert count(data_dir, table) == 0, table


async def test_session_removed_after_a_load_purges_the_loaded_rows(store, opened, data_dir) -> None:
    session = await _session_with_everything(store)
    store, loaded, _ = await reopen(opened, data_dir)
    store.session_removed(loaded[session.key])
    await store.flush()

    for table in ("sessions", "subscriptions", "deliveries", "messages", "awaiting_release"):
        assert count(data_dir, table) == 0, table


# -- loading what the file holds -------------------------------------------------------------------------------------


async def test_load_drops_rows_that_nothing_refers_to(store, opened, data_dir) -> None:
    session = durable_session()
    store.session_changed(session)
    await store.close()
    connection = sqlite3.connect(data_dir / STATE_FILE_NAME)
    with connection:
        connection.execute("INSERT INTO messages VALUES (50, 't', x'00', 1, 0, NULL, NULL, NULL, NULL)")
        connection.execute("INSERT INTO messages VALUES (51, 't', x'01', 1, 0, NULL, NULL, NULL, NULL)")
        connection.execute("INSERT INTO deliveries VALUES (9, 'nobody', 50, 1, 0, '', NULL, 0)")
        connection.execute("INSERT INTO deliveries VALUES (10, ?, 404, 1, 0, '', NULL, 0)", (session.key,))
        connection.execute("INSERT INTO subscriptions VALUES ('nobody', 'x/#', 1, 0, 0, 0, NULL)")
    connection.close()

    store = await _open(data_dir, "batched")
    opened.append(store)
    sessions, _ = await store.load()
    await store.flush()

    assert [s.key for s in sessions] == [session.key]
    assert list(sessions[0].queue) == []
    for table in ("deliveries", "messages", "subscriptions"):
        assert count(data_dir, table) == 0, table


async def test_a_record_that_cannot_be_read_is_moved_aside_and_the_rest_is_loaded(store, opened, data_dir) -> None:
    """Issue 14: a record Roost cannot read no longer refuses the whole file (a restart loop under systemd).
    It goes to the quarantine table with everything of it, and the other records load; the connected-at-
    the-crash session's restart clock is still noted (written later, as for any load)."""
    connected = durable_session(tenant_client("a-connected"), disconnected_at=None)
    damaged = durable_session(tenant_client("b-damaged"))
    for session in (connected, damaged):
        store.session_changed(session)
        store.subscription_added(session, SubscriptionRecord("$u7/t", 1))
    await store.close()
    connection = sqlite3.connect(data_dir / STATE_FILE_NAME)
    with connection:
        connection.execute("UPDATE sessions SET attributes = '{not json' WHERE client_id = 'b-damaged'")
    connection.close()

    store = await _open(data_dir, "batched")
    opened.append(store)
    sessions, _ = await store.load()
    assert [s.client.client_id for s in sessions] == ["a-connected"]
    rows = await store.db.fetch_all("SELECT kind, key, source, reason FROM quarantine ORDER BY id")
    assert [(r["kind"], r["key"], r["source"]) for r in rows] == [
        ("session", "$u7/\\0b-damaged", "sessions"), ("session", "$u7/\\0b-damaged", "subscriptions")]
    assert "JSONDecodeError" in rows[0]["reason"]
    left = await store.db.fetch_all("SELECT session_key FROM subscriptions")
    assert [r["session_key"] for r in left] == [connected.key]
    await store.close()


# -- refusing a file ------------------------------------------------------------------------------------------------


async def _written_file(data_dir: Path) -> Path:
    """A real state file with some rows in it, closed."""
    store = await _open(data_dir, "batched")
    for i in range(100):
        session = durable_session(tenant_client(f"client-{i}"))
        store.session_changed(session)
        store.subscription_added(session, SubscriptionRecord(f"$u7/some/long/topic/filter/{i}/#" * 4, 1))
        queue(store, session, Delivery(message(payload=bytes(200)), 1, False))
    await store.close()
    return data_dir / STATE_FILE_NAME


def _assert_refused_untouched(data_dir: Path, before: bytes) -> None:
    path = data_dir / STATE_FILE_NAME
    assert path.read_bytes() == before
    assert sorted(p.name for p in data_dir.iterdir()) == [STATE_FILE_NAME]


async def _refused(data_dir: Path, match: str) -> None:
    with pytest.raises(StorageError, match=match):
        store = await open_broker_state(data_dir, "batched")
        assert store is not None
        try:
            await store.load()
        finally:
            await store.close()


async def test_a_file_that_is_not_sqlite_is_refused_and_left_as_it_was(data_dir) -> None:
    path = data_dir / STATE_FILE_NAME
    path.write_bytes(b"this is not a database, just some bytes \x00\xff" * 200)
    before = path.read_bytes()

    await _refused(data_dir, "not a SQLite database or is damaged")

    _assert_refused_untouched(data_dir, before)


async def test_a_truncated_database_is_refused_and_left_as_it_was(data_dir) -> None:
    path = await _written_file(data_dir)
    data = path.read_bytes()
    assert len(data) > 8 * 4096
    path.write_bytes(data[: len(data) // 2])
    before = path.read_bytes()

    await _refused(data_dir, "damaged")

    _assert_refused_untouched(data_dir, before)


async def test_a_database_with_a_damaged_page_is_refused_and_left_as_it_was(data_dir) -> None:
    path = await _written_file(data_dir)
    data = path.read_bytes()
    page = 4096
    path.write_bytes(data[: 3 * page] + b"\xa5" * page + data[4 * page:])
    before = path.read_bytes()

    await _refused(data_dir, "damaged")

    _assert_refused_untouched(data_dir, before)


async def test_a_newer_schema_is_refused_and_left_as_it_was(data_dir) -> None:
    path = await _written_file(data_dir)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 99")
    connection.close()
    before = path.read_bytes()

    await _refused(data_dir, "newer")

    _assert_refused_untouched(data_dir, before)


async def test_durability_off_opens_nothing(data_dir) -> None:
    assert await open_broker_state(data_dir, "off") is None
    assert list(data_dir.iterdir()) == []


async def test_an_unknown_durability_mode_is_an_error(data_dir) -> None:
    with pytest.raises(ValueError, match="durability"):
        await open_broker_state(data_dir, "sometimes")


# -- commits ----------------------------------------------------------------------------------------------------------


async def test_batched_changes_reach_the_disk_without_a_flush(store, data_dir) -> None:
    """A commit comes at the latest 100 ms after the first change; another connection then sees it."""
    session = durable_session()
    store.session_changed(session)
    assert store.pending_changes == 1
    await wait_for(lambda: count(data_dir, "sessions") == 1)
    assert store.commits == 1
    assert store.pending_changes == 0
    assert store.rows_written == 1


async def test_a_full_batch_commits_without_waiting_for_the_interval(store) -> None:
    """1,000 changes start a commit at once (a store whose interval is a minute shows it)."""
    patient = BrokerStateStore(store.db, interval=60.0)
    session = durable_session()
    for i in range(1_000):
        patient.subscription_added(session, SubscriptionRecord(f"t/{i}", 0))
    await wait_for(lambda: patient.commits == 1)
    assert patient.rows_written == 1_000
    assert patient.pending_changes == 0


async def test_commit_counters(store, data_dir) -> None:
    session = durable_session()
    store.session_changed(session)
    store.subscription_added(session, SubscriptionRecord("a", 1))
    store.retained_set(Message("r", b"1", 0, True))
    assert store.pending_changes == 3
    await store.flush()
    assert (store.commits, store.rows_written, store.failures, store.pending_changes) == (1, 3, 0, 0)


async def test_batched_mode_never_holds_acknowledgements(store) -> None:
    store.session_changed(durable_session())
    assert store.when_durable(lambda: None) is False


# -- strict mode ------------------------------------------------------------------------------------------------------


@pytest.fixture
async def strict(data_dir: Path) -> AsyncIterator[BrokerStateStore]:
    store = await _open(data_dir, "strict")
    yield store
    await store.close()


async def test_strict_when_durable_is_false_when_nothing_is_pending(strict) -> None:
    called: list[int] = []
    assert strict.when_durable(lambda: called.append(1)) is False
    strict.session_changed(durable_session())
    await strict.flush()
    assert strict.when_durable(lambda: called.append(2)) is False
    assert called == []


async def test_strict_when_durable_calls_back_once_the_change_is_on_disk(strict, data_dir) -> None:
    session = durable_session()
    seen_on_disk: list[int] = []
    done = asyncio.Event()

    def on_durable() -> None:
        seen_on_disk.append(count(data_dir, "sessions"))
        done.set()

    strict.session_changed(session)
    assert strict.when_durable(on_durable) is True
    assert seen_on_disk == []  # not before the commit
    await asyncio.wait_for(done.wait(), TIMEOUT)
    assert seen_on_disk == [1]


async def test_strict_callbacks_run_in_the_order_they_were_registered(strict) -> None:
    order: list[int] = []
    session = durable_session()
    strict.session_changed(session)
    assert strict.when_durable(lambda: order.append(1))
    strict.subscription_added(session, SubscriptionRecord("a", 1))
    assert strict.when_durable(lambda: order.append(2))
    assert strict.when_durable(lambda: order.append(3))  # nothing new, but behind the others
    await wait_for(lambda: len(order) == 3)
    # One registered while that commit was being written waits for it, and for the next one.
    strict.subscription_added(session, SubscriptionRecord("b", 1))
    assert strict.when_durable(lambda: order.append(4))
    await asyncio.sleep(0)  # the commit task starts
    strict.subscription_added(session, SubscriptionRecord("c", 1))
    assert strict.when_durable(lambda: order.append(5))
    assert strict.when_durable(lambda: order.append(6))
    await wait_for(lambda: len(order) == 6)
    assert order == [1, 2, 3, 4, 5, 6]


async def test_strict_callback_registered_during_a_commit_waits_for_it(strict) -> None:
    """Nothing new was reported, but a commit is being written: an acknowledgement that must not overtake
    one waiting for that commit waits for it too."""
    order: list[str] = []
    strict.session_changed(durable_session())
    assert strict.when_durable(lambda: order.append("first"))
    await asyncio.sleep(0)  # the commit task takes the change and starts writing (several awaits)
    assert strict.commits == 0 and order == []
    assert strict.when_durable(lambda: order.append("second")) is True
    await wait_for(lambda: len(order) == 2)
    assert order == ["first", "second"]
    assert strict.commits == 1


async def test_a_flush_and_an_acknowledgement_arriving_meanwhile_write_each_batch_once(strict, data_dir) -> None:
    """`flush()` (shutdown) while an acknowledgement starts a commit must not write the batch being written a
    second time in parallel: a stale second copy could land after a later batch and bring back a row that
    batch deleted. Every commit goes through one task."""
    released: list[int] = []
    strict.session_changed(durable_session(tenant_client("first")))  # no one waits: a timer, no commit yet
    flushing = asyncio.ensure_future(strict.flush())
    await asyncio.sleep(0)  # flush has taken the first batch and is writing it
    strict.session_changed(durable_session(tenant_client("second")))
    assert strict.when_durable(lambda: released.append(count(data_dir, "sessions")))
    await asyncio.wait_for(flushing, TIMEOUT)
    await wait_for(lambda: len(released) == 1)
    assert released == [2]  # released once its own session was in the file
    assert strict.rows_written == 2  # each session row once, whether in one commit or two: no batch twice
    assert strict.pending_changes == 0


async def test_a_failed_commit_is_retried_and_holds_strict_acknowledgements_until_it_lands(strict, data_dir) -> None:
    """A commit the disk refuses (here SQLite's `query_only`, as a read-only or full disk would) is counted,
    logged and retried with the same rows; an acknowledgement waiting for it is not released meanwhile."""
    async with strict.db.read() as connection:
        await connection.execute("PRAGMA query_only = ON")  # connection state: outlives the read
    released: list[int] = []
    strict.session_changed(durable_session())
    assert strict.when_durable(lambda: released.append(count(data_dir, "sessions")))
    await wait_for(lambda: strict.failures >= 1)
    assert released == [] and strict.commits == 0 and strict.pending_changes == 1
    async with strict.db.read() as connection:
        await connection.execute("PRAGMA query_only = OFF")
    await wait_for(lambda: released != [], timeout=TIMEOUT + 2)  # after the retry pause
    assert released == [1]  # released once its row was in the file
    assert strict.commits == 1 and strict.pending_changes == 0
