"""The data directory's lock: "a Roost is serving this data directory".

`roost serve` holds an advisory lock (`flock`) on `data_dir/roost.lock` for as long as it runs; the kernel
drops it when the process ends, however it ends, so a stale lock file never blocks anything. `roost
restore` (control/ops.py) takes the same lock. Its own module so that `roost serve` does not import the
backup and check-config code with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from broker.errors import RoostError

__all__ = ["LOCK_FILE_NAME", "DataDirLock", "OperationRefused"]

LOCK_FILE_NAME = "roost.lock"


class OperationRefused(RoostError):
    """An operation that cannot proceed as things are (Roost running, a newer schema, a missing file)."""


class DataDirLock:
    """The advisory lock that says "a Roost is serving this data directory"."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE_NAME
        self._fd: int | None = None

    def acquire(self, purpose: str = "serve") -> None:
        """Take the lock, or raise OperationRefused naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise OperationRefused(
                f"a Roost is running with data_dir {self.path.parent} (pid {holder}); stop it before you {purpose}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the flock
