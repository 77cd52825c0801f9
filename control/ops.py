"""Looking after a Roost: `check-config`, `backup` and `restore` (the data directory's lock is in
control/data_dir_lock.py).

`restore` takes the lock `roost serve` holds, so it refuses while Roost runs and a Roost cannot start
halfway through a restore.
The management commands (`user add`, ...) do not take it: they are meant to run beside the server.

`backup` uses SQLite's online backup API from a connection of its own: a consistent snapshot of the
database while Roost keeps writing (WAL mode lets the reader and the writer proceed together). The copy is
a single file (journal mode DELETE), checked with `PRAGMA quick_check` before it is put in place.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from broker.errors import ConfigError
from control.config import Config, ConfigProblems, load_config
from control.data_dir_lock import LOCK_FILE_NAME, DataDirLock, OperationRefused
from storage.broker_state import STATE_FILE_NAME, STATE_MIGRATIONS
from storage.database import DATABASE_FILE_NAME
from storage.migrations import latest_version

__all__ = [
    "LOCK_FILE_NAME", "BackupResult", "DataDirLock", "OperationRefused", "RestoreResult", "backup", "check_config",
    "restore",
]

# -- check-config ----------------------------------------------------------------------------------------------


def check_config(path: str | Path | None) -> tuple[Config | None, list[str]]:
    """Validate a config file as `roost serve` would, and more: files it names, the data directory, the
    database's schema, port clashes. Returns the config (None if it does not parse) and every problem."""
    try:
        config = load_config(path)
    except ConfigProblems as exc:
        if exc.partial is None:
            return None, exc.problems
        # Go on with the defaults in place of the bad values: the files, folders and ports still count.
        config, problems = exc.partial, list(exc.problems)
    except ConfigError as exc:
        return None, [str(exc)]
    else:
        problems = []
    tls = config.tls
    unreadable = False
    for name in ("cert_file", "key_file", "client_ca_file"):
        file = getattr(tls, name)
        if file is not None and not os.access(file, os.R_OK):
            problems.append(f"tls.{name}: cannot read {file}")
            unreadable = True
    if not unreadable and tls.cert_file is not None and tls.key_file is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls.cert_file, tls.key_file)
        except (ssl.SSLError, OSError) as exc:
            problems.append(f"tls.cert_file / tls.key_file: not a certificate chain and its key ({exc})")
    if not unreadable and tls.client_ca_file is not None:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_verify_locations(tls.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            problems.append(f"tls.client_ca_file: not a PEM CA bundle ({exc})")
    ports = [("mqtt.port", config.mqtt.host, config.mqtt.port), ("http.port", config.http.host, config.http.port)]
    if tls.port:
        ports.append(("tls.port", tls.host, tls.port))
    seen: dict[int, str] = {}
    for name, _host, port in ports:
        if port and port in seen:
            problems.append(f"{name}: port {port} is also {seen[port]}")
        seen.setdefault(port, name)
    problems += _check_data_dir(config.data_dir)
    return config, problems


def _check_data_dir(data_dir: Path) -> list[str]:
    if data_dir.exists():
        if not data_dir.is_dir():
            return [f"data_dir: {data_dir} is not a folder"]
        if not os.access(data_dir, os.W_OK | os.X_OK):
            return [f"data_dir: {data_dir} is not writable by this user"]
        problems: list[str] = []
        for database, known in (
            (data_dir / DATABASE_FILE_NAME, latest_version()),
            (data_dir / STATE_FILE_NAME, latest_version(STATE_MIGRATIONS)),
        ):
            if not database.exists():
                continue
            try:
                version = _schema_version(database)
            except sqlite3.Error as exc:
                problems.append(f"data_dir: {database} is not a readable SQLite database ({exc})")
                continue
            if version > known:
                problems.append(f"data_dir: {database} has schema version {version}, newer than this Roost's "
                                f"({known}); upgrade Roost")
        return problems
    parent = data_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        return [f"data_dir: {data_dir} does not exist and {parent} is not writable by this user"]
    return []


def _schema_version(path: Path) -> int:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(connection.execute("PRAGMA user_version").fetchone()[0])
    finally:
        connection.close()


# -- backup and restore ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    schema_version: int
    size: int
    seconds: float


@dataclass(frozen=True, slots=True)
class RestoreResult:
    schema_version: int
    previous: Path | None  # where the database that was replaced now is


def backup(config: Config, target: Path | str) -> BackupResult:
    """Copy `data_dir/roost.db` to `target`, consistently, whether or not Roost is running. A folder, or a
    name ending in `/` (the folder is made), gets a dated file inside it."""
    source_path = config.data_dir / DATABASE_FILE_NAME
    if not source_path.is_file():
        raise OperationRefused(f"no database at {source_path}: check --config")
    folder = str(target).endswith(os.sep)
    target = Path(target)
    if folder or target.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        target = target / f"roost-{time.strftime('%Y%m%dT%H%M%S')}.db"
    partial = target.with_name(target.name + ".partial")
    started = time.perf_counter()
    source = sqlite3.connect(source_path, timeout=30)
    try:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        copy = sqlite3.connect(partial)
        try:
            # One step (pages=-1): the whole file under one read snapshot; Roost keeps writing meanwhile.
            source.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
            _quick_check(copy, partial)
            version = int(copy.execute("PRAGMA user_version").fetchone()[0])
        finally:
            copy.close()
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    finally:
        source.close()
    os.replace(partial, target)
    return BackupResult(target, version, target.stat().st_size, time.perf_counter() - started)


def restore(config: Config, source_path: Path) -> RestoreResult:
    """Put a backup in place of `data_dir/roost.db` while Roost is stopped. The replaced database is kept
    beside it as `roost.db.bak-<timestamp>`. Refuses a file that is not a Roost database or whose schema
    is newer than this Roost's (an older one is migrated at the next start)."""
    if not source_path.is_file():
        raise OperationRefused(f"no backup file at {source_path}")
    lock = DataDirLock(config.data_dir)
    lock.acquire("restore")
    try:
        try:
            source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise OperationRefused(f"{source_path}: cannot open ({exc})") from exc
        try:
            try:
                version = int(source.execute("PRAGMA user_version").fetchone()[0])
                _quick_check(source, source_path)
                has_users = source.execute(
                    "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'users'"
                ).fetchone()
            except sqlite3.Error as exc:
                raise OperationRefused(f"{source_path} is not a SQLite database or is damaged ({exc})") from exc
            if version > latest_version():
                raise OperationRefused(
                    f"{source_path} has schema version {version}, newer than this Roost's ({latest_version()}): "
                    "upgrade Roost first"
                )
            if version < 1 or not has_users:
                raise OperationRefused(f"{source_path} is not a Roost database")
            database = config.data_dir / DATABASE_FILE_NAME
            incoming = database.with_name(database.name + ".restoring")
            with contextlib.suppress(FileNotFoundError):
                incoming.unlink()
            copy = sqlite3.connect(incoming)
            try:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode = DELETE")
            finally:
                copy.close()
        finally:
            source.close()
        previous = None
        if database.exists():
            previous = database.with_name(f"{database.name}.bak-{time.strftime('%Y%m%dT%H%M%S')}")
            # A -wal left by a crash belongs to the old file: it moves with it, under the name SQLite expects.
            for suffix in ("", "-wal", "-shm"):
                old = database.with_name(database.name + suffix)
                if old.exists():
                    os.replace(old, previous.with_name(previous.name + suffix))
        os.replace(incoming, database)
        return RestoreResult(version, previous)
    finally:
        lock.release()


def _quick_check(connection: sqlite3.Connection, path: Path) -> None:
    result = connection.execute("PRAGMA quick_check").fetchone()
    if result is None or result[0] != "ok":
        raise OperationRefused(f"{path} failed SQLite's quick_check: {result[0] if result else 'no answer'}")
