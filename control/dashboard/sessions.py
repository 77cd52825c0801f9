"""Dashboard sign-in state, in memory: sessions behind a cookie, and the slowing down of failed sign-ins.

No I/O and no Starlette here: the clock is a parameter, so every rule is tested with plain calls.

A session is a random 32-byte token (the cookie's value, HttpOnly and SameSite=Strict) with its own CSRF
token: a request authenticated by the cookie that changes anything must echo the CSRF token in the
`X-CSRF-Token` header, which a page on another site cannot read or send. Sessions live in this process
only, so a restart signs everyone out.

Failed sign-ins are counted per user name and per client address. The first `free_failures` failures in a
row cost nothing; each one after them makes the next attempt wait: 1 s, 2 s, 4 s ... up to `max_delay`. An
attempt made before its time is refused without checking the password (HTTP 429 with Retry-After). A
success clears both counters; an hour without failures forgets them.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["COOKIE", "CSRF_HEADER", "DashboardSession", "SessionStore", "SignInThrottle"]

COOKIE = "roost_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(slots=True)
class DashboardSession:
    user_id: int
    csrf_token: str
    created_at: float
    expires_at: float

    def csrf_matches(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf_token.encode())


class SessionStore:
    """Signed-in browsers by token. Each use extends a session by `idle` seconds, never past `lifetime`
    from its creation; at most `capacity` sessions are kept (the oldest go first)."""

    def __init__(self, *, idle: float = 12 * 3600, lifetime: float = 7 * 86400, capacity: int = 10_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.idle = idle
        self.lifetime = lifetime
        self.capacity = capacity
        self._clock = clock
        self._sessions: OrderedDict[str, DashboardSession] = OrderedDict()
        # Called with the user id of each session signed out (`end`, `end_user`): live streams opened
        # with that session close (control/api/live_guard.py).
        self.listeners: list[Callable[[int], None]] = []

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, user_id: int) -> tuple[str, DashboardSession]:
        now = self._clock()
        self._purge(now)
        while len(self._sessions) >= self.capacity:
            self._sessions.popitem(last=False)
        token = secrets.token_urlsafe(32)
        session = DashboardSession(user_id, secrets.token_urlsafe(32), now, min(now + self.idle, now + self.lifetime))
        self._sessions[token] = session
        return token, session

    def peek(self, token: str | None) -> DashboardSession | None:
        """The live session behind `token`, its expiry left as it is (a re-check is not a use), or None."""
        session = self._sessions.get(token) if token else None
        if session is None or self._clock() >= session.expires_at:
            return None
        return session

    def get(self, token: str | None) -> DashboardSession | None:
        """The live session behind `token` (its expiry extended), or None."""
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None:
            return None
        now = self._clock()
        if now >= session.expires_at:
            del self._sessions[token]
            return None
        session.expires_at = min(now + self.idle, session.created_at + self.lifetime)
        return session

    def end(self, token: str | None) -> None:
        session = self._sessions.pop(token, None) if token else None
        if session is not None:
            self._ended(session.user_id)

    def end_user(self, user_id: int) -> None:
        """Sign a user out everywhere."""
        for token in [t for t, s in self._sessions.items() if s.user_id == user_id]:
            del self._sessions[token]
        self._ended(user_id)

    def _ended(self, user_id: int) -> None:
        for listener in self.listeners:
            listener(user_id)

    def _purge(self, now: float) -> None:
        for token in [t for t, s in self._sessions.items() if now >= s.expires_at]:
            del self._sessions[token]


@dataclass(slots=True)
class _Failures:
    count: int
    last: float


class SignInThrottle:
    """Failed sign-ins per key (a user name, a client address): how long the next attempt must wait."""

    def __init__(self, *, free_failures: int = 5, max_delay: float = 300.0, forget_after: float = 3600.0,
                 capacity: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.free_failures = free_failures
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.capacity = capacity
        self._clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def _delay(self, count: int) -> float:
        over = count - self.free_failures
        return 0.0 if over <= 0 else min(float(2 ** (over - 1)), self.max_delay)

    def retry_after(self, *keys: str) -> float:
        """Seconds until an attempt for these keys may be checked (0: now)."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            entry = self._failures.get(key)
            if entry is None:
                continue
            if now - entry.last >= self.forget_after:
                del self._failures[key]
                continue
            wait = max(wait, entry.last + self._delay(entry.count) - now)
        return max(wait, 0.0)

    def failed(self, *keys: str) -> None:
        now = self._clock()
        for key in keys:
            entry = self._failures.pop(key, None)
            if entry is None or now - entry.last >= self.forget_after:
                entry = _Failures(0, now)
            entry.count += 1
            entry.last = now
            self._failures[key] = entry  # most recent last: the oldest are dropped at capacity
        while len(self._failures) > self.capacity:
            self._failures.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)
