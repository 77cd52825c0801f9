"""The broker's state on disk: durable sessions with their subscriptions and QoS 1/2 messages, and retained
messages, in `data_dir/broker-state.db`.

`BrokerStateStore` is the broker's `Persistence` (broker/persistence.py). The broker reports each change
synchronously, naming the changed object; the store keeps a dictionary of what changed since its last
commit and writes it all in one transaction (a group commit):

- `durability = "batched"` (the default): a commit at the latest 100 ms after the first change, or as
  soon as 1,000 changes wait. Acknowledgements do not wait, so a power cut loses at most the last window.
- `durability = "strict"`: the same batching, but an acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP)
  whose packet changed recorded state waits for the commit that holds the change, and a commit starts as
  soon as one is waited for. Commits that overlap wait for one another, so under load one commit carries
  many messages.

Either way each commit is durable when it returns (WAL with `synchronous = FULL`), and the write rate is
what SD cards need: a message that is queued, delivered and acknowledged within one window never reaches
the disk at all. Messages are stored once however many sessions hold them (`messages`, counted by
reference in memory), deliveries by reference to them.

A separate file from roost.db: the broker's state changes with the traffic, the control plane's with the
users, and each has its own connection (thread), so neither waits behind the other's commits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.errors import RoostError
from broker.persistence import Persistence
from broker.session import Delivery, Message, Session, SubscriptionRecord
from storage.database import Database, open_database
from storage.errors import StorageError
from storage.migrations import Migration
from storage.state_quarantine import QUARANTINE_MIGRATION, Doomed, move_aside, reason_of
from storage.state_rows import (
    delivery_from_row,
    fetch_all,
    message_from_row,
    message_row,
    properties_blob,
    retained_from_row,
    session_from_row,
    session_row,
    subscription_from_row,
)

__all__ = ["DURABILITY_MODES", "STATE_FILE_NAME", "STATE_MIGRATIONS", "BrokerStateStore", "open_broker_state"]

log = logging.getLogger("roost.storage.state")

STATE_FILE_NAME = "broker-state.db"
DURABILITY_MODES = ("batched", "strict", "off")

_SCHEMA_1 = """
CREATE TABLE sessions (
    key              TEXT    PRIMARY KEY,
    client_id        TEXT    NOT NULL,
    username         TEXT,
    protocol_version INTEGER NOT NULL,
    is_admin         INTEGER NOT NULL,
    anonymous        INTEGER NOT NULL,
    mount            TEXT    NOT NULL,
    attributes       TEXT    NOT NULL,
    expiry_interval  INTEGER NOT NULL,
    disconnected_at  REAL,
    will_topic       TEXT,
    will_payload     BLOB,
    will_qos         INTEGER,
    will_retain      INTEGER,
    will_properties  BLOB
) WITHOUT ROWID;

CREATE TABLE subscriptions (
    session_key         TEXT    NOT NULL,
    topic_filter        TEXT    NOT NULL,
    qos                 INTEGER NOT NULL,
    no_local            INTEGER NOT NULL,
    retain_as_published INTEGER NOT NULL,
    retain_handling     INTEGER NOT NULL,
    subscription_id     INTEGER,
    PRIMARY KEY (session_key, topic_filter)
) WITHOUT ROWID;

CREATE TABLE messages (
    id         INTEGER PRIMARY KEY,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL,
    retain     INTEGER NOT NULL,
    properties BLOB,
    expires_at REAL,
    sender     TEXT,
    origin     TEXT
);

CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY,
    session_key      TEXT    NOT NULL,
    message_id       INTEGER NOT NULL,
    qos              INTEGER NOT NULL,
    retain           INTEGER NOT NULL,
    subscription_ids TEXT    NOT NULL,
    packet_id        INTEGER,
    released         INTEGER NOT NULL
);

CREATE TABLE awaiting_release (
    session_key TEXT    NOT NULL,
    packet_id   INTEGER NOT NULL,
    PRIMARY KEY (session_key, packet_id)
) WITHOUT ROWID;

CREATE TABLE retained (
    topic      TEXT    PRIMARY KEY,
    payload    BLOB    NOT NULL,
    qos        INTEGER NOT NULL,
    properties BLOB,
    expires_at REAL,
    origin     TEXT
) WITHOUT ROWID;
"""

STATE_MIGRATIONS = (
    Migration(1, "durable sessions, their messages, retained messages", _SCHEMA_1),
    QUARANTINE_MIGRATION,
)
# What reading a row back may raise: the record is then moved aside (ValueError covers bad JSON).
_UNREADABLE = (RoostError, ValueError, KeyError, TypeError, IndexError, OverflowError)

# A commit at the latest this long after the first change it carries, or once this many changes wait.
COMMIT_INTERVAL = 0.1
COMMIT_BATCH = 1_000
# After a failed commit (disk full, I/O error), the same batch is tried again after this pause.
RETRY_PAUSE = 1.0


@dataclass(slots=True)
class _Batch:
    """One commit's rows, serialised when it was taken."""

    purged: list[tuple[str]] = field(default_factory=list)
    sessions: list[tuple[Any, ...]] = field(default_factory=list)
    sessions_gone: list[tuple[str]] = field(default_factory=list)
    subscriptions: list[tuple[Any, ...]] = field(default_factory=list)
    subscriptions_gone: list[tuple[str, str]] = field(default_factory=list)
    releases: list[tuple[str, int]] = field(default_factory=list)
    releases_gone: list[tuple[str, int]] = field(default_factory=list)
    messages: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries_gone: list[tuple[int]] = field(default_factory=list)
    messages_gone: list[tuple[int]] = field(default_factory=list)
    retained: list[tuple[Any, ...]] = field(default_factory=list)
    retained_gone: list[tuple[str]] = field(default_factory=list)

    def rows(self) -> int:
        return sum(len(getattr(self, name)) for name in self.__slots__)  # type: ignore[attr-defined]


# What a batch's lists do, in this order: (list, statement head, how one row is written). Rows go many to a
# statement ("VALUES (...), (...)" / "IN (...)"), not one `executemany` step per row: each step hands
# Python's GIL to the database thread and back, and on a busy event loop every handoff waits up to the
# interpreter's switch interval, which made a commit of a few thousand rows take most of a second.
_STATEMENTS = (
    ("purged", "DELETE FROM subscriptions WHERE session_key IN", "?"),
    ("purged", "DELETE FROM awaiting_release WHERE session_key IN", "?"),
    ("sessions_gone", "DELETE FROM sessions WHERE key IN", "?"),
    ("sessions", "INSERT OR REPLACE INTO sessions VALUES", "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
    ("subscriptions_gone", "DELETE FROM subscriptions WHERE (session_key, topic_filter) IN (VALUES", "(?, ?)"),
    ("subscriptions", "INSERT OR REPLACE INTO subscriptions VALUES", "(?, ?, ?, ?, ?, ?, ?)"),
    ("releases_gone", "DELETE FROM awaiting_release WHERE (session_key, packet_id) IN (VALUES", "(?, ?)"),
    ("releases", "INSERT OR IGNORE INTO awaiting_release VALUES", "(?, ?)"),
    ("messages", "INSERT OR REPLACE INTO messages VALUES", "(?, ?, ?, ?, ?, ?, ?, ?, ?)"),
    ("deliveries_gone", "DELETE FROM deliveries WHERE id IN", "?"),
    ("deliveries", "INSERT OR REPLACE INTO deliveries VALUES", "(?, ?, ?, ?, ?, ?, ?, ?)"),
    ("messages_gone", "DELETE FROM messages WHERE id IN", "?"),
    ("retained_gone", "DELETE FROM retained WHERE topic IN", "?"),
    ("retained", "INSERT OR REPLACE INTO retained VALUES", "(?, ?, ?, ?, ?, ?)"),
)
# Bound parameters per statement: well under SQLITE_MAX_VARIABLE_NUMBER (32,766 since SQLite 3.32).
_MAX_PARAMETERS = 16_000


def _statements(batch: _Batch) -> Iterator[tuple[str, list[Any]]]:
    """The SQL of a batch: a few statements with many rows each, in the order of _STATEMENTS."""
    for name, head, one in _STATEMENTS:
        rows: list[tuple[Any, ...]] = getattr(batch, name)
        if not rows:
            continue
        per_row = one.count("?")
        step = max(1, _MAX_PARAMETERS // per_row)
        wrapped = head.endswith("IN")  # "IN (?, ?)" needs its own parentheses; "IN (VALUES ..." closes one
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            values = ", ".join([one] * len(chunk))
            if head.endswith("VALUES") and not head.endswith("(VALUES"):
                sql = f"{head} {values}"
            elif wrapped:
                sql = f"{head} ({values})"
            else:
                sql = f"{head} {values})"
            yield sql, [value for row in chunk for value in row]


class BrokerStateStore(Persistence):
    """The broker's `Persistence` on SQLite, with group commits (see the module docstring)."""

    enabled = True

    def __init__(
        self,
        db: Database,
        *,
        strict: bool = False,
        interval: float = COMMIT_INTERVAL,
        batch_size: int = COMMIT_BATCH,
    ) -> None:
        self.db = db
        self.strict = strict
        self.interval = interval
        self.batch_size = batch_size
        # What the commits did, for metrics and the benchmark.
        self.commits = 0
        self.rows_written = 0
        self.commit_seconds = 0.0
        self.failures = 0
        # Changes since the last batch was taken; each dict holds the latest state per row.
        self._changes = 0
        self._purged: set[str] = set()
        self._sessions: dict[str, Session | None] = {}
        self._subscriptions: dict[tuple[str, str], SubscriptionRecord | None] = {}
        self._releases: dict[tuple[str, int], bool] = {}
        self._fresh_releases: set[tuple[str, int]] = set()  # inserted since the last batch (not on disk)
        self._deliveries: dict[int, tuple[str, Delivery] | None] = {}
        self._fresh_deliveries: set[int] = set()
        self._messages: dict[int, Message] = {}  # messages to insert (not on disk yet)
        self._messages_gone: set[int] = set()
        self._retained: dict[str, Message | None] = {}
        # Live deliveries per stored message: the row goes when the last one does.
        self._references: dict[int, int] = {}
        self._next_delivery = 1
        self._next_message = 1
        # Acknowledgements waiting for the next commit, and for the one being written.
        self._waiting: list[Callable[[], None]] = []
        self._committing: list[Callable[[], None]] | None = None
        self._retry: _Batch | None = None
        self._window_opened = 0.0  # monotonic time of the first change not yet taken into a batch
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False  # close() is writing the last batch: a failure is raised, not retried
        self._closed = False
        self._broken: list[Doomed] = []  # records the broker could not restore (see `broken`)

    @property  # type: ignore[override]
    def pending_changes(self) -> int:
        """Changes reported and not yet committed (those of a commit being written included)."""
        return self._changes + (self._retry.rows() if self._retry is not None else 0)

    # -- what the broker reports (synchronous, from the event loop) ---------------------------------------------

    def session_changed(self, session: Session) -> None:
        self._sessions[session.key] = session
        self._changed()

    def session_removed(self, session: Session) -> None:
        key = session.key
        self._sessions[key] = None
        self._purged.add(key)
        # Changes to its subscriptions and releases still waiting are overtaken by the purge.
        for pending in [k for k in self._subscriptions if k[0] == key]:
            del self._subscriptions[pending]
        for pending in [k for k in self._releases if k[0] == key]:
            del self._releases[pending]
            self._fresh_releases.discard(pending)
        for delivery in (*session.inflight.values(), *session.queue):
            self.delivery_removed(session, delivery)
        self._changed()

    def subscription_added(self, session: Session, record: SubscriptionRecord) -> None:
        self._subscriptions[(session.key, record.topic_filter)] = record
        self._changed()

    def subscription_removed(self, session: Session, topic_filter: str) -> None:
        self._subscriptions[(session.key, topic_filter)] = None
        self._changed()

    def delivery_changed(self, session: Session, delivery: Delivery) -> None:
        store_id = delivery.store_id
        if not store_id:
            store_id = delivery.store_id = self._next_delivery
            self._next_delivery += 1
            self._fresh_deliveries.add(store_id)
            self._hold(delivery.message)
        self._deliveries[store_id] = (session.key, delivery)
        self._changed()

    def delivery_removed(self, session: Session, delivery: Delivery) -> None:
        store_id = delivery.store_id
        if not store_id:
            return
        delivery.store_id = 0
        if store_id in self._fresh_deliveries:
            self._fresh_deliveries.discard(store_id)
            del self._deliveries[store_id]
        else:
            self._deliveries[store_id] = None
        self._release(delivery.message)
        self._changed()

    def release_awaited(self, session: Session, packet_id: int) -> None:
        key = (session.key, packet_id)
        if self._releases.get(key) is None:  # no delete pending: the row is not on disk
            self._fresh_releases.add(key)
        self._releases[key] = True
        self._changed()

    def release_done(self, session: Session, packet_id: int) -> None:
        key = (session.key, packet_id)
        if key in self._fresh_releases:
            self._fresh_releases.discard(key)
            del self._releases[key]
        else:
            self._releases[key] = False
        self._changed()

    def retained_set(self, message: Message) -> None:
        self._retained[message.topic] = message
        self._changed()

    def retained_removed(self, topic: str) -> None:
        self._retained[topic] = None
        self._changed()

    def when_durable(self, callback: Callable[[], None]) -> bool:
        if not self.strict or self._closed:
            return False
        if self._changes:
            self._waiting.append(callback)
            self._start_commit()  # runs on the loop's next turn: everything this turn reports rides along
            return True
        if self._committing is not None:
            self._committing.append(callback)
            return True
        return False

    def _hold(self, message: Message) -> None:
        """One more delivery holds `message`: store it with the first."""
        message_id = message.store_id
        count = self._references.get(message_id) if message_id else None
        if count is None:
            if not message_id:
                message_id = message.store_id = self._next_message
                self._next_message += 1
            self._messages_gone.discard(message_id)
            self._messages[message_id] = message
            self._references[message_id] = 1
        else:
            self._references[message_id] = count + 1

    def _release(self, message: Message) -> None:
        message_id = message.store_id
        count = self._references[message_id] - 1
        if count:
            self._references[message_id] = count
            return
        del self._references[message_id]
        if self._messages.pop(message_id, None) is None:
            self._messages_gone.add(message_id)

    def _changed(self) -> None:
        if not self._changes:
            self._window_opened = time.monotonic()  # the window's deadline counts from its first change
        self._changes += 1
        if self._task is not None or self._closed:
            return  # the running commit loop looks again when it is done
        if self._changes >= self.batch_size:
            self._start_commit()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._start_commit)

    # -- committing ---------------------------------------------------------------------------------------------

    def _start_commit(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._commit_loop())

    async def _commit_loop(self, until_clean: bool = False) -> None:
        """The one task that commits: at most one runs at a time, so no batch is written twice."""
        try:
            await self._commit_pending(until_clean)
        finally:
            self._task = None
            if self._changes and not self._closed:
                # Changes that came while it wrote are due `interval` after the first of them, not after now.
                due = max(0.0, self._window_opened + self.interval - time.monotonic())
                self._timer = asyncio.get_running_loop().call_later(due, self._start_commit)

    async def _commit_pending(self, until_clean: bool) -> None:
        """Commit batches while acknowledgements wait or a full batch is ready (or, with `until_clean`,
        until nothing is pending); a failed batch is retried first, after a pause."""
        while True:
            if self._retry is None:
                if not self._changes:
                    return
                self._retry = self._take()
                self._committing, self._waiting = self._waiting, []
            batch = self._retry
            started = time.perf_counter()
            try:
                written = await self._write(batch)
            except (StorageError, OSError) as exc:
                self.failures += 1
                if self._stopping:
                    raise
                log.error("writing broker state failed (%s); retrying in %.0f s", exc, RETRY_PAUSE)
                await asyncio.sleep(RETRY_PAUSE)
                continue
            self._retry = None
            if written:
                self.commits += 1
                self.rows_written += batch.rows()
                self.commit_seconds += time.perf_counter() - started
            waiting, self._committing = self._committing or [], None
            for callback in waiting:
                try:
                    callback()
                except Exception:
                    log.exception("acknowledgement after commit failed")
            if not (
                until_clean
                or self._waiting
                or self._changes >= self.batch_size
                or (self._changes and time.monotonic() - self._window_opened >= self.interval)
            ):
                return

    def _take(self) -> _Batch:
        """Serialise every pending change into rows, and start a new window."""
        batch = _Batch()
        batch.purged = [(key,) for key in self._purged]
        for key, session in self._sessions.items():
            if session is None:
                batch.sessions_gone.append((key,))
            else:
                batch.sessions.append(session_row(session))
        for (key, topic_filter), record in self._subscriptions.items():
            if record is None:
                batch.subscriptions_gone.append((key, topic_filter))
            else:
                batch.subscriptions.append(
                    (key, topic_filter, record.qos, record.no_local, record.retain_as_published,
                     record.retain_handling, record.subscription_id)
                )
        for pair, awaited in self._releases.items():
            (batch.releases if awaited else batch.releases_gone).append(pair)
        batch.messages = [message_row(message_id, message) for message_id, message in self._messages.items()]
        for store_id, entry in self._deliveries.items():
            if entry is None:
                batch.deliveries_gone.append((store_id,))
            else:
                key, delivery = entry
                batch.deliveries.append(
                    (store_id, key, delivery.message.store_id, delivery.qos, delivery.retain,
                     ",".join(map(str, delivery.subscription_ids)), delivery.packet_id, delivery.released)
                )
        batch.messages_gone = [(message_id,) for message_id in self._messages_gone]
        for topic, message in self._retained.items():
            if message is None:
                batch.retained_gone.append((topic,))
            else:
                batch.retained.append(
                    (topic, message.payload, message.qos, properties_blob(message.properties),
                     message.expires_at, message.origin)
                )
        self._changes = 0
        self._purged = set()
        self._sessions = {}
        self._subscriptions = {}
        self._releases = {}
        self._fresh_releases = set()
        self._deliveries = {}
        self._fresh_deliveries = set()
        self._messages = {}
        self._messages_gone = set()
        self._retained = {}
        return batch

    async def _write(self, batch: _Batch) -> bool:
        """Write one batch in one transaction; False when it was empty (changes that cancelled out): no
        transaction, no disk write."""
        statements = list(_statements(batch))
        if not statements:
            return False
        async with self.db.transaction() as connection:
            for sql, parameters in statements:
                await connection.execute(sql, parameters)
        return True

    async def flush(self) -> None:
        """Commit everything reported so far (shutdown; tests), through the commit task like any commit."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while True:
            task = self._task
            if task is None:
                if not self._changes and self._retry is None:
                    return
                task = self._task = asyncio.get_running_loop().create_task(self._commit_loop(until_clean=True))
            try:
                await asyncio.shield(task)
            except Exception:
                if self._stopping:
                    raise  # close(): the last batch could not be written; say so rather than retry forever

    async def close(self) -> None:
        """Commit what is pending, then close the file. Safe to call twice."""
        if self._closed:
            return
        self._stopping = True
        try:
            await self.flush()
        finally:
            self._closed = True
            await self.db.close()

    # -- loading ------------------------------------------------------------------------------------------------

    async def load(self, now: float | None = None) -> tuple[list[Session], list[Message]]:
        """Read back the sessions (with their subscriptions, deliveries and awaited releases) and the retained
        messages. A session whose client was connected when the process stopped is taken as disconnected
        now, its will pending (see `Broker.restore`). Rows that nothing refers to any more are removed.

        A record that cannot be read back (storage/state_rows.py says why) is moved to the quarantine
        table, logged with its key, and skipped (storage/state_quarantine.py): the rest is restored."""
        now = time.time() if now is None else now
        try:
            async with self.db.read() as connection:
                sessions_rows = await fetch_all(connection, "SELECT * FROM sessions")
                subscription_rows = await fetch_all(connection, "SELECT * FROM subscriptions")
                release_rows = await fetch_all(connection, "SELECT * FROM awaiting_release")
                message_rows = await fetch_all(connection, "SELECT * FROM messages")
                delivery_rows = await fetch_all(connection, "SELECT * FROM deliveries ORDER BY id")
                retained_rows = await fetch_all(connection, "SELECT * FROM retained")
        except StorageError as exc:
            self._take()  # nothing is written to a file that is refused
            raise StorageError(
                f"{self.db.path} cannot be read ({exc}); it is damaged: restore it from a backup or move it "
                "aside (Roost then starts without the saved sessions and retained messages)"
            ) from exc
        doomed: list[Doomed] = []
        sessions: dict[str, Session] = {}
        gone: set[str] = set()  # keys of sessions moved aside: their other rows go with them
        for row in sessions_rows:
            try:
                session = session_from_row(row, now)
            except _UNREADABLE as exc:
                doomed.append(Doomed("session", (row["key"],), reason_of(exc)))
                gone.add(row["key"])
                continue
            sessions[session.key] = session
            if row["disconnected_at"] is None:
                self.session_changed(session)  # its clock now runs from this start
        for row in subscription_rows:
            if row["session_key"] in gone:
                continue
            session = sessions.get(row["session_key"])
            if session is None:
                self._subscriptions[(row["session_key"], row["topic_filter"])] = None
                self._changed()
                continue
            try:
                record = subscription_from_row(row)
            except _UNREADABLE as exc:
                doomed.append(Doomed("subscription", (row["session_key"], row["topic_filter"]), reason_of(exc)))
                continue
            session.subscriptions[record.topic_filter] = record
        for row in release_rows:
            session = sessions.get(row["session_key"])
            if session is not None:
                session.await_release(row["packet_id"])
        messages: dict[int, Message] = {}
        for row in message_rows:
            try:
                messages[row["id"]] = message_from_row(row)
            except _UNREADABLE as exc:
                doomed.append(Doomed("message", (row["id"],), reason_of(exc)))
        bad_messages = {item.key[0] for item in doomed if item.kind == "message"}
        for row in delivery_rows:
            if row["session_key"] in gone:
                continue
            session = sessions.get(row["session_key"])
            message = messages.get(row["message_id"])
            if row["message_id"] in bad_messages and session is not None:
                doomed.append(Doomed("delivery", (row["id"],), f"its message {row['message_id']} was quarantined"))
                continue
            if session is None or message is None:
                self._deliveries[row["id"]] = None
                self._changed()
                continue
            try:
                delivery = delivery_from_row(row, message)
            except _UNREADABLE as exc:
                doomed.append(Doomed("delivery", (row["id"],), reason_of(exc)))
                continue
            self._references[message.store_id] = self._references.get(message.store_id, 0) + 1
            if delivery.packet_id is None:
                session.enqueue(delivery)
            else:
                session.inflight[delivery.packet_id] = delivery
        for message_id in messages:
            if message_id not in self._references:
                self._messages_gone.add(message_id)
                self._changed()
        for session in sessions.values():
            if session.inflight:
                session.next_packet_id = max(session.inflight) % 65_535 + 1
        self._next_message = max((row["id"] for row in message_rows), default=0) + 1
        self._next_delivery = max((row["id"] for row in delivery_rows), default=0) + 1
        retained: list[Message] = []
        for row in retained_rows:
            try:
                retained.append(retained_from_row(row))
            except _UNREADABLE as exc:
                doomed.append(Doomed("retained", (row["topic"],), reason_of(exc)))
        await move_aside(self.db, doomed)
        return list(sessions.values()), retained

    def broken(self, kind: str, key: str, exc: BaseException) -> None:
        """The broker could not restore a record this store loaded (`Broker.restore`, `resume_timers`):
        it is moved aside at the next `move_broken()`. What this store still meant to write of a session
        is forgotten, so that the session does not come back."""
        if kind == "session":
            self._sessions.pop(key, None)
            for table in (self._subscriptions, self._releases):
                for row_key in [k for k in table if k[0] == key]:
                    del table[row_key]  # type: ignore[attr-defined]
        self._broken.append(Doomed(kind, (key,), reason_of(exc)))

    async def move_broken(self) -> None:
        """Move aside what `broken()` was told of (the server awaits this before opening the listeners)."""
        doomed, self._broken = self._broken, []
        await move_aside(self.db, doomed)


async def open_broker_state(data_dir: Path, durability: str) -> BrokerStateStore | None:
    """Open `data_dir/broker-state.db` for the given durability mode; None when it is "off".

    Refuses (StorageError, the file untouched) a file that is not a SQLite database, is damaged, or has a
    schema newer than this Roost knows.
    """
    if durability not in DURABILITY_MODES:
        raise ValueError(f"durability must be one of {DURABILITY_MODES}, got {durability!r}")
    if durability == "off":
        return None
    path = data_dir / STATE_FILE_NAME
    # FULL: every commit is on disk when it returns, the promise both modes make.
    db = await open_database(path, migrations=STATE_MIGRATIONS, synchronous="FULL")
    try:
        problems = [str(row[0]) for row in await db.fetch_all("PRAGMA quick_check")]
    except StorageError as exc:
        problems = [str(exc)]
    if problems != ["ok"]:
        await db.close()
        raise StorageError(
            f"{path} is damaged ({'; '.join(problems[:3])}): restore it from a backup or move it aside "
            "(Roost then starts without the saved sessions and retained messages)"
        )
    return BrokerStateStore(db, strict=durability == "strict")
