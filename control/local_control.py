"""A Unix socket in the data folder through which the CLI tells a running Roost "the database changed".

The server notices outside writes by polling the database's change token once a second
(`LiveAccess.watch`). That leaves a window in which credentials made by `roost mqtt add` are refused, and
a script that connects right after the command returns fails. So every CLI command that writes asks the
server to reload access before it returns: it connects to `data_dir/roost.sock`, sends `refresh`, and waits
for `ok`, which the server sends once the new snapshot answers CONNECTs. No server (no socket, or nobody
listening on it) is not an error: the next start reads the database anyway.

Why a socket in the data folder and not an HTTP route: it needs no credentials (the folder's permissions
are the access control, as they are for the database itself), it is not reachable from the network, and
it names exactly the server that serves this database, whatever its ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

__all__ = ["SOCKET_NAME", "LocalControl", "tell_server"]

log = logging.getLogger("roost.local")

SOCKET_NAME = "roost.sock"
# sockaddr_un's sun_path holds 108 bytes with the terminating NUL.
_MAX_PATH = 107
_REQUEST_LIMIT = 64
_READ_TIMEOUT = 5.0
_MAX_CONNECTIONS = 16


class LocalControl:
    """The server's side: answers `refresh` with `ok` once `on_refresh()` has finished."""

    def __init__(self, data_dir: Path, on_refresh: Callable[[], Awaitable[None]]) -> None:
        self.path = data_dir / SOCKET_NAME
        self._on_refresh = on_refresh
        self._server: asyncio.AbstractServer | None = None
        self._busy = 0

    async def start(self) -> bool:
        """Listen; False (logged) when the socket cannot be made, and CLI changes then take up to a second."""
        if len(os.fsencode(self.path)) > _MAX_PATH:
            log.warning("the data folder's path is too long for %s: changes made with the roost command are "
                        "noticed within a second instead of at once", self.path)
            return False
        # The data folder's lock is ours, so a socket file left here belongs to a Roost that has ended.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
            os.chmod(self.path, 0o600)
        except OSError as exc:
            log.warning("cannot listen on %s (%s): changes made with the roost command are noticed within a "
                        "second instead of at once", self.path, exc.strerror or exc)
            return False
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._busy >= _MAX_CONNECTIONS:
            writer.close()
            return
        self._busy += 1
        try:
            line = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT)
            if line[:_REQUEST_LIMIT].strip() == b"refresh":
                await self._on_refresh()
                writer.write(b"ok\n")
            else:
                writer.write(b"unknown request\n")
            await writer.drain()
        except (asyncio.TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            pass  # a client that went away or sent nonsense: nothing to answer
        except Exception:
            log.exception("could not reload access for the roost command")
        finally:
            self._busy -= 1
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def tell_server(data_dir: Path, timeout: float = 10.0) -> bool:
    """Ask a Roost serving `data_dir` to reload access now; True once it has, False when none is running."""
    path = data_dir / SOCKET_NAME
    if len(os.fsencode(path)) > _MAX_PATH:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(b"refresh\n")
            answer = sock.recv(_REQUEST_LIMIT)
        except (FileNotFoundError, ConnectionRefusedError):
            return False  # no Roost running on this folder
        except OSError:
            return False  # one that does not answer: it polls the database within a second anyway
    return answer.strip() == b"ok"
