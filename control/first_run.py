"""The first-run setup link's token (control/dashboard/setup.py serves the link).

Its own module, free of Starlette, because `roost serve` opens it at start-up, before the HTTP stack is
loaded (control/http_front.py), and prints the link on the console.
"""

from __future__ import annotations

import hmac
import secrets

__all__ = ["FirstRun"]


class FirstRun:
    """The setup link's token while no user exists; None once it is used (or was never needed)."""

    def __init__(self) -> None:
        self.token: str | None = None

    def open(self) -> str:
        self.token = secrets.token_urlsafe(32)
        return self.token

    def matches(self, given: str | None) -> bool:
        token = self.token
        return token is not None and given is not None and hmac.compare_digest(token.encode(), given.encode())

    def close(self) -> None:
        self.token = None
