"""`roost state quarantine [--json]`: the stored broker records Roost could not restore at a start.

Roost moves such a record (a session with its subscriptions and messages, a retained message, ...) out of
the way into the quarantine table of `data_dir/broker-state.db` and starts without it
(storage/state_quarantine.py). This lists that table, read-only, while Roost runs or not: one line per
row (when, what, its key, why), or with `--json` one JSON array of objects `{id, kind, key, reason, at,
source, row}` (`at` in ISO 8601 UTC, `row` the stored row with blobs as `{"base64": ...}`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parser is built on every `roost` call: storage is imported by the command only
    from control.config import Config

__all__ = ["register"]


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _quarantine(config: Config, args: argparse.Namespace) -> int:
    from storage.broker_state import STATE_FILE_NAME
    from storage.state_quarantine import list_quarantine

    path = config.data_dir / STATE_FILE_NAME
    if not path.exists():
        print(f"roost: no broker state at {path}", file=sys.stderr)
        return 1
    entries = list_quarantine(path)
    if args.json:
        print(json.dumps([
            {"id": e.id, "kind": e.kind, "key": e.key, "reason": e.reason, "at": _when(e.at), "source": e.source,
             "row": e.row}
            for e in entries
        ], ensure_ascii=False))
        return 0
    if not entries:
        print("nothing quarantined")
    for entry in entries:
        print(f"{_when(entry.at)}  {entry.kind:<16} {entry.key}  ({entry.source}): {entry.reason}")
    return 0


def register(commands: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Add `state quarantine` to the `roost` command's subcommands."""
    state = commands.add_parser("state", help="look at the broker's stored state").add_subparsers(
        dest="state_command", required=True
    )
    listing = with_config(state.add_parser(
        "quarantine", help="list stored records that could not be restored at a start (moved aside)"
    ))
    listing.add_argument("--json", action="store_true", help="print one JSON array")
    listing.set_defaults(handler=_quarantine)
