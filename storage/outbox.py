"""A bridge's durable outbox: the QoS 1/2 messages it must get an upstream to acknowledge, in
`data_dir/bridge-<name>.db`.

Why here: storage/ owns Roost's SQLite files. The outbox is a plain store of records (it imports nothing of
the bridge's); the bridge (bridge/bridge.py) decides what goes in and what comes out, and an MQTT link and
a NATS link use it alike.

What it promises, whatever `[storage] durability` says (the outbox's whole job is to survive a power cut):

- `add()` takes a message synchronously; `when_committed(callback)` runs the callback once everything
  added so far is on disk (WAL, `synchronous = FULL`: a commit returns when its fsync has). The bridge
  holds the local publisher's PUBACK/PUBREC on it, so an acknowledged message is on disk.
- Writes are batched for SD cards: one transaction carries every message added, acknowledged, released
  or dropped since the last one; a commit waits `commit_interval` (5 ms) for more to ride along, and
  while one commit is written the next batch gathers, so under load one fsync carries hundreds.
- A message leaves only when `acked()` (the upstream's PUBACK or PUBCOMP), or when a cap drops it.
- Memory is bounded however long the backlog: at most `read_ahead` committed messages are held in
  memory to be sent; the rest stay on disk and are read back in order (`_fill`).
- Caps (messages, bytes of topic and payload, age) are enforced at each commit by dropping the oldest
  messages that are not in flight (policy drop_oldest); `full` tells a caller that refuses instead.
- `sent_mark`: every message with a sequence number at or below it may have been sent (it is committed
  ahead of the sender, 256 at a time), so after a restart those go again with DUP set and are counted
  as resent, and the others go as new.
- `inbound`: packet identifiers of QoS 2 messages that came down and whose PUBREL has not come yet
  [MQTT-4.3.3-9], so a PUBLISH resent across a restart of Roost is not published locally twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from broker.codec import EMPTY_PROPERTIES, Properties
from broker.codec.properties import decode_properties, encode_properties
from broker.codec.reason_codes import PacketType
from storage.database import Database, open_database
from storage.errors import StorageError
from storage.migrations import Migration

__all__ = ["Outbox", "OutboxEntry", "open_outbox", "outbox_path"]

log = logging.getLogger("roost.storage.outbox")

_SCHEMA_1 = """
CREATE TABLE messages (
    seq         INTEGER PRIMARY KEY,
    topic       TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    qos         INTEGER NOT NULL,
    retain      INTEGER NOT NULL,
    properties  BLOB,
    expires_at  REAL,
    enqueued_at REAL    NOT NULL,
    released    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE inbound (packet_id INTEGER PRIMARY KEY);
"""
OUTBOX_MIGRATIONS = (Migration(1, "bridge outbox", _SCHEMA_1),)
_RESERVE_AHEAD = 256  # how far sent_mark runs ahead of what is committed (see the module docstring)
_RETRY_PAUSE = 1.0
_SWEEP_EVERY = 1.0  # seconds between age checks while nothing else wakes the commit loop


@dataclass(slots=True, eq=False)
class OutboxEntry:
    """One message to forward. `topic` is the local topic as the bridged namespace names it (no mount
    point, no remote prefix). `released`: QoS 2, PUBREC came (on disk). `dup`: it may have been sent before
    (in memory: set when it is taken back after a lost link, or loaded at or below `sent_mark`)."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties = EMPTY_PROPERTIES
    expires_at: float | None = None
    enqueued_at: float = 0.0
    released: bool = False
    dup: bool = False

    @property
    def size(self) -> int:
        return len(self.topic) + len(self.payload)


def outbox_path(data_dir: Path, name: str) -> Path:
    return data_dir / f"bridge-{name}.db"


async def open_outbox(data_dir: Path, name: str, **limits: float) -> Outbox:
    """Open (or create) the outbox of the bridge `name` and read back what it holds. A file that is not
    SQLite, is damaged, or is newer than this Roost is refused (StorageError), never rewritten."""
    path = outbox_path(data_dir, name)
    db = await open_database(path, migrations=OUTBOX_MIGRATIONS, synchronous="FULL")
    try:
        problems = [str(row[0]) for row in await db.fetch_all("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise StorageError(f"{path} is damaged ({'; '.join(problems[:3])}): restore it or move it aside")
        outbox = Outbox(db, **limits)  # type: ignore[arg-type]
        await outbox.load()
    except BaseException:
        await db.close()
        raise
    return outbox


class Outbox:
    """The outbox of one bridge. Every method but `load`, `run` and `close` is synchronous: the bridge
    calls them from the router and the link, and the commit task (`run`) writes behind them."""

    def __init__(
        self,
        db: Database,
        *,
        max_messages: int = 1_000_000,
        max_bytes: int = 512 * 1024 * 1024,
        max_age: float = 0.0,
        commit_interval: float = 0.005,
        read_ahead: int = 1_000,
    ) -> None:
        self.db = db
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.commit_interval = commit_interval
        self.read_ahead = read_ahead
        # What a user sees (REST, metrics): messages and bytes held (on disk or about to be), and counters.
        self.count = 0
        self.bytes = 0
        self.dropped = 0  # by a cap (drop_oldest), by age, or expired [MQTT-3.3.2-5]
        self.commits = 0
        self.failures = 0
        self.sent_mark = 0
        self.on_ready: Callable[[], None] = lambda: None  # something new can be taken, or sent_mark moved
        self._next_seq = 1
        self._pending: list[OutboxEntry] = []
        # Callbacks waiting for a commit, tagged with the change count they need written (see _commit).
        self._waiters: deque[tuple[int, Callable[[], None]]] = deque()
        self._generation = 0
        self._written = 0  # the change count the last commit wrote up to
        self._deleted: list[int] = []
        self._released: list[int] = []
        self._inbound: set[int] = set()
        self._inbound_changes: dict[int, bool] = {}
        self._mark_wanted = 0
        self._ready: deque[OutboxEntry] = deque()
        self._out: dict[int, OutboxEntry] = {}  # taken by the sender, not acknowledged yet
        self._loaded_upto = 0  # every committed seq up to here is in memory (ready or out) or gone
        self._committed_upto = 0
        self._tail_oldest: float | None = None  # enqueued_at of the first message left on disk only
        self._wake = asyncio.Event()
        self._closing = False

    # -- what the bridge calls (synchronous) -------------------------------------------------------------------

    @property
    def full(self) -> bool:
        return self.count >= self.max_messages or self.bytes >= self.max_bytes

    @property
    def in_flight(self) -> int:
        return len(self._out)

    def oldest_enqueued(self) -> float | None:
        """When the oldest message still held was added (None when empty)."""
        candidates = [e.enqueued_at for e in self._out.values()]
        if self._ready:
            candidates.append(self._ready[0].enqueued_at)
        if self._tail_oldest is not None:
            candidates.append(self._tail_oldest)
        if self._pending:
            candidates.append(self._pending[0].enqueued_at)
        return min(candidates) if candidates else None

    def add(self, topic: str, payload: bytes, qos: int, retain: bool, properties: Properties = EMPTY_PROPERTIES,
            expires_at: float | None = None) -> OutboxEntry:
        entry = OutboxEntry(self._next_seq, topic, payload, qos, retain, properties, expires_at, time.time())
        self._next_seq += 1
        self._pending.append(entry)
        self.count += 1
        self.bytes += entry.size
        self._changed()
        return entry

    def _changed(self) -> None:
        self._generation += 1
        self._wake.set()

    def _wait(self, callback: Callable[[], None]) -> None:
        self._waiters.append((self._generation, callback))

    def when_committed(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything added so far is on disk."""
        if self._generation == self._written:
            callback()
            return
        self._wait(callback)

    def take(self, now: float | None = None) -> OutboxEntry | None:
        """The next message to send, in order, or None. Expired ones are dropped on the way [MQTT-3.3.2-5]."""
        ready = self._ready
        while ready:
            if ready[0].seq > self.sent_mark:
                # Not covered by the committed sent_mark yet: ask for a commit moving it (on_ready follows).
                self._mark_wanted = max(self._mark_wanted, ready[0].seq + _RESERVE_AHEAD)
                self._changed()
                return None
            entry = ready.popleft()
            if entry.expires_at is not None and (now or time.time()) >= entry.expires_at:
                self._forget(entry)
                self.dropped += 1
                continue
            self._out[entry.seq] = entry
            if len(ready) < self.read_ahead // 2 and self._committed_upto > self._loaded_upto:
                self._wake.set()  # read more back from disk
            return entry
        if self._committed_upto > self._loaded_upto:
            self._wake.set()
        return None

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest message added (0: none yet)."""
        return self._next_seq - 1

    def next_seq(self) -> int | None:
        """The sequence number `take()` would look at next, if any is committed and not taken."""
        if self._ready:
            return self._ready[0].seq
        return self._loaded_upto + 1 if self._committed_upto > self._loaded_upto else None

    @property
    def backlog_on_disk(self) -> bool:
        """Whether messages wait on disk that are not in memory yet (the sender is draining a backlog)."""
        return self._committed_upto > self._loaded_upto

    def acked(self, entry: OutboxEntry) -> None:
        """The upstream acknowledged `entry` (PUBACK, PUBCOMP): it leaves with the next commit."""
        if self._out.pop(entry.seq, None) is None:
            return
        self._forget(entry)

    def release(self, entry: OutboxEntry, callback: Callable[[], None]) -> None:
        """QoS 2: PUBREC came. `callback` (send PUBREL) runs once that is on disk, so that after a restart
        PUBREL is resent and not the PUBLISH, which the upstream would take as a new message. Until then
        `entry.released` stays False: a resend on a new link meanwhile is the PUBLISH again, with DUP."""
        if entry.released:
            callback()
            return
        self._released.append(entry.seq)
        self._changed()

        def written() -> None:
            entry.released = True
            callback()

        self._wait(written)

    def put_back(self) -> list[OutboxEntry]:
        """The link was lost: what was in flight goes back to the front, in order, to be resent with DUP
        [MQTT-4.4.0-1]. Returns those entries."""
        back = sorted(self._out.values(), key=lambda e: e.seq)
        self._out.clear()
        for entry in back:
            entry.dup = True
        self._ready.extendleft(reversed(back))
        return back

    def inbound_has(self, packet_id: int) -> bool:
        return packet_id in self._inbound

    def inbound_add(self, packet_id: int, callback: Callable[[], None]) -> None:
        """An incoming QoS 2 message was published locally; `callback` (send PUBREC) once that is on disk."""
        self._inbound.add(packet_id)
        self._inbound_changes[packet_id] = True
        self._changed()
        self._wait(callback)

    def inbound_done(self, packet_id: int) -> None:
        if packet_id in self._inbound:
            self._inbound.discard(packet_id)
            self._inbound_changes[packet_id] = False
            self._changed()

    def _forget(self, entry: OutboxEntry) -> None:
        self._deleted.append(entry.seq)
        self.count -= 1
        self.bytes -= entry.size
        self._changed()

    # -- the commit task ----------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read back the counts, the marks and the first messages (at start, before `run`)."""
        row = await self.db.fetch_one(
            "SELECT count(*), coalesce(sum(length(topic) + length(payload)), 0), coalesce(min(seq), 1), "
            "coalesce(max(seq), 0) FROM messages"
        )
        assert row is not None
        self.count, self.bytes = int(row[0]), int(row[1])
        self._loaded_upto = int(row[2]) - 1
        self._committed_upto = int(row[3])
        mark = await self.db.fetch_value("SELECT value FROM meta WHERE key = 'sent_mark'")
        self.sent_mark = int(mark or 0)
        self._next_seq = max(self._committed_upto, self.sent_mark) + 1
        self._inbound = {int(r[0]) for r in await self.db.fetch_all("SELECT packet_id FROM inbound")}
        await self._fill()

    async def run(self) -> None:
        """Commit what changed, enforce the caps, read back from disk; until cancelled (then one last commit)."""
        try:
            loop = asyncio.get_running_loop()
            while True:
                # Woken by a change, or after _SWEEP_EVERY for the age cap. (Not asyncio.wait_for, which
                # before Python 3.12 can swallow a cancellation that meets a wake-up.)
                timer = loop.call_later(_SWEEP_EVERY, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
                if self._pending and self.commit_interval:
                    await asyncio.sleep(self.commit_interval)  # let what arrives meanwhile ride along
                self._wake.clear()
                try:
                    await self._commit()
                    await self._enforce_caps()
                    if len(self._ready) < self.read_ahead // 2:
                        await self._fill()
                except (StorageError, OSError) as exc:
                    self.failures += 1
                    log.error("writing the bridge outbox %s failed (%s); retrying in %.0f s", self.db.path, exc,
                              _RETRY_PAUSE)
                    await asyncio.sleep(_RETRY_PAUSE)
                    self._wake.set()
                    continue
                self.on_ready()
        finally:
            self._closing = True

    async def close(self) -> None:
        """Write what is pending, then close the file."""
        try:
            await self._commit()
        except (StorageError, OSError):
            log.exception("could not write the bridge outbox %s at shutdown", self.db.path)
        await self.db.close()

    async def _commit(self) -> None:
        """One transaction with every change reported so far; then the callbacks waiting for them."""
        pending, deleted, released = self._pending, self._deleted, self._released
        inbound = self._inbound_changes
        mark = self.sent_mark
        if self._mark_wanted > mark or (pending and self._out):
            # While sending, the mark runs ahead of what this commit holds, so live traffic never waits for it.
            mark = max(self._mark_wanted, (pending[-1].seq if pending else 0) + _RESERVE_AHEAD, mark)
        generation = self._generation
        if not (pending or deleted or released or inbound or mark != self.sent_mark):
            self._call_waiters(generation)
            return
        self._pending, self._deleted, self._released, self._inbound_changes = [], [], [], {}
        try:
            async with self.db.transaction() as connection:
                if pending:
                    await connection.executemany(
                        "INSERT OR REPLACE INTO messages (seq, topic, payload, qos, retain, properties, expires_at, "
                        "enqueued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [(e.seq, e.topic, e.payload, e.qos, e.retain,
                          None if e.properties is EMPTY_PROPERTIES else encode_properties(e.properties),
                          e.expires_at, e.enqueued_at) for e in pending],
                    )
                if deleted:
                    await connection.executemany("DELETE FROM messages WHERE seq = ?", [(s,) for s in deleted])
                if released:
                    await connection.executemany(
                        "UPDATE messages SET released = 1 WHERE seq = ?", [(s,) for s in released]
                    )
                for packet_id, present in inbound.items():
                    sql = ("INSERT OR IGNORE INTO inbound VALUES (?)" if present
                           else "DELETE FROM inbound WHERE packet_id = ?")
                    await connection.execute(sql, (packet_id,))
                if mark != self.sent_mark:
                    await connection.execute("INSERT OR REPLACE INTO meta VALUES ('sent_mark', ?)", (mark,))
        except BaseException:
            # Not written: the same changes go first in the next attempt, before anything newer.
            self._pending = pending + self._pending
            self._deleted = deleted + self._deleted
            self._released = released + self._released
            self._inbound_changes = {**inbound, **self._inbound_changes}
            raise
        self.commits += 1
        self.sent_mark = mark
        if pending:
            first, last = pending[0].seq, pending[-1].seq
            if self._loaded_upto >= first - 1 and self._committed_upto <= self._loaded_upto:
                # No backlog on disk: the live messages go to the sender without being read back.
                kept = pending[: max(0, self.read_ahead - len(self._ready))]
                self._ready.extend(kept)
                if kept:
                    self._loaded_upto = kept[-1].seq
            self._committed_upto = max(self._committed_upto, last)
        self._call_waiters(generation)
        if self._pending or self._deleted:
            self._wake.set()

    def _call_waiters(self, generation: int) -> None:
        self._written = max(self._written, generation)
        waiters = self._waiters
        while waiters and waiters[0][0] <= generation:
            _, callback = waiters.popleft()
            try:
                callback()
            except Exception:
                log.exception("a callback after an outbox commit failed")

    async def _enforce_caps(self) -> None:
        """Drop the oldest messages not in flight while a cap is exceeded (counted in `dropped`)."""
        cutoff = time.time() - self.max_age if self.max_age else None

        def over(entry_time: float | None) -> bool:
            return (self.count > self.max_messages or self.bytes > self.max_bytes
                    or (cutoff is not None and entry_time is not None and entry_time < cutoff))

        ready = self._ready
        while ready and over(ready[0].enqueued_at):
            self._forget(ready.popleft())
            self.dropped += 1
        if self._committed_upto > self._loaded_upto and not ready and over(self._tail_oldest):
            # The backlog left on disk: drop from its head in chunks.
            while self._committed_upto > self._loaded_upto and over(self._tail_oldest):
                rows = await self.db.fetch_all(
                    "SELECT seq, length(topic) + length(payload), enqueued_at FROM messages WHERE seq > ? "
                    "ORDER BY seq LIMIT 500", (self._loaded_upto,)
                )
                if not rows:
                    self._loaded_upto = self._committed_upto
                    break
                doomed = []
                for seq, size, enqueued_at in rows:
                    if not over(enqueued_at):
                        self._tail_oldest = enqueued_at
                        break
                    doomed.append((seq,))
                    self.count -= 1
                    self.bytes -= size
                    self.dropped += 1
                    self._loaded_upto = seq
                if not doomed:
                    break
                await self.db.execute_many("DELETE FROM messages WHERE seq = ?", doomed)
                await self._tail_head()
        if self._deleted:
            await self._commit()

    async def _fill(self) -> None:
        """Read the next messages left on disk into memory, in order, up to `read_ahead`."""
        room = self.read_ahead - len(self._ready)
        if room <= 0 or self._committed_upto <= self._loaded_upto:
            return
        rows = await self.db.fetch_all(
            "SELECT seq, topic, payload, qos, retain, properties, expires_at, enqueued_at, released FROM messages "
            "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?", (self._loaded_upto, self._committed_upto, room)
        )
        for row in rows:
            blob = row[5]
            entry = OutboxEntry(
                row[0], row[1], bytes(row[2]), row[3], bool(row[4]),
                decode_properties(blob, 0, len(blob), PacketType.PUBLISH)[0] if blob else EMPTY_PROPERTIES,
                row[6], row[7], bool(row[8]), dup=row[0] <= self.sent_mark,
            )
            self._ready.append(entry)
            self._loaded_upto = entry.seq
        if len(rows) < room:
            self._loaded_upto = self._committed_upto  # nothing more on disk (the rest was dropped)
        await self._tail_head()

    async def _tail_head(self) -> None:
        if self._committed_upto <= self._loaded_upto:
            self._tail_oldest = None
            return
        self._tail_oldest = await self.db.fetch_value(
            "SELECT enqueued_at FROM messages WHERE seq > ? ORDER BY seq LIMIT 1", (self._loaded_upto,)
        )
