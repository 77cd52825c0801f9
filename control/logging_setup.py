"""Roost's log output: one line per event that matters, as text (the default) or as JSON (`[log] format`).

The events: start (with the ports and the data directory), each listener, each refused client and why,
protocol errors, kicks, revocations, quota exhaustion (once per user per hour, not per message), TLS
reloads, shutdown. No line ever carries a password, an API key or secret, or a message payload: log calls
pass user names, client ids, addresses, topics and reason codes only (tests/control/test_logging.py
drives refusals and checks).

Log calls use `%`-style arguments, so a message below the configured level is never formatted.

Library loggers are held to the same rule. aiosqlite logs every call it runs at DEBUG, arguments included
(`executing functools.partial(<execute>, 'INSERT INTO users ...', (name, password hash, ...))`): password
and secret hashes, API key digests and the Fernet ciphertext of MQTT instance passwords, which
`data_dir/secret.key` decrypts. Those lines say nothing an operator needs (Roost logs its own failed
writes), so `QUIET_LOGGERS` keeps such loggers at INFO or above whatever `[log] level` says
(tests/control/test_log_secrets.py runs `roost serve` at debug and searches all its output).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

from control.config import LogConfig

__all__ = ["JSONFormatter", "QUIET_LOGGERS", "TEXT_FORMAT", "setup_logging"]

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Library loggers whose DEBUG lines carry the arguments of calls (SQL parameters: hashes, ciphertexts):
# never below INFO, even at `[log] level = "debug"`.
QUIET_LOGGERS = ("aiosqlite",)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: `time` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message`,
    and `exception` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(config: LogConfig, stream: IO[str] | None = None) -> logging.Handler:
    """Send every logger's records at `config.level` or above to `stream` (standard error) in `config.format`.
    Replaces handlers installed by an earlier call; returns the handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if config.format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.set_name("roost")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "roost"]:
        root.removeHandler(old)
    root.addHandler(handler)
    level = getattr(logging, config.level.upper())
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.INFO))
    return handler
