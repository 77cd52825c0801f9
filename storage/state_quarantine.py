"""Stored broker state that cannot be restored is moved aside, never fatal (issue 14).

A session, subscription, QoS 1/2 message or delivery, or retained message in `broker-state.db` that Roost
cannot read back (a bad row, an undecodable blob, a value out of range), or that raises while the broker
restores it or while its will fires at start, used to stop `roost serve` from starting, and under systemd
`Restart=on-failure` that meant a restart loop until the unit gave up. Now such a record is logged with its
key, moved to the `quarantine` table of the same file (what it was, its key, why, when, and the row itself
as JSON, blobs in base64), and skipped; the rest starts. `roost state quarantine [--json]` lists it
(`control/state_cli.py`).

A session is moved with everything that belongs to it (its subscriptions, deliveries and awaited
releases), so nothing of it comes back half; the messages those deliveries referred to are left to the
usual clean-up of unreferenced rows at the next start. The file itself being damaged (not SQLite, failing
`quick_check`, a newer schema) is still refused at start: that is no record to skip.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.database import Database
from storage.migrations import Migration

__all__ = ["QUARANTINE_MIGRATION", "Doomed", "Quarantined", "list_quarantine", "move_aside"]

log = logging.getLogger("roost.storage.state")

_SCHEMA = """
CREATE TABLE quarantine (
    id     INTEGER PRIMARY KEY,
    kind   TEXT    NOT NULL,
    key    TEXT    NOT NULL,
    reason TEXT    NOT NULL,
    at     REAL    NOT NULL,
    source TEXT    NOT NULL,
    row    TEXT    NOT NULL
);
"""

QUARANTINE_MIGRATION = Migration(2, "quarantine: stored records that could not be restored", _SCHEMA)

# What can be moved aside: kind -> (table, the columns that identify one of its rows).
_TABLES = {
    "session": ("sessions", ("key",)),
    "subscription": ("subscriptions", ("session_key", "topic_filter")),
    "awaiting_release": ("awaiting_release", ("session_key", "packet_id")),
    "message": ("messages", ("id",)),
    "delivery": ("deliveries", ("id",)),
    "retained": ("retained", ("topic",)),
}
# A session's rows in other tables go with it.
_SESSION_PARTS = ("subscriptions", "deliveries", "awaiting_release")


@dataclass(frozen=True, slots=True)
class Doomed:
    """A record to move aside: its kind (a key of `_TABLES`), its identifying values, and why."""

    kind: str
    key: tuple[Any, ...]
    reason: str

    @property
    def label(self) -> str:
        """The key as one readable string (a session key's U+0000 separator shown as `\\0`)."""
        return " ".join(str(part) for part in self.key).replace("\x00", "\\0")


@dataclass(frozen=True, slots=True)
class Quarantined:
    """One row of the quarantine table."""

    id: int
    kind: str
    key: str
    reason: str
    at: float
    source: str  # the table the row came from
    row: dict[str, Any]


def reason_of(exc: BaseException) -> str:
    """An exception as a short reason: its type and message, at most 500 characters."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."


def _row_json(row: sqlite3.Row) -> str:
    values = {}
    for name in row.keys():
        value = row[name]
        values[name] = {"base64": base64.b64encode(value).decode()} if isinstance(value, bytes) else value
    return json.dumps(values, ensure_ascii=False, default=repr)


async def move_aside(db: Database, doomed: list[Doomed], now: float | None = None) -> int:
    """Copy each doomed record (a session: with its subscriptions, deliveries and awaited releases) into
    the quarantine table and delete it where it was, in one transaction; log each. Returns rows moved."""
    if not doomed:
        return 0
    at = time.time() if now is None else now
    moved = 0
    async with db.transaction() as connection:
        for item in doomed:
            table, columns = _TABLES[item.kind]
            parts = [(table, " AND ".join(f"{c} = ?" for c in columns), item.key)]
            if item.kind == "session":
                parts += [(name, "session_key = ?", item.key) for name in _SESSION_PARTS]
            for source, where, values in parts:
                async with connection.execute(f"SELECT * FROM {source} WHERE {where}", values) as cursor:
                    rows = list(await cursor.fetchall())
                for row in rows:
                    await connection.execute(
                        "INSERT INTO quarantine (kind, key, reason, at, source, row) VALUES (?, ?, ?, ?, ?, ?)",
                        (item.kind, item.label, item.reason, at, source, _row_json(row)),
                    )
                await connection.execute(f"DELETE FROM {source} WHERE {where}", values)
                moved += len(rows)
            log.error("could not restore the stored %s %r (%s): moved to the quarantine table of %s and skipped",
                      item.kind, item.label, item.reason, db.path)
    return moved


def list_quarantine(path: Path) -> list[Quarantined]:
    """What the quarantine table of the state file at `path` holds, oldest first; [] with no such table.
    Read-only, with a connection of its own: works while Roost runs."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        connection.row_factory = sqlite3.Row
        try:
            rows = connection.execute("SELECT * FROM quarantine ORDER BY id").fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [
            Quarantined(row["id"], row["kind"], row["key"], row["reason"], row["at"], row["source"],
                        json.loads(row["row"]))
            for row in rows
        ]
    finally:
        connection.close()
