"""Errors the control plane's services raise; the REST layer maps each to a status and body.

    RoostError
    └── ServiceError            a request the service refuses
        ├── NotFound            no such resource for this user (404); another tenant's ids are NotFound too
        ├── Forbidden           the user may not do this (403)
        ├── LimitReached        the plan's limit on projects/devices/topics/instances is reached
        ├── ValidationFailed    fields are invalid (422); `fields` maps each field to its problem
        └── QuotaExceeded       the hourly message quota is used up (429); `limit` and `retry_after`
    └── StartupError            `roost serve` cannot start as configured (a port in use, ...); the message
                                names the address and the config key
"""

from __future__ import annotations

from broker.errors import RoostError

__all__ = [
    "Forbidden", "LimitReached", "NotFound", "QuotaExceeded", "ServiceError", "StartupError", "ValidationFailed",
]


class StartupError(RoostError):
    """Roost cannot start as configured; the message says what to change."""


class ServiceError(RoostError):
    """A request the control plane refuses, with a message meant for the API user."""


class NotFound(ServiceError):
    pass


class Forbidden(ServiceError):
    pass


class LimitReached(ServiceError):
    def __init__(self, message: str, kind: str, limit: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.limit = limit


class ValidationFailed(ServiceError):
    def __init__(self, fields: dict[str, str], message: str = "The given data was invalid.") -> None:
        super().__init__(message)
        self.fields = fields


class QuotaExceeded(ServiceError):
    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(f"You have exceeded your hourly message limit of {limit}")
        self.limit = limit
        self.retry_after = retry_after
