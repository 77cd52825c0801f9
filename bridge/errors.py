"""The bridge's error tree: everything it raises on purpose derives from `BridgeError`.

    RoostError (broker/errors.py)
    └── BridgeError             root of the bridge package's errors
        └── LinkError           the upstream link could not be made or was lost; the message says why
            └── LinkRefused     the upstream broker answered CONNECT with a refusal (its reason code kept)

Bad `[[bridge]]` configuration raises `broker.errors.ConfigError` naming the key, as every other key does.
A `LinkError` never leaves the bridge: it becomes the bridge's `last_error`, and the link is retried with
backoff.
"""

from __future__ import annotations

from broker.errors import RoostError

__all__ = ["BridgeError", "LinkError", "LinkRefused"]


class BridgeError(RoostError):
    """The root of every error the bridge raises on purpose."""


class LinkError(BridgeError):
    """The upstream link could not be made (DNS, TCP, TLS, CONNACK) or was lost (reset, silence, protocol)."""


class LinkRefused(LinkError):
    """CONNACK refused the connection; `reason_code` is the v5 reason code or the 3.1.1 return code."""

    def __init__(self, message: str, reason_code: int) -> None:
        super().__init__(message)
        self.reason_code = reason_code
