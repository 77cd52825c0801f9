"""Live streams end when what let them in stops being valid, as MQTT clients are kicked (issue 14, attack 4).

A live stream (`GET /api/v1/live`, which the dashboard's live view reads too) was opened with an API key
or with a dashboard session cookie. Checking that credential once, at the start, let a stream outlive the
key's deletion, the session's sign-out or the user's deactivation. Now each open stream is registered
with the app's `StreamGuard`, and re-checks its credential (without noting a use or extending the
session):

- at once, when this process revokes something of its user's: an API key deactivated or deleted, the
  user changed (deactivated, deleted, new password: `Context.user_listeners`), a dashboard session
  signed out (`StreamGuard.revoked`, called by those places);
- within a second of a write by another process (the CLI): the stream watches the database's change token;
- every `RECHECK_SECONDS` whatever happened (an API key that expired).

A stream whose credential no longer holds sends `event: revoked` and ends; the browser's EventSource then
reconnects, and is refused with 401.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from control.dashboard.sessions import COOKIE, SessionStore

__all__ = ["RECHECK", "RECHECK_SECONDS", "LiveCredential", "LiveStream", "Rechecks", "StreamGuard", "credential_of",
           "still_valid"]

# Put on a stream's queue to wake its reader for a re-check (never sent to the client).
RECHECK = object()
RECHECK_SECONDS = 15.0


@dataclass(frozen=True, slots=True)
class LiveCredential:
    """What opened a stream: an API key, or a dashboard session's token (the cookie)."""

    user_id: int
    api_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


class LiveStream:
    """One open stream: its queue (messages, or RECHECK) and whether a re-check is due."""

    __slots__ = ("credential", "queue", "recheck")

    def __init__(self, credential: LiveCredential, queue: asyncio.Queue[Any]) -> None:
        self.credential = credential
        self.queue = queue
        self.recheck = False

    def wake(self) -> None:
        """Ask the reader to re-check its credential now. A full queue needs no wake-up: the reader is
        busy with it and looks at `recheck` before each message."""
        self.recheck = True
        try:
            self.queue.put_nowait(RECHECK)
        except asyncio.QueueFull:
            pass


class StreamGuard:
    """The app's open live streams by user id."""

    def __init__(self) -> None:
        self._streams: dict[int, set[LiveStream]] = {}

    def open(self, stream: LiveStream) -> None:
        self._streams.setdefault(stream.credential.user_id, set()).add(stream)

    def close(self, stream: LiveStream) -> None:
        streams = self._streams.get(stream.credential.user_id)
        if streams is not None:
            streams.discard(stream)
            if not streams:
                del self._streams[stream.credential.user_id]

    def revoked(self, user_id: int) -> None:
        """Something of this user's may have been revoked: their streams re-check at once."""
        for stream in self._streams.get(user_id, ()):
            stream.wake()


def credential_of(request: Request, user_id: int) -> LiveCredential:
    """The credential `authenticated(request)` accepted: the Bearer key, else the session cookie."""
    header = request.headers.get("authorization", "")
    if header:
        return LiveCredential(user_id, api_key=header.partition(" ")[2].strip())
    return LiveCredential(user_id, session_token=request.cookies.get(COOKIE))


async def still_valid(request: Request, credential: LiveCredential) -> bool:
    """Whether the credential would still let its user in, as `authenticated` decides, without noting a
    use of the key or extending the session."""
    services = request.app.state.services
    if credential.api_key is not None:
        record = await services.context.store.api_keys.find_by_key(credential.api_key)
        if record is None or record.user_id != credential.user_id:
            return False
    else:
        sessions: SessionStore | None = getattr(request.app.state, "dashboard_sessions", None)
        session = sessions.peek(credential.session_token) if sessions is not None else None
        if session is None or session.user_id != credential.user_id:
            return False
    user = await services.context.store.users.get(credential.user_id)
    return user is not None and user.is_active


class Rechecks:
    """When a stream's reader should re-check: on a wake-up, when the database's change token moved
    (checked at most once a second), and every RECHECK_SECONDS."""

    def __init__(self, request: Request, stream: LiveStream) -> None:
        self._request = request
        self._stream = stream
        self._database = request.app.state.services.context.store.db
        self._token: object = None
        self._looked = self._checked = time.monotonic()

    async def start(self) -> None:
        self._token = await self._database.change_token()

    async def due(self) -> bool:
        stream = self._stream
        now = time.monotonic()
        if stream.recheck:
            return True
        if now - self._checked >= RECHECK_SECONDS:
            return True
        if now - self._looked >= 1.0:
            self._looked = now
            token = await self._database.change_token()
            if token != self._token:
                self._token = token
                return True
        return False

    async def still_valid(self) -> bool:
        self._stream.recheck = False
        self._checked = time.monotonic()
        return await still_valid(self._request, self._stream.credential)
