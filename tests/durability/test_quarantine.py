"""Issue 14: start-up never fails because of stored state.

A session, subscription, QoS 1/2 message or retained message in `broker-state.db` that cannot be restored
used to stop `roost serve` ("holds a record Roost cannot read"), which under systemd is a restart loop.
Now it is logged with its key, moved to the quarantine table of the same file (with the reason and the
time), and skipped; the rest starts. These tests poison the file with sqlite3 between two runs of the
real process and list the quarantine with `roost state quarantine`; and drive the broker's own restore
and start-up will publishing into a raise, in process.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Callable

from broker.codec import Will
from broker.core import Broker
from broker.hooks import ClientInfo, Decision, Hook, HookChain
from broker.session import Message, Session, SubscriptionRecord
from broker.settings import BrokerSettings
from storage.broker_state import STATE_FILE_NAME, open_broker_state
from tests.durability.process import ROOST, RoostProcess
from tests.helpers import PahoClient
from tests.session_helpers import session_properties


def _session_values(key: str, **changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "key": key, "client_id": key, "username": None, "protocol_version": 5, "is_admin": 0, "anonymous": 1,
        "mount": "", "attributes": "{}", "expiry_interval": 3600, "disconnected_at": 1.0e9, "will_topic": None,
        "will_payload": None, "will_qos": None, "will_retain": None, "will_properties": None,
    }
    values.update(changes)
    return values


def _insert(connection: sqlite3.Connection, table: str, values: dict[str, object]) -> None:
    columns = ", ".join(values)
    marks = ", ".join("?" for _ in values)
    connection.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(values.values()))


def _poison(path: str) -> None:
    """Write records Roost cannot restore straight into the state file (Roost stopped)."""
    with sqlite3.connect(path) as connection:
        _insert(connection, "sessions", _session_values("bad-json", attributes="{not json"))
        _insert(connection, "sessions", _session_values(
            "bad-will", will_topic="gone", will_payload=b"x", will_qos=1, will_retain=0,
            will_properties=b"\xff\xff\xff\xff"))
        _insert(connection, "subscriptions", {"session_key": "bad-json", "topic_filter": "x", "qos": 0,
                                              "no_local": 0, "retain_as_published": 0, "retain_handling": 0})
        _insert(connection, "subscriptions", {"session_key": "keeper", "topic_filter": "a/#/b", "qos": 1,
                                              "no_local": 0, "retain_as_published": 0, "retain_handling": 0})
        _insert(connection, "retained", {"topic": "bad/r", "payload": "text, not a blob", "qos": 0})
        _insert(connection, "messages", {"id": 999, "topic": "keep/m", "payload": b"x", "qos": 1, "retain": 0,
                                         "properties": b"\x99\x01\x02"})
        _insert(connection, "deliveries", {"id": 999, "session_key": "keeper", "message_id": 999, "qos": 1,
                                           "retain": 0, "subscription_ids": "", "packet_id": None, "released": 0})


def _quarantine(roost: RoostProcess) -> list[dict[str, object]]:
    done = subprocess.run([ROOST, "state", "quarantine", "--json", "--config", str(roost.config)],
                          capture_output=True, timeout=60, check=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_poisoned_rows_are_moved_aside_and_the_rest_starts(roost_process: Callable[[str], RoostProcess]) -> None:
    roost = roost_process("batched")
    roost.start()
    keeper = PahoClient(roost.mqtt_port, "keeper", version=5, **session_properties(5, 3600)).connect()
    keeper.subscribe("keep/#", qos=1)
    keeper.publish("keep/r", b"kept", qos=1, retain=True)
    assert keeper.expect().payload == b"kept"
    keeper.disconnect()
    roost.wait_committed()
    assert roost.terminate() == 0
    _poison(str(roost.folder / "data" / STATE_FILE_NAME))

    roost.start()  # refused before: "holds a record Roost cannot read"
    log = roost.log_path.read_text(errors="replace")
    for key in ("bad-json", "bad-will", "keeper a/#/b", "bad/r", "999"):
        assert f"{key!r}" in log, key  # each logged with its key
    entries = _quarantine(roost)
    kinds = sorted((entry["kind"], entry["key"], entry["source"]) for entry in entries)
    assert kinds == [
        ("delivery", "999", "deliveries"),
        ("message", "999", "messages"),
        ("retained", "bad/r", "retained"),
        ("session", "bad-json", "sessions"),
        ("session", "bad-json", "subscriptions"),  # a session goes with everything of it
        ("session", "bad-will", "sessions"),
        ("subscription", "keeper a/#/b", "subscriptions"),
    ], kinds
    assert all(entry["reason"] and entry["at"] for entry in entries)
    bad_json = next(e for e in entries if e["key"] == "bad-json" and e["source"] == "sessions")
    assert "JSONDecodeError" in str(bad_json["reason"]) and bad_json["row"]["attributes"] == "{not json"  # type: ignore[index]

    # The rest was restored: the keeper's session, its subscription, the retained message.
    again = PahoClient(roost.mqtt_port, "keeper", version=5, **session_properties(5, 3600)).connect()
    try:
        assert again.session_present
        publisher = PahoClient(roost.mqtt_port, "publisher", version=5).connect()
        publisher.publish("keep/live", b"still subscribed", qos=1)
        assert again.expect().payload == b"still subscribed"
        publisher.disconnect()
        fresh = PahoClient(roost.mqtt_port, "fresh", version=5).connect()
        fresh.subscribe("keep/r", qos=1)
        assert fresh.expect().payload == b"kept"
        fresh.disconnect()
    finally:
        again.disconnect()
    roost.wait_committed()
    assert roost.terminate() == 0

    # Moved, not copied: the next start finds nothing new to quarantine.
    roost.start()
    assert len(_quarantine(roost)) == len(entries)
    text = subprocess.run([ROOST, "state", "quarantine", "--config", str(roost.config)], capture_output=True,
                          text=True, timeout=60, check=True).stdout
    assert "bad-json" in text and "JSONDecodeError" in text
    roost.kill()


class _RaisingHook(Hook):
    """Lets everyone in, and raises when asked about one client's publishes (its will, at start)."""

    def authorize_publish(self, client: ClientInfo, topic: str) -> Decision:
        if client.client_id == "doomed":
            raise RuntimeError("this will cannot be published")
        return Decision.ALLOW

    def authorize_subscribe(self, client: ClientInfo, topic_filter: str) -> Decision:
        return Decision.ALLOW


async def test_a_record_that_raises_in_restore_or_at_its_will_is_moved_aside(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Broker.restore and resume_timers leave out (and report) what raises; the store moves it aside."""
    state = await open_broker_state(tmp_path, "batched")
    assert state is not None
    try:
        broker = Broker(BrokerSettings(), HookChain([_RaisingHook()]), state)
        for key, will in (("doomed", Will("last/words", b"bye", 0, False)), ("fine", None)):
            session = Session(key, expiry_interval=3600, client=ClientInfo(key, None, 5, anonymous=True),
                              disconnected_at=time.time() - 5, pending_will=will, durable=True)
            session.subscriptions["t"] = SubscriptionRecord("t", 1)
            state.session_changed(session)
            state.subscription_added(session, session.subscriptions["t"])
        state.retained_set(Message("r", b"kept", 0, True))
        await state.flush()

        sessions, retained = await state.load()
        seen: list[tuple[str, str]] = []

        def broken(kind: str, key: str, exc: Exception) -> None:
            seen.append((kind, key))
            state.broken(kind, key, exc)

        broker.restore(sessions, retained, broken)
        broker.resume_timers(broken)  # the doomed session's will is due: it raises
        await state.move_broken()
        assert seen == [("session", "doomed")]
        assert set(broker.sessions) == {"fine"}
        assert [message.payload for _, message in broker.retained.match("#")] == [b"kept"]
        rows = await state.db.fetch_all("SELECT kind, key, source, reason FROM quarantine ORDER BY id")
        assert [(r["kind"], r["key"], r["source"]) for r in rows] == [
            ("session", "doomed", "sessions"), ("session", "doomed", "subscriptions")]
        assert "this will cannot be published" in rows[0]["reason"]
        await state.flush()
        left = await state.db.fetch_all("SELECT key FROM sessions")
        assert [row["key"] for row in left] == ["fine"]
    finally:
        await state.close()
