"""Two glibc settings that keep an idle Roost small (a Raspberry Pi with 1 GB runs it beside other things).

- `limit_malloc_arenas()`, before any thread starts: glibc gives each thread that allocates an arena of its
  own (up to eight per core), and each holds on to the pages it once used. Roost's threads are SQLite's
  (aiosqlite, one per database) and the HTTP stack's one-off import: they allocate little and rarely, so
  two arenas serve them all (`M_ARENA_MAX`, as the `MALLOC_ARENA_MAX` environment variable sets it). The
  environment variable, when set, wins.
- `trim()`, once start-up is done: hands back to the system the free pages that start-up's garbage
  left inside the heap (`malloc_trim(0)`).

Both are no-ops where the C library is not glibc (musl, macOS). Measured in docs/benchmarks.md ("Memory,
second round").
"""

from __future__ import annotations

import ctypes
import logging
import os

__all__ = ["limit_malloc_arenas", "trim"]

log = logging.getLogger("roost")

_M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present only in glibc
    except (OSError, AttributeError):
        return None
    return libc


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """At most `arenas` malloc arenas for the process's threads; True if glibc took it."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, arenas))


def trim() -> None:
    """Give free heap pages back to the system."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
